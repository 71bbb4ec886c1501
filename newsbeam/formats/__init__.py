"""Input formats, one module each (feeds, JSON Lines/JSON, plain text, HTML),
and the one place that says which file holds which format.

All I/O goes through ``apache_beam.io.filesystems`` so the same paths work on
local disk and ``gs://``.
"""
from __future__ import annotations

import os
import posixpath
import re
from typing import Iterable, Iterator, Optional

from newsbeam.formats import html, jsonl, text
from newsbeam.formats.feeds import FEED_EXTENSIONS
from newsbeam.formats.names import COMPRESSION_SUFFIXES, format_name
from newsbeam.layout import filesystems
from newsbeam.records import RawEntry

SUPPORTED_EXTENSIONS = FEED_EXTENSIONS + jsonl.EXTENSIONS + text.EXTENSIONS + html.EXTENSIONS
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
GLOB_CHARS = "*?["


def is_supported(path: str) -> bool:
    return format_name(path).endswith(SUPPORTED_EXTENSIONS)


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Files behind paths, directories and globs, sorted, supported types only.

    A local path that exists is taken literally, so a file named ``a[1].jsonl``
    or ``q?mark.jsonl`` is read as itself; only a pattern that names no
    existing path is a glob. ``gs://`` patterns are always globs (``*``, ``?``
    and ``[...]`` are never literal there, as in Beam's FileSystems), and a
    ``gs://`` pattern ending in ``/`` is read as a folder.

    A pattern that matches nothing is an error: a typo in a scheduled job
    should fail loudly, not ingest nothing forever. So is a file named on its
    own whose type no format reads. Files and folders hidden *below* the
    folder a pattern names (``.git/``, ``.draft.jsonl``) are skipped; hidden
    folders above it (``~/.cache/drop/``) are the user's choice, not ours.
    """
    found: set[str] = set()
    for pattern in patterns:
        paths = _existing_local_files(pattern)
        if paths is None:
            paths = _matched_files(pattern)
        if not paths:
            raise ValueError(f"--inputs {pattern!r} matches no file")
        if _names_one_file(pattern, paths):
            check_supported(pattern)
            found.update(paths)
            continue
        base = named_folder(pattern)
        found.update(p for p in paths if is_supported(p) and not is_hidden_below(p, base))
    return sorted(found)


def check_supported(path: str) -> None:
    """A file the user named must be one a format reads: dropping it quietly hides a mistake."""
    if not is_supported(path):
        raise ValueError(f"--inputs {path!r}: unsupported file type (supported: {', '.join(SUPPORTED_EXTENSIONS)}, "
                         f"each also compressed: {', '.join(COMPRESSION_SUFFIXES)})")


def watch_glob(pattern: str) -> tuple[str, bool]:
    """How a streaming run watches ``pattern``, by :func:`expand_inputs`' rule:
    the Beam glob to poll, and whether it stands for an existing local path.

    A local path that exists is watched as itself. Beam's globs have no
    escape, so each glob character in its name becomes "?" (which matches that
    character too) and :func:`is_watched` keeps only the path and what is
    below it. A name without glob characters that does not exist yet is a
    folder to come; anything else is a glob.
    """
    if "://" not in pattern and os.path.exists(pattern):
        glob = re.sub(r"[*?\[]", "?", pattern)
        if os.path.isfile(pattern):
            check_supported(pattern)
            return glob, True
        return glob.rstrip("/\\") + "/**", True
    if any(ch in pattern for ch in GLOB_CHARS):
        return pattern, False
    return pattern.rstrip("/") + "/**", False


def is_watched(path: str, named: str, literal: bool) -> bool:
    """Whether a path a watch's glob matched is one to read: for an existing
    path (``literal``) that path or a file below it, and never hidden below ``named``
    (:func:`named_folder` of the pattern)."""
    if literal:
        top, found = named.replace("\\", "/").rstrip("/"), path.replace("\\", "/")
        if found != top and not found.startswith(top + "/"):
            return False
    return not is_hidden_below(path, named)


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
    if "://" in pattern and pattern.endswith("/") and not any(ch in pattern for ch in GLOB_CHARS):
        pattern = posixpath.join(pattern.rstrip("/"), "**")
    return [result.path for result in filesystems().match([pattern])[0].metadata_list]


def _names_one_file(pattern: str, paths: list[str]) -> bool:
    """Whether ``pattern`` names a file, not a folder or a glob (a local file, or one object)."""
    if "://" not in pattern:
        return os.path.isfile(pattern)
    return paths == [pattern] and not any(ch in pattern for ch in GLOB_CHARS)


def named_folder(pattern: str) -> str:
    """Where a pattern starts: the path itself when it exists or has no glob
    characters, else the part before the first glob character, cut at its last "/"."""
    if ("://" not in pattern and os.path.exists(pattern)) or not any(ch in pattern for ch in GLOB_CHARS):
        return pattern
    fixed = re.match(r"[^*?\[]*", pattern).group(0).replace("\\", "/")
    return fixed[: fixed.rfind("/") + 1]


def is_hidden_below(path: str, folder: str) -> bool:
    """Whether a file or folder between ``folder`` and ``path`` (the file included) starts with '.'."""
    path = path.replace("\\", "/")
    folder = folder.replace("\\", "/")
    below = path[len(folder):] if path.startswith(folder) else path
    return any(part.startswith(".") for part in below.split("/"))


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The file's bytes, decompressed when its name ends in a compression suffix; at most
    ``max_bytes`` of them (after decompression, so a small bomb cannot fill the worker)."""
    with filesystems().open(path) as handle:  # compression_type AUTO: by the suffix
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        compressed = format_name(path) != path.lower()
        raise ValueError(f"file larger than {max_bytes} bytes{' once decompressed' if compressed else ''}")
    return data


def entries_from_file(path: str, data: bytes, *, fetched_at: str,
                      encoding: str = text.DEFAULT_ENCODING) -> Iterator[RawEntry]:
    """The articles in one file. ``encoding`` is that of JSON and plain-text files
    (``--input_encoding``); feeds and pages declare or are detected in their own."""
    lowered = format_name(path)
    if lowered.endswith(FEED_EXTENSIONS):
        from newsbeam.formats.feeds import parse_feed

        yield from parse_feed(data, source=path, fetched_at=fetched_at).entries
    elif lowered.endswith(".jsonl"):
        yield from jsonl.entries_from_jsonl(data, path=path, fetched_at=fetched_at, encoding=encoding)
    elif lowered.endswith(".json"):
        yield from jsonl.entries_from_json(data, path=path, fetched_at=fetched_at, encoding=encoding)
    elif lowered.endswith(text.EXTENSIONS):
        yield text.entries_from_text(data, path=path, fetched_at=fetched_at, encoding=encoding)
    elif lowered.endswith(html.EXTENSIONS):
        yield html.entry_from_html(data, path=path, fetched_at=fetched_at)
    else:
        raise ValueError(f"unsupported file type: {posixpath.basename(path)}")


