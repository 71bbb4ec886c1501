"""The team's labels of real feed entries: read through the pipeline's own feed
parsing, split by feed into a training half and a dev half that training never reads."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from newsbeam_lab import dev_report, feed_entries, shared_labels, training_data
from newsbeam_lab.scoring import read_eval_rows

from newsbeam.labelling.taxonomy import load_taxonomy
from tests.support.pipelines import SHARED

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Valley Gazette</title><link>https://gazette.example/</link>
<item><title>Floods cut off three villages</title><link>https://gazette.example/news/1</link>
<description>Rescuers reached them by boat on Sunday.</description><category>Weather</category></item>
<item><title>Council approves the new library</title><link>https://gazette.example/news/2</link>
<description>Building starts in spring.</description></item>
<item><title>Podcast: episode 12</title><link>https://gazette.example/pod/12</link>
<description>We talk about everything.</description></item>
</channel></rss>
"""


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A shared data root with one feed and its manifest, laid out as feeds/real is."""
    feeds = tmp_path / "data" / "feeds" / "real"
    (feeds / "gazette").mkdir(parents=True)
    (feeds / "gazette" / "valley.xml").write_text(RSS, encoding="utf-8")
    write_jsonl(feeds / "manifest.jsonl", [{"file": "gazette/valley.xml", "lang": "en"}])
    return tmp_path / "data"


def labels(tmp_path, rows: list[dict]) -> str:
    return write_jsonl(tmp_path / "labels.jsonl", [{"file": "gazette/valley.xml", **row} for row in rows])


def test_an_entry_is_read_as_the_pipeline_reads_it_with_our_label(tmp_path, data_root):
    path = labels(tmp_path, [{"index": 0, "label": "disaster_accident_emergency", "confidence": "high"},
                             {"index": 1, "label": "politics", "confidence": "medium"}])
    rows = training_data.read_labelled_jsonl(path, None, load_taxonomy().topic_ids, task="topic",
                                             data_root=str(data_root), split=feed_entries.ALL)
    assert rows.texts == ["Floods cut off three villages\nRescuers reached them by boat on Sunday.",
                          "Council approves the new library\nBuilding starts in spring."]
    assert rows.labels == ["disaster_accident_emergency", "politics"] and rows.languages == ["en", "en"]
    assert rows.evidence[0] == ("weather",)  # the feed's own <category>, for the scorer's evidence


def test_only_the_asked_half_is_read_and_low_confidence_sentiment_never(tmp_path, data_root):
    split = feed_entries.split_of("gazette/valley.xml", 0)  # one feed: every entry on one side
    path = labels(tmp_path, [{"index": 0, "sentiment": "negative", "confidence": "high"},
                             {"index": 1, "sentiment": "positive", "confidence": "medium"},
                             {"index": 2, "sentiment": "neutral", "confidence": "low"}])
    sentiments = load_taxonomy().sentiment_ids
    read = training_data.read_labelled_jsonl(path, None, sentiments, task="sentiment", data_root=str(data_root),
                                             split=split)
    other = shared_labels.DEV if split == shared_labels.TRAIN else shared_labels.TRAIN
    unread = training_data.read_labelled_jsonl(path, None, sentiments, task="sentiment", data_root=str(data_root),
                                               split=other)
    assert read.labels == ["negative", "positive"] and read.skipped == 1
    assert unread.texts == [] and unread.skipped == 3


def test_a_label_of_a_missing_entry_or_without_data_is_a_clear_error(tmp_path, data_root):
    topics = load_taxonomy().topic_ids
    path = labels(tmp_path, [{"index": 7, "label": "sport", "confidence": "high"}])
    with pytest.raises(ValueError, match="gazette/valley.xml has no entry 7 \\(it has 3\\)"):
        training_data.read_labelled_jsonl(path, None, topics, task="topic", data_root=str(data_root),
                                          split=feed_entries.ALL)
    with pytest.raises(ValueError, match="need --data_root"):
        training_data.read_labelled_jsonl(path, None, topics, task="topic", data_root=None, split=feed_entries.ALL)
    with pytest.raises(FileNotFoundError, match="the feed a label refers to is missing"):
        training_data.read_labelled_jsonl(path, None, topics, task="topic", data_root=str(tmp_path),
                                          split=feed_entries.ALL)


def test_the_real_feed_labels_split_by_feed_into_two_halves_with_every_subject_in_the_dev_half():
    rows = [json.loads(line) for line in feed_entries.TOPIC_LABELS.open(encoding="utf-8")]
    halves = collections.defaultdict(list)
    for row in rows:
        halves[feed_entries.split_of(row["file"], row["index"])].append(row)
    assert set(halves) == {shared_labels.TRAIN, shared_labels.DEV}
    assert 0.4 < len(halves[shared_labels.DEV]) / len(rows) < 0.6
    files = {split: {row["file"] for row in part} for split, part in halves.items()}
    # a feed is on one side only, but for the general-news feeds split entry by entry
    assert files[shared_labels.TRAIN] & files[shared_labels.DEV] == set(feed_entries.ENTRY_SPLIT_FEEDS)
    assert {row["label"] for row in halves[shared_labels.DEV]} == set(load_taxonomy().topic_ids)
    unseen = [row for row in rows if feed_entries.in_split(row, feed_entries.UNSEEN)]
    assert unseen and all(row in halves[shared_labels.DEV] for row in unseen)
    assert not {row["file"] for row in unseen} & files[shared_labels.TRAIN]  # feeds none of whose entries train
    assert [feed_entries.split_of(row["file"], row["index"]) for row in rows] == [
        feed_entries.split_of(row["file"], row["index"]) for row in reversed(rows)][::-1]


def test_the_recipe_trains_on_the_feeds_training_half_and_the_dev_report_scores_the_other():
    recipe = {(task, pattern) for task, pattern, _ in training_data.DEFAULT_RECIPE}
    assert ("topic", str(feed_entries.TOPIC_LABELS)) in recipe
    assert ("sentiment", str(feed_entries.SENTIMENT_LABELS)) in recipe
    reported = {(dev_set.task, path) for dev_set in dev_report.REAL_NEWS_SETS for path in dev_set.files}
    assert ("topic", str(feed_entries.TOPIC_LABELS)) in reported
    assert ("sentiment", str(feed_entries.SENTIMENT_LABELS)) in reported


@pytest.mark.skipif(not (SHARED / feed_entries.FEEDS_DIR).is_dir(), reason="../shared/data/feeds/real is absent")
def test_training_reads_none_of_the_dev_half_of_the_real_feeds():
    topics = load_taxonomy().topic_ids
    path = str(feed_entries.TOPIC_LABELS)
    train = training_data.read_labelled_jsonl(path, None, topics, task="topic", data_root=str(SHARED))
    dev = training_data.read_labelled_jsonl(path, None, topics, task="topic", data_root=str(SHARED),
                                            split=shared_labels.DEV)
    assert len(train.texts) + len(dev.texts) == 1014 and len(dev.texts) > 400
    assert not set(train.texts) & set(dev.texts)  # no dev entry trains
    # the dev report scores the unseen feeds as a set of their own, a part of the dev half
    (unseen,) = [dev_set for dev_set in dev_report.REAL_NEWS_SETS if dev_set.split == feed_entries.UNSEEN]
    rows = read_eval_rows(list(unseen.files), None, topics, task="topic", data_root=str(SHARED), split=unseen.split)
    assert 200 < len(rows.texts) < len(dev.texts) and set(rows.paths) == {path}
    assert collections.Counter(rows.texts) <= collections.Counter(dev.texts)


@pytest.mark.skipif(not (SHARED / feed_entries.FEEDS_DIR).is_dir(), reason="../shared/data/feeds/real is absent")
def test_each_clear_subject_set_is_the_sure_part_of_a_real_news_set_the_report_scores_in_full():
    topics = load_taxonomy().topic_ids
    clear_sets = [dev_set for dev_set in dev_report.REAL_NEWS_SETS if dev_set.confidence]
    assert {dev_set.confidence for dev_set in clear_sets} == {shared_labels.HIGH_CONFIDENCE} and len(clear_sets) == 4
    for clear_set in clear_sets:
        (full_set,) = [dev_set for dev_set in dev_report.REAL_NEWS_SETS if not dev_set.confidence
                       and (dev_set.files, dev_set.task, dev_set.split) == (clear_set.files, clear_set.task, clear_set.split)]
        read = [read_eval_rows([str(SHARED / path) for path in dev_set.files], None, topics, task="topic",
                               data_root=str(SHARED), split=dev_set.split, confidence=dev_set.confidence)
                for dev_set in (clear_set, full_set)]
        clear, full = read
        assert 50 < len(clear.texts) < len(full.texts), clear_set.name
        assert collections.Counter(clear.texts) <= collections.Counter(full.texts)
