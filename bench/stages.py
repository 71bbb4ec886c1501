"""Where a run's time goes: ``newsbeam run`` in this process under cProfile.

Run as ``python bench/stages.py OUT.json run --inputs ... --output ...``. The
pipeline runs on the local FnApiRunner in memory with one worker, so every
DoFn runs in this thread and its functions show up in the profile. Each
stage's figure is the cumulative time of the function that does that stage's
work; ``other`` is the rest (imports, graph construction, Beam's own work).
cProfile slows pure-Python code (parsing, normalising) more than the model,
which runs in C++: those shares are upper bounds.
"""
from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time

# stage -> (file suffix, function name); each function does one stage's work
STAGE_FUNCTIONS = {
    "read_and_parse": ("newsbeam/formats/__init__.py", "entries_from_file"),
    "normalise": ("newsbeam/normalise.py", "normalise_entry"),
    "language": ("newsbeam/language.py", "detect_language"),
    "model_load": ("newsbeam/labelling/labeller.py", "load_labeller"),
    "tokenise": ("newsbeam/labelling/labeller.py", "token_ids"),
    "model": ("newsbeam/labelling/labeller.py", "label_token_ids"),
    "write": ("newsbeam/parquet.py", "write_parquet"),
}


def cumulative_seconds(stats: pstats.Stats, file_suffix: str, function: str) -> float:
    return sum(row[3] for (filename, _, name), row in stats.stats.items()
               if name == function and filename.replace("\\", "/").endswith(file_suffix))


def stage_shares(stats: pstats.Stats, wall_s: float) -> dict:
    seconds = {stage: cumulative_seconds(stats, *where) for stage, where in STAGE_FUNCTIONS.items()}
    seconds["other"] = max(0.0, wall_s - sum(seconds.values()))
    return {
        "wall_s": round(wall_s, 3),
        "seconds": {stage: round(value, 3) for stage, value in seconds.items()},
        "shares": {stage: round(value / wall_s, 4) for stage, value in seconds.items()},
    }


def profile_run(run_argv: list[str]) -> dict:
    from newsbeam.pipeline.cli import main as newsbeam_main

    argv = list(run_argv) + ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    code = profiler.runcall(newsbeam_main, argv)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"newsbeam run exited {code}")
    return stage_shares(pstats.Stats(profiler), wall)


if __name__ == "__main__":
    output, *run_argv = sys.argv[1:]
    result = profile_run(run_argv)
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
