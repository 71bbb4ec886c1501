"""Within-run deduplication: one row per article_id, then per content_hash.

The same story reached through two feeds has the same canonical URL (same
article_id); syndicated copies under other URLs share the content_hash. Each
group keeps one deterministic survivor and counts the rest.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import apache_beam as beam

from newsbeam.metrics import counter
from newsbeam.packing import pack, unpack
from newsbeam.records import Article

DUPLICATES_COUNTER = "duplicates"


def survivor_rank(article: Article) -> tuple:
    """Lowest rank survives: the fullest text, then a stable tie-break."""
    text = article.body or article.summary or ""
    return (-len(text), article.published_at is None, article.url or "", article.source, article.article_id)


def pick_survivor(candidates: Iterable[Any], rank: Callable[[Any], tuple] = survivor_rank) -> tuple[Any, int]:
    """The lowest-ranked of ``candidates`` and how many others were dropped."""
    group = list(candidates)
    return min(group, key=rank), len(group) - 1


def ranked_and_packed(article: Article) -> tuple[tuple, str, bytes]:
    """What a dedup shuffle carries: the rank and content hash to decide on,
    and the article itself packed (see :mod:`newsbeam.transforms.packing`)."""
    return survivor_rank(article), article.content_hash, pack(article)


class _KeepOneFn(beam.DoFn):
    """(key, [(rank, content_hash, packed)]) -> the lowest-ranked entry, still packed."""

    def __init__(self, reason: str):
        self.duplicates = counter(DUPLICATES_COUNTER)
        self.by_reason = counter(f"duplicates_by_{reason}")

    def process(self, keyed_group):
        _, group = keyed_group
        survivor, dropped = pick_survivor(group, rank=lambda entry: entry[0])
        if dropped:
            self.duplicates.inc(dropped)
            self.by_reason.inc(dropped)
        yield survivor


class DeduplicateArticles(beam.PTransform):
    """Articles -> articles with no two sharing an article_id or a content_hash."""

    def expand(self, articles):
        return (
            articles
            | "KeyByArticleId" >> beam.Map(lambda article: (article.article_id, ranked_and_packed(article)))
            | "GroupByArticleId" >> beam.GroupByKey()
            | "KeepOnePerArticleId" >> beam.ParDo(_KeepOneFn("article_id"))
            | "KeyByContentHash" >> beam.Map(lambda entry: (entry[1], entry))
            | "GroupByContentHash" >> beam.GroupByKey()
            | "KeepOnePerContent" >> beam.ParDo(_KeepOneFn("content_hash"))
            | "Unpack" >> beam.Map(lambda entry: unpack(entry[2], Article))
        )
