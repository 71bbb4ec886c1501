"""Plain text: the seed article's format, first line the headline, the rest the body."""
from __future__ import annotations

import codecs

from newsbeam.records import RawEntry

EXTENSIONS = (".txt",)
DEFAULT_ENCODING = "utf-8"


def text_encoding(name: str) -> str:
    """``name`` as Python's codec name, if it is a text encoding (``windows-1256``, ``cp1252``,
    ``latin-1``, ``shift_jis``); else ValueError. Checked when the run starts, not per file."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (Python codec names: utf-8, windows-1256, cp1252, "
                         "iso-8859-1, shift_jis, ...)") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, rot13: codecs, but not of text
        raise ValueError(f"{name!r} is not a text encoding")
    return info.name


def decode_text(data: bytes, encoding: str = DEFAULT_ENCODING) -> str:
    """The file's text in ``encoding``; one that does not decode fails with a reason that says so and where.

    A UTF-8 byte-order mark wins over ``encoding``: it names the file's encoding
    for certain, and a folder of legacy files often has a few saved again as UTF-8.
    No guessing otherwise: on short texts detectors mistake one legacy code page for
    another (cp1252 French read as cp1250), which would store wrong letters silently."""
    if data.startswith(codecs.BOM_UTF8):
        encoding = DEFAULT_ENCODING
    name = text_encoding(encoding)
    try:
        return data.decode("utf-8-sig" if name == "utf-8" else name)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        advice = ("save the file as UTF-8, or name its encoding with --input_encoding" if name == "utf-8"
                  else "is --input_encoding right for it?")
        shown = "UTF-8" if name == "utf-8" else name
        raise ValueError(f"not {shown} text (line {line}: byte 0x{data[error.start]:02x} at offset {error.start}): "
                         f"{advice}") from None


def entries_from_text(data: bytes, *, path: str, fetched_at: str, encoding: str = DEFAULT_ENCODING) -> RawEntry:
    """The seed article's format: first line the headline, the rest the body."""
    text = decode_text(data, encoding)
    headline, _, body = text.partition("\n")
    return RawEntry(source=path, title=headline.strip(), body=body, fetched_at=fetched_at, body_is_html=False)
