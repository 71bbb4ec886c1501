"""The launcher's side of ``--iceberg_table``: repair before a run, report after it.

The sink commits each run's (each window's) files to the table itself
(transforms.sink). Before a run starts, the table is synced with the committed
files on disk, so files a killed run committed but never registered join the
table as that run's snapshot, exactly once; the manifest then names the
snapshot this run made.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from newsbeam.exit_codes import first_line
from newsbeam.iceberg import TableError, open_table, run_snapshots, sync
from newsbeam.pipeline.graph import table_spec
from newsbeam.pipeline.options import NewsOptions

LOGGER = logging.getLogger(__name__)


def repair_table(news: NewsOptions) -> Optional[str]:
    """Sync the table before the run; a problem comes back as one line (None: fine or no table)."""
    try:
        spec = table_spec(news)
        if spec is None:
            return None
        made = sync(spec)
    except TableError as error:
        return str(error)
    except ValueError as error:
        return first_line(error)
    except Exception as error:  # a catalog that can't be reached, say: one line, not a traceback
        LOGGER.debug("Iceberg sync failed", exc_info=True)
        return f"Iceberg table {news.iceberg_table}: {type(error).__name__}: {first_line(error)}"
    if made:
        LOGGER.warning("Iceberg table %s: registered files an earlier run committed but never added "
                       "(%d snapshot(s))", news.iceberg_table, len(made))
    return None


def table_report(news: NewsOptions, run_id: str) -> Optional[dict[str, Any]]:
    """What the manifest says about the table: its name and the snapshot of this run (None if it wrote nothing)."""
    spec = table_spec(news)
    if spec is None:
        return None
    report: dict[str, Any] = {"table": spec.name, "catalog": spec.catalog or "embedded"}
    try:
        report["snapshot_id"] = run_snapshots(open_table(spec)).get(run_id)
    except Exception as error:  # the data is committed; the table's state is only reported
        report["error"] = first_line(error)
    return report
