"""Crash injection for the crash-safety tests.

``NEWSBEAM_CRASH_AT=<point>`` makes the process kill itself with SIGKILL the
first time it reaches that point, exactly like ``kill -9`` from outside but
at a known step. Unset (always, outside tests), this is one dict lookup.
"""
from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "after_temp_file",  # one data file written to _tmp, none committed
    "mid_commit",  # some files renamed into the dataset, others not
    "before_table",  # all files of the run (window) committed, not yet in the Iceberg table
    "before_state",  # all data committed, state not yet advanced
    "mid_state",  # ids recorded, feed caches not yet
    "before_manifest",  # state advanced, no manifest yet
)


def crash_point(name: str) -> None:
    if os.environ.get("NEWSBEAM_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
