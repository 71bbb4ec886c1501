"""``--table``: which files one snapshot of the dataset's Iceberg table holds.

The table (newsbeam.iceberg) registers the dataset's own Hive-foldered files,
so a snapshot is a list of those files; ``dataset.connect`` reads exactly
that list, with ``dt``/``lang`` from the folders as without a table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from newsbeam import iceberg
from newsbeam.analytics import dates, remote
from newsbeam.exit_codes import first_line
from newsbeam.layout import ICEBERG_DIR


@dataclass(frozen=True)
class TableSnapshot:
    """One snapshot of a table: what the ``articles`` view reads, and what the report names."""

    name: str
    catalog: str
    snapshot_id: Optional[int]  # None: the table has no snapshot yet (no run committed to it)
    committed_at: Optional[dt.datetime]
    files: tuple[str, ...]
    partition_keys: tuple[str, ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", metavar="NAMESPACE.TABLE",
                        help="read the dataset's Iceberg table (newsbeam run --iceberg_table) instead of its folders")
    parser.add_argument("--iceberg_catalog", metavar="NAME",
                        help="pyiceberg catalog holding --table (default: the embedded one in DATA/_iceberg)")
    parser.add_argument("--as_of", metavar="SNAPSHOT_ID_OR_ISO_TIME",
                        help="with --table: the table as this snapshot, or as of this time (e.g. 2024-05-04T06:00Z)")


def flag_problem(args: argparse.Namespace) -> Optional[str]:
    """The one-line complaint about the table flags, or None."""
    if args.table is None and (args.as_of is not None or args.iceberg_catalog is not None):
        return f"{'--as_of' if args.as_of is not None else '--iceberg_catalog'} needs --table NAMESPACE.TABLE"
    if args.table is not None and not iceberg.TABLE_NAME_RE.match(args.table):
        return f"--table {args.table!r}: expected NAMESPACE.TABLE (letters, digits, '_')"
    return None


def dataset_flags(args: argparse.Namespace) -> tuple[dates.DateRange, Optional[str]]:
    """The days to read, and the one-line complaint about the dataset flags (``--data``, the
    dates, the table flags) or None. A gs:// dataset is copied only once the other flags are good."""
    days, problem = dates.from_args(args)
    problem = problem or flag_problem(args) or remote.localise(args, days)
    # A configured catalog may name files anywhere; the folder then only adds errors.
    if not problem and not Path(args.data).is_dir() and not (args.table and args.iceberg_catalog):
        problem = f"no dataset folder at {args.data}"
    return days, problem


def _local(path: str) -> Optional[str]:
    """``path`` as a local file name, or None when it lies on another filesystem (gs://...)."""
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def resolve(data_dir: Path | str, name: str, *, catalog: Optional[str] = None,
            as_of: Optional[str] = None) -> TableSnapshot:
    """The snapshot of table ``name`` now (or ``as_of``); TableError says in one line what is wrong."""
    catalog_name = catalog or iceberg.EMBEDDED_CATALOG
    if catalog is None and not (Path(data_dir) / ICEBERG_DIR / "catalog.db").is_file():
        raise iceberg.TableError(f"no Iceberg table {name}: {data_dir} has no embedded catalog "
                                 f"({ICEBERG_DIR}/catalog.db; newsbeam run --iceberg_table makes it)")
    spec = iceberg.TableSpec(name, str(data_dir), (), catalog)  # no keys: whatever the table is partitioned by
    try:
        table = iceberg.open_table(spec, create=False)
        snapshot = iceberg.snapshot_as_of(table, as_of)
        files = iceberg.snapshot_paths(table, snapshot) if snapshot is not None else []
        keys = tuple(field.name for field in table.spec().fields)
    except iceberg.TableError:
        raise
    except Exception as error:  # a catalog or metadata problem (unreachable, forbidden, corrupt): one line
        raise iceberg.TableError(f"Iceberg table {name} in catalog {catalog_name}: {first_line(error)}") from error
    local = []
    for path in files:
        if _local(path) is None:
            raise iceberg.TableError(f"Iceberg table {name} holds files outside this machine ({path}): "
                                     "query it with pyiceberg, Spark or BigQuery (docs/analytics.md)")
        if not os.path.exists(_local(path)):
            raise iceberg.TableError(f"snapshot {snapshot.snapshot_id} of {name} names a file that is gone "
                                     f"({path}): compaction replaced it, so time travel reaches back only to the last "
                                     "compaction of each partition")
        local.append(_local(path))
    if snapshot is None:
        return TableSnapshot(name, catalog_name, None, None, (), keys)
    committed_at = dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.timezone.utc)
    return TableSnapshot(name, catalog_name, snapshot.snapshot_id, committed_at, tuple(local), keys)


def describe(snapshot: TableSnapshot) -> str:
    """One line naming the table and its snapshot, for headers."""
    if snapshot.snapshot_id is None:
        return f"Iceberg table {snapshot.name} (catalog {snapshot.catalog}), no snapshot yet"
    return (f"Iceberg table {snapshot.name} (catalog {snapshot.catalog}), snapshot {snapshot.snapshot_id} "
            f"committed {snapshot.committed_at:%Y-%m-%d %H:%M:%S} UTC")
