"""Hostile or odd article content -> what newsbeam writes.

One end-to-end run (real CLI, FnApiRunner, Parquet) reads a loopback feed and
a JSONL file that carry every case below; each test then checks one case in
the rows, the dead letters and the manifest. Sharing the run keeps the suite
fast, and shows that all these entries together do not stop the run.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.httpserver import FixtureServer, Response
from tests.support.pipelines import assert_accounting, only_manifest, read_rows, run_cli

RUN_ID = "content-run"
FIVE_MB = 5 * 1024 * 1024

# Arabic, English and Hebrew in one headline, already NFC, single spaces.
MIXED_SCRIPT_TITLE = "عاجل: Apple تطلق iPhone 16 في دبي — עדכון: השקה בתל אביב 2024"
# Zero-width space, word joiner, BOM, soft hyphen and a right-to-left override
# (the "Trojan Source" trick) hidden in a headline.
INVISIBLE_TITLE = "Zero\u200bwidth\u2060 char\u00adacters \ufeffhidden \u202ein\u202c a headline"
INVISIBLE_TITLE_CLEAN = "Zerowidth characters hidden in a headline"
# C0/C1 controls can't travel in XML 1.0, so they come in through JSON.
CONTROL_TITLE = "Control\u0000 char\u0007acters\u001b[31m and\u0085 DEL\u007f in a title"
CONTROL_TITLE_CLEAN = "Control char acters [31m and DEL in a title"
# ZWNJ inside Persian words is spelling ("می‌خواهم", "کتاب‌ها"); at a word's edge it is noise.
PERSIAN_TITLE = "\u200cمن می\u200cخواهم کتاب\u200cها را بخوانم\u200c"
PERSIAN_TITLE_CLEAN = "من می\u200cخواهم کتاب\u200cها را بخوانم"

SUMMIT_TEXT = "Leaders of twenty nations met at the harbour summit and signed a treaty on fishing rights."
SUMMIT_URLS = (
    "https://content.example.org/world/summit?utm_source=rss&utm_medium=feed",
    "HTTPS://Content.Example.org:443/world/summit?fbclid=XYZ123#comments",  # same canonical URL
    "https://mirror.example.net/syndicated/summit-copy",  # another URL, the same text
)


def feed_item(title: str = "", link: str = "", description: str = "", pub_date: str = "") -> str:
    parts = [f"<title>{title}</title>" if title else "", f"<link>{link}</link>" if link else "",
             f"<description><![CDATA[{description}]]></description>" if description else "",
             f"<pubDate>{pub_date}</pubDate>" if pub_date else ""]
    return "<item>" + "".join(parts) + "</item>"


def big_body() -> str:
    """About 5 MB of plain text in paragraphs: nothing to collapse, so it must come back whole."""
    paragraph = " ".join(f"word{n}" for n in range(150))
    paragraphs = []
    size = 0
    while size < FIVE_MB:
        paragraphs.append(f"Paragraph {len(paragraphs)}: {paragraph}.")
        size += len(paragraphs[-1]) + 2
    return "\n\n".join(paragraphs)


def content_feed() -> bytes:
    items = [
        feed_item(description="An item with neither title nor link nor date: the river rose two metres overnight."),
        feed_item(link="https://content.example.org/link-only"),  # nothing to read at all
        feed_item("Far future dated report", "https://content.example.org/future",
                  "A report whose date is a thousand years ahead of the clock.", "Fri, 01 Jan 3024 10:00:00 +0000"),
        feed_item("Victorian era dated report", "https://content.example.org/victorian",
                  "A report whose date is before 1900, a typo or a placeholder.", "Sat, 01 Jan 1859 10:00:00 +0000"),
        feed_item(MIXED_SCRIPT_TITLE, "https://content.example.org/mixed",
                  "تقرير باللغة العربية مع English words و עברית في نفس الجملة."),
        feed_item(INVISIBLE_TITLE, "https://content.example.org/invisible",
                  "Body text of the report about hidden characters."),
        feed_item("Feed item with a script", "https://content.example.org/feed-script",
                  "<p>Visible feed paragraph.</p><script>document.write('FEEDSCRIPT')</script>"
                  "<style>.feedstyle{color:red}</style>"),
        *(feed_item("Harbour summit signs treaty", url.replace("&", "&amp;"), SUMMIT_TEXT,
                    "Mon, 06 May 2024 10:00:00 +0000") for url in SUMMIT_URLS),
        feed_item("Five megabyte article", "https://content.example.org/huge", BIG_BODY),
    ]
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Content feed</title>'
            "<link>http://content.example.org/</link>" + "".join(items) + "</channel></rss>").encode("utf-8")


BIG_BODY = big_body()

JSONL_RECORDS = [
    {"body": "A file record without title, url or date: the ferry was cancelled because of fog."},
    {"title": "Pre-1900 file record", "url": "https://files.example.org/old", "published": "1850-05-01",
     "body": "This record claims to be from 1850."},
    {"title": "Year nine thousand file record", "url": "https://files.example.org/future",
     "published": "9000-12-31T23:59:59Z", "body": "This record claims to be from the far future."},
    {"title": "File record with scripts and styles", "url": "https://files.example.org/script",
     "body": "<html><head><style>body{background:url(FILESTYLE)}</style><script>var FILESCRIPT=1;</script></head>"
             "<body><p>First visible paragraph.</p><noscript>FILENOSCRIPT</noscript>"
             "<script type='text/javascript'>alert('FILESCRIPT2')</script><p>Second visible paragraph.</p>"
             "<iframe src='https://evil.example/'>FILEIFRAME</iframe><!-- FILECOMMENT --></body></html>"},
    {"title": CONTROL_TITLE, "url": "https://files.example.org/control", "body": "Body of the control report."},
    {"title": PERSIAN_TITLE, "url": "https://files.example.org/persian", "body": "متن خبر درباره\u200cی کتاب\u200cها."},
]


def jsonl_line(record: dict) -> str:
    """UTF-8 JSON, with U+0085 escaped: raw, it splits the line."""
    return json.dumps(record, ensure_ascii=False).replace("\u0085", "\\u0085")


@dataclass(frozen=True)
class ContentRun:
    output: Path
    exit_code: int
    feed_url: str
    jsonl_path: Path

    def manifest(self) -> dict:
        return only_manifest(self.output, RUN_ID)

    def rows(self) -> list[dict]:
        return read_rows(self.output, "article_id, url, title, body, summary, published_at, fetched_at, dt, source")

    def row_with_url(self, url: str) -> dict:
        matches = [row for row in self.rows() if row["url"] == url]
        assert len(matches) == 1, [row["url"] for row in self.rows()]
        return matches[0]

    def dead_letters(self) -> list[dict]:
        return [row for path in (self.output / "_errors").rglob("*.parquet") for row in pq.read_table(path).to_pylist()]


@pytest.fixture(scope="module")
def content_run(tmp_path_factory) -> Iterator[ContentRun]:
    base = tmp_path_factory.mktemp("content")
    jsonl_path = base / "inputs" / "records.jsonl"
    jsonl_path.parent.mkdir()
    jsonl_path.write_text("".join(jsonl_line(record) + "\n" for record in JSONL_RECORDS), encoding="utf-8")
    server = FixtureServer()
    try:
        feed_url = server.route("/content.xml", Response(body=content_feed(),
                                                         headers={"Content-Type": "application/rss+xml"}))
        output = base / "out"
        code = run_cli("--output", str(output), "--run_id", RUN_ID, "--feeds", feed_url,
                       "--inputs", str(jsonl_path.parent), "--allow_private_addresses", "--skip_labels")
        yield ContentRun(output, code, feed_url, jsonl_path)
    finally:
        server.close()


def test_content_run__exits_0_and_accounts_for_every_entry(content_run):
    """All the cases below in one run: exit 0, both sources read, the invariant holds."""
    assert content_run.exit_code == 0
    manifest = content_run.manifest()
    assert_accounting(manifest)
    counts = manifest["counts"]
    feed_items, file_records = 11, len(JSONL_RECORDS)
    assert counts["entries_read"] == feed_items + file_records
    assert counts["feeds_ok"] == 1 and counts["files_read"] == 1
    assert counts["dead_lettered"] == 1 and counts["duplicates"] == 2
    assert counts["rows_written"] == feed_items + file_records - 1 - 2 == len(content_run.rows())


def test_entries_without_title_link_or_date__kept_with_nulls_and_fetched_date(content_run):
    """Only a description (feed) or only a body (file): one row each, title/url/published_at null, dt = fetch day."""
    rows = [row for row in content_run.rows() if row["title"] is None]
    texts = sorted((row["summary"] or row["body"]) for row in rows)
    assert texts == [
        "A file record without title, url or date: the ferry was cancelled because of fog.",
        "An item with neither title nor link nor date: the river rose two metres overnight.",
    ]
    for row in rows:
        assert row["url"] is None and row["published_at"] is None
        assert row["dt"] == row["fetched_at"].date()
    assert_accounting(content_run.manifest())


def test_entry_with_only_a_link__dead_lettered_with_reason(content_run):
    """An item with a link but no text: one dead-letter row at stage normalise, the run goes on."""
    letters = [letter for letter in content_run.dead_letters() if letter["stage"] == "normalise"]
    assert len(letters) == 1
    assert letters[0]["source"] == content_run.feed_url
    assert "no title, summary or body text" in letters[0]["reason"]
    assert content_run.manifest()["dead_letters_by_stage"] == {"normalise": 1}
    assert_accounting(content_run.manifest())


@pytest.mark.parametrize("url", [
    "https://content.example.org/future",  # feed: 3024
    "https://content.example.org/victorian",  # feed: 1859
    "https://files.example.org/old",  # file: 1850
    "https://files.example.org/future",  # file: 9000
])
def test_date_far_future_or_before_1900__published_at_null_and_dt_is_fetch_day(content_run, url):
    """An absurd date would create a partition in 3024 or 1859: it is dropped, the article kept."""
    row = content_run.row_with_url(url)
    assert row["published_at"] is None
    assert row["dt"] == row["fetched_at"].date()
    assert abs(row["fetched_at"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(hours=1)
    assert_accounting(content_run.manifest())


def test_five_megabyte_body__stored_whole_not_truncated(content_run):
    """No body cap below the fetch cap (--max_feed_bytes, 20 MB) or the file cap (64 MB): 5 MB lands intact."""
    assert len(BIG_BODY.encode("utf-8")) >= FIVE_MB
    row = content_run.row_with_url("https://content.example.org/huge")
    stored = row["body"] or row["summary"]
    assert len(stored) == len(BIG_BODY)
    assert stored == BIG_BODY
    assert_accounting(content_run.manifest())


def test_scripts_and_styles_in_html__absent_from_text(content_run):
    """<script>, <style>, <noscript>, <iframe> and comments leave no text; visible paragraphs stay, as paragraphs."""
    file_row = content_run.row_with_url("https://files.example.org/script")
    assert file_row["body"] == "First visible paragraph.\n\nSecond visible paragraph."
    feed_row = content_run.row_with_url("https://content.example.org/feed-script")
    assert (feed_row["summary"] or feed_row["body"]) == "Visible feed paragraph."
    everything = json.dumps(content_run.rows(), default=str)
    for marker in ("FILESTYLE", "FILESCRIPT", "FILENOSCRIPT", "FILEIFRAME", "FILECOMMENT", "FEEDSCRIPT",
                   "feedstyle", "<script", "<style"):
        assert marker not in everything
    assert_accounting(content_run.manifest())


def test_right_to_left_and_mixed_scripts__title_byte_exact(content_run):
    """Arabic, Hebrew and English in one headline: the stored bytes are the feed's bytes."""
    row = content_run.row_with_url("https://content.example.org/mixed")
    assert row["title"].encode("utf-8") == MIXED_SCRIPT_TITLE.encode("utf-8")
    assert (row["summary"] or row["body"]) == "تقرير باللغة العربية مع English words و עברית في نفس الجملة."
    assert_accounting(content_run.manifest())


def test_zero_width_and_bidi_override_characters__removed(content_run):
    """Zero-width space, word joiner, BOM, soft hyphen, RLO/PDF: gone from the stored title."""
    row = content_run.row_with_url("https://content.example.org/invisible")
    assert row["title"] == INVISIBLE_TITLE_CLEAN
    assert_accounting(content_run.manifest())


def test_control_characters__replaced_by_a_space_and_collapsed(content_run):
    """NUL, BEL, ESC, NEL and DEL in a title: each becomes whitespace, runs of it one space."""
    row = content_run.row_with_url("https://files.example.org/control")
    assert row["title"] == CONTROL_TITLE_CLEAN
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in row["title"])
    assert_accounting(content_run.manifest())


def test_persian_zero_width_non_joiner__kept_inside_words_dropped_at_edges(content_run):
    """ZWNJ is spelling inside Persian words: kept there, removed where it joins nothing."""
    row = content_run.row_with_url("https://files.example.org/persian")
    assert row["title"] == PERSIAN_TITLE_CLEAN
    assert row["title"].count("\u200c") == 2
    assert row["body"] == "متن خبر درباره\u200cی کتاب\u200cها."
    assert_accounting(content_run.manifest())


def test_same_article_under_three_urls__one_row_two_duplicates(content_run):
    """Tracking params, host case, default port, fragment, and a mirror with the same text: one row."""
    rows = [row for row in content_run.rows() if row["title"] == "Harbour summit signs treaty"]
    assert len(rows) == 1
    assert rows[0]["url"] in ("https://content.example.org/world/summit", "https://mirror.example.net/syndicated/summit-copy")
    assert not any("utm_" in (row["url"] or "") or "fbclid" in (row["url"] or "") for row in content_run.rows())
    manifest = content_run.manifest()
    assert manifest["counts"]["duplicates"] == 2
    assert_accounting(manifest)


def test_jsonl_string_with_raw_unicode_line_separators__one_record_per_line():
    """U+2028/U+2029/U+0085 inside a JSON string are content, not line ends: two lines, two entries."""
    from newsbeam.formats import entries_from_file

    records = [{"title": "Line\u2028separator and next\u0085line", "body": "Paragraph\u2029separator."},
               {"title": "Second record", "body": "Plain body."}]
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")

    entries = list(entries_from_file("records.jsonl", data, fetched_at="2024-05-06T10:00:00+00:00"))

    assert [entry.title for entry in entries] == [records[0]["title"], "Second record"]
