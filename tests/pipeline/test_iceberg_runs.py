"""--iceberg_table end to end: runs (batch and streaming), kill -9 between the file
commit and the table commit, concurrent runs on one table, compaction, bad flags."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsbeam import iceberg
from newsbeam.pipeline.cli import main
from tests.support.httpserver import Response
from tests.support.pipelines import english_items, only_manifest, read_rows, rss, run_cli

TABLE = "news.articles"


def _write_inputs(folder: Path, prefix: str, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"title": f"{prefix} story {n} about the harbour", "url": f"https://files.example.org/{prefix}/{n}",
                         "body": f"Body of {prefix} story {n}: the harbour authority reported {n} ships today.",
                         "published": f"2024-05-0{1 + n % 3}T08:00:00Z"})
             for n in range(count)]
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _command(output: Path, inputs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "newsbeam.pipeline.cli", "run", "--output", str(output), "--inputs", str(inputs),
            "--max_rows_per_file", "3", "--skip_labels", "--iceberg_table", TABLE, *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NEWSBEAM_CRASH_AT"}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


def _table(output: Path):
    return iceberg.open_table(iceberg.TableSpec(TABLE, str(output), ()), create=False)


def _table_ids(output: Path) -> list[str]:
    return sorted(_table(output).scan().to_arrow().column("article_id").to_pylist())


def _hive_ids(output: Path) -> list[str]:
    return sorted(row["article_id"] for row in read_rows(output, "article_id"))


def test_each_run_is_one_snapshot_named_in_its_manifest(tmp_path):
    output, state = tmp_path / "out", tmp_path / "state"
    first = _write_inputs(tmp_path / "first", "first", 7)
    assert run_cli("--output", str(output), "--inputs", str(first), "--state", str(state), "--skip_labels",
                   "--max_rows_per_file", "3", "--iceberg_table", TABLE, "--run_id", "run-1") == 0
    second = _write_inputs(tmp_path / "second", "second", 4)
    assert run_cli("--output", str(output), "--inputs", str(first), str(second), "--state", str(state),
                   "--skip_labels", "--iceberg_table", TABLE, "--run_id", "run-2") == 0
    table = _table(output)
    snapshots = iceberg.run_snapshots(table)
    assert set(snapshots) == {"run-1", "run-2"} and len(table.snapshots()) == 2
    assert only_manifest(output, "run-1")["iceberg"] == {"table": TABLE, "catalog": "embedded",
                                                         "snapshot_id": snapshots["run-1"]}
    assert only_manifest(output, "run-2")["iceberg"]["snapshot_id"] == snapshots["run-2"]
    assert _table_ids(output) == _hive_ids(output) and len(_table_ids(output)) == 11
    first_only = table.scan(snapshot_id=snapshots["run-1"]).to_arrow()
    assert first_only.num_rows == 7 and set(first_only.column("run_id").to_pylist()) == {"run-1"}
    # the partition columns come back from the folders, typed
    rows = table.scan().to_arrow().select(["dt", "lang"]).to_pylist()
    assert {str(row["dt"]) for row in rows} == {"2024-05-01", "2024-05-02", "2024-05-03"}
    assert {row["lang"] for row in rows} == {"en"}


@pytest.mark.parametrize("point", ["before_table", "mid_commit"])
def test_kill_9_between_the_file_and_table_commits_then_rerun_holds_each_article_once(tmp_path, point):
    inputs = _write_inputs(tmp_path / "inputs", "harbour", 12)
    output, state = tmp_path / "out", tmp_path / "state"
    command = _command(output, inputs, "--state", str(state))
    crashed = subprocess.run([*command, "--run_id", "killed"], env=_env(NEWSBEAM_CRASH_AT=point),
                             capture_output=True, timeout=180)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    rerun = subprocess.run(command, env=_env(), capture_output=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    ids = _table_ids(output)
    assert len(ids) == len(set(ids)) == 12
    assert ids == _hive_ids(output)
    if point == "before_table":  # every file had landed: the killed run's files are its own snapshot
        assert "killed" in iceberg.run_snapshots(_table(output))
        assert "registered files an earlier run committed" in rerun.stderr.decode()


def test_two_concurrent_runs_on_one_table_both_land(tmp_path):
    output = tmp_path / "out"
    runs = [subprocess.Popen(_command(output, _write_inputs(tmp_path / name, name, 9), "--run_id", name),
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name in ("left", "right")]
    for run in runs:
        _, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr.decode()[-2000:]
    assert set(iceberg.run_snapshots(_table(output))) == {"left", "right"}
    ids = _table_ids(output)
    assert len(ids) == len(set(ids)) == 18 and ids == _hive_ids(output)


def test_compact_rewrites_a_partition_in_the_table_as_one_snapshot(tmp_path):
    output = tmp_path / "out"
    inputs = _write_inputs(tmp_path / "inputs", "small", 9)  # 3 per day, one file each of 3 rows
    for run_id in ("a", "b"):
        assert run_cli("--output", str(output), "--inputs", str(inputs), "--skip_labels", "--max_rows_per_file", "1",
                       "--iceberg_table", TABLE, "--run_id", run_id) == 0
    before = _table(output).current_snapshot().snapshot_id
    files_before = len(iceberg.held_files(_table(output)))
    assert main(["compact", "--output", str(output), "--partition", "dt=2024-05-01",
                 "--iceberg_table", TABLE]) == 0
    table = _table(output)
    latest = table.current_snapshot()
    assert latest.summary.additional_properties[iceberg.OPERATION_PROPERTY] == "compact"
    assert latest.parent_snapshot_id == before  # one snapshot for the partition
    assert len(iceberg.held_files(table)) == files_before - 6 + 1
    assert _table_ids(output) == _hive_ids(output) and len(_table_ids(output)) == 18


def test_a_streaming_run_commits_each_window_as_a_snapshot(tmp_path, http_server):
    items = english_items("stream", 5)
    served = iter([rss(items[:2]), rss(items)])
    http_server.route("/feed.xml", lambda _r: Response(body=next(served, rss(items))))
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--streaming", "--feeds", http_server.url("/feed.xml"),
                   "--poll_interval", "2", "--max_duration", "6", "--window_seconds", "2",
                   "--allow_private_addresses", "--skip_labels", "--iceberg_table", TABLE, "--run_id", "live") == 0
    table = _table(output)
    windows = [snapshot.summary.additional_properties for snapshot in table.snapshots()]
    assert windows and all(props[iceberg.RUN_PROPERTY] == "live" and props["newsbeam.window"].startswith("-w")
                           for props in windows)
    ids = _table_ids(output)
    assert len(ids) == len(set(ids)) == 5 and ids == _hive_ids(output)


def test_table_flags_fail_in_one_line(tmp_path, capsys):
    inputs = _write_inputs(tmp_path / "inputs", "x", 1)
    assert run_cli("--output", str(tmp_path / "out"), "--inputs", str(inputs), "--skip_labels",
                   "--iceberg_table", "articles") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "newsbeam: --iceberg_table 'articles': expected NAMESPACE.TABLE (letters, digits, '_')"]
    assert run_cli("--output", str(tmp_path / "out"), "--inputs", str(inputs), "--skip_labels",
                   "--iceberg_catalog", "prod") == 2
    assert "--iceberg_catalog names the catalog of --iceberg_table" in capsys.readouterr().err
    assert run_cli("--output", str(tmp_path / "out"), "--inputs", str(inputs), "--skip_labels",
                   "--iceberg_table", TABLE, "--iceberg_catalog", "nosuch") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("newsbeam: --iceberg_catalog nosuch:")
