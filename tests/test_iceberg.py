"""newsbeam.iceberg on its own: the dataset's files registered in place, partition
values read from the folders, sync as the repair and as compaction's snapshot."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from newsbeam import iceberg
from newsbeam.schema import FILE_SCHEMA

RUN_A, RUN_B = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"


def _rows(run_id: str, ids: list[str], language: str) -> pa.Table:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    columns = {field.name: [None] * len(ids) for field in FILE_SCHEMA}
    columns.update(article_id=ids, source=["https://example.org/feed"] * len(ids), title=[f"title {i}" for i in ids],
                   fetched_at=[now] * len(ids), language=[language] * len(ids), content_hash=ids,
                   run_id=[run_id] * len(ids))
    return pa.Table.from_pydict(columns, schema=FILE_SCHEMA)


def _write(output: Path, run_id: str, partition: str, ids: list[str], number: int = 0) -> Path:
    folder = output / partition
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{run_id}-h0123abcd-{number:04d}.parquet"
    pq.write_table(_rows(run_id, ids, partition.rsplit("=", 1)[1]), path)
    return path


def _spec(output: Path, keys=("dt", "lang")) -> iceberg.TableSpec:
    return iceberg.TableSpec("news.articles", str(output), tuple(keys))


def _ids(spec, snapshot_id=None) -> list[str]:
    table = iceberg.open_table(spec, create=False)
    return sorted(table.scan(snapshot_id=snapshot_id).to_arrow().column("article_id").to_pylist())


def test_files_are_registered_in_place_with_partition_values_from_their_folders(tmp_path):
    output = tmp_path / "out"
    path = _write(output, RUN_A, "dt=2026-01-01/lang=ar", ["a1", "a2"])
    _write(output, RUN_A, "dt=2026-01-02/lang=en", ["a3"])
    before = path.read_bytes()
    spec = _spec(output)
    (snapshot_id,) = iceberg.sync(spec)
    table = iceberg.open_table(spec)
    assert path.read_bytes() == before  # no rewrite, no second copy
    assert str(path) in iceberg.held_files(table)
    rows = table.scan().to_arrow().sort_by("article_id").select(["article_id", "dt", "lang"]).to_pylist()
    assert rows == [{"article_id": "a1", "dt": dt.date(2026, 1, 1), "lang": "ar"},
                    {"article_id": "a2", "dt": dt.date(2026, 1, 1), "lang": "ar"},
                    {"article_id": "a3", "dt": dt.date(2026, 1, 2), "lang": "en"}]
    assert iceberg.run_snapshots(table) == {RUN_A: snapshot_id}
    # Polars reads the same table and projects the partition columns too
    frame = pl.scan_iceberg(table).filter(pl.col("lang") == "ar").select("article_id").collect()
    assert sorted(frame["article_id"].to_list()) == ["a1", "a2"]
    # the catalog lives beside the data, never among the article files
    assert (output / "_iceberg" / "catalog.db").is_file()


def test_commit_is_idempotent_and_sync_adds_each_run_as_its_own_snapshot(tmp_path):
    output = tmp_path / "out"
    first = _write(output, RUN_A, "dt=2026-01-01/lang=ar", ["a1"])
    spec = _spec(output)
    snapshot_a = iceberg.commit_files(spec, [str(first)], RUN_A)
    assert iceberg.commit_files(spec, [str(first)], RUN_A) is None  # already held: no second snapshot
    assert iceberg.sync(spec) == []
    # a run whose files landed but whose table commit never happened (kill -9)
    _write(output, RUN_B, "dt=2026-01-02/lang=en", ["b1", "b2"])
    (snapshot_b,) = iceberg.sync(spec)
    table = iceberg.open_table(spec)
    assert iceberg.run_snapshots(table) == {RUN_A: snapshot_a, RUN_B: snapshot_b}
    assert _ids(spec) == ["a1", "b1", "b2"]
    assert _ids(spec, snapshot_a) == ["a1"]  # time travel
    assert iceberg.snapshot_files(spec, str(snapshot_a)) == (snapshot_a, [str(first)])


def test_compaction_replaces_files_in_one_snapshot_and_readers_see_before_or_after(tmp_path):
    output = tmp_path / "out"
    old = [_write(output, RUN_A, "dt=2026-01-01/lang=ar", [f"a{n}"], number=n) for n in range(3)]
    other = _write(output, RUN_A, "dt=2026-01-02/lang=en", ["e1"])
    spec = _spec(output)
    (before,) = iceberg.sync(spec)
    merged = pa.concat_tables([pq.read_table(path) for path in old])
    compacted = output / "dt=2026-01-01/lang=ar" / "part-compact-20260103T000000Z-cccccc-h0123abcd-0000.parquet"
    pq.write_table(merged, compacted)
    for path in old:
        os.remove(path)
    (after,) = iceberg.sync(spec, operation="compact", only=[str(output / "dt=2026-01-01/lang=ar")])
    table = iceberg.open_table(spec)
    snapshot = table.snapshot_by_id(after)
    assert snapshot.summary.operation.value == "overwrite"
    assert snapshot.summary.additional_properties[iceberg.OPERATION_PROPERTY] == "compact"
    assert sorted(iceberg.held_files(table)) == sorted([str(compacted), str(other)])
    assert _ids(spec) == ["a0", "a1", "a2", "e1"]  # the same rows, each once
    assert iceberg.snapshot_files(spec, str(before))[1] == sorted(str(p) for p in [*old, other])


def test_a_new_column_in_the_file_schema_is_added_to_an_existing_table(tmp_path):
    output = tmp_path / "out"
    _write(output, RUN_A, "dt=2026-01-01/lang=ar", ["a1"])
    spec = _spec(output)
    iceberg.sync(spec)
    table = iceberg.open_table(spec)
    with table.update_schema() as update:  # a table made by an older schema version
        update.delete_column("story_id")
    assert "story_id" not in table.refresh().schema().column_names
    reopened = iceberg.open_table(spec)
    assert "story_id" in reopened.schema().column_names
    assert _ids(spec) == ["a1"]


def test_problems_are_one_line_errors(tmp_path):
    output = tmp_path / "out"
    _write(output, RUN_A, "dt=2026-01-01/lang=ar", ["a1"])
    with pytest.raises(iceberg.TableError, match="NAMESPACE.TABLE"):
        iceberg.check_table_name("articles")
    with pytest.raises(iceberg.TableError, match="no Iceberg table news.articles"):
        iceberg.open_table(_spec(output), create=False)
    iceberg.sync(_spec(output))
    with pytest.raises(iceberg.TableError, match="partitioned by dt,lang, this run by dt"):
        iceberg.open_table(_spec(output, keys=("dt",)))
    with pytest.raises(iceberg.TableError, match="not local"):
        iceberg.load_catalog(iceberg.TableSpec("news.articles", "gs://bucket/out", ("dt",)))
    with pytest.raises(iceberg.TableError, match="snapshot id or an ISO time"):
        iceberg.snapshot_files(_spec(output), "yesterday")
    with pytest.raises(iceberg.TableError, match="no snapshot with that id"):
        iceberg.snapshot_files(_spec(output), "12345")
    with pytest.raises(iceberg.TableError, match="no snapshot that old"):
        iceberg.snapshot_files(_spec(output), "2001-01-01T00:00Z")
    with pytest.raises(iceberg.TableError, match="--iceberg_catalog nosuch"):
        iceberg.load_catalog(iceberg.TableSpec("news.articles", str(output), ("dt",), "nosuch"))


def test_folder_values_are_unescaped_and_the_hive_default_is_null():
    path = "/x/dt=__HIVE_DEFAULT_PARTITION__/source_host=news%2Eexample.org/part-r-h0123abcd-0000.parquet"
    assert iceberg.folder_partition(path, ["dt", "source_host"]) == {"dt": None, "source_host": "news.example.org"}


@pytest.mark.parametrize("method", ["create_namespace", "create_table"])
def test_losing_the_race_to_create_the_table_is_not_an_error(tmp_path, monkeypatch, method):
    """Two first runs at once: the SQLite catalog refuses the second insert with an IntegrityError
    (not pyiceberg's AlreadyExists), which failed one run (seen in tests/pipeline/test_iceberg_runs.py)."""
    import sqlalchemy.exc
    from pyiceberg.catalog.sql import SqlCatalog

    real = getattr(SqlCatalog, method)

    def created_by_the_other_run_first(self, *args, **kwargs):
        real(self, *args, **kwargs)  # the winner's insert ...
        raise sqlalchemy.exc.IntegrityError("INSERT ...", {}, Exception("UNIQUE constraint failed"))  # ... ours

    monkeypatch.setattr(SqlCatalog, method, created_by_the_other_run_first)
    spec = iceberg.TableSpec("news.articles", str(tmp_path / "out"), ("dt", "lang"))
    table = iceberg.open_table(spec)
    assert [field.name for field in table.spec().fields] == ["dt", "lang"]



def test_opening_a_new_embedded_catalog_waits_for_another_opener(tmp_path):
    """Opening a new SQLite catalog creates its tables; two first runs at once raced there
    ("table iceberg_tables already exists", seen once in make test), so openers take turns."""
    import fcntl
    import threading

    iceberg.load_catalog(iceberg.TableSpec("news.articles", str(tmp_path / "warm"), ("dt",)))  # imports done
    folder = tmp_path / "out" / iceberg.ICEBERG_DIR
    folder.mkdir(parents=True)
    opened = threading.Event()

    def open_catalog():
        iceberg.load_catalog(iceberg.TableSpec("news.articles", str(tmp_path / "out"), ("dt",))).list_namespaces()
        opened.set()

    with open(folder / "catalog.db.open-lock", "a") as other_opener:
        fcntl.flock(other_opener, fcntl.LOCK_EX)
        thread = threading.Thread(target=open_catalog)
        thread.start()
        assert not opened.wait(1.0)  # waits while another process is creating the catalog
    thread.join(timeout=30)
    assert opened.is_set() and (folder / "catalog.db").is_file()
