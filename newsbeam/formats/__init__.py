"""Input formats, one module each (feeds, JSON Lines/JSON, plain text, HTML),
and the one place that says which file holds which format.

All I/O goes through ``apache_beam.io.filesystems`` so the same paths work on
local disk and ``gs://``.
"""
from __future__ import annotations

import os
import posixpath
from typing import Iterable, Iterator, Optional

from newsbeam.formats import html, jsonl, text
from newsbeam.formats.feeds import FEED_EXTENSIONS
from newsbeam.records import RawEntry

SUPPORTED_EXTENSIONS = FEED_EXTENSIONS + jsonl.EXTENSIONS + text.EXTENSIONS + html.EXTENSIONS
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Files behind paths, directories and globs, sorted, supported types only.

    A local path that exists is taken literally, so a file named ``a[1].jsonl``
    or ``q?mark.jsonl`` is read as itself; only a pattern that names no
    existing path is a glob. ``gs://`` patterns are always globs (``*``, ``?``
    and ``[...]`` are never literal there, as in Beam's FileSystems), and a
    ``gs://`` pattern ending in ``/`` is read as a folder.

    A pattern that matches nothing is an error: a typo in a scheduled job
    should fail loudly, not ingest nothing forever.
    """
    found: set[str] = set()
    for pattern in patterns:
        paths = _existing_local_files(pattern)
        if paths is None:
            paths = _matched_files(pattern)
        if not paths:
            raise ValueError(f"--inputs {pattern!r} matches no file")
        found.update(p for p in paths if p.lower().endswith(SUPPORTED_EXTENSIONS) and not _is_hidden(p))
    return sorted(found)


def _existing_local_files(path: str) -> Optional[list[str]]:
    """Files of a local file or folder that exists; None when it doesn't (then it is a glob)."""
    if "://" in path:
        return None
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        # Walked here, not matched with "<dir>/**": Beam cannot quote glob characters in the folder's name.
        return [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names]
    return None


def _matched_files(pattern: str) -> list[str]:
    # Object stores have no folders to ask about: a trailing "/" says "everything below".
    if "://" in pattern and pattern.endswith("/") and not any(ch in pattern for ch in "*?["):
        pattern = posixpath.join(pattern.rstrip("/"), "**")
    return [result.path for result in _filesystems().match([pattern])[0].metadata_list]


def _is_hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.replace("\\", "/").split("/")[-3:])


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    with _filesystems().open(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"file larger than {max_bytes} bytes")
    return data


def _filesystems():
    from apache_beam.io.filesystems import FileSystems  # 2 s to import: only when files are read

    return FileSystems


def entries_from_file(path: str, data: bytes, *, fetched_at: str) -> Iterator[RawEntry]:
    lowered = path.lower()
    if lowered.endswith(FEED_EXTENSIONS):
        from newsbeam.formats.feeds import parse_feed

        yield from parse_feed(data, source=path, fetched_at=fetched_at).entries
    elif lowered.endswith(".jsonl"):
        yield from jsonl.entries_from_jsonl(data, path=path, fetched_at=fetched_at)
    elif lowered.endswith(".json"):
        yield from jsonl.entries_from_json(data, path=path, fetched_at=fetched_at)
    elif lowered.endswith(text.EXTENSIONS):
        yield text.entries_from_text(data, path=path, fetched_at=fetched_at)
    elif lowered.endswith(html.EXTENSIONS):
        yield html.entry_from_html(data, path=path, fetched_at=fetched_at)
    else:
        raise ValueError(f"unsupported file type: {posixpath.basename(path)}")


