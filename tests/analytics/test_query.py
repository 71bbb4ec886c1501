"""``newsbeam query`` and the DuckDB view it runs against."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json

import pyarrow.parquet as pq
import pytest

from newsbeam.analytics import query
from newsbeam.analytics.dataset import connect, detect_partition_keys, read_run_manifests
from newsbeam.schema import FILE_SCHEMA
from tests.support.datasets import (
    FAILED_RUN_ID,
    SOURCES,
    sample_article,
    sample_articles,
    write_articles,
    write_dataset,
)

ARABIC_SOURCE = SOURCES[1][1]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    query.add_arguments(parser)
    status = query.run(parser.parse_args(list(argv)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "articles")


def test_view_holds_every_article_with_typed_partitions(dataset):
    connection = connect(dataset.root)
    rows = connection.sql("SELECT dt, lang, count(*) FROM articles GROUP BY ALL").fetchall()

    assert {f"dt={day.isoformat()}/lang={lang}": n for day, lang, n in rows} == dataset.rows_per_partition
    assert all(isinstance(day, dt.date) for day, _, _ in rows)
    assert connection.execute("SELECT typeof(dt) FROM articles LIMIT 1").fetchone() == ("DATE",)
    # Run manifests and dead letters are not articles.
    assert connection.execute("SELECT count(*) FROM articles").fetchone() == (dataset.row_count,)
    assert connection.execute("SELECT count(*) FROM errors").fetchone() == (1,)


def test_partition_keys_are_read_from_folder_names(tmp_path):
    # A pipeline configured with other keys: dt/source/lang.
    article = sample_article(3, day=dt.date(2024, 6, 1), source_index=1)
    folder = tmp_path / "dt=2024-06-01" / "source=akhbar" / "lang=ar"
    write_articles(tmp_path / "scratch", [article], "run1")
    folder.mkdir(parents=True)
    next((tmp_path / "scratch").rglob("*.parquet")).rename(folder / "part-run1-0.parquet")

    assert detect_partition_keys(tmp_path) == ("dt", "source", "lang")
    row = connect(tmp_path).sql("SELECT dt, lang, article_id FROM articles").fetchall()
    assert row == [(dt.date(2024, 6, 1), "ar", article.article_id)]


def test_empty_or_missing_dataset_gives_an_empty_typed_view(tmp_path):
    connection = connect(tmp_path / "missing")
    columns = {name: column_type for name, column_type, *_ in connection.sql("DESCRIBE articles").fetchall()}

    assert connection.execute("SELECT count(*) FROM articles").fetchone() == (0,)
    assert list(columns) == FILE_SCHEMA.names + ["dt", "lang"]
    assert columns["dt"] == "DATE"


def test_run_manifests_newest_first_and_bad_ones_skipped(dataset):
    (dataset.root / "_runs" / "broken.json").write_text("{not json", encoding="utf-8")
    runs = read_run_manifests(dataset.root)

    assert [run["run_id"] for run in runs] == sorted(dataset.run_ids, reverse=True)
    assert runs[0]["run_id"] == FAILED_RUN_ID and runs[0]["status"] == "failed"


def test_table_output(dataset, capsys):
    status, out, _ = _run(capsys, "SELECT lang, count(*) AS n FROM articles GROUP BY lang ORDER BY lang",
                          "--data", str(dataset.root))
    assert status == 0
    assert [line.split("│")[1].strip() for line in out.splitlines() if "│" in line][2:] == list(dataset.languages)


def test_csv_output_keeps_unicode_and_nested_values(dataset, capsys):
    status, out, _ = _run(capsys, "SELECT source_title, dt, tags FROM articles WHERE lang = 'ar' ORDER BY article_id",
                          "--data", str(dataset.root), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))

    assert status == 0
    assert len(rows) == sum(n for p, n in dataset.rows_per_partition.items() if p.endswith("lang=ar"))
    assert rows[0]["source_title"] == ARABIC_SOURCE
    assert dt.date.fromisoformat(rows[0]["dt"]) in dataset.dates
    assert json.loads(rows[0]["tags"]) == ["budget", "council"]


def test_json_output_is_one_object_per_line(dataset, capsys, tmp_path):
    out_file = tmp_path / "out.jsonl"
    status, out, _ = _run(capsys, "SELECT article_id, published_at, topic_scores FROM articles ORDER BY article_id",
                          "--data", str(dataset.root), "--format", "json", "--out", str(out_file))
    records = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]

    assert status == 0 and out == ""
    assert len(records) == dataset.row_count
    assert records[1]["published_at"].startswith("2024-05-01T07:30:00")
    assert records[1]["topic_scores"][0]["label"] == sample_articles()[1].topic
    assert records[0]["published_at"] is None  # article 0 has no date


def test_parquet_output_needs_out_and_writes_a_file(dataset, capsys, tmp_path):
    status, _, err = _run(capsys, "SELECT 1", "--data", str(dataset.root), "--format", "parquet")
    assert status == 2 and "--out" in err

    out_file = tmp_path / "ar.parquet"
    status, _, _ = _run(capsys, "SELECT * FROM articles WHERE lang = 'ar'",
                        "--data", str(dataset.root), "--format", "parquet", "--out", str(out_file))
    table = pq.read_table(out_file)
    assert status == 0
    assert set(table.column("lang").to_pylist()) == {"ar"}
    assert table.num_rows == sum(n for p, n in dataset.rows_per_partition.items() if p.endswith("lang=ar"))


def test_bad_sql_and_missing_folder_are_reported_not_raised(dataset, capsys, tmp_path):
    status, _, err = _run(capsys, "SELECT nope FROM articles", "--data", str(dataset.root))
    assert status == 2 and "nope" in err
    status, _, err = _run(capsys, "SELECT 1", "--data", str(tmp_path / "missing"))
    assert status == 2 and "no dataset folder" in err


def test_an_unquoted_query_is_its_words_joined(dataset, capsys):
    """`newsbeam query SELECT count(*) AS n FROM articles` was "unrecognized arguments: count(*) ..."."""
    code, out, err = _run(capsys, "--data", str(dataset.root), "--format", "json", "SELECT", "count(*)", "AS", "n",
                          "FROM", "articles")
    assert code == 0, err
    quoted_code, quoted, _ = _run(capsys, "--data", str(dataset.root), "--format", "json",
                                  "SELECT count(*) AS n FROM articles")
    assert quoted_code == 0 and json.loads(out) == json.loads(quoted) and json.loads(out)["n"] == dataset.row_count
