"""Write small datasets laid out exactly like the pipeline's output.

``<root>/dt=YYYY-MM-DD/lang=xx/part-<run_id>-<n>.parquet`` (FILE_SCHEMA, zstd,
partition columns only in folder names), ``<root>/_runs/<run_id>.json``
manifests and ``<root>/_errors/run_id=<id>/*.parquet`` dead letters.

The sample covers what readers must cope with: several days, languages and
runs, two files in one partition, Arabic (RTL) source names and titles,
HTML-special characters, null and empty labels, a missing ``source_title``
and a missing ``published_at``. All text here was written for these tests.
"""
from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from newsbeam.records import Article
from newsbeam.schema import ERROR_SCHEMA, FILE_SCHEMA, article_to_row, rows_to_table

FIRST_RUN_ID = "20240503T060000Z-a1b2c3"
SECOND_RUN_ID = "20240504T060000Z-d4e5f6"
FAILED_RUN_ID = "20240504T120000Z-0f0f0f"

# (feed url, source title, language); the None title exercises the fallback
# to the feed URL, the last one exercises HTML escaping.
SOURCES = (
    ("https://news.example.com/rss", "Example Daily", "en"),
    ("https://akhbar.example.net/feed", "صحيفة المثال اليومية", "ar"),
    ("https://journal.example.fr/rss.xml", "Le Journal d'Exemple", "fr"),
    ("https://zeitung.example.de/feed", "Beispiel Zeitung", "de"),
    ("https://untitled.example.org/atom", None, "en"),
    ("https://escape.example.com/rss", "Tom & Jerry <Daily> \"Quotes\"", "en"),
)
# Ids of the default taxonomy (seeds/taxonomy.yaml), plus a null and an empty label.
TOPICS = ("politics", "sport", "economy_business_finance", "science_technology", "health", None, "")
TOPIC_WEIGHTS = (6, 4, 3, 3, 2, 1, 1)
SENTIMENTS = ("negative", "neutral", "positive", None)
SENTIMENT_WEIGHTS = {  # topic -> weights of SENTIMENTS
    "politics": (5, 3, 2, 1), "sport": (2, 3, 5, 1), "economy_business_finance": (3, 4, 3, 1),
    "science_technology": (1, 4, 5, 1), "health": (3, 4, 3, 1), None: (1, 1, 1, 3), "": (1, 1, 1, 3),
}
TITLES = {
    "en": "Council approves budget for item {n}",
    "ar": "المجلس يوافق على الميزانية رقم {n}",
    "fr": "Le conseil adopte le budget numéro {n}",
    "de": "Der Rat beschließt den Haushalt Nummer {n}",
}
FIRST_DAY = dt.date(2024, 5, 1)


@dataclass(frozen=True)
class WrittenDataset:
    """What was written, so tests can compare readers against it."""

    root: Path
    row_count: int
    rows_per_partition: dict[str, int]
    dates: tuple[dt.date, ...]
    languages: tuple[str, ...]
    run_ids: tuple[str, ...]


def sample_article(number: int, *, day: dt.date, source_index: int) -> Article:
    """Article ``number`` of the sample, deterministic in its arguments."""
    url, source_title, language = SOURCES[source_index % len(SOURCES)]
    published = dt.datetime.combine(day, dt.time(6 + number % 12, 30), dt.timezone.utc)
    # Seeded by the number, so the sample is the same on every run but not a flat cycle.
    chooser = random.Random(number)
    topic = chooser.choices(TOPICS, weights=TOPIC_WEIGHTS)[0]
    sentiment = chooser.choices(SENTIMENTS, weights=SENTIMENT_WEIGHTS[topic])[0]
    return Article(
        article_id=f"a{number:04d}",
        url=f"{url.rsplit('/', 1)[0]}/articles/{number}",
        source=url,
        source_title=source_title,
        title=TITLES[language].format(n=number),
        summary=f"Summary of article {number}.",
        body=f"Body of article {number}. " * 3,
        authors=("Staff",) if number % 2 else (),
        tags=("budget", "council"),
        # Every ninth article has no date, so its partition comes from fetched_at.
        published_at=None if number % 9 == 0 else published.isoformat().replace("+00:00", "Z"),
        fetched_at=published.replace(hour=20).isoformat().replace("+00:00", "Z"),
        content_hash=f"{number:064x}",
        language=language,
        language_score=0.9,
        topic=topic,
        topic_score=None if topic is None else 0.5 + (number % 5) / 10,
        topic_scores=() if topic is None else ((topic or "unknown", 0.7), ("other", 0.3)),
        sentiment=sentiment,
        sentiment_score=None if sentiment is None else 0.8,
        model="test-model@1",
        body_source="feed",
    )


def sample_articles(per_day: int = 12, days: int = 4) -> list[Article]:
    """``per_day`` articles on each of ``days`` days, cycling through SOURCES."""
    articles = []
    for day_offset in range(days):
        day = FIRST_DAY + dt.timedelta(days=day_offset)
        for slot in range(per_day):
            number = day_offset * per_day + slot
            articles.append(sample_article(number, day=day, source_index=number + day_offset))
    return articles


def write_articles(
    root: Path,
    articles: Iterable[Article],
    run_id: str,
    *,
    schema: pa.Schema = FILE_SCHEMA,
) -> dict[str, int]:
    """Write one run's files; returns rows per ``dt=…/lang=…`` partition.

    ``schema`` may be an older version of FILE_SCHEMA (a subset of its
    columns): the rows are projected onto it, as an old writer would have.
    """
    by_partition: dict[str, list[dict]] = {}
    for article in articles:
        partition = f"dt={article.partition_date}/lang={article.language}"
        by_partition.setdefault(partition, []).append(article_to_row(article, run_id))
    for partition, rows in by_partition.items():
        folder = root / partition
        folder.mkdir(parents=True, exist_ok=True)
        # Several runs can write into one partition: number files after the existing ones.
        part_number = len(list(folder.glob(f"part-{run_id}-*.parquet")))
        table = rows_to_table(rows).select(schema.names).cast(schema)
        pq.write_table(table, folder / f"part-{run_id}-{part_number}.parquet", compression="zstd")
    return {partition: len(rows) for partition, rows in by_partition.items()}


def write_manifest(
    root: Path,
    run_id: str,
    *,
    status: str = "committed",
    rows_per_partition: Optional[dict[str, int]] = None,
    failures: Sequence[dict[str, str]] = (),
    started_at: str = "2024-05-03T06:00:00+00:00",
    finished_at: str = "2024-05-03T06:04:10.250000+00:00",
    error: Optional[str] = None,
) -> Path:
    """A manifest shaped like newsbeam.pipeline.manifest.build_manifest's output."""
    rows_per_partition = rows_per_partition or {}
    rows_written = sum(rows_per_partition.values())
    manifest = {
        "run_id": run_id,
        "status": status,
        "error": error,
        "started_at": started_at,
        "finished_at": finished_at,
        "counts": {
            "feeds_ok": 6 - len(failures),
            "feeds_failed": len(failures),
            "entries_read": rows_written + 3,
            "duplicates": 2,
            "dead_lettered": 1,
            "rows_written": rows_written,
        },
        "rows_per_partition": rows_per_partition,
        "failures": list(failures),
        "timings": {"wall_seconds": 250.25},
        "versions": {"newsbeam": "0.1.0", "schema": FILE_SCHEMA.metadata[b"newsbeam.schema_version"].decode()},
    }
    path = root / "_runs" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_errors(root: Path, run_id: str, reasons: Sequence[str]) -> Path:
    rows = [
        {"run_id": run_id, "stage": "parse", "source": SOURCES[1][0], "article_id": None,
         "reason": reason, "excerpt": "<rss"}
        for reason in reasons
    ]
    path = root / "_errors" / f"run_id={run_id}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ERROR_SCHEMA), path, compression="zstd")
    return path


def write_dataset(root: Path, articles: Optional[Sequence[Article]] = None) -> WrittenDataset:
    """The standard sample: two committed runs sharing a partition, one failed run."""
    articles = list(articles) if articles is not None else sample_articles()
    half = len(articles) // 2 + 3  # overlap a day so one partition holds files of both runs
    first = write_articles(root, articles[:half], FIRST_RUN_ID)
    second = write_articles(root, articles[half:], SECOND_RUN_ID)
    write_manifest(root, FIRST_RUN_ID, rows_per_partition=first,
                   failures=[{"stage": "fetch", "source": "https://down.example.com/rss", "reason": "HTTP 503"}])
    write_manifest(root, SECOND_RUN_ID, rows_per_partition=second,
                   started_at="2024-05-04T06:00:00+00:00", finished_at="2024-05-04T06:03:00+00:00")
    write_manifest(root, FAILED_RUN_ID, status="failed", error="RuntimeError: <model> not found",
                   failures=[{"stage": "fetch", "source": SOURCES[1][0], "reason": "خطأ: <timeout> & retry"}],
                   started_at="2024-05-04T12:00:00Z", finished_at="2024-05-04T12:00:30Z")
    write_errors(root, FIRST_RUN_ID, ["not well-formed (invalid token)"])
    rows_per_partition = Counter(first) + Counter(second)
    return WrittenDataset(
        root=root,
        row_count=len(articles),
        rows_per_partition=dict(rows_per_partition),
        dates=tuple(sorted({dt.date.fromisoformat(a.partition_date) for a in articles})),
        languages=tuple(sorted({a.language for a in articles})),
        run_ids=(FIRST_RUN_ID, SECOND_RUN_ID, FAILED_RUN_ID),
    )


def with_stories(articles: Sequence[Article], *, story_size: int = 3) -> list[Article]:
    """``articles`` as a ``--embeddings --stories`` run writes them: a unit vector and a story each.

    Articles ``n`` with the same ``n // story_size`` share a story; every seventh has neither an
    embedding nor a story (an article the encoder skipped). The vectors are random but
    seeded by the article's number, and stored as newsbeam.embeddings does (int8 + scale).
    """
    import numpy as np

    from newsbeam.embeddings import EMBEDDING_DIMS, to_record

    stored = []
    for article in articles:
        number = int(article.article_id.lstrip("a"))
        if number % 7 == 6:
            stored.append(article)
            continue
        vector = np.random.default_rng(number).standard_normal(EMBEDDING_DIMS).astype(np.float32)
        embedding, scale = to_record(vector / np.linalg.norm(vector))
        stored.append(article.replace(embedding=embedding, embedding_scale=scale,
                                      story_id=f"st-{number // story_size:04d}"))
    return stored
