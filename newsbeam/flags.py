"""Number types for every command's flags: a value outside its range is one line at start-up.

Without them a zero timeout, rate or file size ran and failed late, or silently
did something else; argparse turns the ArgumentTypeError into "argument --x: ...".
"""
from __future__ import annotations

import argparse
import math
from typing import Optional


def bounded(kind: type, low: float, high: Optional[float] = None, *, above: bool = False):
    """An argparse type: a finite ``kind`` number >= low (> low when ``above``), <= high when given."""
    bounds = f"{'>' if above else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or (number <= low if above else number < low) \
                or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} {bounds}, "
                                             f"got {value!r}")
        return number

    return parse


POSITIVE_INT = bounded(int, 1)
COUNT = bounded(int, 0)
POSITIVE = bounded(float, 0, above=True)
NON_NEGATIVE = bounded(float, 0)
FRACTION = bounded(float, 0, 1)
TOKEN_BUDGET = bounded(int, 16)  # room for the prefix and special tokens, and some text
COSINE_THRESHOLD = bounded(float, -1, 1)  # as the stories transform accepts
EVIDENCE_WEIGHT = bounded(float, 1)  # 1 ignores a feed's own sections
