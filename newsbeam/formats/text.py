"""Plain text: the seed article's format, first line the headline, the rest the body."""
from __future__ import annotations

from newsbeam.records import RawEntry

EXTENSIONS = (".txt",)


def decode_utf8(data: bytes) -> str:
    """The file's text; a file that is not UTF-8 fails with a reason that says so and where.

    No guessing: on short texts detectors mistake one legacy code page for another
    (cp1252 French read as cp1250), which would store wrong letters silently."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"not UTF-8 text (line {line}: byte 0x{data[error.start]:02x} at offset {error.start}): "
                         "save the file as UTF-8") from None


def entries_from_text(data: bytes, *, path: str, fetched_at: str) -> RawEntry:
    """The seed article's format: first line the headline, the rest the body."""
    text = decode_utf8(data)
    headline, _, body = text.partition("\n")
    return RawEntry(source=path, title=headline.strip(), body=body, fetched_at=fetched_at, body_is_html=False)
