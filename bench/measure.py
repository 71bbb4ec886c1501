"""Running a command in a child process and measuring it: wall time, peak RSS."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@dataclass(frozen=True)
class ChildRun:
    """How one child process ran."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss_bytes: int  # the child's and its waited-for descendants' maximum
    stdout: str
    stderr: str

    def check(self) -> "ChildRun":
        if self.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv[:4])} ... exited {self.returncode}:\n{self.stderr[-3000:]}")
        return self


def bench_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment children run in: offline, repo importable, quiet tokenizers."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(BENCH), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


# A small process that starts the measured command and reports its rusage. The
# measured command must not be forked from the benchmark itself: Linux carries
# the forking process's RSS high-water mark across exec into the child's
# ru_maxrss, and the benchmark holds a model in memory.
LAUNCHER = """
import json, os, subprocess, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
process = subprocess.Popen(argv)
_, status, usage = os.wait4(process.pid, 0)
process.returncode = os.waitstatus_to_exitcode(status)
with open(report, "w") as handle:
    json.dump({"returncode": process.returncode, "wall_s": time.perf_counter() - started,
               "maxrss_kb": usage.ru_maxrss}, handle)
"""


def run_child(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, log_dir: Optional[Path] = None,
              timeout_s: float = 3600.0) -> ChildRun:
    """Run ``argv`` through a small launcher process that waits for it with
    ``os.wait4``: that child's own wall time and peak RSS (ru_maxrss covers the
    child and the children it waited for). The child's stdout, stderr and report
    stay in ``log_dir`` when one is given; otherwise they go to a private folder
    that is removed once read (every benchmark run starts dozens of children)."""
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        return _run_child_logging_to(Path(log_dir), argv, env, timeout_s)
    with tempfile.TemporaryDirectory(prefix="newsbeam-child-") as private_dir:
        return _run_child_logging_to(Path(private_dir), argv, env, timeout_s)


def _run_child_logging_to(log_dir: Path, argv: Sequence[str], env: Optional[Mapping[str, str]],
                          timeout_s: float) -> ChildRun:
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    out_path, err_path = log_dir / f"child-{stamp}.out", log_dir / f"child-{stamp}.err"
    report_path = log_dir / f"child-{stamp}.json"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(report_path), *argv], stdout=out,
                                  stderr=err, env=dict(env or bench_env()), cwd=REPO, timeout=timeout_s)
    if not report_path.exists():
        raise RuntimeError(f"launcher failed ({launcher.returncode}): {err_path.read_text(errors='replace')[-2000:]}")
    report = json.loads(report_path.read_text())
    return ChildRun(argv=tuple(argv), returncode=report["returncode"], wall_s=report["wall_s"],
                    peak_rss_bytes=int(report["maxrss_kb"]) * 1024,  # kilobytes on Linux
                    stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"))


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]
