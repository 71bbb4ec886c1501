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

import json
import logging
import re
from typing import Iterable, Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from newsbeam.faults import crash_point
from newsbeam.layout import (
    committed_files,
    data_files,
    join_path,
    list_paths,
    read_text,
    run_key_of,
    write_text_atomically,
)

LOGGER = logging.getLogger(__name__)

WRITTEN_DIR = "written"
PENDING_DIR = "pending"
FEEDS_FILE = "feeds.json"


# ---- written ids ------------------------------------------------------------------

def ids_path(state: str, run_key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_key)
    return join_path(state, WRITTEN_DIR, f"{safe}.ids")


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
