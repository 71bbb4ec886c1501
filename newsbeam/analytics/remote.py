"""Read a dataset that lives on Google Cloud Storage: keep a local copy in step
with the bucket, then read the copy like any local folder.

Why a copy and not DuckDB's own gs:// reader: that needs the httpfs extension
(downloaded on first use, which locked-down machines cannot) and HMAC keys
rather than the application-default credentials every other gs:// path of
newsbeam takes. Article files never change once committed (a run or a
compaction writes new names), so a second report only fetches what is new,
and drops from the copy what the bucket no longer has (a compaction's inputs),
so no row is ever counted twice.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from newsbeam.analytics.dates import DateRange
from newsbeam.gcp import gcs_credentials_problem, split_gcs_path
from newsbeam.layout import is_readable_file

LOGGER = logging.getLogger(__name__)

INDEX_NAME = ".newsbeam-copy.json"  # {relative path: GCS generation} of the files in the copy


class RemoteDatasetError(Exception):
    """The dataset on GCS cannot be copied: one line for the user."""


def is_remote(data: str | Path) -> bool:
    return str(data).startswith("gs://")


def default_copies_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "newsbeam" / "datasets"


def local_dataset(data: str | Path, copies_dir: Optional[Path] = None, dates: DateRange = DateRange()) -> Path:
    """``data`` itself when local; for ``gs://bucket/prefix``, its local copy brought up to date:
    with ``dates`` bounded, only in the folders that can hold those days (the copy may hold more,
    from earlier reads; the reader's own filter keeps them out)."""
    if not is_remote(data):
        return Path(data)
    bucket_name, prefix = split_gcs_path(str(data))
    prefix = prefix.strip("/")
    if not bucket_name:
        raise RemoteDatasetError(f"{data}: no bucket name")
    problem = gcs_credentials_problem([str(data)])
    if problem:
        raise RemoteDatasetError(problem)
    target = (copies_dir or default_copies_dir()) / bucket_name / (prefix or "_bucket_root")
    _sync(bucket_name, prefix, target, str(data), dates)
    return target


def _sync(bucket_name: str, prefix: str, target: Path, url: str, dates: DateRange) -> None:
    from google.api_core import exceptions
    from google.cloud import storage

    index_path = target / INDEX_NAME
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    listed_prefix = f"{prefix}/" if prefix else ""
    try:
        client = storage.Client()
        blobs = {blob.name[len(listed_prefix):]: blob
                 for blob in client.list_blobs(bucket_name, prefix=listed_prefix)
                 if is_readable_file(blob.name[len(listed_prefix):])}
    except exceptions.GoogleAPICallError as error:
        raise RemoteDatasetError(f"cannot list {url}: {error.message or error}") from error
    if not blobs:
        raise RemoteDatasetError(f"no dataset at {url} (no article files, dead letters or run manifests)")
    target.mkdir(parents=True, exist_ok=True)
    fetched = fetched_bytes = outside = 0
    for relative, blob in sorted(blobs.items()):
        local = target / relative
        if index.get(relative) == blob.generation and local.is_file():
            continue
        if not dates.may_hold(relative):
            outside += 1
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".part")
        try:
            blob.download_to_filename(str(partial), if_generation_match=blob.generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            # replaced or removed since the listing (a compaction at work): the next copy picks it up
            LOGGER.warning("%s/%s changed while it was copied; run again for a complete copy", url, relative)
            partial.unlink(missing_ok=True)
            continue
        except exceptions.GoogleAPICallError as error:
            partial.unlink(missing_ok=True)
            raise RemoteDatasetError(f"cannot copy {url}/{relative}: {error.message or error}") from error
        os.replace(partial, local)
        index[relative] = blob.generation
        fetched, fetched_bytes = fetched + 1, fetched_bytes + (blob.size or 0)
    removed = _drop_what_the_bucket_lost(target, set(blobs))
    index = {relative: generation for relative, generation in index.items() if relative in blobs}
    temporary = index_path.with_name(INDEX_NAME + ".part")
    temporary.write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
    os.replace(temporary, index_path)
    LOGGER.info("local copy of %s in %s: %d files fetched (%.1f MB), %d up to date, %d not dated %s, %d dropped",
                url, target, fetched, fetched_bytes / 1e6, len(blobs) - fetched - outside, outside, dates.describe(),
                removed)


def _drop_what_the_bucket_lost(target: Path, listed: set[str]) -> int:
    removed = 0
    for path in sorted(target.rglob("*"), reverse=True):  # children before their folders
        relative = path.relative_to(target).as_posix()
        if path.is_file() and relative != INDEX_NAME and relative not in listed:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


def add_arguments(parser) -> None:
    parser.add_argument("--copy-dir", type=Path, default=None,
                        help="where a gs:// dataset is copied to before it is read; only new files are fetched "
                             "(default: ~/.cache/newsbeam/datasets)")


def localise(args, dates: DateRange = DateRange()) -> Optional[str]:
    """Point ``args.data`` at a local folder (copying a gs:// dataset first, the folders of ``dates``
    only); the problem as one line, or None."""
    try:
        args.data = local_dataset(args.data, args.copy_dir, dates)
    except RemoteDatasetError as error:
        return str(error)
    return None
