"""``--since`` / ``--until``: the days that ``newsbeam report``, ``query`` and
``search`` read, defined once.

An article's day is its publication date, else the day it was fetched (UTC),
the same day its ``dt`` partition is named after. The range filters the
``articles`` view row by row, so it holds whatever the partition keys; where
the folders name dates (``dt``, ``month``, ``year``) whole folders outside the
range are never opened, and a gs:// copy never fetches them. Dead letters and
run manifests carry no article date and are always read.
"""
from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from typing import Optional

from newsbeam.layout import partition_days


class DateRangeError(ValueError):
    """A bad --since/--until: one line for the user."""


@dataclass(frozen=True)
class DateRange:
    since: Optional[dt.date] = None  # first day read, inclusive
    until: Optional[dt.date] = None  # last day read, inclusive

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def may_hold(self, relative: str) -> bool:
        """Whether a file at ``relative`` (below the dataset root) can hold an article of the range."""
        days = partition_days(relative)
        if days is None:
            return True
        first, last = days
        return (self.since is None or last >= self.since) and (self.until is None or first <= self.until)

    def sql_condition(self) -> Optional[str]:
        """A DuckDB condition on the articles' columns, or None when unbounded. Literal
        timestamps, not parameters, because a view cannot take parameters; both come
        from ``date.isoformat``, so nothing but digits and dashes reaches the SQL."""
        day = "coalesce(published_at, fetched_at)"
        conditions = []
        if self.since is not None:
            conditions.append(f"{day} >= TIMESTAMPTZ '{self.since.isoformat()} 00:00:00+00'")
        if self.until is not None:
            conditions.append(f"{day} < TIMESTAMPTZ '{(self.until + dt.timedelta(days=1)).isoformat()} 00:00:00+00'")
        return " AND ".join(conditions) or None

    def describe(self) -> str:
        if self.since and self.until:
            return f"{self.since} to {self.until}" if self.since != self.until else str(self.since)
        if self.since:
            return f"from {self.since}"
        return f"up to {self.until}" if self.until else "all days"


def _day(flag: str, text: Optional[str]) -> Optional[dt.date]:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise DateRangeError(f"{flag} must be a date YYYY-MM-DD, got {text!r}") from None


def parse_range(since: Optional[str], until: Optional[str]) -> DateRange:
    dates = DateRange(_day("--since", since), _day("--until", until))
    if dates.since and dates.until and dates.until < dates.since:
        raise DateRangeError(f"--until {dates.until} is before --since {dates.since}")
    return dates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="YYYY-MM-DD",
                        help="only articles published (else fetched) on or after this day, UTC")
    parser.add_argument("--until", metavar="YYYY-MM-DD",
                        help="only articles published (else fetched) on or before this day, UTC")


def from_args(args: argparse.Namespace) -> tuple[DateRange, Optional[str]]:
    """The range the flags ask for, and the one-line complaint about a bad flag (else None)."""
    try:
        return parse_range(args.since, args.until), None
    except DateRangeError as error:
        return DateRange(), str(error)
