"""Scheduled incremental runs: state, conditional GET, two runs at once, and kill -9 safety."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsbeam.faults import CRASH_POINTS
from tests.support.httpserver import RecordedRequest, Response
from tests.support.pipelines import assert_accounting, english_items, only_manifest, read_rows, rss, run_cli

FAST = ["--skip_labels"]


def conditional_feed(body: bytes, etag: str = '"v1"'):
    def handle(request: RecordedRequest) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return Response(body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"})

    return handle


def test_second_run_writes_nothing_and_sends_a_conditional_get(tmp_path, http_server):
    http_server.route("/feed.xml", conditional_feed(rss(english_items("cond", 4))))
    http_server.route("/plain.xml", Response(body=rss(english_items("plain", 3))))  # no validators
    feeds = [http_server.url("/feed.xml"), http_server.url("/plain.xml")]
    output, state = tmp_path / "out", tmp_path / "state"
    args = ["--output", str(output), "--state", str(state), "--feeds", *feeds, "--allow_private_addresses", *FAST]

    assert run_cli(*args, "--run_id", "run-1") == 0
    first = only_manifest(output, "run-1")
    assert first["counts"]["rows_written"] == 7

    assert run_cli(*args, "--run_id", "run-2") == 0
    second = only_manifest(output, "run-2")
    assert second["counts"]["rows_written"] == 0
    assert second["counts"]["feeds_not_modified"] == 1 and second["counts"]["already_written"] == 3
    assert_accounting(second)
    conditional = http_server.requests_to("/feed.xml")
    assert conditional[-1].headers.get("if-none-match") == '"v1"'
    kept = {entry["url"]: entry for entry in json.loads((state / "feeds.json").read_text()).values()}
    assert kept[feeds[0]]["etag"] == '"v1"'  # keyed by a hash of the URL, the URL itself kept for humans
    assert len(read_rows(output, "article_id")) == 7

    assert run_cli(*args, "--run_id", "run-3", "--full_refresh") == 0
    assert only_manifest(output, "run-3")["counts"]["rows_written"] == 7
    assert "if-none-match" not in http_server.requests_to("/feed.xml")[-1].headers


def test_new_items_appear_in_the_next_run_only(tmp_path, http_server):
    items = english_items("grow", 6)
    bodies = iter([rss(items[:3]), rss(items)])
    http_server.route("/feed.xml", lambda _r: Response(body=next(bodies)))
    output, state = tmp_path / "out", tmp_path / "state"
    args = ["--output", str(output), "--state", str(state), "--feeds", http_server.url("/feed.xml"),
            "--allow_private_addresses", *FAST]
    assert run_cli(*args) == 0 and run_cli(*args) == 0
    rows = read_rows(output, "article_id, run_id")
    assert len(rows) == 6 and len({r["article_id"] for r in rows}) == 6
    assert len({r["run_id"] for r in rows}) == 2


def test_two_runs_started_at_once_one_proceeds_one_refuses(tmp_path, http_server):
    """The second run starts while the first is mid-run for sure: the first is
    held up by a slow feed, and the second starts once that feed was asked for."""
    inputs = _write_inputs(tmp_path, 30)
    slow_feed = http_server.route("/slow.xml", Response(body=rss(english_items("slow", 3)), delay_before=8.0))
    output, state = tmp_path / "out", tmp_path / "state"
    command = _cli_command(output, state, inputs) + ["--feeds", slow_feed, "--allow_private_addresses"]
    first = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not http_server.requests_to("/slow.xml") and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_server.requests_to("/slow.xml"), "the first run never fetched its feed"
    second = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second_code = second.wait(timeout=120)
    assert second_code == 4, second.stderr.read().decode()[-2000:]
    assert first.wait(timeout=120) == 0
    assert len(http_server.requests_to("/slow.xml")) == 1  # the refused run fetched nothing
    rows = read_rows(output, "article_id")
    assert len(rows) == len({r["article_id"] for r in rows}) == 33


# ---- kill -9 at known and random points -----------------------------------------

def _write_inputs(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir(exist_ok=True)
    lines = [
        json.dumps({"title": f"Story number {n} about the harbour", "url": f"https://files.example.org/{n}",
                    "body": f"Body of story {n}: the harbour authority reported {n} ships today.",
                    "published": f"2024-05-0{1 + n % 4}T08:00:00Z"})
        for n in range(count)
    ]
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NEWSBEAM_CRASH_AT"}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


def _cli_command(output: Path, state: Path, inputs: Path) -> list[str]:
    return [sys.executable, "-m", "newsbeam.pipeline.cli", "run", "--output", str(output), "--state", str(state),
            "--inputs", str(inputs), "--max_rows_per_file", "3", *FAST]


def _assert_each_article_once(output: Path, expected: int) -> None:
    rows = read_rows(output, "article_id")
    ids = [r["article_id"] for r in rows]
    assert len(ids) == len(set(ids)) == expected


@pytest.mark.parametrize("point", [point for point in CRASH_POINTS if point != "before_table"])  # tests/pipeline/test_iceberg_runs.py
def test_kill_9_at_a_known_point_then_rerun_writes_each_article_once(tmp_path, point):
    inputs = _write_inputs(tmp_path, 24)
    output, state = tmp_path / "out", tmp_path / "state"
    crashed = subprocess.run(_cli_command(output, state, inputs), env=_env(NEWSBEAM_CRASH_AT=point),
                             capture_output=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    # temp files exist only in the run's own temp folder, never beside the data
    assert not [p for p in output.rglob("*.parquet.inprogress") if "_tmp" not in p.relative_to(output).parts]
    visible = list(output.glob("*=*/**/*.parquet"))
    for path in visible:  # whatever is visible is whole
        import pyarrow.parquet as pq

        assert pq.ParquetFile(path).metadata.num_rows > 0
    rerun = subprocess.run(_cli_command(output, state, inputs), env=_env(), capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    _assert_each_article_once(output, 24)
    # and a third run finds nothing new
    again = subprocess.run(_cli_command(output, state, inputs), env=_env(), capture_output=True, timeout=120)
    assert again.returncode == 0
    _assert_each_article_once(output, 24)


@pytest.mark.parametrize("delay", [1.5, 3.0])
def test_kill_9_at_a_random_moment_then_rerun_writes_each_article_once(tmp_path, delay):
    inputs = _write_inputs(tmp_path, 40)
    output, state = tmp_path / "out", tmp_path / "state"
    process = subprocess.Popen(_cli_command(output, state, inputs), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    rerun = subprocess.run(_cli_command(output, state, inputs), env=_env(), capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    _assert_each_article_once(output, 40)


# ---- feed credentials never reach the state folder ------------------------------

def _files_holding(folder: Path, *secrets: bytes) -> list[str]:
    """Every file under ``folder`` whose bytes contain any of ``secrets``."""
    return [str(path) for path in folder.rglob("*") if path.is_file()
            and any(secret in path.read_bytes() for secret in secrets)]


def test_feed_credentials_never_reach_the_state_folder(tmp_path, http_server):
    """Basic-auth password and token query value: not in pending statuses (run killed
    before they merge), not in feeds.json or written ids; conditional GET still works."""
    http_server.route("/feed.xml", conditional_feed(rss(english_items("secret-feed", 3))))
    # a feed that fails with the secret-bearing URL in its error text
    http_server.route("/loop.xml", Response(status=301, headers={"Location": "/loop.xml?token=abc123"}))
    port = http_server.port
    feeds = [f"http://user:secret@127.0.0.1:{port}/feed.xml?token=abc123&x=1",
             f"http://user:secret@127.0.0.1:{port}/loop.xml?api_key=abc123"]
    output, state = tmp_path / "out", tmp_path / "state"
    args = ["--output", str(output), "--state", str(state), "--feeds", *feeds, "--allow_private_addresses", *FAST]

    killed = subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "run", *args, "--run_id", "run-1"],
                            env=_env(NEWSBEAM_CRASH_AT="mid_state"), capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    pending = list((state / "pending").rglob("*.json"))
    assert pending and (state / "written" / "run-1.ids").exists()
    assert _files_holding(state, b"secret", b"abc123") == []

    assert run_cli(*args, "--run_id", "run-2") == 0
    assert run_cli(*args, "--run_id", "run-3") == 0
    assert http_server.requests_to("/feed.xml")[-1].headers.get("if-none-match") == '"v1"'
    assert only_manifest(output, "run-3")["counts"]["feeds_not_modified"] == 1
    assert _files_holding(state, b"secret", b"abc123") == []
    import pyarrow.parquet as pq

    dead_letters = [row for path in (output / "_errors").rglob("*.parquet") for row in pq.read_table(path).to_pylist()]
    assert [row["reason"].split(":")[0] for row in dead_letters] == ["redirect_loop"] * 3  # one per run
    assert "secret" not in repr(dead_letters) and "abc123" not in repr(dead_letters)
    kept = json.loads((state / "feeds.json").read_text())
    assert sorted(entry["url"] for entry in kept.values()) == [
        f"http://127.0.0.1:{port}/feed.xml?token=REDACTED&x=1", f"http://127.0.0.1:{port}/loop.xml?api_key=REDACTED"]


def test_feeds_json_keyed_by_clear_urls_is_migrated_and_still_used(tmp_path, http_server):
    """A feeds.json from before hashed keys: its ETag is still sent, and the rewrite holds no secret."""
    http_server.route("/feed.xml", conditional_feed(rss(english_items("old-state", 2))))
    clear_url = f"http://user:secret@127.0.0.1:{http_server.port}/feed.xml?token=abc123"
    other_url = "https://user:hunter2@feeds.example.org/other.xml?api_key=abc123&lang=en"  # not fetched this run
    state = tmp_path / "state"
    state.mkdir()
    (state / "feeds.json").write_text(json.dumps({
        clear_url: {"etag": '"v1"', "last_modified": None, "last_success": "2024-05-01T00:00:00+00:00"},
        other_url: {"etag": '"o7"', "last_success": "2024-05-01T00:00:00+00:00"},
    }))
    output = tmp_path / "out"
    args = ["--output", str(output), "--state", str(state), "--feeds", clear_url, "--allow_private_addresses", *FAST]

    assert run_cli(*args) == 0
    assert http_server.requests_to("/feed.xml")[-1].headers.get("if-none-match") == '"v1"'
    assert only_manifest(output)["counts"]["feeds_not_modified"] == 1
    assert _files_holding(state, b"secret", b"hunter2", b"abc123") == []
    kept = {entry["url"]: entry for entry in json.loads((state / "feeds.json").read_text()).values()}
    assert kept[f"http://127.0.0.1:{http_server.port}/feed.xml?token=REDACTED"]["etag"] == '"v1"'
    assert kept["https://feeds.example.org/other.xml?api_key=REDACTED&lang=en"]["etag"] == '"o7"'
