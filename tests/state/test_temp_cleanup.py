"""Temp folders of killed runs: the next run (or ``newsbeam compact``) removes the
``_tmp/<run_id>/`` of runs that are provably over, and never a live run's or
a compaction's staging."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from newsbeam.pipeline.cli import main
from newsbeam.runs import process_start_marker, remove_abandoned_temp_folders
from tests.support.pipelines import read_rows, run_cli

FAST = ["--skip_labels"]
TWO_DAYS = 48 * 3600


def _write_inputs(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir(exist_ok=True)
    lines = [json.dumps({"title": f"Harbour story {n}", "url": f"https://files.example.org/{n}",
                         "body": f"The harbour authority reported {n} ships today, officials said.",
                         "published": "2024-05-01T08:00:00Z"}) for n in range(count)]
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _temp_folder(output: Path, run_id: str, owner: dict | None = None, *, age_seconds: float = 0) -> Path:
    """A run's temp folder holding one half-written file, and its OWNER if given."""
    folder = output / "_tmp" / run_id
    folder.mkdir(parents=True)
    (folder / "0123abcd.parquet.inprogress").write_bytes(b"PAR1 half written")
    if owner is not None:
        (folder / "OWNER").write_text(json.dumps(owner))
    if age_seconds:
        then = time.time() - age_seconds
        for path in [*folder.iterdir(), folder]:
            os.utime(path, (then, then))
    return folder


def _owner(pid: int, host: str | None = None) -> dict:
    return {"host": host or socket.gethostname(), "pid": pid, "process": process_start_marker(pid),
            "since": "2024-05-01T08:00:00+00:00"}


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_the_next_run_removes_the_temp_folder_of_a_run_killed_mid_write(tmp_path):
    inputs = _write_inputs(tmp_path, 12)
    output, state = tmp_path / "out", tmp_path / "state"
    command = [sys.executable, "-m", "newsbeam.pipeline.cli", "run", "--output", str(output), "--state", str(state),
               "--inputs", str(inputs), "--max_rows_per_file", "3", *FAST]
    env = {**{k: v for k, v in os.environ.items() if k != "NEWSBEAM_CRASH_AT"}, "HF_HUB_OFFLINE": "1"}

    killed = subprocess.run([*command, "--run_id", "killed-run"], env={**env, "NEWSBEAM_CRASH_AT": "after_temp_file"},
                            capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert list((output / "_tmp" / "killed-run").glob("*.parquet.inprogress"))  # what the kill left behind

    rerun = subprocess.run([*command, "--run_id", "next-run"], env=env, capture_output=True, text=True, timeout=120)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not (output / "_tmp" / "killed-run").exists()
    assert "removed the temp folder" in rerun.stderr and "killed-run" in rerun.stderr
    ids = [row["article_id"] for row in read_rows(output, "article_id")]
    assert len(ids) == len(set(ids)) == 12


def test_a_run_removes_a_dead_runs_temp_folder_and_keeps_a_live_ones_and_compaction_staging(tmp_path):
    output = tmp_path / "out"
    live_owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # both idle for two days: only whether the owner lives tells them apart
        dead = _temp_folder(output, "dead-run", _owner(_dead_pid()), age_seconds=TWO_DAYS)
        live = _temp_folder(output, "live-run", _owner(live_owner.pid), age_seconds=TWO_DAYS)
        staging = output / "_tmp" / "compact-20240501T000000Z-abcdef" / "0000" / "leaf"
        staging.mkdir(parents=True)
        (staging / "part-x.parquet").write_bytes(b"PAR1")
        os.utime(staging / "part-x.parquet", (time.time() - TWO_DAYS,) * 2)

        assert run_cli("--output", str(output), "--inputs", str(_write_inputs(tmp_path, 3)), *FAST) == 0

        assert not dead.exists()
        assert sorted(p.name for p in live.iterdir()) == ["0123abcd.parquet.inprogress", "OWNER"]
        assert (staging / "part-x.parquet").exists()
        assert len(read_rows(output, "article_id")) == 3
    finally:
        live_owner.kill()
        live_owner.wait()


def test_compact_also_clears_a_dead_runs_temp_folder(tmp_path):
    output = tmp_path / "out"
    dead = _temp_folder(output, "dead-run", _owner(_dead_pid()))
    mine = _temp_folder(output, "this-process", _owner(os.getpid()))  # compaction runs in this test's process

    assert main(["compact", "--output", str(output)]) == 0

    assert not dead.exists()
    assert (mine / "OWNER").exists()


def test_which_temp_folders_count_as_abandoned(tmp_path):
    output = tmp_path / "out"
    ended = _temp_folder(output, "ended-run")
    (output / "_runs").mkdir()
    (output / "_runs" / "ended-run.json").write_text("{}")
    idle = _temp_folder(output, "idle-run", age_seconds=TWO_DAYS)
    empty = output / "_tmp" / "empty-run"
    empty.mkdir()
    os.utime(empty, (time.time() - TWO_DAYS,) * 2)
    elsewhere_idle = _temp_folder(output, "other-host-idle", _owner(1, "another-host.example"), age_seconds=TWO_DAYS)
    elsewhere_busy = _temp_folder(output, "other-host-busy", _owner(1, "another-host.example"))
    recent = _temp_folder(output, "recent-run")
    current = _temp_folder(output, "current-run", _owner(_dead_pid()), age_seconds=TWO_DAYS)

    removed = dict(remove_abandoned_temp_folders(str(output), keep_run_id="current-run"))

    assert {Path(folder).name for folder in removed} == {"ended-run", "idle-run", "empty-run", "other-host-idle"}
    assert removed[str(ended)] == "the run ended (it wrote its manifest)"
    assert removed[str(idle)].startswith("nothing in it changed for 48 h")
    assert not ended.exists() and not idle.exists() and not empty.exists() and not elsewhere_idle.exists()
    # another host's run that wrote lately, an ownerless recent one, and the caller's own: kept
    assert elsewhere_busy.exists() and recent.exists() and current.exists()
