"""The run manifest, built from real files the sink wrote and a real runner's metrics."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from newsbeam.metrics import counter
from newsbeam.pipeline import manifest as manifest_module
from newsbeam.pipeline.manifest import build_manifest, format_summary, write_manifest
from newsbeam.records import DeadLetter
from newsbeam.transforms.sink import WriteArticles, WriteDeadLetters
from tests.support.builders import make_article

RUN_ID = "20240601T120000Z-a1b2c3"
OTHER_RUN_ID = "20240531T120000Z-ffffff"
STARTED_AT = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)

ARTICLES = ([make_article(n, lang="en") for n in range(3)]
            + [make_article(n, lang="ar") for n in range(3, 5)]
            + [make_article(n, lang="fr", published="2024-05-02T08:00:00+00:00") for n in range(5, 7)])
EXPECTED_ROWS = {"dt=2024-05-01/lang=ar": 2, "dt=2024-05-01/lang=en": 3, "dt=2024-05-02/lang=fr": 2}
LETTERS = [
    DeadLetter(source="https://feeds.example/broken.xml", stage="fetch", reason="http_500: server answered 500"),
    DeadLetter(source="/in/bad.jsonl", stage="read_file", reason="ValueError: line 3: Expecting value"),
    DeadLetter(source="https://feeds.example/a.xml", stage="normalise", reason="no title or text"),
]
# What the counting steps report: 9 entries read = 7 rows + 1 duplicate + 1 dead-lettered entry.
COUNTED = {"feeds_ok": 1, "feeds_failed": 1, "files_read": 1, "files_failed": 1, "entries_read": 9,
           "duplicates": 1, "dead_lettered_normalise": 1}


class _CountFn(beam.DoFn):
    def process(self, element):
        for name, value in COUNTED.items():
            counter(name).inc(value)
        yield element


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A dataset with this run's articles and dead letters, another run's article, and the runner's result."""
    output = tmp_path_factory.mktemp("manifest") / "out"
    with beam.Pipeline(runner=FnApiRunner()) as other:
        other | beam.Create([make_article(99, lang="en")]) | WriteArticles(str(output), OTHER_RUN_ID)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    pipeline | "Articles" >> beam.Create(ARTICLES) | WriteArticles(str(output), RUN_ID, max_rows_per_file=2)
    pipeline | "Letters" >> beam.Create(LETTERS) | WriteDeadLetters(str(output), RUN_ID)
    pipeline | "Tick" >> beam.Create([None]) | "Count" >> beam.ParDo(_CountFn())
    result = pipeline.run()
    result.wait_until_finish()
    return output, result


def test_the_sink_really_wrote_several_files_per_partition(written):
    """The premise of the tests below: rows are spread over files, and another run shares the folders."""
    output, _ = written
    files = list(output.glob(f"dt=*/lang=*/part-{RUN_ID}-*.parquet"))
    assert len(files) == 4  # at most 2 rows a file: 3 en rows -> 2 files, 2 ar -> 1, 2 fr -> 1
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == len(ARTICLES)
    assert list(output.glob(f"dt=2024-05-01/lang=en/part-{OTHER_RUN_ID}-*.parquet"))


def test_without_metrics_counts_are_zero_and_rows_come_from_the_files(written):
    output, _ = written
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=None, started_at=STARTED_AT,
                              status="committed")
    assert manifest["run_id"] == RUN_ID and manifest["status"] == "committed" and manifest["error"] is None
    assert manifest["rows_per_partition"] == EXPECTED_ROWS
    counts = manifest["counts"]
    assert counts["rows_written"] == sum(EXPECTED_ROWS.values()) == 7
    assert {name: value for name, value in counts.items() if name != "rows_written"} == dict.fromkeys(
        ["feeds_ok", "feeds_not_modified", "feeds_failed", "files_read", "files_failed", "entries_read",
         "already_written", "duplicates", "dead_lettered"], 0)
    assert manifest["failures"] == [
        {"stage": "fetch", "source": "https://feeds.example/broken.xml", "reason": "http_500: server answered 500"},
        {"stage": "read_file", "source": "/in/bad.jsonl", "reason": "ValueError: line 3: Expecting value"},
    ]
    assert manifest["dead_letters_by_stage"] == {"fetch": 1, "normalise": 1, "read_file": 1}
    assert manifest["started_at"] == STARTED_AT.isoformat()


def test_a_runner_whose_metrics_fail_still_gets_a_manifest_with_zero_counts(written):
    class NoMetrics:
        def metrics(self):
            raise NotImplementedError("this runner keeps no metrics")

    output, _ = written
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=NoMetrics(), started_at=STARTED_AT,
                              status="committed")
    assert manifest["counts"]["entries_read"] == 0 and manifest["counts"]["feeds_ok"] == 0
    assert manifest["rows_per_partition"] == EXPECTED_ROWS


def test_counts_come_from_the_runners_metrics_and_add_up(written):
    output, result = written
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=result, started_at=STARTED_AT,
                              status="committed", options={"output": str(output)})
    counts = manifest["counts"]
    assert counts == {"feeds_ok": 1, "feeds_not_modified": 0, "feeds_failed": 1, "files_read": 1, "files_failed": 1,
                      "entries_read": 9, "already_written": 0, "duplicates": 1, "dead_lettered": 1,
                      "rows_written": 7}
    assert manifest["accounting_ok"] is True
    assert manifest["options"] == {"output": str(output)}


def test_a_failed_run_lists_no_partitions_or_dead_letters(written):
    output, _ = written
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=None, started_at=STARTED_AT,
                              status="failed", error="RuntimeError: disk full")
    assert manifest["rows_per_partition"] == {} and manifest["failures"] == []
    assert manifest["counts"]["rows_written"] == 0 and manifest["error"] == "RuntimeError: disk full"


def test_write_manifest_writes_the_run_file_atomically_and_it_reads_back_equal(written, tmp_path, monkeypatch):
    output, result = written
    target = tmp_path / "dataset"  # a fresh output: no _runs folder yet
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=result, started_at=STARTED_AT,
                              status="committed")
    final = target / "_runs" / f"{RUN_ID}.json"
    renames = []
    real_rename = manifest_module.FileSystems.rename

    def checked_rename(sources, destinations):
        # at the switch, the full manifest is already on disk and nothing is visible yet
        [source], [destination] = sources, destinations
        assert destination == str(final) and not final.exists()
        assert json.loads(Path(source).read_text(encoding="utf-8")) == manifest
        renames.append(source)
        return real_rename(sources, destinations)

    monkeypatch.setattr(manifest_module.FileSystems, "rename", checked_rename)
    assert write_manifest(str(target), manifest) == str(final)
    assert renames, "the manifest must be moved into place, not written there"
    assert json.loads(final.read_text(encoding="utf-8")) == manifest
    assert [p.name for p in (target / "_runs").iterdir()] == [f"{RUN_ID}.json"]  # no .inprogress left


def test_write_manifest_replaces_an_earlier_manifest_of_the_run(tmp_path):
    first = {"run_id": RUN_ID, "status": "failed", "counts": {}}
    second = {"run_id": RUN_ID, "status": "committed", "counts": {"rows_written": 3}}
    write_manifest(str(tmp_path), first)
    path = write_manifest(str(tmp_path), second)
    assert json.loads(Path(path).read_text(encoding="utf-8")) == second
    assert sorted(p.name for p in (tmp_path / "_runs").iterdir()) == [f"{RUN_ID}.json"]


def test_summary_names_the_run_its_status_and_every_non_zero_count(written):
    output, result = written
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=result, started_at=STARTED_AT,
                              status="committed")
    summary = format_summary(manifest)
    lines = summary.splitlines()
    assert lines[0] == f"newsbeam run {RUN_ID}: committed"
    non_zero = {name: value for name, value in manifest["counts"].items() if value}
    assert len(non_zero) == 8
    for name, value in non_zero.items():
        assert any(re.fullmatch(rf"\s+{name}\s+{value}", line) for line in lines), (name, summary)
    for partition, rows in EXPECTED_ROWS.items():
        assert any(re.fullmatch(rf"\s+{re.escape(partition)}\s+{rows}", line) for line in lines), partition
    assert "failed fetch: https://feeds.example/broken.xml: http_500: server answered 500" in summary
    assert "failed read_file: /in/bad.jsonl: ValueError: line 3" in summary


def test_summary_of_a_failed_run_says_why(written):
    output, _ = written
    manifest = build_manifest(output=str(output), run_id=RUN_ID, result=None, started_at=STARTED_AT,
                              status="failed", error="RuntimeError: disk full")
    lines = format_summary(manifest).splitlines()
    assert lines[0] == f"newsbeam run {RUN_ID}: failed"
    assert lines[1] == "  error: RuntimeError: disk full"
