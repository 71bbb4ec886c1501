"""State for scheduled incremental runs: what was written, and feeds' HTTP caches.

Layout of ``--state DIR`` (local or gs://)::

    LOCK                      held by the running job; a second run refuses
    feeds.json                per feed URL: etag, last_modified, last_success
    written/<run>.ids         "article_id content_hash" of each row a committed run wrote
    pending/<run_id>/*.json   feed statuses of a run, merged on commit

State only advances after the data it describes is committed. Crash safety
comes from the dataset itself: at start, any committed Parquet file whose run
has no ``written/<run>.ids`` (a run killed after its data landed, before its
state did) is read back and its ids recorded. So a rerun after a kill at any
point writes each article exactly once.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
from typing import Iterable, Optional

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from newsbeam.faults import crash_point
from newsbeam.records import Article
from newsbeam.transforms.sink import ERRORS_DIR, TMP_DIR, join_path, make_dirs

LOGGER = logging.getLogger(__name__)

WRITTEN_DIR = "written"
PENDING_DIR = "pending"
FEEDS_FILE = "feeds.json"
LOCK_FILE = "LOCK"
PART_NAME_RE = re.compile(r"^part-(?P<run>.+?)(?:-w-?\d+p\d+)?-[0-9a-f]{8}-\d{4}\.parquet$")
STALE_LOCK_AGE = dt.timedelta(hours=6)


class StateLocked(RuntimeError):
    """Another run holds the state folder."""


# ---- small file helpers (FileSystems: local and gs:// alike) ------------------

def read_text(path: str) -> Optional[str]:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def write_text_atomically(path: str, text: str) -> None:
    make_dirs(FileSystems.split(path)[0])
    temp = f"{path}.inprogress-{os.getpid()}"
    with FileSystems.create(temp) as handle:
        handle.write(text.encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])  # GCS rename does not overwrite; local os.rename would
    FileSystems.rename([temp], [path])


def list_paths(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


# ---- the lock -------------------------------------------------------------------

class StateLock:
    """Exclusive hold on a state folder for one run.

    Local disk: ``O_CREAT|O_EXCL``. GCS: an object created with
    ``if_generation_match=0``. Both are atomic, so of two runs started at once
    exactly one proceeds; the other raises StateLocked with the holder's
    details. A lock left by a dead process on this host, or older than six
    hours, is taken over.
    """

    def __init__(self, state: str):
        self.path = join_path(state, LOCK_FILE)
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

    def acquire(self) -> "StateLock":
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


# ---- written ids ------------------------------------------------------------------

def run_key_of(file_name: str) -> str:
    """The run a data file belongs to (compacted files are their own key)."""
    match = PART_NAME_RE.match(file_name)
    return match.group("run") if match else file_name.rsplit(".", 1)[0]


def ids_path(state: str, run_key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_key)
    return join_path(state, WRITTEN_DIR, f"{safe}.ids")


def data_files(output: str) -> list[str]:
    skip = (f"/{ERRORS_DIR}/", f"/{TMP_DIR}/")
    return [p for p in list_paths(join_path(output, "**", "part-*.parquet")) if not any(s in p for s in skip)]


def written_keys_in(paths: Iterable[str]) -> list[str]:
    """'article_id content_hash' lines for the rows of these data files."""
    lines: list[str] = []
    for path in paths:
        with FileSystems.open(path) as handle:
            table = pq.read_table(handle, columns=["article_id", "content_hash"])
        lines.extend(f"{a} {c}" for a, c in zip(table.column(0).to_pylist(), table.column(1).to_pylist()))
    return lines


def recover_uncommitted(state: str, output: str) -> int:
    """Record ids of committed data files that the state doesn't know yet."""
    known = {FileSystems.split(p)[1] for p in list_paths(join_path(state, WRITTEN_DIR, "*.ids"))}
    orphans: dict[str, list[str]] = {}
    for path in data_files(output):
        key = run_key_of(FileSystems.split(path)[1])
        if FileSystems.split(ids_path(state, key))[1] not in known:
            orphans.setdefault(key, []).append(path)
    for key, paths in orphans.items():
        ids = written_keys_in(paths)
        write_text_atomically(ids_path(state, key), "\n".join(ids) + "\n")
        LOGGER.warning("recovered %d article ids of run %s whose state was not committed", len(ids), key)
    return sum(len(paths) for paths in orphans.values())


def load_written_ids(state: str) -> tuple[set[str], set[str]]:
    """article_ids and content_hashes of every row committed so far."""
    ids: set[str] = set()
    hashes: set[str] = set()
    for path in list_paths(join_path(state, WRITTEN_DIR, "*.ids")):
        for line in (read_text(path) or "").splitlines():
            article_id, _, content_hash = line.partition(" ")
            if article_id:
                ids.add(article_id)
            if content_hash:
                hashes.add(content_hash)
    return ids, hashes


# ---- feeds' HTTP state ------------------------------------------------------------

def load_feed_state(state: Optional[str]) -> dict[str, dict]:
    if not state:
        return {}
    text = read_text(join_path(state, FEEDS_FILE))
    return json.loads(text) if text else {}


def write_pending_feed_statuses(state: str, run_id: str, statuses: list[dict]) -> None:
    path = join_path(state, PENDING_DIR, run_id, "feeds.json")
    write_text_atomically(path, json.dumps(statuses, ensure_ascii=False))


def merge_feed_statuses(previous: dict[str, dict], statuses: Iterable[dict]) -> dict[str, dict]:
    merged = {url: dict(entry) for url, entry in previous.items()}
    for status in statuses:
        entry = merged.setdefault(status["url"], {})
        if status.get("ok"):
            entry.update(last_success=status["at"], last_status=status.get("status"))
            if not status.get("not_modified"):
                entry.update(etag=status.get("etag"), last_modified=status.get("last_modified"))
        else:
            entry.update(last_failure=status["at"], last_reason=status.get("reason"))
    return dict(sorted(merged.items()))


def commit_state(state: str, output: str, run_id: str) -> None:
    """After the run's data is committed: record its ids, then its feed caches."""
    from newsbeam.pipeline.manifest import committed_files

    ids = written_keys_in(committed_files(output, run_id))
    write_text_atomically(ids_path(state, run_id), "\n".join(ids) + ("\n" if ids else ""))
    crash_point("mid_state")
    pending = list_paths(join_path(state, PENDING_DIR, run_id, "*.json"))
    statuses = [status for path in pending for status in json.loads(read_text(path) or "[]")]
    if statuses:
        merged = merge_feed_statuses(load_feed_state(state), statuses)
        write_text_atomically(join_path(state, FEEDS_FILE), json.dumps(merged, indent=1, ensure_ascii=False))
    if pending:
        FileSystems.delete(pending)


# ---- the Beam side --------------------------------------------------------------

class _SkipWrittenFn(beam.DoFn):
    def __init__(self, state: str):
        self.state = state
        self.skipped = Metrics.counter("newsbeam", "already_written")

    def setup(self):
        self.written_ids, self.written_hashes = load_written_ids(self.state)

    def process(self, article: Article):
        if article.article_id in self.written_ids or article.content_hash in self.written_hashes:
            self.skipped.inc()
            return
        yield article


class SkipAlreadyWritten(beam.PTransform):
    """Drop articles an earlier committed run wrote (same id or same content)."""

    def __init__(self, state: str, output: str):
        super().__init__()
        self.state = state
        self.output = output

    def expand(self, articles):
        return articles | "DropWrittenIds" >> beam.ParDo(_SkipWrittenFn(self.state))
