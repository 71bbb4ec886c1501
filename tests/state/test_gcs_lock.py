"""The lock on gs://: the real google-cloud-storage client against a GCS JSON API
on 127.0.0.1 that enforces generation preconditions (tests/support/fake_gcs.py).
Same guarantees as on local disk: one holder, takeover only of a lapsed lease,
of many racers exactly one wins, a run never frees a lock it lost."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from newsbeam.state.lock import FileLock, StateLocked
from tests.support.fake_gcs import fake_gcs

pytest.importorskip("google.cloud.storage")

LOCK = "gs://newsbeam-state/jobs/daily/LOCK"
KEY = ("newsbeam-state", "jobs/daily/LOCK")


@pytest.fixture
def gcs(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with fake_gcs(monkeypatch) as store:
        yield store


def _holder(store) -> dict:
    return json.loads(store.objects[KEY][1])


def _lapsed_lock_of_another_host(store, silent: dt.timedelta) -> int:
    renewed = dt.datetime.now(dt.timezone.utc) - silent
    record = {"host": "another-host.example", "pid": 4242, "since": "2000-01-01T00:00:00+00:00",
              "renewed_at": renewed.isoformat(), "renew_every": 60, "token": "theirs"}
    generation = next(store.generations)
    store.objects[KEY] = (generation, json.dumps(record).encode())
    return generation


def test_one_holder_at_a_time_and_release_frees_it(gcs):
    first = FileLock(LOCK, renew_every=60).acquire()
    token = _holder(gcs)["token"]
    with pytest.raises(StateLocked, match=f"locked by another newsbeam run .*{token}"):
        FileLock(LOCK).acquire()  # the message names the holder, read through the same client
    first.release()
    assert KEY not in gcs.objects
    second = FileLock(LOCK, renew_every=60).acquire()
    assert _holder(gcs)["token"] != token
    second.release()


def test_a_lapsed_lease_is_taken_over_and_a_live_one_is_not(gcs):
    _lapsed_lock_of_another_host(gcs, dt.timedelta(seconds=90))  # every 60 s, last 90 s ago: may be alive
    with pytest.raises(StateLocked):
        FileLock(LOCK).acquire()
    assert _holder(gcs)["token"] == "theirs"
    _lapsed_lock_of_another_host(gcs, dt.timedelta(hours=1))
    lock = FileLock(LOCK, renew_every=60).acquire()
    assert lock.held and _holder(gcs)["token"] not in ("theirs", None)
    lock.release()
    assert KEY not in gcs.objects


def test_a_run_that_lost_its_lock_does_not_free_the_new_holders(gcs):
    lost = FileLock(LOCK, renew_every=60).acquire()
    # while `lost` hung (no renewals), its lease lapsed and another run took the lock over
    generation = _lapsed_lock_of_another_host(gcs, dt.timedelta(seconds=0))
    lost.release()
    assert gcs.objects[KEY][0] == generation and _holder(gcs)["token"] == "theirs"


def test_of_many_racers_for_one_lapsed_lock_exactly_one_wins(gcs):
    outcomes = []
    for attempt in range(3):  # the race is a matter of timing: run it a few times
        _lapsed_lock_of_another_host(gcs, dt.timedelta(hours=1))
        racers = 6
        barrier, results, winners = threading.Barrier(racers), [], []

        def race():
            lock = FileLock(LOCK, renew_every=60)
            barrier.wait()
            try:
                lock.acquire()
            except StateLocked:
                results.append("locked")
            else:
                results.append("won")
                winners.append(lock)

        threads = [threading.Thread(target=race) for _ in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        outcomes.append(sorted(results))
        assert sorted(results) == ["locked"] * (racers - 1) + ["won"], f"attempt {attempt}: {outcomes}"
        assert _holder(gcs)["token"] == winners[0]._record["token"]
        winners[0].release()


def test_the_holder_renews_its_lease_by_generation(gcs):
    lock = FileLock(LOCK, renew_every=0.1).acquire()
    try:
        generation, first = gcs.objects[KEY][0], _holder(gcs)["renewed_at"]
        deadline = time.monotonic() + 10
        while gcs.objects[KEY][0] == generation and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gcs.objects[KEY][0] != generation and _holder(gcs)["renewed_at"] > first
        assert _holder(gcs)["token"] == lock._record["token"]
    finally:
        lock.release()
    assert KEY not in gcs.objects
