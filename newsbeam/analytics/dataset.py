"""Open the Parquet dataset in DuckDB, with the articles registered as a view.

Layout: ``<root>/<key>=<value>/.../part-*.parquet`` (Hive partitions, default
``dt``/``lang``), run manifests in ``<root>/_runs/*.json`` and dead letters in
``<root>/_errors/``. Only ``key=value`` folders feed the ``articles`` view, or,
with a table, the files of one snapshot of the dataset's Iceberg table.
"""
from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any, Optional, Union

import duckdb
import pyarrow as pa

from newsbeam.analytics.dates import DateRange
from newsbeam.analytics.table_view import TableSnapshot, describe, resolve
from newsbeam.layout import DEFAULT_PARTITION_KEYS, PARTITION_SEGMENT_RE, articles_glob, errors_glob, manifests_glob
from newsbeam.schema import ERROR_SCHEMA, FILE_SCHEMA, PARTITION_FIELDS

LOGGER = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("data/articles")
ARTICLES_VIEW = "articles"
ERRORS_VIEW = "errors"

# DuckDB spellings of the partition types in newsbeam.schema.PARTITION_FIELDS;
# a key the schema does not know stays VARCHAR rather than being guessed.
DUCKDB_TYPES = {pa.date32(): "DATE", pa.string(): "VARCHAR"}


def detect_partition_keys(root: Path) -> tuple[str, ...]:
    """The ``key=value`` folder names from ``root`` down to the first file, in order."""
    keys: list[str] = []
    folder = Path(root)
    while folder.is_dir():
        partitions = sorted(
            child for child in folder.iterdir() if child.is_dir() and PARTITION_SEGMENT_RE.match(child.name)
        )
        if not partitions:
            break
        keys.append(PARTITION_SEGMENT_RE.match(partitions[0].name).group("key"))
        folder = partitions[0]
    return tuple(keys)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _hive_types(partition_keys: tuple[str, ...]) -> str:
    types = []
    for key in partition_keys:
        field = PARTITION_FIELDS.get(key)
        duckdb_type = DUCKDB_TYPES.get(field.type, "VARCHAR") if field is not None else "VARCHAR"
        types.append(f"{_sql_string(key)}: {duckdb_type}")
    return "{" + ", ".join(types) + "}"


def _has_files(pattern: str) -> bool:
    return next(glob.iglob(pattern), None) is not None


def _empty_articles_table(partition_keys: tuple[str, ...]) -> pa.Table:
    fields = list(FILE_SCHEMA) + [PARTITION_FIELDS.get(key, pa.field(key, pa.string())) for key in partition_keys]
    return pa.schema(fields).empty_table()


def connect(data_dir: Path | str = DEFAULT_DATA_DIR, *, database: str = ":memory:",
            table: Union[str, TableSnapshot, None] = None, catalog: Optional[str] = None,
            as_of: Optional[str] = None, dates: DateRange = DateRange()) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views ``articles`` and ``errors`` over ``data_dir``.

    ``articles`` unions files by column name, so files written with an older
    (add-only) schema version read with the newer columns as NULL. Partition
    columns are typed from newsbeam.schema (``dt`` is a DATE). A missing or
    empty dataset gives empty views with the full schema, not an error.

    With ``table`` (a name, or a snapshot from ``table_view.resolve``),
    ``articles`` reads exactly the files of that Iceberg table's current
    snapshot (or its snapshot ``as_of``, an id or ISO time), in catalog
    ``catalog`` (default: the embedded one in ``data_dir``); a table problem
    raises newsbeam.iceberg.TableError. ``errors`` and the manifests still
    come from ``data_dir``.

    With ``dates`` bounded, ``articles`` holds only the articles of those days
    (newsbeam.analytics.dates), and folders named for other days are not read.
    """
    root = Path(data_dir)
    if isinstance(table, str):
        table = resolve(root, table, catalog=catalog, as_of=as_of)
    elif table is None and (catalog is not None or as_of is not None):
        raise ValueError("catalog and as_of read a table: pass table too")
    if table is not None:
        partition_keys, source = table.partition_keys, "[" + ", ".join(map(_sql_string, table.files)) + "]"
        has_files = bool(table.files)
    else:
        partition_keys = detect_partition_keys(root)
        pattern = articles_glob(root, partition_keys)
        if dates.bounded:  # the files of the range's folders only, named one by one
            files = [path for path in sorted(glob.glob(pattern))
                     if dates.may_hold(Path(path).relative_to(root).as_posix())]
            source, has_files = "[" + ", ".join(map(_sql_string, files)) + "]", bool(files)
        else:
            source, has_files = _sql_string(pattern), _has_files(pattern)
    connection = duckdb.connect(database)
    # Timestamps are stored in UTC; show and cast them (e.g. to DATE) in UTC too.
    connection.execute("SET TimeZone = 'UTC'")
    if has_files:
        hive_options = f", hive_types = {_hive_types(partition_keys)}" if partition_keys else ""
        condition = dates.sql_condition()
        connection.execute(
            f"CREATE VIEW {ARTICLES_VIEW} AS SELECT * FROM read_parquet({source}, "
            f"hive_partitioning = {str(bool(partition_keys)).lower()}, union_by_name = true{hive_options})"
            + (f" WHERE {condition}" if condition else "")
        )
    else:
        LOGGER.warning("no article files in %s; the articles view is empty",
                       root if table is None else describe(table))
        connection.register(ARTICLES_VIEW, _empty_articles_table(partition_keys or DEFAULT_PARTITION_KEYS))
    errors = errors_glob(root)
    if _has_files(errors):
        connection.execute(
            f"CREATE VIEW {ERRORS_VIEW} AS SELECT * FROM read_parquet({_sql_string(errors)}, "
            "hive_partitioning = false, union_by_name = true)"
        )
    else:
        connection.register(ERRORS_VIEW, ERROR_SCHEMA.empty_table())
    return connection


def read_run_manifests(data_dir: Path | str = DEFAULT_DATA_DIR) -> list[dict[str, Any]]:
    """Run manifests from ``_runs/``, newest first; unreadable ones are logged and skipped."""
    manifests = []
    for path in sorted(Path(p) for p in glob.glob(manifests_glob(data_dir))):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            LOGGER.warning("skipping unreadable run manifest %s: %s", path, error)
            continue
        if not isinstance(manifest, dict):
            LOGGER.warning("skipping run manifest %s: expected a JSON object", path)
            continue
        manifest.setdefault("run_id", path.stem)
        manifests.append(manifest)
    manifests.sort(key=lambda manifest: str(manifest.get("started_at") or manifest["run_id"]), reverse=True)
    return manifests
