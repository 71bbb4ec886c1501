"""Typed records that flow between pipeline stages.

Stages pass plain dataclasses (picklable, cheap) and only the sink turns them
into Arrow rows, so every stage can be unit-tested without Beam or Parquet.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class FeedSpec:
    """One feed to poll, as declared in a feed list (text, OPML, YAML, TOML)."""

    url: str
    name: Optional[str] = None
    language: Optional[str] = None  # a hint only: detection still runs


@dataclass(frozen=True)
class RawEntry:
    """An article as a source found it, before any cleaning.

    ``title``/``summary``/``body`` may hold HTML; dates are whatever string the
    source carried. ``source`` names where it came from (feed URL or file path).
    """

    source: str
    source_title: Optional[str] = None
    url: Optional[str] = None
    title: Optional[str] = None
    summary: Optional[str] = None
    body: Optional[str] = None
    authors: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    published: Optional[str] = None
    language_hint: Optional[str] = None
    fetched_at: Optional[str] = None  # ISO-8601 UTC, set by the source
    body_is_html: bool = True


@dataclass(frozen=True)
class Article:
    """A normalised article; label fields are filled by the labelling stage."""

    article_id: str
    url: Optional[str]
    source: str
    source_title: Optional[str]
    title: Optional[str]
    summary: Optional[str]
    body: Optional[str]
    authors: tuple[str, ...]
    tags: tuple[str, ...]
    published_at: Optional[str]  # ISO-8601 UTC or None
    fetched_at: str  # ISO-8601 UTC
    content_hash: str
    language: str = "und"
    language_score: float = 0.0
    language_hint: Optional[str] = None
    topic: Optional[str] = None
    topic_score: Optional[float] = None
    topic_scores: tuple[tuple[str, float], ...] = ()
    sentiment: Optional[str] = None
    sentiment_score: Optional[float] = None
    model: Optional[str] = None
    body_source: str = "feed"
    # --embeddings: the unit vector the labels were read from, int8 bytes + scale (newsbeam/embeddings.py)
    embedding: Optional[bytes] = None
    embedding_scale: Optional[float] = None
    story_id: Optional[str] = None  # articles about one event, across outlets and languages (newsbeam/stories.py)

    def replace(self, **changes) -> "Article":
        return dataclasses.replace(self, **changes)

    @property
    def partition_date(self) -> str:
        """The ``dt`` partition: published date, else fetched date."""
        return (self.published_at or self.fetched_at)[:10]


@dataclass(frozen=True)
class DeadLetter:
    """A record that failed a stage, kept with the reason instead of dropped."""

    source: str
    stage: str
    reason: str
    excerpt: str = ""
    article_id: Optional[str] = None

    @staticmethod
    def excerpt_of(text: object, limit: int = 500) -> str:
        # Any value: the record being dead-lettered is by definition malformed, and the
        # error path must not raise where the record did (that failed the whole pipeline).
        return (text if isinstance(text, str) else "" if text is None else repr(text))[:limit]
