"""The Parquet sink: every row arrives, partitions are safe, nothing partial shows."""
from __future__ import annotations

import functools
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from newsbeam.layout import partition_path, partition_values, sanitise_partition_value, validate_partition_keys
from newsbeam.records import Article
from newsbeam.schema import FILE_SCHEMA, SCHEMA_VERSION
from newsbeam.transforms.sink import WriteArticles
from tests.support.builders import make_article

RUN_ID = "20240101T000000Z-abcdef"


def run_sink(articles, output: Path, **kwargs) -> None:
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        pipeline | beam.Create(articles) | WriteArticles(str(output), RUN_ID, **kwargs)


def test_every_row_arrives_in_hive_folders_that_did_not_exist(tmp_path):
    langs = ["en", "ar", "fr", "zh", "und"]
    articles = [
        make_article(n, lang=langs[n % 5], published=f"2024-05-0{1 + n % 3}T10:00:00+00:00") for n in range(1000)
    ]
    run_sink(articles, tmp_path / "out", max_rows_per_file=70)
    files = sorted((tmp_path / "out").glob("dt=*/lang=*/*.parquet"))
    assert len({f.parent for f in files}) == 15
    table = duckdb.sql(
        f"SELECT article_id, dt, lang FROM read_parquet('{tmp_path}/out/*=*/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert sorted(row[0] for row in table) == sorted(a.article_id for a in articles)
    assert all(pq.ParquetFile(f).metadata.num_rows <= 70 for f in files)
    assert not list((tmp_path / "out").rglob("*.inprogress"))


def test_files_carry_schema_version_zstd_and_no_partition_columns(tmp_path):
    run_sink([make_article(1, lang="ar")], tmp_path)
    [path] = list(tmp_path.glob("dt=2024-05-01/lang=ar/part-*.parquet"))
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.metadata[b"newsbeam.schema_version"] == SCHEMA_VERSION.encode()
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert "dt" not in parquet.schema_arrow.names and parquet.schema_arrow.names == FILE_SCHEMA.names
    dataset = ds.dataset(tmp_path, format="parquet", partitioning="hive")
    assert dataset.to_table().column("lang").to_pylist() == ["ar"]


def test_file_names_are_unique_per_run(tmp_path):
    run_sink([make_article(1)], tmp_path)
    [first] = list(tmp_path.rglob("*.parquet"))
    assert RUN_ID in first.name


@pytest.mark.parametrize("value", ["../../etc", "..", ".", "/abs/path", "a/b", ".hidden", "x\x00y", "ü日本", "a" * 300])
def test_partition_values_never_escape_the_output_folder(value, tmp_path):
    segment = sanitise_partition_value(value)
    assert "/" not in segment and "\x00" not in segment and not segment.startswith(".")
    assert len(segment) <= 100
    resolved = (tmp_path / f"k={segment}").resolve()
    assert resolved.parent == tmp_path.resolve()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_partition_value_is_one_safe_segment(value):
    segment = sanitise_partition_value(value)
    assert segment and "/" not in segment and "\\" not in segment and segment not in (".", "..")
    assert not segment.startswith(".") and segment.isascii() and len(segment) <= 100


def test_language_code_that_tries_to_escape_lands_in_und(tmp_path):
    article = make_article(1, lang="../../../tmp/evil")
    values = dict(partition_values(article, ("dt", "lang")))
    assert values["lang"] == "und"
    run_sink([article], tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").parts[:2] for p in (tmp_path / "out").rglob("*.parquet")] == [
        ("dt=2024-05-01", "lang=und")
    ]


def test_source_host_partition_is_sanitised():
    article = make_article(1).replace(source="https://EVIL..host/../x")
    assert partition_path(partition_values(article, ("source_host",))).count("/") == 0


def test_unknown_partition_key_fails_at_once():
    with pytest.raises(ValueError, match="unknown partition key"):
        validate_partition_keys(["dt", "topic_id"])


def test_unwritable_output_fails_the_pipeline(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    with pytest.raises(Exception):
        run_sink([make_article(1)], blocked / "out")
    assert blocked.read_text() == "a file where a folder should be"


def test_rows_stream_into_files_and_sorted_row_groups_without_being_listed(tmp_path):
    """A partition's packed rows arrive as a one-shot iterator: files of at
    most max_rows_per_file, row groups of ROW_GROUP_ROWS, each group sorted."""
    from newsbeam.packing import pack
    from newsbeam.parquet import ROW_GROUP_ROWS
    from newsbeam.schema import article_to_row
    from newsbeam.transforms.sink import _WriteTempFilesFn
    from tests.support.datasets import sample_articles

    template = sample_articles(per_day=30, days=1)[0]
    total = 2 * ROW_GROUP_ROWS + 300
    ids = [f"{(n * 7919) % total:08d}" for n in range(total)]  # unsorted, all distinct
    taken = []

    def rows():
        for article_id in ids:
            taken.append(article_id)
            yield pack(template.replace(article_id=article_id))

    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import PANE_INFO_UNKNOWN

    writer = _WriteTempFilesFn(str(tmp_path), "run-1", FILE_SCHEMA, ROW_GROUP_ROWS + 500, Article,
                               functools.partial(article_to_row, run_id="run-1"))
    files = writer.process(("dt=2024-05-01/lang=en", rows()), window=GlobalWindow(), pane=PANE_INFO_UNKNOWN)
    written = [next(files)]
    assert len(taken) == ROW_GROUP_ROWS + 500  # the first file was written before the rest was read
    written += list(files)
    assert [file.rows for file in written] == [ROW_GROUP_ROWS + 500, ROW_GROUP_ROWS - 200]
    seen = []
    for file in written:
        parquet = pq.ParquetFile(file.temp_path)
        assert parquet.metadata.num_rows == file.rows
        for group in range(parquet.num_row_groups):
            group_ids = parquet.read_row_group(group, columns=["article_id"]).column(0).to_pylist()
            assert len(group_ids) <= ROW_GROUP_ROWS and group_ids == sorted(group_ids)
            seen += group_ids
    assert sorted(seen) == sorted(ids)
