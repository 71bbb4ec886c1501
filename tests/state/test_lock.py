"""The --state and compaction lock: one run per state folder; only a dead holder's
lock (or another host's lapsed lease) is taken over, and a run releases only its own lock."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from newsbeam.state.lock import FileLock, StateLock, StateLocked
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


# ---- takeover only from a holder that is gone; release only your own lock ---------

def _sleeper() -> subprocess.Popen:
    """A live process that is not this one: a lock's holder that is still running."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_live_holders_lock_older_than_six_hours_is_not_taken_over(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    holder = _sleeper()
    try:
        # the lock format of earlier versions, as the audit found it: an old 'since', a live pid
        old_lock = json.dumps({"host": socket.gethostname(), "pid": holder.pid, "since": "2000-01-01T00:00:00+00:00"})
        (state / "LOCK").write_text(old_lock)
        with pytest.raises(StateLocked, match="locked by another newsbeam run"):
            StateLock(str(state)).acquire()
        assert (state / "LOCK").read_text() == old_lock
    finally:
        holder.kill()
        holder.wait()
    with StateLock(str(state)) as lock:  # its holder is gone now: taken over
        assert lock.held


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times come from /proc")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path):
    """The pid is alive but is not the process that wrote the lock: the holder died and its pid was reused."""
    state = tmp_path / "state"
    state.mkdir()
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    other_process = _sleeper()
    try:
        (state / "LOCK").write_text(json.dumps({
            "host": socket.gethostname(), "pid": other_process.pid, "process": "an-earlier-boot:12345",
            "since": now, "renewed_at": now, "renew_every": 60, "token": "the-dead-holder"}))
        with StateLock(str(state)) as lock:
            assert lock.held
            assert json.loads((state / "LOCK").read_text())["token"] != "the-dead-holder"
    finally:
        other_process.kill()
        other_process.wait()


def test_releasing_a_lock_another_run_now_holds_leaves_that_lock_in_place(tmp_path):
    """Run A's lock was deleted by hand (as the locked message suggests) and run B
    took the folder; when A ends, its release must not free B's lock."""
    state = tmp_path / "state"
    run_a = StateLock(str(state)).acquire()
    (state / "LOCK").unlink()
    run_b = StateLock(str(state)).acquire()
    b_lock = (state / "LOCK").read_text()

    run_a.release()

    assert (state / "LOCK").read_text() == b_lock
    with pytest.raises(StateLocked):
        StateLock(str(state)).acquire()  # a third run still waits for B
    run_b.release()
    assert not (state / "LOCK").exists()


def test_an_expired_lease_of_another_host_is_taken_over_and_a_fresh_one_is_not(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    now = dt.datetime.now(dt.timezone.utc)
    other_host = {"host": "another-host.example", "pid": 4242, "since": "2000-01-01T00:00:00+00:00",
                  "renew_every": 60, "token": "theirs"}
    (state / "LOCK").write_text(json.dumps({**other_host, "renewed_at": (now - dt.timedelta(seconds=90)).isoformat()}))
    with pytest.raises(StateLocked):
        StateLock(str(state)).acquire()  # renewed 90 s ago, every 60 s: alive as far as anyone can tell
    (state / "LOCK").write_text(json.dumps({**other_host, "renewed_at": (now - dt.timedelta(hours=1)).isoformat()}))
    with StateLock(str(state)) as lock:
        assert lock.held and json.loads((state / "LOCK").read_text())["token"] != "theirs"


def _hold_as_another_host(path: str, held) -> None:
    socket.gethostname = lambda: "another-host.example"  # this holder can be judged by its lease only
    FileLock(path, renew_every=0.1).acquire()
    held.set()
    time.sleep(120)


def test_a_holder_that_renews_its_lease_keeps_the_lock_until_it_stops(tmp_path):
    import multiprocessing

    path = tmp_path / "LOCK"
    context = multiprocessing.get_context("fork")
    held = context.Event()
    holder = context.Process(target=_hold_as_another_host, args=(str(path), held))
    holder.start()
    try:
        assert held.wait(timeout=30)
        first = json.loads(path.read_text())
        time.sleep(1.0)  # twice the lease (5 renewals of 0.1 s) since it was taken
        with pytest.raises(StateLocked):
            FileLock(str(path)).acquire()
        assert json.loads(path.read_text())["renewed_at"] > first["renewed_at"]
        holder.kill()  # another host's holder can't be checked by pid: its lease has to run out
        holder.join(timeout=30)
        with pytest.raises(StateLocked):
            FileLock(str(path)).acquire()  # just stopped: the lease still holds
        time.sleep(0.8)
        with FileLock(str(path)) as lock:
            assert lock.held
    finally:
        holder.kill()
        holder.join(timeout=30)


def _race_for(path: str, barrier, results) -> None:
    lock = FileLock(path)
    barrier.wait(timeout=30)
    try:
        lock.acquire()
        results.put("won")
    except StateLocked:
        results.put("locked")
    time.sleep(0.5)  # stay alive until every racer has tried: a dead winner's lock may be taken over


def test_of_many_runs_racing_to_take_over_one_stale_lock_exactly_one_wins(tmp_path):
    import multiprocessing

    path = tmp_path / "LOCK"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    context = multiprocessing.get_context("fork")
    for attempt in range(3):  # the race is a matter of timing: run it a few times
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "2099-01-01T00:00:00+00:00"}))
        racers = 6
        barrier, results = context.Barrier(racers), context.Queue()
        processes = [context.Process(target=_race_for, args=(str(path), barrier, results)) for _ in range(racers)]
        for process in processes:
            process.start()
        outcomes = sorted(results.get(timeout=30) for _ in processes)
        for process in processes:
            process.join(timeout=30)
        assert outcomes == ["locked"] * (racers - 1) + ["won"], f"attempt {attempt}: {outcomes}"


def test_state_where_no_lock_can_be_taken_is_a_config_error_in_one_line(tmp_path, capsys):
    assert run_cli("--output", str(tmp_path / "out"), "--state", "s3://bucket/state", *FAST) == 2
    error = capsys.readouterr().err.strip()
    assert error.splitlines() == [error] and "no atomic lock on s3://" in error
