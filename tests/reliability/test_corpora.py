"""Every feed file at hand -> parse_feed never crashes and loses no item.

Reads ../shared/data/feeds (feedparser's own 2,125-file test corpus and 50
real captured feeds); skips where that folder is absent. Counts are printed
(run with ``-s``) and recorded as test properties.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import feedparser
import pytest

from newsbeam.formats.feeds import FeedParseError, parse_feed

FEEDS_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "feeds"
FEEDPARSER_TESTS = FEEDS_DATA / "feedparser-tests"
REAL_FEEDS = FEEDS_DATA / "real"
FETCHED_AT = "2024-05-02T08:00:00Z"


def corpus_files(root: Path) -> list[Path]:
    if not root.is_dir():
        pytest.skip(f"{root} is absent (public data lives in ../shared/data)")
    return sorted(path for path in root.rglob("*") if path.is_file() and path.name != "manifest.jsonl")


def run_corpus(files: list[Path], root: Path) -> Counter:
    """parse_feed over every file; compare entry counts with feedparser's on well-formed files."""
    counts: Counter = Counter()
    mismatches: list[str] = []
    for path in files:
        data = path.read_bytes()
        reference = feedparser.parse(data)
        well_formed = not reference.get("bozo")
        counts["files"] += 1
        counts["well_formed"] += well_formed
        try:
            feed = parse_feed(data, source=str(path.relative_to(root)), fetched_at=FETCHED_AT)
        except FeedParseError as error:
            assert error.reason, path
            counts["errors"] += 1
            counts[f"error:{error.reason}"] += 1
            if well_formed and reference.entries:
                mismatches.append(f"{path}: refused, feedparser found {len(reference.entries)} entries")
            continue
        counts["parsed"] += 1
        counts["entries"] += len(feed.entries)
        if well_formed and len(feed.entries) != len(reference.entries):
            mismatches.append(f"{path}: {len(feed.entries)} entries, feedparser {len(reference.entries)}")
    assert mismatches == []
    return counts


def report(name: str, counts: Counter, record_property) -> None:
    line = ", ".join(f"{key}={value}" for key, value in sorted(counts.items()))
    print(f"\n[corpus {name}] {line}")
    for key, value in counts.items():
        record_property(f"{name}.{key}", value)


def test_feedparser_corpus__every_file_parses_or_fails_with_a_reason(record_property):
    """2,125 files of feedparser's test suite (well-formed, ill-formed, encodings, entities...):
    no exception other than FeedParseError; well-formed files give feedparser's entry count."""
    files = corpus_files(FEEDPARSER_TESTS)

    counts = run_corpus(files, FEEDPARSER_TESTS)

    report("feedparser-tests", counts, record_property)
    assert counts["files"] == len(files) >= 2000
    assert counts["parsed"] + counts["errors"] == counts["files"]


def test_real_feeds__item_counts_and_titles_match_manifest(record_property):
    """50 captured real feeds (14 languages, ISO-8859-x and windows-1251 among them): every item
    found, the channel title decoded exactly as the manifest records it, no U+FFFD anywhere."""
    files = corpus_files(REAL_FEEDS)
    manifest = [json.loads(line) for line in (REAL_FEEDS / "manifest.jsonl").read_text().splitlines() if line]

    counts = run_corpus(files, REAL_FEEDS)
    checked = 0
    for row in manifest:
        feed = parse_feed((REAL_FEEDS / row["file"]).read_bytes(), source=row["file"], fetched_at=FETCHED_AT)
        if row.get("n_items") is not None:
            assert len(feed.entries) == row["n_items"], row["file"]
            checked += 1
        if row.get("channel_title"):
            assert feed.title == row["channel_title"], row["file"]
        texts = [feed.title or ""] + [f"{entry.title or ''}{entry.summary or ''}" for entry in feed.entries]
        assert not any("\ufffd" in text for text in texts), row["file"]
    counts["manifest_item_counts_checked"] = checked

    report("real", counts, record_property)
    assert counts["errors"] == 0
    assert checked == len(manifest) == len(files) == 50


def test_real_windows_1251_feed__cyrillic_text():
    """The windows-1251 capture decodes to Cyrillic, not mojibake."""
    path = REAL_FEEDS / "miniflux__v2" / "encoding_WINDOWS-1251.xml"
    if not path.exists():
        pytest.skip(f"{path} is absent")

    feed = parse_feed(path.read_bytes(), source=path.name, fetched_at=FETCHED_AT)

    cyrillic = sum("\u0400" <= char <= "\u04ff" for entry in feed.entries for char in entry.title or "")
    assert cyrillic > 100
