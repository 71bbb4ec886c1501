"""The hand-labelled real feed items that score open-set topics (bench/real_feed_topics.py)."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import real_feed_topics  # noqa: E402

from newsbeam.labelling.taxonomy import load_taxonomy  # noqa: E402


def test_labels_name_entries_and_subjects_only_never_feed_text():
    rows = real_feed_topics.read_labels()
    assert len(rows) == 1014
    assert all(set(row) == {"file", "index", "label", "confidence"} for row in rows)
    assert {row["label"] for row in rows} == set(load_taxonomy(None).ids_for("topic"))  # all 17 subjects
    assert {row["confidence"] for row in rows} == set(real_feed_topics.CONFIDENCES)
    assert max(Counter((row["file"], row["index"]) for row in rows).values()) == 1
    assert len(real_feed_topics.read_labels(confidence="high")) == 518


def test_every_topic_labelled_entry_has_a_news_sentiment_and_no_feed_text():
    topics = {(row["file"], row["index"]) for row in real_feed_topics.read_labels()}
    rows = real_feed_topics.read_sentiment_labels()
    assert all(set(row) == {"file", "index", "sentiment", "confidence", "label"} for row in rows)
    assert {(row["file"], row["index"]) for row in rows} == topics and len(rows) == len(topics)
    assert {row["label"] for row in rows} == {"negative", "neutral", "positive"}
    assert {row["confidence"] for row in rows} == set(real_feed_topics.SENTIMENT_CONFIDENCES)


@pytest.mark.skipif(not real_feed_topics.FEEDS_ROOT.is_dir(), reason="../shared/data/feeds/real is absent")
def test_every_labelled_entry_reads_back_through_the_pipelines_parsing():
    labels = real_feed_topics.read_labels()
    items = real_feed_topics.read_items(labels)
    assert len(items.texts) == len(labels)
    assert all(text.strip() for text in items.texts)
    assert items.labels == [row["label"] for row in sorted(labels, key=lambda row: row["file"])]
    assert Counter(items.languages)["de"] == 87  # the manifest's language of each feed


def test_without_the_shared_feeds_it_says_so_and_succeeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(real_feed_topics, "FEEDS_ROOT", tmp_path / "absent")
    assert real_feed_topics.main([]) == 0
    assert "skipped" in capsys.readouterr().out
