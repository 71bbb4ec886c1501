"""Reading a dataset on gs://: ``newsbeam query``, ``report`` and ``search`` copy it
locally first, through the real google-cloud-storage client and a GCS JSON API on
127.0.0.1 (tests/support/fake_gcs.py)."""
from __future__ import annotations

import argparse
import json

import pyarrow.parquet as pq
import pytest

from newsbeam.analytics import query, report, search
from newsbeam.layout import is_readable_file
from tests.support.datasets import write_dataset
from tests.support.fake_gcs import fake_gcs

pytest.importorskip("google.cloud.storage")

BUCKET, PREFIX = "news-bucket", "prod/articles"
URL = f"gs://{BUCKET}/{PREFIX}"
# What a bucket holds next to the dataset and a reader must never take in.
NOT_THE_DATASET = ("_tmp/20240505T060000Z-abcdef/1234.parquet.inprogress", "_tmp/compact-x/part-a-0001.parquet",
                   "_compact.lock", "_iceberg/catalog.db", "notes.txt")


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The standard sample dataset uploaded under gs://news-bucket/prod/articles, with leftovers beside it."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    dataset = write_dataset(tmp_path / "written")
    with fake_gcs(monkeypatch) as store:
        for path in sorted(dataset.root.rglob("*")):
            if path.is_file():
                _put(store, path.relative_to(dataset.root).as_posix(), path.read_bytes())
        for relative in NOT_THE_DATASET:
            _put(store, relative, b"not a dataset file")
        yield store, dataset


def _put(store, relative: str, data: bytes) -> None:
    store.objects[(BUCKET, f"{PREFIX}/{relative}")] = (next(store.generations), data)


def _query(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    query.add_arguments(parser)
    status = query.run(parser.parse_args(list(argv)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _count(capsys, copies) -> int:
    status, out, err = _query(capsys, "SELECT count(*) AS n FROM articles", "--data", URL,
                              "--copy-dir", str(copies), "--format", "json")
    assert status == 0, err
    return json.loads(out)["n"]


def test_query_reads_every_row_and_dead_letter_of_a_dataset_on_gcs_and_nothing_else(bucket, capsys, tmp_path):
    _, dataset = bucket
    copies = tmp_path / "copies"
    assert _count(capsys, copies) == dataset.row_count
    status, out, _ = _query(capsys, "SELECT count(*) AS n FROM errors", "--data", URL, "--copy-dir", str(copies),
                            "--format", "json")
    assert status == 0 and json.loads(out)["n"] == 1
    copy = copies / BUCKET / PREFIX
    copied = {path.relative_to(copy).as_posix() for path in copy.rglob("*") if path.is_file()}
    written = {path.relative_to(dataset.root).as_posix() for path in dataset.root.rglob("*") if path.is_file()}
    assert copied - {".newsbeam-copy.json"} == written
    assert not copied & set(NOT_THE_DATASET)


def test_a_second_read_fetches_only_what_changed_and_follows_a_compaction(bucket, capsys, tmp_path):
    store, dataset = bucket
    copies = tmp_path / "copies"
    assert _count(capsys, copies) == dataset.row_count
    copy = copies / BUCKET / PREFIX
    before = {path: path.stat().st_ino for path in copy.rglob("*.parquet")}
    # A compaction: two files of one partition become one new file with their rows; the two go.
    folders = sorted({path.parent for path in dataset.root.rglob("part-*.parquet") if "_errors" not in path.parts})
    merged_inputs = next(files for folder in folders if len(files := sorted(folder.glob("part-*.parquet"))) == 2)
    folder = merged_inputs[0].parent
    merged = folder / "part-compacted-h0000abcd-0001.parquet"
    pq.write_table(pq.ParquetDataset([str(path) for path in merged_inputs]).read(), merged)
    _put(store, merged.relative_to(dataset.root).as_posix(), merged.read_bytes())
    for path in merged_inputs:
        del store.objects[(BUCKET, f"{PREFIX}/{path.relative_to(dataset.root).as_posix()}")]

    assert _count(capsys, copies) == dataset.row_count  # not one row counted twice or lost
    after = {path: path.stat().st_ino for path in copy.rglob("*.parquet")}
    untouched = set(before) - {copy / path.relative_to(dataset.root) for path in merged_inputs}
    assert all(after[path] == before[path] for path in untouched)  # not fetched again
    assert not any((copy / path.relative_to(dataset.root)).exists() for path in merged_inputs)
    assert (copy / merged.relative_to(dataset.root)).is_file()


def test_since_copies_only_the_folders_of_those_days_and_a_full_read_fetches_the_rest(bucket, capsys, tmp_path):
    _, dataset = bucket
    copies, last = tmp_path / "copies", dataset.dates[-1]
    status, out, err = _query(capsys, "SELECT count(*) AS n FROM articles", "--data", URL, "--copy-dir", str(copies),
                              "--format", "json", "--since", str(last))
    assert status == 0, err
    assert json.loads(out)["n"] == sum(n for partition, n in dataset.rows_per_partition.items()
                                       if partition.startswith(f"dt={last}/")) > 0
    copy = copies / BUCKET / PREFIX
    copied_days = {path.relative_to(copy).parts[0] for path in copy.rglob("part-*.parquet")
                   if path.relative_to(copy).parts[0].startswith("dt=")}
    assert copied_days == {f"dt={last}"}
    assert len(list((copy / "_runs").glob("*.json"))) == len(dataset.run_ids)  # undated: always copied
    assert _count(capsys, copies) == dataset.row_count  # without a range: the other days fetched now


def test_report_and_search_take_a_gcs_dataset_too(bucket, capsys, tmp_path):
    _, dataset = bucket
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    out = tmp_path / "report.html"
    status = report.run(parser.parse_args(["--data", URL, "--copy-dir", str(tmp_path / "copies"), "--out", str(out)]))
    assert status == 0
    assert f"{dataset.row_count:,}" in out.read_text(encoding="utf-8")
    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    status = search.run(parser.parse_args(["rates", "--data", URL, "--copy-dir", str(tmp_path / "copies")]))
    # the sample has no embeddings: the answer must come from the copied files, in one line
    assert status == 2 and "has no article embeddings" in capsys.readouterr().err


def test_an_empty_prefix_or_a_bad_url_is_one_line_and_exit_2(bucket, capsys, tmp_path):
    for url, expected in ((f"gs://{BUCKET}/elsewhere", "no dataset at gs://news-bucket/elsewhere"),
                          ("gs://", "no bucket name")):
        status, out, err = _query(capsys, "SELECT 1", "--data", url, "--copy-dir", str(tmp_path / "copies"))
        assert status == 2 and out == "" and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("relative, readable", [
    ("dt=2024-05-01/lang=ar/part-r1-h0a1b2c3d-0001.parquet", True),
    ("part-r1-h0a1b2c3d-0001.parquet", True),  # a dataset without partition keys
    ("_errors/run_id=r1/part-0001.parquet", True),
    ("_runs/r1.json", True),
    ("_tmp/r1/abc.parquet.inprogress", False),
    ("_tmp/compact-1/dt=2024-05-01/part-a-0001.parquet", False),
    ("_iceberg/metadata/v1.metadata.json", False),
    ("_compact.lock", False),
    ("dt=2024-05-01/lang=ar/part-r1-0001.parquet.part", False),
    ("_runs/nested/r1.json", False),
])
def test_the_layout_says_which_files_a_reader_takes_in(relative, readable):
    assert is_readable_file(relative) is readable
