"""The one Parquet schema of the dataset; every reader and writer imports it.

Evolution rule: columns are only ever added, always nullable, and the version
below is bumped. Files of older versions stay readable next to newer ones
(readers union by name; missing columns read as null).
"""
from __future__ import annotations

import array
from typing import Any, Iterable

import pyarrow as pa

from newsbeam.records import Article, DeadLetter

SCHEMA_VERSION = "2"  # 2: embedding, embedding_scale, story_id

TOPIC_SCORE_TYPE = pa.struct([("label", pa.string()), ("score", pa.float32())])

# Columns stored inside each file. Partition columns live in the folder names
# (Hive layout) and are not repeated in the files, which is what BigQuery,
# Spark and DuckDB expect of a Hive-partitioned external table.
FILE_FIELDS = [
    pa.field("article_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_title", pa.string()),
    pa.field("title", pa.string()),
    pa.field("summary", pa.string()),
    pa.field("body", pa.string()),
    pa.field("authors", pa.list_(pa.string())),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("published_at", pa.timestamp("us", tz="UTC")),
    pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("language", pa.string(), nullable=False),
    pa.field("language_score", pa.float32()),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("topic", pa.string()),
    pa.field("topic_score", pa.float32()),
    pa.field("topic_scores", pa.list_(TOPIC_SCORE_TYPE)),
    pa.field("sentiment", pa.string()),
    pa.field("sentiment_score", pa.float32()),
    pa.field("model", pa.string()),
    pa.field("body_source", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    # version 2 (--embeddings): the article's unit vector as int8 values and a scale (newsbeam/embeddings.py)
    # a plain list, not fixed_size_list: pyarrow cannot cast a null fixed-size list read back from Parquet
    pa.field("embedding", pa.list_(pa.int8())),
    pa.field("embedding_scale", pa.float32()),
    pa.field("story_id", pa.string()),
]

PARTITION_FIELDS = {
    "dt": pa.field("dt", pa.date32()),
    "lang": pa.field("lang", pa.string()),
    "source": pa.field("source", pa.string()),
    "topic": pa.field("topic", pa.string()),
}

FILE_SCHEMA = pa.schema(FILE_FIELDS, metadata={"newsbeam.schema_version": SCHEMA_VERSION})

ERROR_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("source", pa.string()),
        pa.field("article_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("excerpt", pa.string()),
    ],
    metadata={"newsbeam.schema_version": SCHEMA_VERSION},
)


def _timestamp(value: str | None):
    if value is None:
        return None
    import datetime as _dt

    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def article_to_row(article: Article, run_id: str) -> dict[str, Any]:
    """One Arrow-ready dict in FILE_SCHEMA column order."""
    return {
        "article_id": article.article_id,
        "url": article.url,
        "source": article.source,
        "source_title": article.source_title,
        "title": article.title,
        "summary": article.summary,
        "body": article.body,
        "authors": list(article.authors),
        "tags": list(article.tags),
        "published_at": _timestamp(article.published_at),
        "fetched_at": _timestamp(article.fetched_at),
        "language": article.language,
        "language_score": article.language_score,
        "content_hash": article.content_hash,
        "topic": article.topic,
        "topic_score": article.topic_score,
        "topic_scores": [{"label": label, "score": score} for label, score in article.topic_scores],
        "sentiment": article.sentiment,
        "sentiment_score": article.sentiment_score,
        "model": article.model,
        "body_source": article.body_source,
        "run_id": run_id,
        "embedding": None if article.embedding is None else array.array("b", article.embedding).tolist(),
        "embedding_scale": article.embedding_scale,
        "story_id": article.story_id,
    }


def rows_to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=FILE_SCHEMA)


def dead_letter_row(letter: DeadLetter, run_id: str) -> dict:
    return {
        "run_id": run_id,
        "stage": letter.stage,
        "source": letter.source,
        "article_id": letter.article_id,
        "reason": letter.reason,
        "excerpt": letter.excerpt,
    }
