"""An Apache Iceberg table over the dataset's own Parquet files.

The Hive folders stay the one copy of the data: each committed file is
registered in the table as it is (pyiceberg's ``add_files`` way, no rewrite).
The files hold no partition columns; the table's partition columns (``dt``,
``lang``, ...) are identity partitions whose values come from the file's
folder, which the Iceberg spec lets every reader project into the rows
("metadata-only migration of Hive tables"; pyiceberg, Spark and Trino do).

Exactly once: a table commit names its run in the snapshot summary and skips
files the table already holds, and ``sync`` makes the table hold exactly the
committed files on disk (adding what a killed run left unregistered, removing
what compaction replaced). A run syncs before it starts, so a kill -9 between
the file commit and the table commit is repaired by the next run.

Catalogs: by default an embedded SQLite catalog under
``<output>/_iceberg/`` (no server); ``--iceberg_catalog NAME`` loads any
catalog pyiceberg knows from its own configuration (``.pyiceberg.yaml`` or
``PYICEBERG_CATALOG__NAME__...`` environment variables): REST (BigLake
metastore for BigQuery), Glue, Hive, SQL.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence
from urllib.parse import unquote

import pyarrow as pa

from newsbeam.exit_codes import first_line
from newsbeam.layout import (
    HIVE_DEFAULT_PARTITION,
    ICEBERG_DIR,
    PARTITION_SEGMENT_RE,
    data_files,
    is_local,
    run_key_of,
)
from newsbeam.schema import FILE_SCHEMA, PARTITION_FIELDS

LOGGER = logging.getLogger(__name__)

EMBEDDED_CATALOG = "newsbeam"
RUN_PROPERTY = "newsbeam.run_id"
OPERATION_PROPERTY = "newsbeam.operation"
TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
COMMIT_ATTEMPTS = 8  # concurrent writers: a conflict refreshes the table and tries again


class TableError(ValueError):
    """A table problem a user can fix, said in one line."""


@dataclass(frozen=True)
class TableSpec:
    """Which table a dataset's files go to (picklable: workers rebuild the catalog from it)."""

    name: str
    output: str
    partition_keys: tuple[str, ...]
    catalog: Optional[str] = None  # None: the embedded SQLite catalog under <output>/_iceberg


def check_table_name(name: str) -> str:
    if not TABLE_NAME_RE.match(name or ""):
        raise TableError(f"--iceberg_table {name!r}: expected NAMESPACE.TABLE (letters, digits, '_')")
    return name


def _import_pyiceberg():
    try:
        import pyiceberg.catalog  # noqa: F401
    except ImportError as error:  # pragma: no cover - declared dependency; an odd install
        raise TableError(f"Iceberg tables need pyiceberg ({error}); pip install 'pyiceberg==0.12.*'") from error


def load_catalog(spec: TableSpec):
    """The catalog of ``spec``: embedded SQLite beside the data, or pyiceberg's configured one."""
    _import_pyiceberg()
    from pyiceberg.catalog import load_catalog as load_configured
    from pyiceberg.catalog.sql import SqlCatalog

    if spec.catalog:
        try:
            return load_configured(spec.catalog)
        except Exception as error:  # pyiceberg says which setting is missing; keep it to one line
            raise TableError(f"--iceberg_catalog {spec.catalog}: {first_line(error)}") from error
    if not is_local(spec.output):
        raise TableError(f"the embedded Iceberg catalog is a SQLite file and {spec.output} is not local: "
                         "name a catalog with --iceberg_catalog (see docs/analytics.md)")
    folder = os.path.abspath(os.path.join(spec.output, ICEBERG_DIR))
    os.makedirs(folder, exist_ok=True)
    # Opening a new catalog creates its tables; two first runs at once raced there
    # ("table iceberg_tables already exists"), so the opening is serialised.
    with open(os.path.join(folder, "catalog.db.open-lock"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        return SqlCatalog(EMBEDDED_CATALOG, uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")


def table_schema(partition_keys: Sequence[str]) -> pa.Schema:
    """The file schema plus one column per partition key (filled from the folders)."""
    extra = [PARTITION_FIELDS.get(key, pa.field(key, pa.string())).with_nullable(True) for key in partition_keys]
    return pa.schema(list(FILE_SCHEMA) + extra)


def _partition_spec(schema, partition_keys: Sequence[str]):
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    fields = [PartitionField(source_id=schema.find_field(key).field_id, field_id=1000 + number,
                             transform=IdentityTransform(), name=key) for number, key in enumerate(partition_keys)]
    return PartitionSpec(*fields)


def open_table(spec: TableSpec, *, create: bool = True):
    """The table, created on first use; a newer file schema is added to it (add-only)."""
    catalog = load_catalog(spec)
    from pyiceberg.exceptions import (
        NamespaceAlreadyExistsError,
        NoSuchNamespaceError,
        NoSuchTableError,
        TableAlreadyExistsError,
    )
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
    from pyiceberg.schema import assign_fresh_schema_ids
    from pyiceberg.table import TableProperties

    try:
        table = catalog.load_table(spec.name)
    except (NoSuchTableError, NoSuchNamespaceError):
        if not create or not spec.partition_keys:
            raise TableError(f"no Iceberg table {spec.name} in catalog {spec.catalog or EMBEDDED_CATALOG}") from None
        namespace = spec.name.rsplit(".", 1)[0]
        try:
            catalog.create_namespace(namespace)
        except NamespaceAlreadyExistsError:
            pass
        except Exception:  # a concurrent run's insert won the race: SQLite says IntegrityError, not AlreadyExists
            if not catalog.namespace_exists(namespace):
                raise
        schema = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(table_schema(spec.partition_keys)))
        try:
            table = catalog.create_table(
                spec.name, schema=schema, partition_spec=_partition_spec(schema, spec.partition_keys),
                properties={TableProperties.DEFAULT_NAME_MAPPING: schema.name_mapping.model_dump_json()})
        except TableAlreadyExistsError:  # a concurrent run created it first
            table = catalog.load_table(spec.name)
        except Exception:  # the same race seen by the catalog's database rather than by pyiceberg
            if not catalog.table_exists(spec.name):
                raise
            table = catalog.load_table(spec.name)
    held_keys = tuple(field.name for field in table.spec().fields)
    if spec.partition_keys and held_keys != tuple(spec.partition_keys):
        raise TableError(f"Iceberg table {spec.name} is partitioned by {','.join(held_keys) or 'nothing'}, "
                         f"this run by {','.join(spec.partition_keys)}: use the table's --partition_by")
    wanted = table_schema(held_keys)
    if create and any(field.name not in table.schema()._name_to_id for field in wanted):
        # the file schema gained columns (add-only): the table gains them too
        with table.update_schema() as update:
            update.union_by_name(_pyarrow_to_schema_without_ids(wanted))
        table = table.refresh()
    return table


# ---- files -------------------------------------------------------------------------

def table_path(path: str) -> str:
    """How the table names a file: absolute, so any reader anywhere finds it."""
    return os.path.abspath(path) if is_local(path) else path


def folder_partition(path: str, partition_keys: Sequence[str]) -> dict[str, Any]:
    """The partition values a file's ``key=value`` folders say, typed like the table's columns."""
    values: dict[str, Any] = {}
    for segment in path.replace("\\", "/").split("/")[:-1]:
        match = PARTITION_SEGMENT_RE.match(segment)
        if match and match.group("key") in partition_keys:
            text = match.group("value")
            value = None if text == HIVE_DEFAULT_PARTITION else unquote(text)
            if value is not None and PARTITION_FIELDS.get(match.group("key")) is not None \
                    and PARTITION_FIELDS[match.group("key")].type == pa.date32():
                value = dt.date.fromisoformat(value)
            values[match.group("key")] = value
    return values


def _data_file(table, path: str):
    """An Iceberg DataFile for one committed Parquet file: its statistics, its folder's partition."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        _check_pyarrow_schema_compatible,
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.partitioning import partition_record_value
    from pyiceberg.typedef import Record

    metadata, schema, spec = table.metadata, table.schema(), table.spec()
    input_file = table.io.new_input(path)
    with input_file.open() as stream:
        parquet_metadata = pq.read_metadata(stream)
    _check_pyarrow_schema_compatible(schema, parquet_metadata.schema.to_arrow_schema(),
                                     format_version=metadata.format_version)
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=parquet_metadata, stats_columns=compute_statistics_plan(schema, metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema))
    folder = folder_partition(path, [field.name for field in spec.fields])
    partition = Record(*[partition_record_value(field, folder.get(field.name), schema) for field in spec.fields])
    return DataFile.from_args(
        content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET, partition=partition,
        file_size_in_bytes=len(input_file), sort_order_id=None, spec_id=spec.spec_id, equality_ids=None,
        key_metadata=None, **statistics.to_serialized_dict())


def held_files(table) -> dict[str, Any]:
    """The data files of the table's current snapshot, by path."""
    if table.current_snapshot() is None:
        return {}
    return {task.file.file_path: task.file for task in table.scan().plan_files()}


def run_snapshots(table) -> dict[str, int]:
    """Run id -> id of the snapshot that committed it, over the table's history."""
    found = {}
    for snapshot in table.snapshots():
        run = (snapshot.summary.additional_properties if snapshot.summary else {}).get(RUN_PROPERTY)
        if run:
            found[run] = snapshot.snapshot_id
    return found


def _commit(spec: TableSpec, change, what: str) -> Optional[int]:
    """Apply ``change(table) -> bool`` (False: nothing to do) and commit; on a conflict, reload and redo."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(COMMIT_ATTEMPTS):
        table = open_table(spec)
        try:
            if not change(table):
                return None
            snapshot = table.refresh().current_snapshot()
            return snapshot.snapshot_id if snapshot else None
        except CommitFailedException as error:
            LOGGER.info("Iceberg commit of %s conflicted (%s); retrying", what, error)
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
    raise TableError(f"could not commit {what} to Iceberg table {spec.name} after {COMMIT_ATTEMPTS} tries "
                     "(other writers kept winning)")


def commit_files(spec: TableSpec, paths: Iterable[str], run_id: str, properties: Optional[dict] = None
                 ) -> Optional[int]:
    """Register one run's (or one window's) committed files as one snapshot; files held already are skipped."""
    wanted = sorted({table_path(path) for path in paths})

    def append(table) -> bool:
        fresh = [path for path in wanted if path not in held_files(table)]
        if not fresh:
            return False
        summary = {RUN_PROPERTY: run_id, OPERATION_PROPERTY: "append", **(properties or {})}
        with table.transaction() as transaction:
            with transaction.update_snapshot(snapshot_properties=summary).fast_append() as snapshot:
                for path in fresh:
                    snapshot.append_data_file(_data_file(table, path))
        return True

    return _commit(spec, append, f"run {run_id}")


def sync(spec: TableSpec, operation: str = "sync", only: Optional[Sequence[str]] = None) -> list[int]:
    """Make the table hold exactly the committed files on disk; returns the snapshots made.

    Files a run committed but never registered (a kill between the two
    commits) are appended as that run's own snapshot; files that left the
    disk (compaction replaced them) leave the table in one overwrite snapshot
    together with their replacements. ``only`` restricts this to files below
    those folders (one compacted partition).
    """
    prefixes = tuple(table_path(folder).rstrip("/") + "/" for folder in (only or ()))
    made: list[int] = []

    def within(path: str) -> bool:
        return not prefixes or path.startswith(prefixes)

    on_disk = {table_path(path) for path in data_files(spec.output)}
    table = open_table(spec)
    held = held_files(table)
    vanished = {path for path in held if within(path) and path not in on_disk}
    fresh = sorted(path for path in on_disk if within(path) and path not in held)
    if vanished:
        def replace(table) -> bool:
            current = held_files(table)
            gone = [current[path] for path in sorted(vanished) if path in current]
            added = [path for path in fresh if path not in current]
            if not gone and not added:
                return False
            with table.transaction() as transaction:
                with transaction.update_snapshot(snapshot_properties={OPERATION_PROPERTY: operation}).overwrite() \
                        as snapshot:
                    for data_file in gone:
                        snapshot.delete_data_file(data_file)
                    for path in added:
                        snapshot.append_data_file(_data_file(table, path))
            return True

        snapshot_id = _commit(spec, replace, operation)
        return [snapshot_id] if snapshot_id is not None else []
    by_run: dict[str, list[str]] = defaultdict(list)
    for path in fresh:
        by_run[run_key_of(os.path.basename(path))].append(path)
    for run_id, paths in sorted(by_run.items()):
        snapshot_id = commit_files(spec, paths, run_id, {OPERATION_PROPERTY: operation})
        if snapshot_id is not None:
            made.append(snapshot_id)
    return made


def snapshot_files(spec: TableSpec, as_of: Optional[str] = None) -> tuple[int, list[str]]:
    """(snapshot id, its data files) now or ``as_of`` a snapshot id or an ISO time."""
    table = open_table(spec, create=False)
    snapshot = snapshot_as_of(table, as_of)
    return (snapshot.snapshot_id, snapshot_paths(table, snapshot)) if snapshot is not None else (0, [])


def snapshot_paths(table, snapshot) -> list[str]:
    """The data files ``snapshot`` of ``table`` holds, sorted."""
    return sorted(task.file.file_path for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files())


def snapshot_as_of(table, as_of: Optional[str] = None):
    """The current snapshot (None for an empty table), or the one ``as_of`` a snapshot id or an ISO time."""
    if as_of is None:
        return table.current_snapshot()
    text = as_of.strip()
    if text.isdigit():
        snapshot = table.snapshot_by_id(int(text))
        if snapshot is None:
            raise TableError(f"--as_of {as_of}: the table has no snapshot with that id")
        return snapshot
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TableError(f"--as_of {as_of!r}: expected a snapshot id or an ISO time such as 2026-12-04T06:00Z") \
            from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    snapshot = table.snapshot_as_of_timestamp(int(moment.timestamp() * 1000))
    if snapshot is None:
        raise TableError(f"--as_of {as_of}: the table has no snapshot that old")
    return snapshot
