"""Hostile XML -> what newsbeam does.

Each test is a row: the name reads "attack -> outcome", the docstring states
the behaviour. Findings behind these tests (feedparser 6.0.14, expat 2.5):
external entities are never read (feedparser switches off external general
entities and the loose parser only expands literal "safe" entities); expat
stops classic billion-laughs nesting on its own; but feedparser's loose
parser expands a literal entity at every reference without limit (a 1 MB
document became a 1 GB title, 27 s, 2.8 GB RSS), so parse_feed refuses any
document whose declared entities would expand past MAX_ENTITY_EXPANSION.
"""
from __future__ import annotations

import dataclasses
import time
import tracemalloc
from pathlib import Path

import pytest

from newsbeam.formats.feeds import MAX_ENTITY_EXPANSION, FeedParseError, ParsedFeed, parse_feed
from tests.support.httpserver import Response

FETCHED_AT = "2024-05-02T08:00:00Z"


def parse(data: bytes) -> ParsedFeed:
    return parse_feed(data, source="hostile.xml", fetched_at=FETCHED_AT)


def all_text(feed: ParsedFeed) -> str:
    """Every string the parse produced, entries and feed-level fields."""
    parts = [feed.title or "", feed.language or "", feed.bozo_reason or ""]
    for entry in feed.entries:
        parts.extend(str(value) for value in dataclasses.asdict(entry).values())
    return "\n".join(parts)


def rss_with_doctype(doctype: str, entity: str) -> bytes:
    return (f'<?xml version="1.0"?>\n{doctype}\n<rss version="2.0"><channel><title>T &{entity};</title>'
            f'<item><title>I &{entity};</title><description>D &{entity};</description></item>'
            f'</channel></rss>').encode()


@pytest.fixture
def secret_file(tmp_path: Path) -> tuple[Path, str]:
    marker = "NEWSBEAM-SECRET-7f3a9c"
    path = tmp_path / "secret.txt"
    path.write_text(marker)
    return path, marker


XXE_LAYOUTS = {
    "multiline": '<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{uri}">\n]>',
    "one_line": '<!DOCTYPE rss [<!ENTITY xxe SYSTEM "{uri}">]>',
    "indented_public": '<!DOCTYPE rss [\n   <!ENTITY xxe PUBLIC "-//X//Y" "{uri}" >\n]>',
}


@pytest.mark.parametrize("layout", XXE_LAYOUTS)
def test_external_entity_to_local_file__never_read(layout, secret_file):
    """<!ENTITY xxe SYSTEM "file:///..."> in any layout: the file is not read; the feed still parses."""
    path, marker = secret_file
    data = rss_with_doctype(XXE_LAYOUTS[layout].format(uri=path.as_uri()), "xxe")

    feed = parse(data)

    assert marker not in all_text(feed)
    assert len(feed.entries) == 1


def test_external_entity_to_etc_passwd__never_read():
    """The classic payload: nothing of /etc/passwd appears in any field."""
    passwd = Path("/etc/passwd")
    if not passwd.exists():
        pytest.skip("no /etc/passwd on this system")
    first_line = passwd.read_text().splitlines()[0]
    data = rss_with_doctype('<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "xxe")

    assert first_line not in all_text(parse(data))


def test_parameter_entity_to_local_file__never_read(secret_file):
    """<!ENTITY % p SYSTEM "file:///..."> %p; : external DTD content is not loaded."""
    path, marker = secret_file
    doctype = f'<!DOCTYPE rss [\n<!ENTITY % p SYSTEM "{path.as_uri()}">\n%p;\n]>'
    data = (f'<?xml version="1.0"?>\n{doctype}\n<rss version="2.0"><channel><title>T</title>'
            f'<item><title>I</title></item></channel></rss>').encode()

    assert marker not in all_text(parse(data))


def test_external_entity_over_http__no_request_made(http_server):
    """An entity (or external DTD) pointing at a URL: the parser makes no network request."""
    url = http_server.route("/evil.dtd", Response(200, b"<!ENTITY leak 'LEAKED-VALUE'>"))
    http_server.route("/secret", Response(200, b"LEAKED-VALUE"))
    data = (f'<?xml version="1.0"?>\n<!DOCTYPE rss SYSTEM "{url}" [\n'
            f'<!ENTITY xxe SYSTEM "{http_server.url("/secret")}">\n]>\n'
            f'<rss version="2.0"><channel><title>&xxe;&leak;</title><item><title>x</title></item>'
            f'</channel></rss>').encode()

    feed = parse(data)

    assert "LEAKED-VALUE" not in all_text(feed)
    assert http_server.requests == []


LAUGHS = "".join(
    [' <!ENTITY lol0 "lol">\n']
    + [f' <!ENTITY lol{level} "{("&lol%d;" % (level - 1)) * 10}">\n' for level in range(1, 10)]
)


def refusal_of(data: bytes):
    """Parse ``data`` expecting a FeedParseError: (the error, seconds taken, peak traced bytes)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(FeedParseError) as caught:
            parse(data)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught, elapsed, peak


@pytest.mark.parametrize("doctype", [
    f"<!DOCTYPE rss [\n{LAUGHS}]>",
    f"<!DOCTYPE rss [{LAUGHS.replace(chr(10), '')}]>",
], ids=["multiline", "one_line"])
def test_billion_laughs__refused_fast_in_bounded_memory(doctype):
    """Nested entities expanding to ~3 GB: FeedParseError('entity_expansion') in well under a second."""
    data = rss_with_doctype(doctype, "lol9")
    caught, elapsed, peak = refusal_of(data)

    assert caught.value.reason == "entity_expansion"
    assert elapsed < 1.0
    assert peak < 10_000_000


def test_quadratic_blowup__refused_fast_in_bounded_memory():
    """One 100 kB literal entity referenced 10,000 times (1 GB if expanded): 'entity_expansion', fast.

    feedparser alone expands this in its loose parser (27 s, 2.8 GB measured).
    """
    data = (b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + b"x" * 100_000 + b'">\n]>\n'
            b'<rss version="2.0"><channel><item><title>' + b"&a;" * 10_000
            + b"</title></item></channel></rss>")
    caught, elapsed, peak = refusal_of(data)

    assert caught.value.reason == "entity_expansion"
    assert elapsed < 1.0
    assert peak < 20 * len(data)


def test_entity_bomb_in_utf16__still_refused():
    """The same bomb encoded as UTF-16 (no ASCII bytes to match): still 'entity_expansion'."""
    data = rss_with_doctype(f"<!DOCTYPE rss [\n{LAUGHS}]>", "lol9").decode().replace(
        '<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>').encode("utf-16")

    with pytest.raises(FeedParseError, match="entity_expansion"):
        parse(data)


def test_entity_cycle__refused():
    """Entities that reference each other (a loop): refused rather than followed."""
    data = rss_with_doctype('<!DOCTYPE rss [\n<!ENTITY a "&b;">\n<!ENTITY b "&a;">\n]>', "a")

    with pytest.raises(FeedParseError, match="entity_expansion"):
        parse(data)


def test_small_literal_entity__expanded_as_feedparser_does():
    """An honest entity declaration (a short string used a few times) keeps working."""
    data = rss_with_doctype('<!DOCTYPE rss [\n  <!ENTITY site "Example News">\n]>', "site")

    feed = parse(data)

    assert feed.title == "T Example News"
    assert feed.entries[0].title == "I Example News"


def test_expansion_just_under_the_limit__accepted():
    """The limit is a size, not a ban: expansion up to MAX_ENTITY_EXPANSION parses."""
    value_size = 1000
    references = MAX_ENTITY_EXPANSION // value_size - 10
    data = (b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + b"y" * value_size + b'">\n]>\n'
            b'<rss version="2.0"><channel><item><title>' + b"&a;" * references
            + b"</title></item></channel></rss>")

    assert len(parse(data).entries[0].title) == references * value_size


def test_deeply_nested_elements__no_recursion_crash():
    """100,000 nested elements: a result or a FeedParseError, never RecursionError."""
    data = (b'<rss version="2.0"><channel><item><title>deep</title>' + b"<x>" * 100_000
            + b"</x>" * 100_000 + b"</item></channel></rss>")

    feed = parse(data)

    assert [entry.title for entry in feed.entries] == ["deep"]


def test_body_that_is_a_local_file_path__not_opened(tmp_path):
    """A response body that is just a path to a feed on disk (feedparser.parse(bytes) would open
    and parse that file): FeedParseError('not_a_feed'), the file unread."""
    local_feed = tmp_path / "local.xml"
    local_feed.write_text('<rss version="2.0"><channel><title>LOCAL-FILE-CONTENT</title>'
                          '<item><title>x</title></item></channel></rss>')

    with pytest.raises(FeedParseError) as caught:
        parse(str(local_feed).encode())

    assert caught.value.reason == "not_a_feed"


def test_body_naming_dev_zero__returns_at_once():
    """b"/dev/zero" as a body: an immediate FeedParseError, not an endless read."""
    started = time.monotonic()

    with pytest.raises(FeedParseError, match="not_a_feed"):
        parse(b"/dev/zero")

    assert time.monotonic() - started < 1.0
