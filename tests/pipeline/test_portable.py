"""Scale-out past one process: the portable (Fn API) path Dataflow's Runner v2 takes.

The launcher (``newsbeam run --runner PortableRunner``), Beam's Python job
service and an external SDK worker pool run as separate processes; the pool
starts the SDK worker that imports newsbeam, loads the embedded model and
writes the rows. The rows must be the ones a local (FnApiRunner) run of the
same input writes, labels included.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from tests.support.pipelines import REPO, SAMPLES, SEED_ARTICLE, assert_accounting, only_manifest, read_rows, run_cli

pytestmark = pytest.mark.timeout(240)

WORLD_NEWS = SAMPLES / "world-news.atom"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
START_TIMEOUT = 45.0  # seconds for a service to listen (importing Beam takes a few on a busy machine)
RUN_TIMEOUT = 180  # seconds for the portable run; a stuck job fails the test instead of hanging it
COLUMNS = "article_id, title, lang, dt, topic, sentiment, topic_score, sentiment_score, model"


class Services(NamedTuple):
    python: str
    env: dict
    job_port: int
    pool_port: int
    pool_log: Path
    cwd: Path


def _python() -> str:
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=1.0):
            return True
    except OSError:
        return False


def _start(command: list[str], log: Path, cwd: Path, env: dict) -> subprocess.Popen:
    # A session of its own: teardown ends the service and whatever it started (the SDK workers) as one group.
    with open(log, "wb") as sink:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)  # the group this test started (start_new_session), nothing else
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"


def _wait_for(ready, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.fixture
def portable(tmp_path) -> Iterator[Services]:
    """Beam's Python job service and an external SDK worker pool, each a subprocess on a free port."""
    python = _python()
    cwd = tmp_path / "services"  # not the launcher's folder: relative paths must not depend on it
    cwd.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           # The pool starts each SDK worker as plain `python` from PATH: it must be the one with newsbeam.
           "PATH": str(Path(python).parent) + os.pathsep + os.environ.get("PATH", "")}
    started: list[subprocess.Popen] = []
    try:
        port_file, job_log = tmp_path / "job_service.port", tmp_path / "job_service.log"
        job = _start([python, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", "0",
                      "--port_file", str(port_file), "--staging_dir", str(tmp_path / "staging")], job_log, cwd, env)
        started.append(job)
        if not _wait_for(port_file.exists, job, START_TIMEOUT):
            pytest.skip(f"Beam's job service (local_job_service_main) did not start within {START_TIMEOUT:.0f} s "
                        f"(exit code {job.poll()}): {_tail(job_log)}")
        job_port = int(port_file.read_text().strip())
        pool_log = tmp_path / "worker_pool.log"
        for _ in range(3):  # a free port can be taken between probing it and the pool binding it
            pool_port = _free_port()
            pool = _start([python, "-m", "apache_beam.runners.worker.worker_pool_main",
                           "--service_port", str(pool_port)], pool_log, cwd, env)
            started.append(pool)
            if _wait_for(lambda: _listening(pool_port), pool, START_TIMEOUT):
                break
            _stop(pool)
        else:
            pytest.skip(f"Beam's SDK worker pool (worker_pool_main) did not start: {_tail(pool_log)}")
        yield Services(python, env, job_port, pool_port, pool_log, cwd)
    finally:
        for process in reversed(started):
            _stop(process)


def _by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: row["article_id"])


def test_portable_run_through_an_external_worker_pool_matches_a_local_run(portable, tmp_path):
    launch = tmp_path / "launch"
    launch.mkdir()
    # Relative paths on purpose: the workers run in the pool's folder, the launcher in its own.
    inputs = [os.path.relpath(path, launch) for path in (WORLD_NEWS, SEED_ARTICLE)]
    done = subprocess.run(
        [portable.python, "-m", "newsbeam.pipeline.cli", "run",
         "--runner", "PortableRunner", "--job_endpoint", f"localhost:{portable.job_port}",
         "--environment_type", "EXTERNAL", "--environment_config", f"localhost:{portable.pool_port}",
         "--inputs", *inputs, "--output", "portable", "--state", "state"],
        cwd=launch, env=portable.env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "Starting worker" in portable.pool_log.read_text(errors="replace")  # an SDK worker process of the pool's
    assert not any(portable.cwd.iterdir()), "a worker wrote relative to the pool's folder"

    local = tmp_path / "local"
    assert run_cli("--inputs", str(WORLD_NEWS), str(SEED_ARTICLE), "--output", str(local),
                   "--state", str(tmp_path / "local_state")) == 0

    output = launch / "portable"
    portable_rows, local_rows = _by_id(read_rows(output, COLUMNS)), _by_id(read_rows(local, COLUMNS))
    assert [row["article_id"] for row in portable_rows] == [row["article_id"] for row in local_rows]
    assert len(portable_rows) == 5 and {row["lang"] for row in portable_rows} == {"en", "ar"}
    for ported, here in zip(portable_rows, local_rows):
        assert ported["topic"] and ported["sentiment"] and ported["model"]  # labelled: the model ran on the worker
        assert {k: ported[k] for k in ("title", "lang", "dt", "topic", "sentiment", "model")} == \
            {k: here[k] for k in ("title", "lang", "dt", "topic", "sentiment", "model")}
        assert ported["topic_score"] == pytest.approx(here["topic_score"], abs=1e-3)
        assert ported["sentiment_score"] == pytest.approx(here["sentiment_score"], abs=1e-3)

    manifest, local_manifest = only_manifest(output), only_manifest(local)
    assert manifest["status"] == "committed" and manifest["error"] is None
    assert_accounting(manifest)  # the counters came back from the job service's metrics
    assert manifest["counts"] == local_manifest["counts"]
    assert manifest["counts"]["entries_read"] == manifest["counts"]["rows_written"] == 5
    assert manifest["rows_per_partition"] == local_manifest["rows_per_partition"]
    assert manifest["options"]["runner"] == "PortableRunner"
    assert manifest["options"]["output"] == str(output)  # made absolute before the job was built
    run_id = manifest["run_id"]
    assert not (output / "_tmp" / run_id).exists()  # phase 2 renamed every temp file; nothing left behind
    written = (launch / "state" / "written" / f"{run_id}.ids").read_text().split("\n")
    assert sorted(line.split()[0] for line in written if line) == [row["article_id"] for row in portable_rows]


@pytest.mark.parametrize("runner, absolute", [(None, False), ("FnApiRunner", False), ("PortableRunner", True),
                                               ("DataflowRunner", True)])
def test_relative_local_paths_become_absolute_where_workers_have_their_own_folder(runner, absolute, tmp_path,
                                                                                  monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    from newsbeam.pipeline import cli
    from newsbeam.pipeline.options import NewsOptions

    monkeypatch.chdir(tmp_path)
    (tmp_path / "enc").mkdir()
    flags = ["--output", "out", "--state", "gs://bucket/state", "--inputs", "a.jsonl", "/abs/b.jsonl",
             "--encoder", "enc", "--topic_model", "org/some-hub-model"] + (["--runner", runner] if runner else [])
    options = PipelineOptions(flags)
    news = options.view_as(NewsOptions)
    assert cli._workers_share_cwd(options) is not absolute
    if not cli._workers_share_cwd(options):
        cli._make_local_paths_absolute(news)
    here = str(tmp_path)
    assert news.output == (f"{here}/out" if absolute else "out")
    assert news.inputs == ([f"{here}/a.jsonl", "/abs/b.jsonl"] if absolute else ["a.jsonl", "/abs/b.jsonl"])
    assert news.encoder == (f"{here}/enc" if absolute else "enc")
    assert news.state == "gs://bucket/state" and news.topic_model == "org/some-hub-model"  # not local paths
    assert options.get_all_options()["output"] == news.output  # the job is built from these options
