"""The team's labels of real feed entries, as training rows and as a dev set.

``bench/labels/real_feed_topics.jsonl`` and ``real_feed_sentiment.jsonl`` name
entries of the feeds under ``<data_root>/feeds/real`` by ``file`` and
``index`` (the entry's position in the parsed feed) and give our label; the
feed text is never copied into the project. An entry is read as
``newsbeam run`` reads it: the pipeline's own feed parsing and normalisation,
then headline + lead.

Half of the labelled entries are a dev set that training never reads, split
by feed, so the dev figures are of feeds the heads never saw (the hidden real
news is of unseen feeds too). One feed holds nearly half of all labelled
entries (The Hindu's general news, 475 of 1,014); it is split entry by entry,
or one side would get almost all of it. The split is a hash of where the entry
lives, so it never moves when labels are added or re-read.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from newsbeam_lab.shared_labels import DEV, TRAIN

FEEDS_DIR = os.path.join("feeds", "real")  # under --data_root
LABELS_DIR = Path(__file__).resolve().parents[2] / "bench" / "labels"
TOPIC_LABELS = LABELS_DIR / "real_feed_topics.jsonl"
SENTIMENT_LABELS = LABELS_DIR / "real_feed_sentiment.jsonl"
DEV_PERCENT = 50
ALL = "all"  # both halves: the bench's figures over every labelled entry
UNSEEN = "unseen"  # the dev half less ENTRY_SPLIT_FEEDS: feeds none of whose entries train
SPLITS = (DEV, UNSEEN, TRAIN, ALL)
# feeds split entry by entry: general news whose entries are each a story of its own
ENTRY_SPLIT_FEEDS = frozenset({"gsidhu__Pretty_Parser/thehindu.xml"})


def is_feed_reference(row: dict) -> bool:
    """A label of a feed entry: ``file`` (relative to feeds/real) + ``index``, no text."""
    return "file" in row and "index" in row and not (row.get("text") or row.get("headline") or row.get("body"))


def split_of(file: str, index: int) -> str:
    """``dev`` for DEV_PERCENT % of the feeds (of the entries, for ENTRY_SPLIT_FEEDS)."""
    key = f"{file}\n{index}" if file in ENTRY_SPLIT_FEEDS else file
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return DEV if int.from_bytes(digest[:4], "big") % 100 < DEV_PERCENT else TRAIN


def in_split(row: dict, split: str) -> bool:
    if split == ALL:
        return True
    if split == UNSEEN:
        return row["file"] not in ENTRY_SPLIT_FEEDS and split_of(row["file"], int(row["index"])) == DEV
    return split_of(row["file"], int(row["index"])) == split


@lru_cache(maxsize=4)
def feed_languages(feeds_root: str) -> dict[str, str]:
    """Each feed file's language as the data set's manifest gives it."""
    with open(os.path.join(feeds_root, "manifest.jsonl"), encoding="utf-8") as handle:
        return {row["file"]: row.get("lang") or "und" for row in map(json.loads, filter(str.strip, handle))}


@lru_cache(maxsize=64)
def _entries(feeds_root: str, file: str) -> tuple[dict, ...]:
    """A feed's entries as rows: the labeller's text, the language, the feed's tags and URL."""
    from newsbeam.formats.feeds import parse_feed
    from newsbeam.labelling.input_text import article_text
    from newsbeam.normalise import normalise_entry

    path = os.path.join(feeds_root, file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the feed a label refers to is missing (check --data_root)")
    with open(path, "rb") as handle:
        # fetched_at is recorded on each entry, never read by the labeller
        parsed = parse_feed(handle.read(), source=file, fetched_at="2026-01-01T00:00:00Z")
    rows = []
    for entry in parsed.entries:
        article = normalise_entry(entry)
        rows.append({"text": article_text(article.title, article.summary, article.body),
                     "tags": list(article.tags), "url": article.url})
    return tuple(rows)


def read_entry(feeds_root: str, file: str, index: int) -> dict:
    """One entry of a feed as the labeller reads it: ``text``, ``lang``, ``tags``, ``url``."""
    entries = _entries(str(feeds_root), file)
    if not 0 <= index < len(entries):
        raise ValueError(f"{file} has no entry {index} (it has {len(entries)})")
    return dict(entries[index], lang=feed_languages(str(feeds_root)).get(file, "und"))


def resolve(reference: dict, data_root: Optional[str]) -> dict:
    """The feed entry a label names, as a training row with the label's keys on it."""
    if not data_root:
        raise ValueError(f"labels of feed entries ({reference['file']}) need --data_root")
    row = read_entry(os.path.join(data_root, FEEDS_DIR), reference["file"], int(reference["index"]))
    row.update({key: value for key, value in reference.items() if key not in ("file", "index")})
    return row
