"""State for scheduled incremental runs: what was written, and feeds' HTTP caches.

Layout of ``--state DIR`` (local or gs://)::

    LOCK                      held by the running job; a second run refuses
    feeds.json                per feed (keyed by sha256 of its URL): redacted url, etag, last_modified, last_success
    written/<run>.ids         "article_id content_hash" of each row a committed run wrote
    pending/<run_id>/*.json   feed statuses of a run, merged on commit

State only advances after the data it describes is committed. Crash safety
comes from the dataset itself: at start, any committed Parquet file whose run
has no ``written/<run>.ids`` (a run killed after its data landed, before its
state did) is read back and its ids recorded. So a rerun after a kill at any
point writes each article exactly once.

No file here holds a feed's credentials: feeds are keyed by a hash of their
exact URL (``feed_state_key``), and the URL kept beside it for humans, like
any error text, has ``user:password@`` and secret query values redacted.
"""
from __future__ import annotations

import hashlib
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
from newsbeam.normalise import redact_text, redact_url

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


# One line of an ids file: an article_id, then (since content hashes were recorded) its content hash.
ID_LINE_RE = re.compile(r"[0-9a-f]{16,64}( [0-9a-f]{16,64})?")


def recover_uncommitted(state: str, output: str) -> int:
    """Record ids of committed data files that the state doesn't know yet; mend damaged ids files.

    Returns how many data files were read for ids that the state lacked.
    """
    files_by_run: dict[str, list[str]] = {}
    for path in data_files(output):
        files_by_run.setdefault(run_key_of(FileSystems.split(path)[1]), []).append(path)
    known = {FileSystems.split(p)[1]: p for p in list_paths(join_path(state, WRITTEN_DIR, "*.ids"))}
    orphans = {key: paths for key, paths in files_by_run.items()
               if FileSystems.split(ids_path(state, key))[1] not in known}
    for key, paths in orphans.items():
        ids = written_keys_in(paths)
        write_text_atomically(ids_path(state, key), "\n".join(ids) + "\n")
        LOGGER.warning("recovered %d article ids of run %s whose state was not committed", len(ids), key)
    _mend_damaged_ids(state, known, files_by_run)
    return sum(len(paths) for paths in orphans.values())


def _mend_damaged_ids(state: str, known: dict[str, str], files_by_run: dict[str, list[str]]) -> None:
    """An ids file with lines that are not ids (a disk fault, a hand edit) is written again.

    Such a line would be taken for an article id and its article written a
    second time unnoticed. The dataset is the truth: the file is rebuilt from its
    run's data files; where those are gone (compaction replaced them, and the
    compacted files have ids files of their own) only the good lines are kept.
    """
    run_of_file = {FileSystems.split(ids_path(state, key))[1]: key for key in files_by_run}
    for name, path in sorted(known.items()):
        lines = (read_text(path, errors="replace") or "").splitlines()
        bad = sum(1 for line in lines if line and not ID_LINE_RE.fullmatch(line))
        if not bad:
            continue
        run = run_of_file.get(name)
        if run is not None:
            ids = written_keys_in(files_by_run[run])
            how = f"rebuilt from its run's {len(files_by_run[run])} data files ({len(ids)} ids)"
        else:
            ids = [line for line in lines if ID_LINE_RE.fullmatch(line)]
            how = f"kept its {len(ids)} good lines (its run's data files are gone)"
        write_text_atomically(path, "\n".join(ids) + "\n" if ids else "")
        LOGGER.warning("state file %s had %d lines that are not article ids: %s", redact_url(path), bad, how)


def load_written_ids(state: str) -> tuple[set[str], set[str]]:
    """article_ids and content_hashes of every row committed so far (lines that are not ids are skipped)."""
    ids: set[str] = set()
    hashes: set[str] = set()
    for path in list_paths(join_path(state, WRITTEN_DIR, "*.ids")):
        for line in (read_text(path, errors="replace") or "").splitlines():
            if not ID_LINE_RE.fullmatch(line):
                continue
            article_id, _, content_hash = line.partition(" ")
            ids.add(article_id)
            if content_hash:
                hashes.add(content_hash)
    return ids, hashes


# ---- feeds' HTTP state ------------------------------------------------------------

FEED_KEY_RE = re.compile(r"[0-9a-f]{64}")


def feed_state_key(url: str) -> str:
    """What a feed's HTTP caches are stored under: the exact URL, hashed, so its secrets stay out."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def load_feed_state(state: Optional[str]) -> dict[str, dict]:
    """Each feed's entry by ``feed_state_key``: url (redacted), etag, last_modified, outcome."""
    return _read_feed_state(state)[0] if state else {}


def _read_feed_state(state: str) -> tuple[dict[str, dict], bool]:
    """The entries, and whether the file must be written again by the next committed run
    (``commit_state``): it still uses clear URLs as keys (as before hashed keys; converted
    here on every read), or it could not be read at all.
    """
    path = join_path(state, FEEDS_FILE)
    text = read_text(path, errors="replace")
    try:
        stored: dict[str, dict] = json.loads(text) if text else {}
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except ValueError as error:  # the caches only save bandwidth: without them each feed is fetched whole once
        LOGGER.warning("state file %s is unreadable (%s): feeds are fetched without their HTTP caches "
                       "this run, and the file is written again when it commits", redact_url(path), error)
        return {}, True
    entries: dict[str, dict] = {}
    for key, entry in stored.items():
        if FEED_KEY_RE.fullmatch(key):
            entries[key] = entry
        else:
            entries[feed_state_key(key)] = _redacted_text({"url": redact_url(key), **entry}, "last_reason")
    return entries, any(not FEED_KEY_RE.fullmatch(key) for key in stored)


def _redacted_text(record: dict, field: str) -> dict:
    # Error texts may quote the URL (a redirect loop names both ends), credentials included.
    return {**record, field: redact_text(record[field])} if record.get(field) else record


def _stored_status(status: dict) -> dict:
    """A feed status as written to disk: hashed key, redacted URL and error text."""
    stored = {**status, "key": feed_state_key(status["url"]), "url": redact_url(status["url"])}
    return _redacted_text(stored, "reason")


def write_pending_feed_statuses(state: str, run_id: str, statuses: list[dict]) -> None:
    """Statuses carry the feed's real URL; what lands on disk carries only its key and redacted form."""
    path = join_path(state, PENDING_DIR, run_id, "feeds.json")
    stored = [_stored_status(status) for status in statuses]
    write_text_atomically(path, json.dumps(stored, ensure_ascii=False))


def merge_feed_statuses(previous: dict[str, dict], statuses: Iterable[dict]) -> dict[str, dict]:
    """Stored statuses (see ``_stored_status``) folded into the entries, sorted by URL for humans."""
    merged = {key: dict(entry) for key, entry in previous.items()}
    for status in statuses:
        entry = merged.setdefault(status["key"], {})
        entry["url"] = status["url"]
        if status.get("ok"):
            entry.update(last_success=status["at"], last_status=status.get("status"))
            if not status.get("not_modified"):
                entry.update(etag=status.get("etag"), last_modified=status.get("last_modified"))
        else:
            entry.update(last_failure=status["at"], last_reason=status.get("reason"))
    return dict(sorted(merged.items(), key=lambda item: (item[1].get("url") or "", item[0])))


def commit_state(state: str, output: str, run_id: str) -> None:
    """After the run's data is committed: record its ids, then its feed caches."""
    ids = written_keys_in(committed_files(output, run_id))
    write_text_atomically(ids_path(state, run_id), "\n".join(ids) + ("\n" if ids else ""))
    crash_point("mid_state")
    pending = list_paths(join_path(state, PENDING_DIR, run_id, "*.json"))
    statuses = [status for path in pending for status in json.loads(read_text(path) or "[]")]
    previous, needs_rewrite = _read_feed_state(state)
    if statuses or needs_rewrite:
        merged = merge_feed_statuses(previous, statuses)
        write_text_atomically(join_path(state, FEEDS_FILE), json.dumps(merged, indent=1, ensure_ascii=False))
    if pending:
        FileSystems.delete(pending)
