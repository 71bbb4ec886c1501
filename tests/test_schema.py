"""Schema versioning: files carry their version; old and new files read together.

The rule (newsbeam/schema.py): columns are only added, always nullable. Here
"version 0" is FILE_SCHEMA without its two latest columns; a dataset mixing
v0 and current files must read completely in DuckDB, pyarrow and Polars, with
the v0 rows' missing columns null.
"""
from __future__ import annotations

from collections import defaultdict

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from newsbeam.analytics.dataset import connect
from newsbeam.parquet import write_parquet
from newsbeam.schema import FILE_SCHEMA, SCHEMA_VERSION, article_to_row
from tests.support.datasets import sample_articles, write_articles

LATE_COLUMNS = ("model", "body_source")
OLD_SCHEMA = pa.schema(
    [field for field in FILE_SCHEMA if field.name not in LATE_COLUMNS],
    metadata={"newsbeam.schema_version": "0"},
)
HIVE = ds.partitioning(pa.schema([("dt", pa.date32()), ("lang", pa.string())]), flavor="hive")


@pytest.fixture
def mixed_dataset(tmp_path):
    """v0 files for the first two days, current files after, one partition holding both."""
    articles = sample_articles(per_day=8, days=4)
    old, new = articles[:20], articles[20:]  # day 3 (articles 16..23) gets files of both versions
    write_articles(tmp_path, old, "run-v0", schema=OLD_SCHEMA)
    write_articles(tmp_path, new, "run-v1")
    return tmp_path, {a.article_id for a in old}, {a.article_id for a in new}


def _version(path) -> str:
    return pq.read_schema(path).metadata[b"newsbeam.schema_version"].decode()


def test_the_pipeline_writer_stores_the_schema_version(tmp_path):
    path = tmp_path / "part-run-0.parquet"
    write_parquet(str(path), FILE_SCHEMA, [article_to_row(sample_articles(1, 1)[0], "run")])

    assert _version(path) == SCHEMA_VERSION
    assert pq.read_schema(path).names == FILE_SCHEMA.names


def test_the_fixture_really_mixes_versions(mixed_dataset):
    root, _, _ = mixed_dataset
    versions_per_partition = defaultdict(set)
    for path in root.rglob("*.parquet"):
        versions_per_partition[path.parent].add(_version(path))
    assert {"0", SCHEMA_VERSION} in versions_per_partition.values()  # one partition holds both


def _check(rows: list[dict], old_ids: set, new_ids: set) -> None:
    assert {row["article_id"] for row in rows} == old_ids | new_ids
    assert len(rows) == len(old_ids | new_ids)
    for row in rows:
        late = [row[column] for column in LATE_COLUMNS]
        if row["article_id"] in old_ids:
            assert late == [None, None]
        else:
            assert late == ["test-model@1", "feed"]
        assert row["dt"] is not None and row["title"]


def test_duckdb_view_unions_by_name(mixed_dataset):
    root, old_ids, new_ids = mixed_dataset
    relation = connect(root).sql(f"SELECT article_id, dt, title, {', '.join(LATE_COLUMNS)} FROM articles")
    _check([dict(zip(relation.columns, row)) for row in relation.fetchall()], old_ids, new_ids)


def test_pyarrow_dataset_with_the_current_schema(mixed_dataset):
    root, old_ids, new_ids = mixed_dataset
    dataset = ds.dataset(root, format="parquet", partitioning=HIVE, schema=pa.unify_schemas([FILE_SCHEMA, HIVE.schema]))
    _check(dataset.to_table().to_pylist(), old_ids, new_ids)


def test_polars_with_the_current_schema(mixed_dataset):
    root, old_ids, new_ids = mixed_dataset
    frame = pl.scan_parquet(
        root / "dt=*/**/*.parquet", hive_partitioning=True,
        schema=pl.from_arrow(FILE_SCHEMA.empty_table()).schema, missing_columns="insert",
    ).collect()
    assert frame.schema["dt"] == pl.Date
    _check(frame.to_dicts(), old_ids, new_ids)
