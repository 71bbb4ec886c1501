"""Normalisation: text, dates, canonical URLs and ids (examples + properties)."""
from __future__ import annotations

import datetime as dt
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsbeam.normalise import canonical_url, clean_text, html_to_text, normalise_entry, parse_timestamp
from newsbeam.records import RawEntry

SEED = Path(__file__).resolve().parents[1] / "newsbeam" / "seeds" / "000_adb80237c80a1eea.txt"
NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_html_keeps_paragraphs_and_drops_scripts_styles_comments():
    html = (
        "<style>p{color:red}</style><p>First <b>bold</b> line.</p><!-- hidden -->"
        "<script>alert('x')</script><div>Second&nbsp;para &amp; more</div><ul><li>one</li><li>two</li></ul>"
    )
    assert html_to_text(html) == "First bold line.\n\nSecond para & more\n\none\n\ntwo"


def test_plain_text_with_angle_brackets_is_not_treated_as_html():
    assert html_to_text("3 < 4 and 5 > 2") == "3 < 4 and 5 > 2"


def test_clean_text_removes_invisible_and_control_characters():
    dirty = "a\u200bb\u202ec\x07d\ufeff  \t e\r\n\n\n\nf"
    assert clean_text(dirty) == "abc d e\n\nf"


def test_persian_zero_width_non_joiner_inside_a_word_is_kept():
    word = "می\u200cخواهم"  # ZWNJ is spelling in Persian
    assert clean_text(f" {word} \u200c") == word


def test_arabic_seed_comes_through_byte_exact():
    text = SEED.read_text(encoding="utf-8")
    headline = text.split("\n", 1)[0]
    entry = RawEntry(source=str(SEED), title=headline, body=text.split("\n", 1)[1], body_is_html=False,
                     fetched_at=NOW.isoformat())
    article = normalise_entry(entry, now=NOW)
    assert article.title == headline.strip()
    expected_paragraphs = [line.strip() for line in text.split("\n", 1)[1].split("\n") if line.strip()]
    assert [p for p in article.body.split("\n") if p] == expected_paragraphs


def test_nfc_composes_decomposed_characters():
    assert clean_text("e\u0301te\u0301") == "\u00e9t\u00e9"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Mon, 06 Sep 2021 10:00:00 +0300", "2021-09-06T07:00:00.000000+00:00"),
        ("2021-09-06T10:00:00Z", "2021-09-06T10:00:00.000000+00:00"),
        ("2021-09-06 10:00", "2021-09-06T10:00:00.000000+00:00"),  # naive means UTC
        ("2999-01-01T00:00:00Z", None),  # far future
        ("1899-12-31T00:00:00Z", None),  # before 1900
        ("not a date at all", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp(raw, expected):
    assert parse_timestamp(raw, now=NOW) == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("HTTPS://News.Example.COM:443/a/B?utm_source=x&b=2&a=1#frag", "https://news.example.com/a/B?a=1&b=2"),
        ("http://example.com:8080/x?fbclid=abc", "http://example.com:8080/x"),
        ("https://user:pw@example.com/story", "https://example.com/story"),
        ("https://example.com", "https://example.com/"),
        ("not a url", None),
        ("", None),
    ],
)
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_article_id_is_stable_across_tracking_variants_and_content_hash_follows_text():
    base = dict(source="feed", title="Same story", summary="<p>Body text here.</p>", fetched_at=NOW.isoformat())
    one = normalise_entry(RawEntry(url="https://ex.com/s?utm_campaign=a", **base), now=NOW)
    two = normalise_entry(RawEntry(url="https://EX.com/s#comments", **base), now=NOW)
    three = normalise_entry(RawEntry(url="https://other.com/copy", **base), now=NOW)
    assert one.article_id == two.article_id != three.article_id
    assert one.content_hash == three.content_hash


def test_file_without_url_gets_id_from_source_and_content():
    a = normalise_entry(RawEntry(source="a.txt", title="T", body="B", body_is_html=False), now=NOW)
    b = normalise_entry(RawEntry(source="b.txt", title="T", body="B", body_is_html=False), now=NOW)
    assert a.url is None and a.article_id != b.article_id


def test_entry_without_any_text_is_an_error():
    with pytest.raises(ValueError, match="no title, summary or body"):
        normalise_entry(RawEntry(source="feed", url="https://ex.com/a", title="  ", summary="<p></p>"))


def test_missing_date_falls_back_to_fetched_date_for_partition():
    article = normalise_entry(RawEntry(source="f", title="t", fetched_at="2024-05-02T03:04:05Z"), now=NOW)
    assert article.published_at is None and article.partition_date == "2024-05-02"


# ---- properties -------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.text())
def test_clean_text_is_idempotent_nfc_and_free_of_controls(text):
    once = clean_text(text)
    assert clean_text(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert not any(unicodedata.category(ch) == "Cc" and ch != "\n" for ch in once)
    assert "\u200b" not in once and "\n\n\n" not in once and once == once.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Zs", "Zl", "Zp", "Cs")), min_size=1))
def test_visible_words_survive_cleaning_unchanged(word):
    nfc = unicodedata.normalize("NFC", word)
    assert clean_text(f"  {word}\u200b  ") == nfc


@settings(max_examples=200, deadline=None)
@given(
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}\.(com|org|net)", fullmatch=True),
    path=st.from_regex(r"(/[A-Za-z0-9_-]{1,10}){0,3}", fullmatch=True),
    params=st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True), max_size=4),
)
def test_canonical_url_is_idempotent_and_drops_tracking(host, path, params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    url = f"HTTPS://{host.upper()}{path}?{query}&utm_source=feed#top"
    canon = canonical_url(url)
    assert canonical_url(canon) == canon
    assert "utm_" not in canon and "#" not in canon
    assert canon.startswith(f"https://{host}")


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2100, 1, 1), timezones=st.timezones()))
def test_parse_timestamp_is_utc_and_rejects_only_absurd_dates(moment):
    try:
        parsed = parse_timestamp(moment.isoformat(), now=NOW)
    except OverflowError:  # pragma: no cover - hypothesis edge of tz database
        return
    utc = moment.astimezone(dt.timezone.utc)
    if utc > NOW + dt.timedelta(days=2) or utc.year < 1900:
        assert parsed is None
    else:
        assert parsed is not None and parsed.endswith("+00:00")
        assert dt.datetime.fromisoformat(parsed) == utc.replace(microsecond=utc.microsecond)


# ---- IPv6 hosts keep their brackets ------------------------------------------

@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://[::1]/a", "http://[::1]/a"),
        ("http://[::1]:8080/a?utm_source=x", "http://[::1]:8080/a"),
        ("https://[2001:DB8::1]:443/x", "https://[2001:db8::1]/x"),
        ("HTTP://user:pw@[FE80::A]:80/p?b=2&a=1#top", "http://[fe80::a]/p?a=1&b=2"),
    ],
)
def test_canonical_url_keeps_ipv6_brackets(url, expected):
    assert canonical_url(url) == expected


HOSTS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}\.(com|org|net)", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.ip_addresses(v=6).map(lambda address: f"[{address.exploded}]"),  # 0000:...: spelled out
)


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=HOSTS,
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    path=st.from_regex(r"(/[A-Za-z0-9_.-]{1,10}){0,3}", fullmatch=True),
    params=st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True), max_size=3),
)
def test_canonical_url_is_a_fixed_point_and_keeps_its_host(scheme, host, port, path, params):
    from urllib.parse import urlsplit

    netloc = f"{host.upper()}:{port}" if port is not None else host.upper()
    query = "&".join(f"{k}={v}" for k, v in params.items())
    canon = canonical_url(f"{scheme}://{netloc}{path}?{query}&utm_medium=x#frag")
    assert canon is not None and canonical_url(canon) == canon
    parsed = urlsplit(canon)
    assert parsed.hostname == host.strip("[]").lower()
    assert parsed.port == (None if port == {"http": 80, "https": 443}[scheme.lower()] else port)
    assert "utm_" not in canon and "#" not in canon


def test_redact_text_masks_credentials_in_urls_and_secret_values_in_error_text():
    from newsbeam.normalise import redact_text

    text = ("redirect from http://user:secret@127.0.0.1:8080/loop.xml?token=abc123 back to "
            "https://h.example/x?api_key=abc123&lang=en (Max retries exceeded with url: /feed.xml?sig=abc123&x=1)")
    redacted = redact_text(text)
    assert "secret" not in redacted and "abc123" not in redacted
    assert redacted == ("redirect from http://127.0.0.1:8080/loop.xml?token=REDACTED back to "
                        "https://h.example/x?api_key=REDACTED&lang=en (Max retries exceeded with url: "
                        "/feed.xml?sig=REDACTED&x=1)")
    assert redact_text("server answered 404") == "server answered 404"


@pytest.mark.parametrize("field, value", [("title", 5), ("body", ["a", "b"]), ("summary", {"x": 1})])
def test_an_entry_with_a_non_text_field_becomes_a_dead_letter_not_a_crash(field, value):
    """A source that slips a number or a list into a text field: the error path itself used to raise."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that, equal_to

    from newsbeam.transforms.normalise import DEAD_LETTER, NormaliseEntries

    good = RawEntry(source="s", title="A good headline", body="Some body text.", url="https://x.example/1")
    bad = RawEntry(**{"source": "s", "title": "t", "body": "b", field: value})
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        results = pipeline | beam.Create([good, bad]) | NormaliseEntries()
        assert_that(results.articles | beam.Map(lambda article: article.title), equal_to(["A good headline"]),
                    label="articles")
        assert_that(results[DEAD_LETTER] | beam.Map(lambda letter: (letter.stage, letter.reason.split(":")[0],
                                                                      bool(letter.excerpt))),
                    equal_to([("normalise", "TypeError", True)]), label="letters")
