"""parse_feed: feed bytes -> RawEntry, field by field."""
from __future__ import annotations

import pytest

from newsbeam.formats.feeds import FeedParseError, ParsedFeed, parse_feed
from newsbeam.records import RawEntry

FETCHED_AT = "2024-05-02T08:00:00Z"


def parse(data: bytes, **kwargs) -> ParsedFeed:
    kwargs.setdefault("source", "https://example.com/feed.xml")
    kwargs.setdefault("fetched_at", FETCHED_AT)
    return parse_feed(data, **kwargs)


RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel>
  <title>Example News</title>
  <link>https://example.com/</link>
  <language>en-gb</language>
  <item>
    <title>Budget passes &amp; markets rise</title>
    <link>https://example.com/a?utm_source=rss</link>
    <description>&lt;p&gt;Short summary&lt;/p&gt;</description>
    <content:encoded><![CDATA[<p>The <b>full</b> body.</p>]]></content:encoded>
    <dc:creator>Ana Lima</dc:creator>
    <category>Politics</category>
    <category>Economy</category>
    <pubDate>Wed, 01 May 2024 12:30:00 +0200</pubDate>
  </item>
  <item>
    <title>Undated item</title>
    <pubDate>sometime last week</pubDate>
  </item>
  <item>
    <description>No title, no link, no date</description>
  </item>
</channel>
</rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr">
  <title>Le Journal</title>
  <id>urn:uuid:feed</id>
  <updated>2024-05-01T10:00:00Z</updated>
  <entry>
    <title>Élection : résultats</title>
    <link rel="alternate" href="https://example.fr/resultats"/>
    <id>urn:uuid:1</id>
    <updated>2024-05-01T09:15:00+01:00</updated>
    <author><name>Marie Curie</name></author>
    <author><name>Paul Dirac</name></author>
    <category term="politique"/>
    <summary>Les résultats.</summary>
    <content type="html">&lt;p&gt;Tout le détail.&lt;/p&gt;</content>
  </entry>
  <entry xml:lang="de">
    <title>Wahl: Ergebnisse</title>
    <id>urn:uuid:2</id>
    <updated>2024-05-01T09:00:00Z</updated>
  </entry>
</feed>""".encode("utf-8")


def test_rss_item_maps_every_field():
    feed = parse(RSS)

    assert feed.title == "Example News"
    assert feed.language == "en-gb"
    assert feed.bozo_reason is None
    assert feed.version == "rss20"
    assert feed.entries[0] == RawEntry(
        source="https://example.com/feed.xml",
        source_title="Example News",
        url="https://example.com/a?utm_source=rss",
        title="Budget passes & markets rise",
        summary="<p>Short summary</p>",
        body="<p>The <b>full</b> body.</p>",
        authors=("Ana Lima",),
        tags=("Politics", "Economy"),
        published="2024-05-01T10:30:00Z",
        language_hint="en-gb",
        fetched_at=FETCHED_AT,
    )


def test_unparsable_date_is_kept_raw():
    assert parse(RSS).entries[1].published == "sometime last week"


def test_entry_without_title_link_or_date_is_still_an_entry():
    entry = parse(RSS).entries[2]

    assert (entry.title, entry.url, entry.published) == (None, None, None)
    assert entry.summary == "No title, no link, no date"
    assert entry.source == "https://example.com/feed.xml"


def test_atom_entry_maps_authors_tags_content_and_languages():
    feed = parse(ATOM, language_hint="en")
    first, second = feed.entries

    assert feed.title == "Le Journal"
    assert first.title == "Élection : résultats"
    assert first.url == "https://example.fr/resultats"
    assert first.authors == ("Marie Curie", "Paul Dirac")
    assert first.tags == ("politique",)
    assert first.summary == "Les résultats."
    assert first.body == "<p>Tout le détail.</p>"
    assert first.published == "2024-05-01T08:15:00Z"
    assert first.language_hint == "fr"
    assert second.language_hint == "de"


def test_language_hint_used_only_when_feed_declares_none():
    undeclared = b'<rss version="2.0"><channel><title>t</title><item><title>x</title></item></channel></rss>'

    assert parse(undeclared, language_hint="sw").entries[0].language_hint == "sw"
    assert parse(RSS, language_hint="sw").entries[0].language_hint == "en-gb"


def test_well_formed_feed_with_no_items_is_empty_not_an_error():
    feed = parse(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>')

    assert feed.entries == []
    assert feed.title == "Quiet"
    assert feed.bozo_reason is None


def test_malformed_xml_still_yields_items_and_says_why():
    broken = b"""<rss version="2.0"><channel><title>Broken & co</title>
      <item><title>First</title><link>https://example.com/1</link></item>
      <item><title>Second <b>unclosed</title></item>"""

    feed = parse(broken)

    assert [entry.title for entry in feed.entries] == ["First", "Second <b>unclosed"]
    assert feed.bozo_reason is not None


def test_windows_1251_feed_decodes_to_cyrillic():
    text = ('<?xml version="1.0" encoding="windows-1251"?><rss version="2.0"><channel>'
            '<title>Новости</title><item><title>Выборы в Москве</title></item></channel></rss>')

    feed = parse(text.encode("windows-1251"))

    assert feed.title == "Новости"
    assert feed.entries[0].title == "Выборы в Москве"


def test_iso_8859_1_feed_decodes_accents():
    text = ('<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel>'
            '<title>Notícias</title><item><title>Eleição em São Paulo</title></item></channel></rss>')

    assert parse(text.encode("iso-8859-1")).entries[0].title == "Eleição em São Paulo"


def test_http_charset_overrides_a_missing_declaration():
    text = '<rss version="2.0"><channel><item><title>Привет мир</title></item></channel></rss>'

    feed = parse(text.encode("koi8-r"), response_headers={"Content-Type": "application/xml; charset=KOI8-R"})

    assert feed.entries[0].title == "Привет мир"


def test_wrong_declared_encoding_falls_back_without_crashing():
    text = '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><item><title>Café déjà vu</title></item></channel></rss>'

    feed = parse(text.encode("windows-1252"))

    assert feed.entries[0].title == "Café déjà vu"
    assert feed.bozo_reason is not None


def test_utf16_feed_with_bom_decodes():
    text = '<?xml version="1.0" encoding="utf-16"?><rss version="2.0"><channel><item><title>日本語のニュース</title></item></channel></rss>'

    assert parse(text.encode("utf-16")).entries[0].title == "日本語のニュース"


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"  \n\t ", "empty"),
    (bytes(range(256)) * 4, "not_a_feed"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "not_a_feed"),
    (b'{"version": "https://jsonfeed.org/version/1", "items": []}', "not_a_feed"),
    (b"<?xml version='1.0'?><config><option name='a'/></config>", "not_a_feed"),
    (b"<!DOCTYPE html>\n<html><head><title>Home</title></head><body><p>Hi</p></body></html>", "html"),
    (b"<html lang='en'><body><a href='/feed.xml'>RSS</a></body></html>", "html"),
])
def test_non_feed_bytes_raise_feed_parse_error_with_reason(data, reason):
    with pytest.raises(FeedParseError) as caught:
        parse(data)

    assert caught.value.reason == reason
