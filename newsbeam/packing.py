"""Records as compressed bytes while they wait in a shuffle.

A local runner holds every GroupByKey in memory, as decoded Python objects,
until the next stage has read it all; Dataflow bills the bytes it shuffles.
News text compresses about threefold, so the records that cross a shuffle do
so packed, and are unpacked once, by the stage that reads them.

A packed record is its fields in order as JSON, zlib-compressed: no pickle
(nothing in newsbeam unpickles), and lone surrogates from broken feeds
survive the round trip. Bytes (an article's int8 embedding) travel as
``{"b64": ...}``: records hold no other mappings, so the tag is unambiguous.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from typing import Any, Type, TypeVar

COMPRESSION_LEVEL = 1  # the fastest level: most of the size win at a fraction of the time

Record = TypeVar("Record")


def pack(record: Any) -> bytes:
    """A dataclass record (fields of str, numbers, None and tuples) as bytes."""
    # not dataclasses.astuple: it deep-copies every value only for json to read it
    fields = [getattr(record, field.name) for field in dataclasses.fields(record)]
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=_bytes_as_json)
    return zlib.compress(text.encode("utf-8", "surrogatepass"), COMPRESSION_LEVEL)


def unpack(packed: bytes, record_type: Type[Record]) -> Record:
    fields = json.loads(zlib.decompress(packed).decode("utf-8", "surrogatepass"))
    return record_type(*(_as_tuples(value) for value in fields))


def _bytes_as_json(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {BYTES_TAG: base64.b64encode(value).decode("ascii")}
    raise TypeError(f"a packed record holds no {type(value).__name__}")


BYTES_TAG = "b64"


def _as_tuples(value: Any) -> Any:
    """JSON has lists only; newsbeam's records hold tuples (and bytes, tagged)."""
    if isinstance(value, list):
        return tuple(_as_tuples(item) for item in value)
    if isinstance(value, dict) and set(value) == {BYTES_TAG}:
        return base64.b64decode(value[BYTES_TAG])
    return value
