"""`newsbeam compact`: fewer files, the same rows, and readers never see a row twice or miss one."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import threading
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from newsbeam.layout import COMPACT_LOCK_NAME as LOCK_NAME
from newsbeam.layout import PART_NAME_RE, run_key_of
from newsbeam.pipeline.cli import main
from newsbeam.pipeline.compact import CompactionLocked, compact_dataset
from newsbeam.pipeline.compaction_files import find_leaf_folders, parse_partition, rows_per_output_file
from newsbeam.schema import FILE_SCHEMA
from tests.support.datasets import sample_article, write_articles

DAY_ONE, DAY_TWO = dt.date(2024, 5, 1), dt.date(2024, 5, 2)
EN, AR = 0, 1  # indexes into tests.support.datasets.SOURCES
# (day, source, runs, articles per run): 4 + 3 + 3 = 10 files in three leaf folders.
LAYOUT = ((DAY_ONE, EN, 4, 5), (DAY_ONE, AR, 3, 4), (DAY_TWO, EN, 3, 6))
COUNT_SQL = "SELECT count(*), count(DISTINCT article_id) FROM read_parquet('{glob}', hive_partitioning=true)"


def build_small_files(root: Path) -> list[str]:
    """Ten small files written by several runs; returns every article_id written."""
    ids, number = [], 0
    for day, source, runs, per_run in LAYOUT:
        for run in range(runs):
            articles = []
            for _ in range(per_run):
                # Descending ids across runs, so sorting on compaction is visible.
                articles.append(sample_article(900 - number, day=day, source_index=source))
                number += 1
            # Articles without published_at land on their fetched_at date, which is the same day.
            write_articles(root, articles, f"20240501T0{run}0000Z-{source}{day.day}abcd")
            ids.extend(a.article_id for a in articles)
    return ids


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*=*/**/*.parquet"))


def duckdb_count(root: Path) -> tuple[int, int]:
    connection = duckdb.connect()
    try:
        return connection.execute(COUNT_SQL.format(glob=f"{root}/*=*/**/*.parquet")).fetchone()
    finally:
        connection.close()


def all_ids(root: Path) -> list[str]:
    return sorted(id_ for path in parquet_files(root) for id_ in pq.read_table(path, columns=["article_id"]).column(0).to_pylist())


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "articles"
    return root, build_small_files(root)


def test_sample_layout_has_ten_small_files_in_three_leaves(dataset):
    root, ids = dataset
    assert len(parquet_files(root)) == 10
    assert [leaf.partition for leaf in find_leaf_folders(str(root))] == [
        "dt=2024-05-01/lang=ar", "dt=2024-05-01/lang=en", "dt=2024-05-02/lang=en"]
    assert duckdb_count(root) == (len(ids), len(ids)) == (50, 50)


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 exchange is Linux-only")
def test_readers_during_compaction_see_each_row_exactly_once(dataset):
    root, ids = dataset
    total = len(ids)
    observed_at_steps: list[tuple[str, str, tuple[int, int]]] = []
    background_counts: list[tuple[int, int]] = []
    background_errors: list[str] = []
    finished = threading.Event()

    def count_repeatedly():
        while not finished.is_set():
            try:
                background_counts.append(duckdb_count(root))
            except duckdb.IOException as error:  # listed before a swap, opened after: the query fails
                background_errors.append(str(error))

    def count_at_each_step(step: str, partition: str):
        observed_at_steps.append((step, partition, duckdb_count(root)))
        finished.wait(0.05)  # let the background reader run against this intermediate state

    reader = threading.Thread(target=count_repeatedly)
    reader.start()
    try:
        report = compact_dataset(str(root), on_step=count_at_each_step)
    finally:
        finished.set()
        reader.join()

    assert [r.strategy for r in report.compacted] == ["exchange"] * 3
    assert [(step, partition) for step, partition, _ in observed_at_steps] == [
        (step, leaf) for leaf in ("dt=2024-05-01/lang=ar", "dt=2024-05-01/lang=en", "dt=2024-05-02/lang=en")
        for step in ("staged", "swapped", "done")]
    assert {count for _, _, count in observed_at_steps} == {(total, total)}
    print(f"background reader: {len(background_counts)} counts, {len(background_errors)} failed queries")
    assert len(background_counts) >= 5
    assert set(background_counts) == {(total, total)}, Counter(background_counts)
    # A query that listed a leaf's old files and opens one after the swap fails as a
    # whole (retry it); it never returns a wrong count. Rare: about 1 in 30 here.
    assert all("No such file or directory" in error for error in background_errors)
    assert len(background_errors) < len(background_counts)
    assert len(parquet_files(root)) == 3
    assert all_ids(root) == sorted(ids)
    assert duckdb_count(root) == (total, total)
    assert not (root / "_tmp").exists() and not (root / LOCK_NAME).exists()


def test_compacted_files_keep_schema_order_compression_and_run_naming(dataset):
    root, ids = dataset
    before = [pq.read_table(path) for path in parquet_files(root)]
    # FILE_SCHEMA as Parquet stores it (list items come back named "element").
    written_schema = pq.read_schema(parquet_files(root)[0])
    assert written_schema.metadata == FILE_SCHEMA.metadata and written_schema.names == FILE_SCHEMA.names
    report = compact_dataset(str(root), compact_id="20240601T000000Z-c0ffee")
    assert sum(r.rows for r in report.compacted) == len(ids) and len(before) == 10
    for path in parquet_files(root):
        assert PART_NAME_RE.match(path.name) and run_key_of(path.name) == "compact-20240601T000000Z-c0ffee"
        schema = pq.read_schema(path)
        assert schema.equals(written_schema, check_metadata=True)
        metadata = pq.ParquetFile(path).metadata
        assert {metadata.row_group(0).column(i).compression for i in range(metadata.num_columns)} == {"ZSTD"}
        article_ids = pq.read_table(path, columns=["article_id"]).column(0).to_pylist()
        assert article_ids == sorted(article_ids)
    # Whole rows survive, not only ids: compare every column of the sorted tables.
    import pyarrow as pa

    def all_rows(paths):
        return pa.concat_tables([pq.read_table(p) for p in paths]).sort_by("article_id").to_pylist()

    assert all_rows(parquet_files(root)) == sorted((row for t in before for row in t.to_pylist()),
                                                   key=lambda row: row["article_id"])


def test_partition_prefix_selects_leaf_folders(dataset):
    root, _ = dataset
    only_ar = compact_dataset(str(root), ["dt=2024-05-01/lang=ar"])
    assert [r.partition for r in only_ar.compacted] == ["dt=2024-05-01/lang=ar"]
    assert len(list((root / "dt=2024-05-01" / "lang=en").glob("*.parquet"))) == 4
    day_one = compact_dataset(str(root), ["dt=2024-05-01"])
    assert [r.partition for r in day_one.compacted] == ["dt=2024-05-01/lang=en"]
    assert day_one.skipped == ["dt=2024-05-01/lang=ar"]  # one file left: nothing to gain
    assert len(list((root / "dt=2024-05-02" / "lang=en").glob("*.parquet"))) == 3
    with pytest.raises(ValueError, match="bad --partition 'dt'"):
        compact_dataset(str(root), ["dt"])
    assert parse_partition("/dt=2024-05-01/lang=a b/") == ("dt=2024-05-01", "lang=a%20b")


def test_files_at_target_size_are_left_alone_and_kept_by_hard_link(dataset):
    root, ids = dataset
    leaf = root / "dt=2024-05-01" / "lang=en"
    small = sorted(leaf.glob("*.parquet"))
    big_articles = [sample_article(2000 + n, day=DAY_ONE, source_index=EN) for n in range(1000)]
    write_articles(root, big_articles, "20240501T100000Z-big001")
    big = leaf / "part-20240501T100000Z-big001-0.parquet"
    big_inode = big.stat().st_ino
    # A target at the big file's size: that one counts as done, the four small ones merge.
    report = compact_dataset(str(root), ["dt=2024-05-01/lang=en"], target_file_bytes=big.stat().st_size)
    assert (report.compacted[0].files_before, report.compacted[0].files_after) == (4, 1)
    assert report.compacted[0].strategy == "exchange"
    assert big.stat().st_ino == big_inode  # the very same file, carried over by a hard link
    assert not any(path.exists() for path in small) and len(list(leaf.glob("*.parquet"))) == 2
    assert all_ids(root) == sorted(ids + [a.article_id for a in big_articles])


def test_output_files_are_sized_by_data_bytes_not_file_count():
    assert rows_per_output_file(1000, 1_000_000, 128 * 1024 * 1024) == 134217
    assert rows_per_output_file(1000, 1_000_000, 10_000) == 10
    assert rows_per_output_file(0, 0, 10_000) == 1


def test_replace_strategy_shows_its_window_and_ends_exactly_once(dataset):
    root, ids = dataset
    leaf_rows = 3 * 4
    seen = {}
    report = compact_dataset(str(root), ["dt=2024-05-01/lang=ar"], allow_exchange=False,
                             on_step=lambda step, partition: seen.setdefault(step, duckdb_count(root)))
    assert report.compacted[0].strategy == "replace"
    # Documented, not hidden: between placing the new file and deleting the old ones
    # a reader sees the partition twice. That is why exchange is used where it can be.
    assert seen["placed"] == (len(ids) + leaf_rows, len(ids))
    assert seen["swapped"] == seen["done"] == (len(ids), len(ids))
    assert all_ids(root) == sorted(ids)


class Crash(RuntimeError):
    pass


def crash_at(when: str):
    def hook(step: str, partition: str):
        if step == when:
            raise Crash(f"killed at {step} of {partition}")
    return hook


@pytest.mark.parametrize("allow_exchange, step", [(False, "staged"), (False, "placed"), (True, "staged"), (True, "swapped")])
def test_interrupted_compaction_is_finished_by_the_next_one(dataset, allow_exchange, step):
    root, ids = dataset
    with pytest.raises(Crash):
        compact_dataset(str(root), ["dt=2024-05-01/lang=ar"], allow_exchange=allow_exchange, on_step=crash_at(step))
    assert (root / "_tmp").is_dir()
    report = compact_dataset(str(root), ["dt=2024-05-02"])
    assert report.recovered == 1
    assert duckdb_count(root) == (len(ids), len(ids))
    assert all_ids(root) == sorted(ids)
    assert not (root / "_tmp").exists()


def test_a_file_committed_during_the_swap_is_kept(dataset):
    root, ids = dataset
    late = [sample_article(5000, day=DAY_ONE, source_index=AR)]

    def run_commits_a_file(step: str, partition: str):
        if step == "staged":
            write_articles(root, late, "20240501T090000Z-late01")

    compact_dataset(str(root), ["dt=2024-05-01/lang=ar"], on_step=run_commits_a_file)
    assert all_ids(root) == sorted(ids + ["a5000"])
    assert (root / "dt=2024-05-01" / "lang=ar" / "part-20240501T090000Z-late01-0.parquet").exists()


def test_older_schema_files_gain_null_columns(tmp_path):
    root = tmp_path / "articles"
    old_schema = FILE_SCHEMA.remove(FILE_SCHEMA.get_field_index("body_source"))
    write_articles(root, [sample_article(1, day=DAY_ONE, source_index=EN)], "20240501T000000Z-old001", schema=old_schema)
    write_articles(root, [sample_article(2, day=DAY_ONE, source_index=EN)], "20240501T010000Z-new001")
    compact_dataset(str(root))
    (path,) = parquet_files(root)
    rows = pq.read_table(path).to_pylist()
    assert [(row["article_id"], row["body_source"]) for row in rows] == [("a0001", None), ("a0002", "feed")]


def test_cli_compacts_and_reports(dataset, capsys):
    root, ids = dataset
    assert main(["compact", "--output", str(root), "--dry_run"]) == 0
    assert "would compact dt=2024-05-01/lang=en: 4 files" in capsys.readouterr().out
    assert len(parquet_files(root)) == 10
    assert main(["compact", "--output", str(root), "--partition", "dt=2024-05-02", "--min_files", "3"]) == 0
    out = capsys.readouterr().out
    assert "compacted dt=2024-05-02/lang=en: 3 files" in out and "-> 1 file(s)" in out and "18 rows" in out
    assert main(["compact", "--output", str(root), "--target_file_mb", "64"]) == 0
    assert "2 partition(s) compacted, 1 left as they are" in capsys.readouterr().out
    assert len(parquet_files(root)) == 3 and all_ids(root) == sorted(ids)


def test_cli_refuses_bad_input_and_a_held_lock(dataset, capsys):
    root, _ = dataset
    assert main(["compact", "--output", str(root), "--partition", "dt=1999-01-01"]) == 2
    assert "matches ['dt=1999-01-01']" in capsys.readouterr().err
    assert main(["compact", "--output", str(root), "--partition", "nonsense"]) == 2
    assert main(["compact", "--output", str(root / "missing")]) == 2
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": dt.datetime.now(dt.timezone.utc).isoformat()}
    (root / LOCK_NAME).write_text(json.dumps(holder))
    assert main(["compact", "--output", str(root)]) == 4
    assert "another compaction holds" in capsys.readouterr().err
    with pytest.raises(CompactionLocked):
        compact_dataset(str(root))
    assert len(parquet_files(root)) == 10


def test_an_unreadable_file_leaves_its_partition_as_it_is_and_the_others_are_compacted(dataset, capsys):
    root, ids = dataset
    broken = root / "dt=2024-05-01" / "lang=ar" / "part-broken-h00000000-0001.parquet"
    broken.write_bytes(b"PAR1 cut short")
    ar_before = sorted(path.name for path in broken.parent.glob("*.parquet"))

    assert main(["compact", "--output", str(root)]) == 1  # something was left undone: not a clean 0
    captured = capsys.readouterr()
    problems = captured.err.strip().splitlines()
    assert len(problems) == 1
    assert problems[0].startswith(f"newsbeam compact: left dt=2024-05-01/lang=ar as it is: cannot read {broken}: ")
    assert "2 partition(s) compacted, 1 left as they are" in captured.out
    assert sorted(path.name for path in broken.parent.glob("*.parquet")) == ar_before  # untouched, nothing lost
    readable = [path for path in parquet_files(root) if path != broken]
    assert sorted(i for path in readable for i in pq.read_table(path, columns=["article_id"]).column(0).to_pylist()) \
        == sorted(ids)
    assert len(list((root / "dt=2024-05-01" / "lang=en").glob("*.parquet"))) == 1
    assert not (root / "_tmp").exists()  # no staging left behind
