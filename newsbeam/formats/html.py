"""HTML: a saved article page (``--inputs page.html``) or a fetched one
(``--full_text``), read by one trafilatura call with one set of options, so
the same page reads the same from both."""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from newsbeam.formats.names import format_name
from newsbeam.normalise import clean_text, parse_timestamp
from newsbeam.records import RawEntry

EXTENSIONS = (".html", ".htm")
# trafilatura imports jusText, and jusText does `from lxml.html.clean import Cleaner`. Since
# lxml 5.2 that module is a shim that re-exports the separate lxml_html_clean package and
# raises ImportError without it; jusText asks for it only through lxml's "html_clean" extra,
# which not every installer honours (an older pip skips it). Checking the module jusText imports (not just the package) also
# accepts an older lxml that still has the cleaner built in.
CLEANER_MODULE = "lxml.html.clean"
CLEANER_PACKAGE = "lxml_html_clean"


# trafilatura's options for news pages. favor_precision drops borderline
# blocks: in the fixture pages it is what removes an inline ad inside the
# Arabic article body, at the cost of sometimes losing a short real paragraph.
EXTRACTION_OPTIONS = dict(
    with_metadata=True,
    include_comments=False,
    include_tables=True,
    include_images=False,
    include_links=False,
    favor_precision=True,
    date_extraction_params={"extensive_search": True, "original_date": True,
                            "outputformat": "%Y-%m-%dT%H:%M:%S%z"},
)


def is_html_path(path: str) -> bool:
    return format_name(path).endswith(EXTENSIONS)


def check_extraction_dependencies() -> None:
    """Raise ValueError, in one line that says what to install, when trafilatura cannot
    extract pages here. Without this check every page of a run would fail with the same
    ImportError and the run would commit without a single page's text."""
    try:
        importlib.import_module(CLEANER_MODULE)
    except ImportError as error:
        raise ValueError(
            f"reading HTML (--full_text, .html inputs) needs the {CLEANER_PACKAGE} package, which "
            f"trafilatura imports as {CLEANER_MODULE}, and it cannot be imported: pip install {CLEANER_PACKAGE}"
        ) from error
    try:
        importlib.import_module("trafilatura")
    except ImportError as error:
        missing = error.name or str(error).splitlines()[0]
        raise ValueError(
            f"reading HTML (--full_text, .html inputs) needs trafilatura, which cannot be imported "
            f"({missing} is missing): pip install --upgrade trafilatura"
        ) from error


@dataclass(frozen=True)
class PageContent:
    """What an article page holds besides its boilerplate."""

    text: str  # paragraphs separated by one blank line, title line removed
    title: Optional[str] = None
    authors: tuple[str, ...] = ()
    published_at: Optional[str] = None  # ISO-8601 UTC
    url: Optional[str] = None
    tags: tuple[str, ...] = ()
    language: Optional[str] = None


def extract_page(html: bytes, url: Optional[str] = None) -> Optional[PageContent]:
    """Main text, title, authors and date of an article page; None when it has no main text.

    trafilatura decodes the bytes itself (meta charset, then detection).
    """
    import trafilatura

    document = trafilatura.bare_extraction(html, url=url, **EXTRACTION_OPTIONS)
    if document is None or not document.text:
        return None
    title = clean_text(document.title) or None
    paragraphs = [clean_text(line) for line in document.text.split("\n")]
    paragraphs = [line for line in paragraphs if line]
    if paragraphs and title and paragraphs[0] == title:
        paragraphs = paragraphs[1:]
    text = "\n\n".join(paragraphs)
    if not text:
        return None
    authors = tuple(name for name in (clean_text(part) for part in (document.author or "").split(";")) if name)
    tags = tuple(document.categories or ()) + tuple(document.tags or ())
    return PageContent(text=text, title=title, authors=authors, published_at=parse_timestamp(document.date),
                       url=document.url, tags=tags, language=document.language)


# --- cost ---------------------------------------------------------------------------------------


def measure_extraction(pages: Iterable[bytes], repeat: int = 3) -> dict[str, float]:
    """Seconds trafilatura spends per page (best of ``repeat`` passes), for benchmarks."""
    pages = list(pages)
    if not pages:
        raise ValueError("measure_extraction needs at least one page")
    extract_page(pages[0])  # first call imports and warms trafilatura
    best = float("inf")
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        for html in pages:
            extract_page(html)
        best = min(best, time.perf_counter() - started)
    return {"pages": float(len(pages)), "seconds": best, "ms_per_page": 1000 * best / len(pages),
            "pages_per_second": len(pages) / best if best else float("inf")}


def entry_from_html(data: bytes, *, path: str, fetched_at: str) -> RawEntry:
    """Main text of a saved article page (trafilatura drops menus, ads, comments)."""
    page = extract_page(data)
    if page is None:
        raise ValueError("no main text found in HTML page")
    return RawEntry(
        source=path,
        url=page.url,
        title=page.title,
        body=page.text,
        authors=page.authors,
        tags=page.tags,
        published=page.published_at,
        language_hint=page.language,
        fetched_at=fetched_at,
        body_is_html=False,
    )
