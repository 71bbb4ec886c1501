"""``newsbeam search``'s scoring query on a synthetic dataset, without the model.

``rows`` articles with random unit vectors (int8 + scale, as ``--embeddings``
stores them) in Hive partitions laid out like the sink's (1,000-row groups,
zstd), then the query ``newsbeam search`` runs (newsbeam.analytics.search.nearest,
k=10) timed for ``queries`` random query vectors. The encoder's pass over the
query text (tens of ms) and its load (seconds) are not part of the figure.

    .venv/bin/python bench/search_bench.py 100000 20
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from newsbeam.analytics.dataset import connect  # noqa: E402
from newsbeam.analytics.search import nearest  # noqa: E402
from newsbeam.embeddings import EMBEDDING_DIMS, normalise, quantise  # noqa: E402
from newsbeam.parquet import COMPRESSION, ROW_GROUP_ROWS  # noqa: E402
from newsbeam.schema import FILE_SCHEMA  # noqa: E402

DAYS = 4
LANGUAGES = ("en", "fr", "de")
FIRST_DAY = dt.date(2024, 5, 1)
K = 10
MODEL = "bench/random-vectors"


def _table(first: int, values: np.ndarray, scales: np.ndarray, day: dt.date, language: str) -> pa.Table:
    count = len(scales)
    numbers = range(first, first + count)
    published = dt.datetime.combine(day, dt.time(9), dt.timezone.utc)
    offsets = pa.array(np.arange(0, (count + 1) * EMBEDDING_DIMS, EMBEDDING_DIMS, dtype=np.int32))
    columns = {
        "article_id": [f"a{n:08d}" for n in numbers],
        "url": [f"https://news.example.com/{language}/articles/{n}" for n in numbers],
        "source": pa.array([f"https://news.example.com/{language}/rss"] * count),
        "title": [f"Synthetic headline number {n} about nothing in particular" for n in numbers],
        "published_at": pa.array([published] * count, type=pa.timestamp("us", tz="UTC")),
        "fetched_at": pa.array([published] * count, type=pa.timestamp("us", tz="UTC")),
        "language": pa.array([language] * count),
        "content_hash": [f"{n:064x}" for n in numbers],
        "topic": pa.array(["politics"] * count),
        "model": pa.array([MODEL] * count),
        "run_id": pa.array(["20240501T000000Z-bench0"] * count),
        "embedding": pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=pa.int8())),
        "embedding_scale": pa.array(scales, type=pa.float32()),
        "story_id": [f"s{n % (count // 2 + 1):08d}" for n in numbers],
    }
    arrays = []
    for field in FILE_SCHEMA:  # every column of the schema; the ones search never reads stay null
        value = columns.get(field.name)
        if value is None:
            value = pa.nulls(count, field.type)
        arrays.append(value if isinstance(value, pa.Array) else pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=FILE_SCHEMA)


def write_synthetic_dataset(root: Path, rows: int, seed: int = 0) -> int:
    """``rows`` articles over DAYS x LANGUAGES partitions; returns the bytes written."""
    rng = np.random.default_rng(seed)
    partitions = [(FIRST_DAY + dt.timedelta(days=d), lang) for d in range(DAYS) for lang in LANGUAGES]
    bounds = np.linspace(0, rows, len(partitions) + 1).astype(int)
    written = 0
    for (day, language), start, end in zip(partitions, bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        values, scales = quantise(normalise(rng.standard_normal((end - start, EMBEDDING_DIMS))))
        folder = root / f"dt={day.isoformat()}" / f"lang={language}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "part-20240501T000000Z-bench0-h00000000-0000.parquet"
        pq.write_table(_table(int(start), values, scales, day, language), path,
                       compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
        written += path.stat().st_size
    return written


def measure_search(rows: int, queries: int) -> dict:
    """Queries per second and median / p95 latency of the search query over ``rows`` articles."""
    if rows < 1 or queries < 1:
        raise ValueError("rows and queries must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="newsbeam-search-bench-"))
    try:
        size = write_synthetic_dataset(work / "articles", rows)
        connection = connect(work / "articles")
        rng = np.random.default_rng(1)
        vectors = normalise(rng.standard_normal((queries + 1, EMBEDDING_DIMS)))
        nearest(connection, vectors[0], K, model=MODEL).fetchall()  # warm: file metadata, the plan
        latencies = []
        for vector in vectors[1:]:
            started = time.perf_counter()
            found = nearest(connection, vector, K, model=MODEL).fetchall()
            latencies.append(time.perf_counter() - started)
            if len(found) != min(K, rows):
                raise RuntimeError(f"the query returned {len(found)} rows, expected {min(K, rows)}")
        connection.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    milliseconds = np.array(latencies) * 1000
    return {
        "rows": rows,
        "queries": queries,
        "k": K,
        "files": DAYS * len(LANGUAGES),
        "dataset_mb": round(size / 2**20, 2),
        "queries_per_s": round(queries / sum(latencies), 2),
        "median_ms": round(float(np.median(milliseconds)), 2),
        "p95_ms": round(float(np.percentile(milliseconds, 95)), 2),
        "method": "newsbeam.analytics.search.nearest: DuckDB list_dot_product over the articles view, "
                  "random unit query vectors (no model)",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure_search(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000,
                                    int(sys.argv[2]) if len(sys.argv) > 2 else 20), indent=2))
