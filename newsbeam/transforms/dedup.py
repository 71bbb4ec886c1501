"""Within-run deduplication: one row per article_id, then per content_hash.

The same story reached through two feeds has the same canonical URL (same
article_id); syndicated copies under other URLs share the content_hash. Each
group keeps one deterministic survivor and counts the rest.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from newsbeam.records import Article

DUPLICATES_COUNTER = "duplicates"


def survivor_rank(article: Article) -> tuple:
    """Lowest rank survives: the fullest text, then a stable tie-break."""
    text = article.body or article.summary or ""
    return (-len(text), article.published_at is None, article.url or "", article.source, article.article_id)


def pick_survivor(articles: Iterable[Article]) -> tuple[Article, int]:
    group = list(articles)
    return min(group, key=survivor_rank), len(group) - 1


class _KeepOneFn(beam.DoFn):
    def __init__(self, reason: str):
        self.duplicates = Metrics.counter("newsbeam", DUPLICATES_COUNTER)
        self.by_reason = Metrics.counter("newsbeam", f"duplicates_by_{reason}")

    def process(self, keyed_group):
        _, group = keyed_group
        survivor, dropped = pick_survivor(group)
        if dropped:
            self.duplicates.inc(dropped)
            self.by_reason.inc(dropped)
        yield survivor


class DeduplicateArticles(beam.PTransform):
    """Articles -> articles with no two sharing an article_id or a content_hash."""

    def expand(self, articles):
        return (
            articles
            | "KeyByArticleId" >> beam.Map(lambda article: (article.article_id, article))
            | "GroupByArticleId" >> beam.GroupByKey()
            | "KeepOnePerArticleId" >> beam.ParDo(_KeepOneFn("article_id"))
            | "KeyByContentHash" >> beam.Map(lambda article: (article.content_hash, article))
            | "GroupByContentHash" >> beam.GroupByKey()
            | "KeepOnePerContent" >> beam.ParDo(_KeepOneFn("content_hash"))
        )
