"""Feed bytes (RSS, Atom, RDF) -> RawEntry records, via feedparser.

feedparser handles the hard parts: encodings (HTTP charset, XML declaration,
BOM, fallbacks), ill-formed XML (a loose parser takes over) and the many feed
dialects. This module adds what a pipeline needs around it:

* a clear verdict on bytes that are no feed at all (:class:`FeedParseError`),
  while a well-formed feed with zero items is just an empty result;
* a guard against entity-expansion bombs. feedparser never reads external
  entities (its SAX parser has external general entities switched off, and
  its loose parser only expands entities it judges "safe"), and expat >= 2.4
  stops classic billion-laughs documents. But the loose parser expands a
  "safe" entity (a plain string) at every reference with no limit, so a
  1 MB document declaring a 100 kB entity and referencing it 10,000 times
  becomes a 1 GB title (measured: 27 s and 2.8 GB RSS). Documents whose
  declared entities would expand past :data:`MAX_ENTITY_EXPANSION` are
  refused before feedparser sees them;
* bytes are handed to feedparser as a stream: given ``bytes``, feedparser
  first tries to open them as a local file name, so a response body of
  ``/etc/passwd`` would have been parsed from disk (and ``/dev/zero`` read
  until memory ran out).
"""
from __future__ import annotations

import calendar
import datetime as dt
import io
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import feedparser
from feedparser.encodings import convert_to_utf8

from newsbeam.records import RawEntry

LOGGER = logging.getLogger(__name__)

# Expanded entity text a document may produce, whatever its size.
MAX_ENTITY_EXPANSION = 1_000_000
# "<!ENTITY" in the encodings feedparser can sniff without a declaration.
ENTITY_MARKERS = tuple("<!ENTITY".encode(codec) for codec in (
    "utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "cp037"))
ENTITY_DECLARATION = re.compile(
    r"<!ENTITY\s+(%\s+)?([^\s%;&<>\"']+)\s+(?:\"([^\"]*)\"|'([^']*)'|(?:SYSTEM|PUBLIC)\b)")
ENTITY_REFERENCE = re.compile(r"&([^\s%;&<>\"'#]+);")
FEED_LEVEL_KEYS = frozenset({"title", "subtitle", "link", "links", "updated", "id", "language"})
HTML_START = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]",
                        re.IGNORECASE | re.DOTALL)

FEED_EXTENSIONS = (".xml", ".rss", ".atom", ".rdf")


class FeedParseError(ValueError):
    """Bytes that are not a feed; ``reason`` is short and machine-readable.

    Reasons: ``empty``, ``html`` (a web page, not its feed), ``not_a_feed``,
    ``entity_expansion`` (an entity bomb, refused unparsed).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class ParsedFeed:
    entries: list[RawEntry] = field(default_factory=list)
    title: Optional[str] = None
    language: Optional[str] = None  # as the feed declares it, if it does
    bozo_reason: Optional[str] = None  # why feedparser found the XML ill-formed, if it did
    version: str = ""  # feedparser's name for the dialect, e.g. "rss20", "atom10"


def parse_feed(data: bytes, *, source: str, response_headers: Optional[Mapping[str, str]] = None,
               language_hint: Optional[str] = None, fetched_at: str) -> ParsedFeed:
    """Parse feed bytes into RawEntries.

    ``source`` is the feed URL or file path recorded on every entry;
    ``response_headers`` (HTTP, any case) let feedparser use the charset and
    Content-Location; ``language_hint`` is used where neither entry nor feed
    declares a language. Raises :class:`FeedParseError` for non-feeds.
    """
    if not data or not data.strip():
        raise FeedParseError("empty", "no bytes to parse")
    headers = {name.lower(): value for name, value in (response_headers or {}).items()}
    check_entity_expansion(data, headers)

    # A stream, never bytes: feedparser.parse(bytes) first tries open(bytes)
    # as a file name, so a body of b"/etc/passwd" or b"/dev/zero" would be read.
    result = feedparser.parse(io.BytesIO(data), response_headers=headers)
    if not (result.get("version") or result.entries):
        # No dialect recognised and no items: a web page, other XML, or a
        # feed-like channel (e.g. CDF) that carries only feed-level elements.
        if HTML_START.match(data[:4096]):
            raise FeedParseError("html", "an HTML page, not a feed")
        if result.get("bozo") or not FEED_LEVEL_KEYS.intersection(result.feed):
            raise FeedParseError("not_a_feed", _bozo_reason(result) or "no feed or items found")

    feed = result.feed
    feed_title = _text(feed.get("title"))
    feed_language = _text(feed.get("language"))
    entries = [
        _raw_entry(entry, source=source, source_title=feed_title,
                   language=feed_language or language_hint, fetched_at=fetched_at)
        for entry in result.entries
    ]
    return ParsedFeed(entries=entries, title=feed_title, language=feed_language,
                      bozo_reason=_bozo_reason(result), version=result.get("version") or "")


def check_entity_expansion(data: bytes, headers: Optional[Mapping[str, str]] = None) -> None:
    """Raise ``FeedParseError("entity_expansion")`` for an entity bomb.

    Only documents that declare entities are examined (most declare none, so
    this is a few substring searches). The expanded size of every reference
    is computed from the declarations, nested references included, without
    expanding anything.
    """
    if not any(marker in data for marker in ENTITY_MARKERS):
        return
    text = convert_to_utf8(dict(headers or {}), data, {}).decode("utf-8", "replace")
    values: dict[str, str] = {}
    for match in ENTITY_DECLARATION.finditer(text):
        is_parameter, name, double_quoted, single_quoted = match.groups()
        value = double_quoted if double_quoted is not None else single_quoted
        if not is_parameter and value is not None:
            values.setdefault(name, value)
    if not values:
        return

    sizes: dict[str, int] = {}

    def expanded_size(name: str, depth: int = 0) -> int:
        if name in sizes:
            return sizes[name]
        if depth > 32:  # deeper nesting than any honest feed; also stops cycles
            return MAX_ENTITY_EXPANSION + 1
        sizes[name] = MAX_ENTITY_EXPANSION + 1  # a cycle while computing is a bomb too
        value = values[name]
        size = len(value)
        for reference in ENTITY_REFERENCE.findall(value):
            if reference in values:
                size += expanded_size(reference, depth + 1) - len(reference) - 2
                if size > MAX_ENTITY_EXPANSION:
                    break
        sizes[name] = size
        return size

    total = 0
    for reference in ENTITY_REFERENCE.findall(text):
        if reference in values:
            total += expanded_size(reference)
            if total > MAX_ENTITY_EXPANSION:
                raise FeedParseError(
                    "entity_expansion",
                    f"declared entities would expand past {MAX_ENTITY_EXPANSION} characters")


def _raw_entry(entry: Mapping[str, Any], *, source: str, source_title: Optional[str],
               language: Optional[str], fetched_at: str) -> RawEntry:
    content = entry.get("content") or []
    body = _text(content[0].get("value")) if content else None
    authors = tuple(
        name for name in (_text(author.get("name")) for author in entry.get("authors") or [])
        if name
    )
    if not authors and _text(entry.get("author")):
        authors = (_text(entry.get("author")),)
    tags = tuple(term for term in (_text(tag.get("term")) for tag in entry.get("tags") or []) if term)
    entry_language = _text((entry.get("title_detail") or {}).get("language")) \
        or _text((content[0] if content else {}).get("language"))
    return RawEntry(
        source=source,
        source_title=source_title,
        url=_text(entry.get("link")),
        title=_text(entry.get("title")),
        summary=_text(entry.get("summary")),
        body=body,
        authors=tuple(dict.fromkeys(authors)),
        tags=tuple(dict.fromkeys(tags)),
        published=_published(entry),
        language_hint=entry_language or language,
        fetched_at=fetched_at,
    )


def _published(entry: Mapping[str, Any]) -> Optional[str]:
    """ISO-8601 UTC when feedparser parsed the date, else the raw string.

    The first of published/updated/created that the entry carries is used,
    so an unparsable publication date is kept (downstream may parse it)
    rather than replaced by a modification date.
    """
    for key in ("published", "updated", "created"):
        raw = _text(entry.get(key))
        if not raw:
            continue
        parsed = entry.get(f"{key}_parsed")
        if isinstance(parsed, time.struct_time):
            try:
                moment = dt.datetime.fromtimestamp(calendar.timegm(parsed), tz=dt.timezone.utc)
            except (OverflowError, ValueError, OSError):
                return raw
            return moment.isoformat().replace("+00:00", "Z")
        return raw
    return None


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _bozo_reason(result: Mapping[str, Any]) -> Optional[str]:
    if not result.get("bozo"):
        return None
    exception = result.get("bozo_exception")
    if exception is None:
        return "ill-formed"
    return f"{type(exception).__name__}: {exception}"[:300]
