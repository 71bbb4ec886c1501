"""Articles from files: feed files, JSON/JSONL, plain text, HTML pages.

All I/O goes through ``apache_beam.io.filesystems`` so the same paths work on
local disk and ``gs://``. Each file is read by one DoFn call; a file that
can't be read or parsed becomes a dead-letter row, the others go on.

JSON/JSONL fields (first present wins): ``title``/``headline``;
``body``/``text``/``content``; ``summary``/``description``; ``url``/``link``;
``published``/``published_at``/``date``; ``authors`` (list) or ``author``;
``tags``; ``language``/``lang``; ``source``. A ``.json`` file holds one object
or a list of objects.
"""
from __future__ import annotations

import json
import posixpath
from typing import Any, Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from newsbeam.records import DeadLetter, RawEntry
from newsbeam.transforms.normalise import utc_now_iso

DEAD_LETTER = "dead_letter"
STAGE = "read_file"
FEED_EXTENSIONS = (".xml", ".rss", ".atom", ".rdf")
SUPPORTED_EXTENSIONS = FEED_EXTENSIONS + (".jsonl", ".json", ".txt", ".html", ".htm")
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
            for result in FileSystems.match([candidate])[0].metadata_list:
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
    with FileSystems.open(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"file larger than {max_bytes} bytes")
    return data


def first_of(record: dict[str, Any], *names: str) -> Optional[Any]:
    for name in names:
        value = record.get(name)
        if value not in (None, "", []):
            return value
    return None


def _as_strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(item.get("name", "")) if isinstance(item, dict) else str(item) for item in value)
    return (str(value),)


def entry_from_json(record: Any, *, path: str, fetched_at: str) -> RawEntry:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    published = first_of(record, "published", "published_at", "date")
    return RawEntry(
        source=str(first_of(record, "source") or path),
        source_title=first_of(record, "source_title"),
        url=first_of(record, "url", "link"),
        title=first_of(record, "title", "headline"),
        summary=first_of(record, "summary", "description"),
        body=first_of(record, "body", "text", "content"),
        authors=_as_strings(first_of(record, "authors", "author")),
        tags=_as_strings(first_of(record, "tags", "categories")),
        published=str(published) if published is not None else None,
        language_hint=first_of(record, "language", "lang"),
        fetched_at=fetched_at,
    )


def entries_from_text(data: bytes, *, path: str, fetched_at: str) -> RawEntry:
    """The seed article's format: first line the headline, the rest the body."""
    text = data.decode("utf-8-sig")
    headline, _, body = text.partition("\n")
    return RawEntry(source=path, title=headline.strip(), body=body, fetched_at=fetched_at, body_is_html=False)


def entry_from_html(data: bytes, *, path: str, fetched_at: str) -> RawEntry:
    """Main text of a saved article page (trafilatura drops menus, ads, comments)."""
    import trafilatura

    document = trafilatura.bare_extraction(data, with_metadata=True, include_comments=False, url=None)
    if document is None or not document.text:
        raise ValueError("no main text found in HTML page")
    paragraphs = [line for line in document.text.split("\n") if line.strip()]
    if paragraphs and document.title and paragraphs[0].strip() == document.title.strip():
        paragraphs = paragraphs[1:]
    return RawEntry(
        source=path,
        url=document.url,
        title=document.title,
        body="\n\n".join(paragraphs),
        authors=tuple(a.strip() for a in (document.author or "").split(";") if a.strip()),
        tags=tuple(document.categories or ()) + tuple(document.tags or ()),
        published=document.date,
        language_hint=document.language,
        fetched_at=fetched_at,
        body_is_html=False,
    )


def entries_from_file(path: str, data: bytes, *, fetched_at: str) -> Iterator[RawEntry]:
    lowered = path.lower()
    if lowered.endswith(FEED_EXTENSIONS):
        from newsbeam.transforms.feeds import parse_feed

        yield from parse_feed(data, source=path, fetched_at=fetched_at).entries
    elif lowered.endswith(".jsonl"):
        # "\n" only: str.splitlines() also breaks at U+2028/U+0085, which JSON allows inside strings.
        for number, line in enumerate(data.decode("utf-8-sig").split("\n"), start=1):
            if line.strip():
                try:
                    yield entry_from_json(json.loads(line), path=path, fetched_at=fetched_at)
                except ValueError as error:
                    raise ValueError(f"line {number}: {error}") from error
    elif lowered.endswith(".json"):
        document = json.loads(data.decode("utf-8-sig"))
        for record in document if isinstance(document, list) else [document]:
            yield entry_from_json(record, path=path, fetched_at=fetched_at)
    elif lowered.endswith(".txt"):
        yield entries_from_text(data, path=path, fetched_at=fetched_at)
    elif lowered.endswith((".html", ".htm")):
        yield entry_from_html(data, path=path, fetched_at=fetched_at)
    else:
        raise ValueError(f"unsupported file type: {posixpath.basename(path)}")


class _ReadFileFn(beam.DoFn):
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.files_read = Metrics.counter("newsbeam", "files_read")
        self.files_failed = Metrics.counter("newsbeam", "files_failed")
        self.entries_read = Metrics.counter("newsbeam", "entries_read")

    def process(self, path: str):
        fetched_at = utc_now_iso()
        try:
            # A JSONL file with one bad line fails whole: partial reads would
            # make reruns ambiguous. The reason names the line.
            entries = list(entries_from_file(path, read_bytes(path, self.max_bytes), fetched_at=fetched_at))
        except Exception as error:  # every unreadable file becomes a dead-letter row
            self.files_failed.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter(source=path, stage=STAGE, reason=f"{type(error).__name__}: {error}")
            )
            return
        self.files_read.inc()
        self.entries_read.inc(len(entries))
        yield from entries


class ReadFiles(beam.PTransform):
    """Paths/globs/directories -> RawEntry, with unreadable files dead-lettered."""

    def __init__(self, patterns: list[str], max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 watch: Optional[tuple[float, Optional[float]]] = None):
        super().__init__()
        self.patterns = list(patterns)
        self.max_bytes = max_bytes
        self.watch = watch  # (poll interval, max duration): watch for new files

    def expand(self, pbegin):
        if self.watch:
            from newsbeam.transforms.streaming import WatchFiles

            paths = pbegin | "WatchInputFiles" >> WatchFiles(self.patterns, *self.watch)
        else:
            paths = pbegin | "ListInputFiles" >> beam.Create(expand_inputs(self.patterns))
        return (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFile" >> beam.ParDo(_ReadFileFn(self.max_bytes)).with_outputs(DEAD_LETTER, main="entries")
        )
