"""Locks: one run per ``--state`` folder, one compaction per dataset.

Local disk: ``O_CREAT|O_EXCL``. GCS: an object created with
``if_generation_match=0``. Both are atomic, so of two runs started at once
exactly one proceeds.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket

from apache_beam.io.filesystems import FileSystems

from newsbeam.layout import join_path, make_dirs, read_text

LOGGER = logging.getLogger(__name__)

LOCK_FILE = "LOCK"
STALE_LOCK_AGE = dt.timedelta(hours=6)


class StateLocked(RuntimeError):
    """Another run holds the state folder."""


class FileLock:
    """Exclusive hold on one lock file for one process.

    Local disk: ``O_CREAT|O_EXCL``. GCS: an object created with
    ``if_generation_match=0``. Both are atomic, so of two runs started at once
    exactly one proceeds; the other raises StateLocked with the holder's
    details. A lock left by a dead process on this host, or older than six
    hours, is taken over.
    """

    def __init__(self, path: str):
        self.path = path
        self.held = False

    def describe_holder(self) -> str:
        return (read_text(self.path) or "").strip() or "unknown holder"

    def _is_stale(self) -> bool:
        try:
            holder = json.loads(read_text(self.path) or "{}")
        except ValueError:
            return False
        started = dt.datetime.fromisoformat(holder.get("since", "1970-01-01T00:00:00+00:00"))
        if dt.datetime.now(dt.timezone.utc) - started > STALE_LOCK_AGE:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def acquire(self) -> "FileLock":
        content = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                              "since": dt.datetime.now(dt.timezone.utc).isoformat()})
        for _ in range(2):
            if self._create_exclusively(content):
                self.held = True
                return self
            if not self._is_stale():
                break
            LOGGER.warning("taking over a stale lock: %s", self.describe_holder())
            FileSystems.delete([self.path])
        raise StateLocked(
            f"state folder is locked by another newsbeam run ({self.describe_holder()}); "
            f"if no run is active, delete {self.path}"
        )

    def _create_exclusively(self, content: str) -> bool:
        scheme = FileSystems.get_scheme(self.path)
        if scheme in (None, "file"):
            make_dirs(os.path.dirname(self.path))
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w") as handle:
                handle.write(content)
            return True
        if scheme == "gs":
            from google.api_core.exceptions import PreconditionFailed
            from google.cloud import storage

            bucket, _, name = self.path[len("gs://"):].partition("/")
            try:
                storage.Client().bucket(bucket).blob(name).upload_from_string(content, if_generation_match=0)
            except PreconditionFailed:
                return False
            return True
        raise ValueError(f"--state on {scheme}:// has no atomic lock; use a local path or gs://")

    def release(self) -> None:
        if self.held and FileSystems.exists(self.path):
            FileSystems.delete([self.path])
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


class StateLock(FileLock):
    """The lock of a ``--state`` folder: ``<state>/LOCK``."""

    def __init__(self, state: str):
        super().__init__(join_path(state, LOCK_FILE))
