"""The installed command's wrapper around ``main``: the garbage collector is
paused while a run imports and builds, collects while the pipeline runs, and
stays out of the shutdown."""
from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from newsbeam.pipeline import cli
from tests.support.pipelines import SEED_ARTICLE, read_rows


@pytest.fixture
def collector_restored():
    yield
    gc.unfreeze()  # console_main freezes this test process's heap; give it back
    gc.enable()


def _record_collector_while_running(seen: list, *, reach_pipeline: bool = True, fail: bool = False):
    def fake_main(argv):
        seen.append(("start", list(argv), gc.isenabled()))
        if reach_pipeline:
            cli._start_up_done()
            seen.append(("pipeline", gc.isenabled()))
        if fail:
            raise RuntimeError("boom")
        return 7
    return fake_main


def test_a_run_collects_garbage_while_the_pipeline_runs(monkeypatch, collector_restored):
    seen: list = []
    monkeypatch.setattr(cli, "main", _record_collector_while_running(seen))
    monkeypatch.setattr(sys, "argv", ["newsbeam", "run", "--output", "x"])
    frozen_before = gc.get_freeze_count()

    assert cli.console_main() == 7
    assert seen == [("start", ["run", "--output", "x"], False), ("pipeline", True)]
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen_before  # the shutdown has nothing left to scan


def test_other_commands_keep_the_collector_running(monkeypatch, collector_restored):
    seen: list = []
    monkeypatch.setattr(cli, "main", _record_collector_while_running(seen, reach_pipeline=False))
    monkeypatch.setattr(sys, "argv", ["newsbeam", "train-heads", "--help"])

    assert cli.console_main() == 7
    assert seen == [("start", ["train-heads", "--help"], True)]


def test_a_run_that_fails_before_its_pipeline_turns_the_collector_back_on(monkeypatch, collector_restored):
    seen: list = []
    monkeypatch.setattr(cli, "main", _record_collector_while_running(seen, reach_pipeline=False, fail=True))
    monkeypatch.setattr(sys, "argv", ["newsbeam", "run"])

    with pytest.raises(RuntimeError, match="boom"):
        cli.console_main()
    assert seen[0][2] is False
    assert gc.isenabled()


def test_start_up_done_leaves_an_enabled_collector_alone(collector_restored):
    frozen_before = gc.get_freeze_count()
    cli._start_up_done()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before  # tests and library callers keep their heap collectable


def test_the_command_line_run_writes_every_row_and_its_manifest(tmp_path):
    output = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "run", "--inputs", str(SEED_ARTICLE),
                           "--output", str(output), "--skip_labels", "--runner", "DirectRunner",
                           "--direct_running_mode", "in_memory", "--direct_num_workers", "1"],
                          capture_output=True, text=True, timeout=300, env={**os.environ,
                                                                             "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(output, "lang, title")
    assert [row["lang"] for row in rows] == ["ar"]
    assert rows[0]["title"]
    assert len(list((output / "_runs").glob("*.json"))) == 1
    assert "manifest:" in done.stdout


@pytest.mark.parametrize("flags, in_process", [
    ([], True),
    (["--runner", "DirectRunner"], True),
    (["--direct_running_mode", "multi_threading"], True),
    (["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"], False),
    (["--runner", "DataflowRunner"], False),
])
def test_work_is_preloaded_only_where_the_pipeline_runs_in_this_process(flags, in_process):
    from apache_beam.options.pipeline_options import PipelineOptions

    assert cli._runs_in_this_process(PipelineOptions(flags)) is in_process
