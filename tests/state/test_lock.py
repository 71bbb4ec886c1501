"""The --state lock: one run per state folder; a dead holder's lock is taken over."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from newsbeam.state.lock import StateLock, StateLocked
from tests.support.pipelines import run_cli

FAST = ["--skip_labels"]


def test_a_second_run_on_a_locked_state_refuses_with_a_clear_message(tmp_path, capsys):
    state = tmp_path / "state"
    with StateLock(str(state)):
        with pytest.raises(StateLocked, match="locked by another newsbeam run"):
            StateLock(str(state)).acquire()
        code = run_cli("--output", str(tmp_path / "out"), "--state", str(state), *FAST)
    assert code == 4
    assert "locked by another newsbeam run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    StateLock(str(state)).acquire().release()  # free again once the holder is done


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / "LOCK").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                            "since": "2099-01-01T00:00:00+00:00"}))
    with StateLock(str(state)) as lock:
        assert lock.held
