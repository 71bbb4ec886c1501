"""The output can't be written -> exit 1, nothing of the run visible, state not advanced.

We run as root, so chmod can't make a folder read-only for us; the faults are
made with a file where a folder must go, a path under /proc, and a tiny tmpfs
(disk full). After each, the state folder must not record the failed run, and
a rerun once the fault is gone must write every article exactly once.
"""
from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.httpserver import RecordedRequest, Response
from tests.support.pipelines import SAMPLES, assert_accounting, english_items, only_manifest, read_rows, rss, run_cli

FAST = ["--skip_labels"]


def visible_run_files(output: Path, run_id: str) -> list[Path]:
    """Data files of ``run_id`` a reader would find, and any in-progress file outside ``_tmp``."""
    data = [p for p in output.rglob(f"part-{run_id}-*") if "_tmp" not in p.parts]
    in_progress = [p for p in output.rglob("*.inprogress") if "_tmp" not in p.parts and "_runs" not in p.parts]
    return data + in_progress


def growing_feed(first: bytes, later: bytes):
    """Serves ``first`` (ETag v1) once, then ``later`` (ETag v2), honouring If-None-Match."""
    served: list[str] = []

    def handle(request: RecordedRequest) -> Response:
        body, etag = (first, '"v1"') if not served else (later, '"v2"')
        if request.headers.get("if-none-match") == etag:
            return Response(status=304, headers={"ETag": etag})
        served.append(etag)
        return Response(body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"})

    return handle


def test_file_where_the_temp_folder_goes__exit_1_state_unchanged_rerun_writes_the_rest(tmp_path, http_server):
    """Run 1 commits 3 items. Before run 2 (6 items) a file sits where the sink's folder must be:
    exit 1, a 'failed' manifest, no file of run 2, no written/run-2.ids, feeds.json byte-identical
    (so run 3 still asks for v1 and gets the new items). Run 3, fault gone: the 3 new rows, once each."""
    items = english_items("sink", 6)
    feed = http_server.route("/feed.xml", growing_feed(rss(items[:3]), rss(items)))
    output, state = tmp_path / "out", tmp_path / "state"
    args = ["--output", str(output), "--state", str(state), "--feeds", feed, "--allow_private_addresses", *FAST]
    assert run_cli(*args, "--run_id", "run-1") == 0
    feeds_json = (state / "feeds.json").read_bytes()
    shutil.rmtree(output / "_tmp")  # run 1 left the (empty) folder
    (output / "_tmp").write_text("a file where the temp folder must go")

    assert run_cli(*args, "--run_id", "run-2") == 1

    failed = only_manifest(output, "run-2")
    assert failed["status"] == "failed" and "_tmp" in failed["error"]
    assert visible_run_files(output, "run-2") == []
    assert not (state / "written" / "run-2.ids").exists()
    assert (state / "feeds.json").read_bytes() == feeds_json
    assert len(read_rows(output, "article_id")) == 3

    (output / "_tmp").unlink()
    assert run_cli(*args, "--run_id", "run-3") == 0
    rerun = only_manifest(output, "run-3")
    assert rerun["counts"]["rows_written"] == 3 and rerun["counts"]["already_written"] == 3
    assert_accounting(rerun)
    ids = [row["article_id"] for row in read_rows(output, "article_id")]
    assert len(ids) == len(set(ids)) == 6


def write_tide_records(folder: Path) -> Path:
    """Six articles over two days, so the dataset gets two dt partitions."""
    folder.mkdir()
    records = [{"title": f"Tide report {n}", "url": f"https://tides.example.org/{n}",
                "body": f"The tide tables for day {n} were published by the harbour office this morning.",
                "published": f"2024-05-0{6 + n % 2}T09:00:00Z"} for n in range(6)]
    (folder / "tides.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def blocked_partition_args(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    inputs = write_tide_records(tmp_path / "inputs")
    output, state = tmp_path / "out", tmp_path / "state"
    output.mkdir()
    (output / "dt=2024-05-07").write_text("a file where a partition folder must go")
    return output, state, ["--output", str(output), "--state", str(state), "--inputs", str(inputs),
                           "--partition_keys", "dt", *FAST]


def test_file_where_a_partition_folder_goes__exit_1_state_not_advanced_rerun_writes_each_once(tmp_path):
    """The commit fails on the second partition: exit 1, no written/<run>.ids; once the file is gone, a
    rerun writes every article exactly once (a file that did land is recovered into the state, not rewritten)."""
    output, state, args = blocked_partition_args(tmp_path)

    assert run_cli(*args, "--run_id", "half-1") == 1

    assert only_manifest(output, "half-1")["status"] == "failed"
    assert not (state / "written" / "half-1.ids").exists()
    (output / "dt=2024-05-07").unlink()
    assert run_cli(*args, "--run_id", "half-2") == 0
    ids = [row["article_id"] for row in read_rows(output, "article_id")]
    assert len(ids) == len(set(ids)) == 6
    assert_accounting(only_manifest(output, "half-2"))


def test_file_where_a_partition_folder_goes__no_file_of_the_failed_run_visible(tmp_path):
    """After exit 1, a reader sees no file of the failed run in any partition."""
    output, _state, args = blocked_partition_args(tmp_path)

    assert run_cli(*args, "--run_id", "half-1") == 1

    assert visible_run_files(output, "half-1") == []


def test_output_under_proc__exit_1_nothing_written(tmp_path, capsys):
    """/proc refuses new folders even to root: the run fails cleanly with exit 1 and says why."""
    output = "/proc/newsbeam-reliability-out"
    state = tmp_path / "state"

    code = run_cli("--output", output, "--state", str(state), "--inputs", str(SAMPLES / "more-languages.jsonl"), *FAST)

    assert code == 1
    assert not Path(output).exists()
    assert "could not write the run manifest" in capsys.readouterr().err
    assert list(state.glob("written/*.ids")) == []


# --- disk full ------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs; skipped where mounting isn't permitted (not root, no CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                                 capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=30)


def write_many_articles(folder: Path, count: int, name: str = "many.jsonl") -> Path:
    """``count`` articles with random-word bodies (zstd can't squeeze them under 64 KiB)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240506)
    lines = []
    for n in range(count):
        body = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60))
        lines.append(json.dumps({"title": f"Article {n}", "url": f"https://full.example.org/{n}", "body": body}))
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_disk_full__exit_1_no_file_visible_state_not_advanced(tmp_path, tiny_disk, capsys):
    """2,000 articles into 64 KiB: ENOSPC while writing. Exit 1, the error names it, no data file is
    visible and the state folder (on another disk) records nothing of the run."""
    inputs = tmp_path / "inputs"
    write_many_articles(inputs, 2000)
    output, state = tiny_disk / "out", tmp_path / "state"

    code = run_cli("--output", str(output), "--state", str(state), "--inputs", str(inputs), "--run_id", "full-1", *FAST)

    assert code == 1
    captured = capsys.readouterr()
    assert "No space left on device" in captured.out + captured.err
    assert visible_run_files(output, "full-1") == []
    assert list(output.glob("*=*/**/*.parquet")) == []
    assert not (state / "written" / "full-1.ids").exists()
    assert not (state / "feeds.json").exists()


def test_disk_full__space_returned_so_the_next_small_run_succeeds(tmp_path, tiny_disk):
    """After the disk-full failure, the failed run's temp files are gone and a small run fits again."""
    write_many_articles(tmp_path / "big", 2000)
    output, state = tiny_disk / "out", tmp_path / "state"
    base = ["--output", str(output), "--state", str(state), *FAST]
    assert run_cli(*base, "--inputs", str(tmp_path / "big"), "--run_id", "full-1") == 1

    assert list((output / "_tmp").rglob("*.inprogress")) == []
    assert run_cli(*base, "--inputs", str(SAMPLES / "more-languages.jsonl"), "--run_id", "small-2") == 0
    assert_accounting(only_manifest(output, "small-2"))
