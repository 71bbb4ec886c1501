"""JSON Lines and JSON: one article per line (``.jsonl``), or one object or a
list of them (``.json``).

Fields (first present wins): ``title``/``headline``;
``body``/``text``/``content``; ``summary``/``description``; ``url``/``link``;
``published``/``published_at``/``date``; ``authors`` (list) or ``author``;
``tags``; ``language``/``lang``; ``source``.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from newsbeam.formats.text import DEFAULT_ENCODING, decode_text
from newsbeam.records import RawEntry

EXTENSIONS = (".jsonl", ".json")


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


def text_of(record: dict[str, Any], *names: str) -> Optional[str]:
    """The first present field of ``names``, which must be a string (a number or list there is bad input)."""
    value = first_of(record, *names)
    if value is not None and not isinstance(value, str):
        name = next(name for name in names if record.get(name) is value)
        raise ValueError(f"field {name!r} is a JSON {_json_type(value)}, expected a string")
    return value


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object", str: "string",
            type(None): "null"}.get(type(value), "value")


def entry_from_json(record: Any, *, path: str, fetched_at: str) -> RawEntry:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got a JSON {_json_type(record)}")
    published = first_of(record, "published", "published_at", "date")
    return RawEntry(
        source=str(first_of(record, "source") or path),
        source_title=text_of(record, "source_title"),
        url=text_of(record, "url", "link"),
        title=text_of(record, "title", "headline"),
        summary=text_of(record, "summary", "description"),
        body=text_of(record, "body", "text", "content"),
        authors=_as_strings(first_of(record, "authors", "author")),
        tags=_as_strings(first_of(record, "tags", "categories")),
        published=str(published) if published is not None else None,
        language_hint=text_of(record, "language", "lang"),
        fetched_at=fetched_at,
    )


def entries_from_jsonl(data: bytes, *, path: str, fetched_at: str,
                       encoding: str = DEFAULT_ENCODING) -> Iterator[RawEntry]:
    # "\n" only: str.splitlines() also breaks at U+2028/U+0085, which JSON allows inside strings.
    for number, line in enumerate(decode_text(data, encoding).split("\n"), start=1):
        if line.strip():
            try:
                yield entry_from_json(json.loads(line), path=path, fetched_at=fetched_at)
            except ValueError as error:
                raise ValueError(f"line {number}: {error}") from error


def entries_from_json(data: bytes, *, path: str, fetched_at: str,
                      encoding: str = DEFAULT_ENCODING) -> Iterator[RawEntry]:
    document = json.loads(decode_text(data, encoding))
    if not isinstance(document, list):
        yield entry_from_json(document, path=path, fetched_at=fetched_at)
        return
    for number, record in enumerate(document, start=1):
        try:
            yield entry_from_json(record, path=path, fetched_at=fetched_at)
        except ValueError as error:
            raise ValueError(f"item {number}: {error}") from error
