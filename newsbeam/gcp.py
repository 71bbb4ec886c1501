"""Google Cloud: one clear line, not a traceback, when a path needs GCS and no
credentials can be found."""
from __future__ import annotations

import os
from typing import Iterable, Optional


def split_gcs_path(path: str) -> tuple[str, str]:
    """``gs://bucket/some/name`` -> ("bucket", "some/name")."""
    bucket, _, name = str(path)[len("gs://"):].partition("/")
    return bucket, name


def gcs_credentials_problem(paths: Iterable[Optional[str]]) -> str:
    """One line on how to provide Google credentials, when some of ``paths`` are on GCS and
    google.auth finds none; "" when none are on GCS or credentials are there."""
    on_gcs = [str(path) for path in paths if path and str(path).startswith("gs://")]
    if not on_gcs or os.environ.get("STORAGE_EMULATOR_HOST"):
        return ""  # an emulator (fake-gcs-server and the like) takes no credentials
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError as error:
        return (f"no Google credentials for {', '.join(on_gcs)} ({' '.join(str(error).split())}); run "
                "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a key file")
    return ""
