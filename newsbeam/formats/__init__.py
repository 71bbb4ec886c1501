"""Input formats, one module each (feeds, JSON Lines/JSON, plain text, HTML),
and the one place that says which file holds which format.

All I/O goes through ``apache_beam.io.filesystems`` so the same paths work on
local disk and ``gs://``.
"""
from __future__ import annotations

import posixpath
from typing import Iterable, Iterator

from newsbeam.formats import html, jsonl, text
from newsbeam.formats.feeds import FEED_EXTENSIONS
from newsbeam.records import RawEntry

SUPPORTED_EXTENSIONS = FEED_EXTENSIONS + jsonl.EXTENSIONS + text.EXTENSIONS + html.EXTENSIONS
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Files behind paths, directories and globs, sorted, supported types only.

    A pattern that matches nothing is an error: a typo in a scheduled job
    should fail loudly, not ingest nothing forever.
    """
    found: set[str] = set()
    for pattern in patterns:
        candidates = [pattern]
        if not any(ch in pattern for ch in "*?[") and _is_directory(pattern):
            candidates = [posixpath.join(pattern.rstrip("/"), "**")]
        matched = False
        for candidate in candidates:
            for result in _filesystems().match([candidate])[0].metadata_list:
                matched = True
                if result.path.lower().endswith(SUPPORTED_EXTENSIONS) and not _is_hidden(result.path):
                    found.add(result.path)
        if not matched:
            raise ValueError(f"--inputs {pattern!r} matches no file")
    return sorted(found)


def _is_directory(path: str) -> bool:
    if "://" in path:
        return path.endswith("/")
    import os

    return os.path.isdir(path)


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


