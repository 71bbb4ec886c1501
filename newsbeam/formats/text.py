"""Plain text: the seed article's format, first line the headline, the rest the body."""
from __future__ import annotations

from newsbeam.records import RawEntry

EXTENSIONS = (".txt",)


def entries_from_text(data: bytes, *, path: str, fetched_at: str) -> RawEntry:
    """The seed article's format: first line the headline, the rest the body."""
    text = data.decode("utf-8-sig")
    headline, _, body = text.partition("\n")
    return RawEntry(source=path, title=headline.strip(), body=body, fetched_at=fetched_at, body_is_html=False)
