"""Locks: one run per ``--state`` folder, one compaction per dataset.

A lock file names its holder (host, pid, process start, a token unique to
this acquisition) and is taken over only from a holder that is provably gone:

* on this host, when its pid is gone or now belongs to a later process (its
  age never matters: a long run keeps its lock);
* on another host, when its lease ran out: the holder rewrites
  ``renewed_at`` every ``renew_every`` seconds while it holds the lock, and
  a lease not renewed for ``LEASE_MISSED_RENEWALS`` of its periods is over.
  Locks written before leases existed expire six hours after ``since``.

Release deletes the lock only while it still carries this acquisition's
token, so a run never frees a lock that another run now holds.

Local disk: every step (create, take over, renew, release) runs under an
``flock`` on ``<lock>.guard``, so the check of a stale holder and the
takeover are one atomic step; the kernel drops the flock of a killed process.
GCS: an object created with ``if_generation_match=0``; takeover, renewal and
release are conditional on the generation last seen.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import threading
import time
from typing import Iterator, Optional

from newsbeam.gcp import gcs_credentials_problem, split_gcs_path
from newsbeam.layout import is_local, join_path, make_dirs
from newsbeam.runs import OWNER_ALIVE, OWNER_GONE, owner_status, process_owner

LOGGER = logging.getLogger(__name__)

LOCK_FILE = "LOCK"
RENEW_EVERY_SECONDS = 60.0
LEASE_MISSED_RENEWALS = 5  # a lease lapses after this many missed renewals (clock skew, slow storage)
LEGACY_LOCK_AGE = dt.timedelta(hours=6)  # locks without a lease, from earlier versions
GUARD_TIMEOUT_SECONDS = 30.0


class StateLocked(RuntimeError):
    """Another run holds the state folder."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def reason_to_take_over(holder: dict, now: Optional[dt.datetime] = None) -> str:
    """Why the holder of a lock is provably gone, or "" while it may be alive."""
    now = now or _now()
    status = owner_status(holder)
    if status == OWNER_GONE:
        return f"its process {holder.get('pid')} on this host is gone"
    if status == OWNER_ALIVE:
        return ""
    try:
        if "renewed_at" in holder:
            period = float(holder.get("renew_every") or RENEW_EVERY_SECONDS)
            silent = now - dt.datetime.fromisoformat(holder["renewed_at"])
            bound = dt.timedelta(seconds=period * LEASE_MISSED_RENEWALS)
        else:
            silent = now - dt.datetime.fromisoformat(holder.get("since", ""))
            bound = LEGACY_LOCK_AGE
    except (TypeError, ValueError):
        return ""  # can't read its lease: leave it to a person
    if silent > bound:
        return f"its lease was last renewed {silent.total_seconds():.0f} s ago (bound {bound.total_seconds():.0f} s)"
    return ""


class _LocalLockFile:
    """A lock file on local (or network-mounted) disk; versions are the file's text."""

    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        import fcntl

        make_dirs(os.path.dirname(self.path) or ".")
        with open(f"{self.path}.guard", "a") as handle:
            deadline = time.monotonic() + GUARD_TIMEOUT_SECONDS
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StateLocked(f"{self.path}.guard stayed locked for {GUARD_TIMEOUT_SECONDS:.0f} s") from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> Optional[tuple[str, str]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        return text, text

    def _staged(self, content: str) -> str:
        staged = f"{self.path}.{secrets.token_hex(8)}.new"
        with open(staged, "w", encoding="utf-8") as handle:
            handle.write(content)
        return staged

    def create(self, content: str) -> Optional[str]:
        """The new version, or None if the lock exists. A link never shows a half-written lock."""
        staged = self._staged(content)
        try:
            os.link(staged, self.path)
        except FileExistsError:
            return None
        finally:
            os.unlink(staged)
        return content

    def replace(self, content: str, expected: str) -> Optional[str]:
        if (self.read() or (None, None))[1] != expected:
            return None
        os.replace(self._staged(content), self.path)
        return content

    def delete(self, expected: str) -> bool:
        if (self.read() or (None, None))[1] != expected:
            return False
        os.unlink(self.path)
        return True


class _GcsLockFile:
    """A lock object on GCS; versions are object generations."""

    def __init__(self, path: str):
        from google.cloud import storage

        problem = gcs_credentials_problem([path])
        if problem:
            raise ValueError(problem)
        bucket, name = split_gcs_path(path)
        self.blob_name = name
        self.bucket = storage.Client().bucket(bucket)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        yield  # every write below is conditional on a generation

    def read(self) -> Optional[tuple[str, int]]:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        for _ in range(3):
            blob = self.bucket.get_blob(self.blob_name)
            if blob is None:
                return None
            try:
                return blob.download_as_bytes(if_generation_match=blob.generation).decode("utf-8"), blob.generation
            except (NotFound, PreconditionFailed):
                continue  # changed between the two calls: look again
        raise StateLocked(f"{self.blob_name} keeps changing; another run is busy with it")

    def _upload(self, content: str, generation: int) -> Optional[int]:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self.blob_name)
        try:
            blob.upload_from_string(content, if_generation_match=generation)
        except PreconditionFailed:
            return None
        return blob.generation

    def create(self, content: str) -> Optional[int]:
        return self._upload(content, 0)

    def replace(self, content: str, expected: int) -> Optional[int]:
        return self._upload(content, expected)

    def delete(self, expected: int) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self.bucket.blob(self.blob_name).delete(if_generation_match=expected)
        except (NotFound, PreconditionFailed):
            return False
        return True


def _lock_file(path: str):
    if is_local(path):
        return _LocalLockFile(path)
    if path.startswith("gs://"):
        return _GcsLockFile(path)
    raise ValueError(f"no atomic lock on {path.split(':', 1)[0]}://; use a local path or gs://")


class FileLock:
    """Exclusive hold on one lock file for one process; see the module docstring.

    Of two runs started at once exactly one proceeds; the other raises
    StateLocked with the holder's details. While held, a daemon thread renews
    the lease every ``renew_every`` seconds.
    """

    def __init__(self, path: str, *, renew_every: float = RENEW_EVERY_SECONDS):
        self.path = path
        self.renew_every = renew_every
        self.held = False
        self._file = None
        self._version = None
        self._record: dict = {}
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None

    def describe_holder(self) -> str:
        try:  # through the lock's own storage calls: the same client, endpoint and credentials
            seen = (self._file or _lock_file(self.path)).read()
        except Exception:  # only words for an error message: never mask the error itself
            seen = None
        return (seen[0] if seen else "").strip() or "unknown holder"

    def acquire(self) -> "FileLock":
        """Take the lock or raise StateLocked; ValueError where no lock can be taken
        (a filesystem with no atomic create, no Google credentials for gs://)."""
        self._file = self._file or _lock_file(self.path)
        now = _now().isoformat()
        self._record = {**process_owner(), "since": now, "renewed_at": now, "renew_every": self.renew_every,
                        "token": secrets.token_hex(16)}
        content = json.dumps(self._record)
        with self._file.guard():
            for _ in range(3):  # the lock may vanish or change between the steps: look again
                self._version = self._file.create(content)
                if self._version is not None:
                    return self._start_holding()
                seen = self._file.read()
                if seen is None:
                    continue
                text, version = seen
                try:
                    holder = json.loads(text)
                except ValueError:
                    break  # not a lock we wrote: leave it to a person
                reason = reason_to_take_over(holder) if isinstance(holder, dict) else ""
                if not reason:
                    break
                self._version = self._file.replace(content, version)
                if self._version is not None:
                    LOGGER.warning("took over the lock %s: %s (it was %s)", self.path, reason, text.strip())
                    return self._start_holding()
        raise StateLocked(
            f"state folder is locked by another newsbeam run ({self.describe_holder()}); "
            f"if no run is active, delete {self.path}"
        )

    def _start_holding(self) -> "FileLock":
        self.held = True
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_released, name=f"renew {self.path}", daemon=True)
        self._renewer.start()
        return self

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.renew_every):
            record = {**self._record, "renewed_at": _now().isoformat()}
            try:
                with self._file.guard():
                    version = self._file.replace(json.dumps(record), self._version)
            except Exception:  # storage hiccup: the lease has several periods to spare
                LOGGER.warning("could not renew the lock %s", self.path, exc_info=True)
                continue
            if version is None:
                LOGGER.error("lost the lock %s: another run took it over (%s)", self.path, self.describe_holder())
                return
            self._record, self._version = record, version

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=30)
        self._renewer = None

    def release(self) -> None:
        if not self.held:
            return
        self._stop_renewing()
        self.held = False
        with self._file.guard():
            released = self._file.delete(self._version)
        if not released:
            LOGGER.warning("not releasing %s: another run holds it now (%s)", self.path, self.describe_holder())

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


class StateLock(FileLock):
    """The lock of a ``--state`` folder: ``<state>/LOCK``."""

    def __init__(self, state: str, **options):
        super().__init__(join_path(state, LOCK_FILE), **options)
