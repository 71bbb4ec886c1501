"""``newsbeam compact``: rewrite a partition's small files into fewer large ones.

A *leaf folder* is a folder whose path below the dataset is all ``key=value``
levels (``dt=2024-05-01/lang=ar``) and which holds ``*.parquet`` files. For
each leaf chosen, the files smaller than the target size are read, unified to
``FILE_SCHEMA``, sorted by ``article_id`` and written as
``part-compact-<compact_id>-<hash>-<nnnn>.parquet`` (zstd), then swapped in.

How the swap looks to a reader that globs ``<output>/*=*/**/*.parquet``:

``exchange`` (local disk on Linux): a complete new leaf folder is built under
``<output>/_tmp/compact-<id>/`` (compacted files, plus hard links to the files
kept as they are) and exchanged with the live leaf by one
``renameat2(RENAME_EXCHANGE)`` call. Every directory listing sees either the
old file set or the new one, so a query sees each row exactly once. A query
that listed the old files but opens them after the swap fails with a missing
file error (retry it); it never returns a wrong answer.

``replace`` (gs://, or where the exchange is unsupported): the new files are
moved into the leaf, then the old ones deleted. Between those steps a reader
sees that leaf's rows twice; run compaction when nothing scans the partition
(e.g. on closed dates with ``--partition``).

Crash safety: a leaf's ``plan.json`` is written only once its new files are
complete; the next compaction finishes any plan it finds (``replace`` rolls
forward) and drops staging without a plan, so no row is lost or doubled.
Run compaction between scheduled runs: it does not know the runs' ``--state``
lock. Two compactions exclude each other through ``<output>/_compact.lock``.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from newsbeam.exit_codes import EXIT_CONFIG, EXIT_LOCKED, EXIT_OK
from newsbeam.layout import (
    COMPACT_STAGING_PREFIX,
    PARTITION_SEGMENT_RE,
    TMP_DIR,
    compact_lock_path,
    compact_staging,
    delete_tree,
    is_local,
    join_path,
    make_dirs,
    new_run_id,
    part_name,
    sanitise_partition_value,
)
from newsbeam.parquet import COMPRESSION, ROW_GROUP_ROWS
from newsbeam.runs import remove_abandoned_temp_folders
from newsbeam.schema import FILE_SCHEMA, SCHEMA_VERSION
from newsbeam.state.lock import FileLock, StateLocked

LOGGER = logging.getLogger(__name__)

DEFAULT_TARGET_FILE_MB = 128
DEFAULT_MIN_FILES = 2
PLAN_NAME = "plan.json"
STAGED_LEAF = "leaf"

# renameat2(2): swap two paths atomically (Linux >= 3.15; ext4, xfs, btrfs, tmpfs).
AT_FDCWD = -100
RENAME_EXCHANGE = 2
EXCHANGE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM, errno.EXDEV}

Strategy = str  # "exchange" | "replace"
StepHook = Callable[[str, str], None]


class CompactionLocked(RuntimeError):
    """Another compaction holds the dataset's compaction lock."""


@dataclass(frozen=True)
class DataFile:
    path: str
    size: int

    @property
    def name(self) -> str:
        return FileSystems.split(self.path)[1]


@dataclass(frozen=True)
class LeafFolder:
    """One Hive leaf folder and its Parquet files."""

    path: str
    partition: str  # relative to the dataset: "dt=2024-05-01/lang=ar"
    files: tuple[DataFile, ...]

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.partition.split("/"))


@dataclass(frozen=True)
class LeafResult:
    partition: str
    files_before: int
    files_after: int
    rows: int
    bytes_before: int
    bytes_after: int
    strategy: Strategy


@dataclass
class CompactionReport:
    compact_id: str
    compacted: list[LeafResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recovered: int = 0


# ---- finding and choosing leaf folders --------------------------------------------

def _relative(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path!r} is not under {root!r}")
    return path[len(prefix):]


def find_leaf_folders(output: str) -> list[LeafFolder]:
    """Every ``key=value/...`` folder holding ``*.parquet`` files, sorted by partition.

    ``_tmp``, ``_errors`` and ``_runs`` never qualify: their names are not ``key=value``.
    """
    matches = FileSystems.match([join_path(output, "**", "*.parquet")])[0].metadata_list
    files_by_partition: dict[str, list[DataFile]] = {}
    for metadata in matches:
        parts = _relative(metadata.path, output).split("/")
        if len(parts) < 2 or not all(PARTITION_SEGMENT_RE.match(part) for part in parts[:-1]):
            continue
        files_by_partition.setdefault("/".join(parts[:-1]), []).append(DataFile(metadata.path, metadata.size_in_bytes))
    return [
        LeafFolder(join_path(output, *partition.split("/")), partition, tuple(sorted(files, key=lambda f: f.name)))
        for partition, files in sorted(files_by_partition.items())
    ]


def parse_partition(text: str) -> tuple[str, ...]:
    """``"dt=2024-05-01/lang=ar"`` -> folder names, values sanitised as the sink does."""
    segments = []
    for part in text.strip().strip("/").split("/"):
        match = PARTITION_SEGMENT_RE.match(part)
        if not match:
            raise ValueError(f"bad --partition {text!r}: expected key=value[/key=value...], e.g. dt=2024-05-01/lang=ar")
        segments.append(f"{match.group('key')}={sanitise_partition_value(match.group('value'))}")
    return tuple(segments)


def select_leaves(
    leaves: Iterable[LeafFolder],
    partitions: Sequence[str] = (),
    *,
    target_file_bytes: int,
    min_files: int,
) -> tuple[list[tuple[LeafFolder, tuple[DataFile, ...]]], list[str]]:
    """(leaf, files to merge) for each leaf worth compacting, and the partitions skipped.

    Only files below the target size are merged; a leaf is worth it when it
    has at least ``min_files`` of them. ``partitions`` are prefixes.
    """
    prefixes = [parse_partition(text) for text in partitions]
    chosen, skipped = [], []
    for leaf in leaves:
        if prefixes and not any(leaf.segments[: len(prefix)] == prefix for prefix in prefixes):
            continue
        small = tuple(f for f in leaf.files if f.size < target_file_bytes)
        if len(small) >= max(min_files, 2):
            chosen.append((leaf, small))
        else:
            skipped.append(leaf.partition)
    return chosen, skipped


# ---- reading and writing rows -------------------------------------------------------

def _open(path: str, mode: str = "r"):
    if mode == "r":
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def conform_to_file_schema(table: pa.Table, source: str) -> pa.Table:
    """A table of any schema version up to ours, as FILE_SCHEMA (missing columns null)."""
    unknown = [name for name in table.column_names if name not in FILE_SCHEMA.names]
    if unknown:
        raise ValueError(f"{source} has columns {unknown!r} unknown to schema version {SCHEMA_VERSION}; "
                         "upgrade newsbeam before compacting")
    columns = []
    for schema_field in FILE_SCHEMA:
        if schema_field.name in table.column_names:
            columns.append(table.column(schema_field.name).cast(schema_field.type))
        elif schema_field.nullable:
            columns.append(pa.nulls(table.num_rows, schema_field.type))
        else:
            raise ValueError(f"{source} lacks required column {schema_field.name!r}")
    return pa.Table.from_arrays(columns, schema=FILE_SCHEMA)


def read_rows(files: Sequence[DataFile]) -> tuple[pa.Table, int]:
    """All rows of ``files`` as one FILE_SCHEMA table sorted by article_id, and their data bytes.

    Data bytes are the compressed column chunks, without each file's footer,
    so many tiny files don't make rows look bigger than they are.
    """
    tables, data_bytes = [], 0
    for data_file in files:
        with _open(data_file.path) as handle:
            parquet = pq.ParquetFile(handle)
            metadata = parquet.metadata
            data_bytes += sum(metadata.row_group(g).column(c).total_compressed_size
                              for g in range(metadata.num_row_groups) for c in range(metadata.num_columns))
            tables.append(conform_to_file_schema(parquet.read(), data_file.path))
    return pa.concat_tables(tables).sort_by("article_id"), data_bytes


def rows_per_output_file(rows: int, data_bytes: int, target_file_bytes: int) -> int:
    """Rows per file so each lands near the target, judged by the inputs' bytes per row."""
    if rows == 0:
        return 1
    bytes_per_row = max(data_bytes, 1) / rows
    return max(1, int(target_file_bytes // bytes_per_row))


def compacted_name(compact_id: str, partition: str, number: int) -> str:
    """Same shape as the sink's ``part-<run_id>-<hash>-<nnnn>``, run id ``compact-<id>``."""
    return part_name(f"{COMPACT_STAGING_PREFIX}{compact_id}", partition, number)


def write_compacted(table: pa.Table, folder: str, names: Sequence[str], rows_per_file: int) -> list[DataFile]:
    make_dirs(folder)
    written = []
    for name, start in zip(names, range(0, max(table.num_rows, 1), rows_per_file)):
        path = join_path(folder, name)
        stream = _open(path, "w")
        try:
            with pq.ParquetWriter(stream, FILE_SCHEMA, compression=COMPRESSION) as writer:
                writer.write_table(table.slice(start, rows_per_file), row_group_size=ROW_GROUP_ROWS)
        finally:
            stream.close()
        written.append(DataFile(path, FileSystems.match([path])[0].metadata_list[0].size_in_bytes))
    return written


# ---- the swap ------------------------------------------------------------------------

def _load_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def exchange_folders(first: str, second: str) -> bool:
    """Swap two local paths in one atomic step; False where the OS or filesystem can't."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, f"renameat2 exchange failed: {os.strerror(code)}", first, None, second)


def _write_plan(staging: str, plan: dict) -> None:
    with _open(join_path(staging, PLAN_NAME), "w") as handle:
        handle.write(json.dumps(plan, indent=1).encode("utf-8"))


def _restore_strays(staged_leaf: str, leaf: str, plan: dict) -> None:
    """Move back files that reached the live leaf after it was listed (a run's late commit)."""
    known = set(plan["merged"]) | set(plan["kept"]) | set(plan["new"])
    for name in sorted(os.listdir(staged_leaf)):
        if name not in known and not os.path.exists(os.path.join(leaf, name)):
            LOGGER.warning("file %s landed in %s during compaction; moving it back", name, leaf)
            os.rename(os.path.join(staged_leaf, name), os.path.join(leaf, name))


def _roll_forward_replace(staged_leaf: str, leaf: str, plan: dict) -> None:
    for name in plan["new"]:
        staged, final = join_path(staged_leaf, name), join_path(leaf, name)
        if FileSystems.exists(staged):
            if FileSystems.exists(final):
                FileSystems.delete([staged])
            else:
                FileSystems.rename([staged], [final])
    remaining = [path for path in (join_path(leaf, name) for name in plan["merged"]) if FileSystems.exists(path)]
    if remaining:
        FileSystems.delete(remaining)


def _swap_by_exchange(leaf: LeafFolder, staging: str, merged: Sequence[DataFile], new: Sequence[DataFile],
                      on_step: StepHook) -> bool:
    """Build the whole new leaf in staging, then exchange; False if it can't be done here."""
    staged_leaf = join_path(staging, STAGED_LEAF)
    entries = sorted(os.listdir(leaf.path))
    if any(os.path.isdir(os.path.join(leaf.path, name)) for name in entries):
        return False  # folders below a leaf would vanish for the duration; don't
    merged_names = {f.name for f in merged}
    kept = [name for name in entries if name not in merged_names]
    try:
        for name in kept:
            os.link(os.path.join(leaf.path, name), os.path.join(staged_leaf, name))
    except OSError as error:
        LOGGER.info("no hard links in %s (%s); replacing files instead", leaf.path, error)
        for name in kept:
            if os.path.exists(os.path.join(staged_leaf, name)):
                os.unlink(os.path.join(staged_leaf, name))
        return False
    plan = {"strategy": "exchange", "leaf": leaf.path, "merged": sorted(merged_names),
            "kept": kept, "new": [f.name for f in new]}
    _write_plan(staging, plan)
    on_step("staged", leaf.partition)
    if not exchange_folders(staged_leaf, leaf.path):
        for name in kept:
            os.unlink(os.path.join(staged_leaf, name))
        os.unlink(join_path(staging, PLAN_NAME))
        return False
    on_step("swapped", leaf.partition)
    _restore_strays(staged_leaf, leaf.path, plan)
    return True


def _swap_by_replace(leaf: LeafFolder, staging: str, merged: Sequence[DataFile], new: Sequence[DataFile],
                     on_step: StepHook) -> None:
    plan = {"strategy": "replace", "leaf": leaf.path, "merged": sorted(f.name for f in merged),
            "kept": [], "new": [f.name for f in new]}
    _write_plan(staging, plan)
    on_step("staged", leaf.partition)
    staged_leaf = join_path(staging, STAGED_LEAF)
    for data_file in new:
        FileSystems.rename([join_path(staged_leaf, data_file.name)], [join_path(leaf.path, data_file.name)])
    on_step("placed", leaf.partition)
    FileSystems.delete([f.path for f in merged])
    on_step("swapped", leaf.partition)


def recover_compactions(output: str) -> int:
    """Finish or drop what an interrupted compaction left in ``_tmp``; returns plans finished."""
    staging_root = join_path(output, TMP_DIR)
    plans = [m.path for m in FileSystems.match([join_path(staging_root, f"{COMPACT_STAGING_PREFIX}*", "*", PLAN_NAME)])[0].metadata_list]
    for plan_path in sorted(plans):
        staging = FileSystems.split(plan_path)[0]
        with _open(plan_path) as handle:
            plan = json.loads(handle.read().decode("utf-8"))
        staged_leaf = join_path(staging, STAGED_LEAF)
        if plan["strategy"] == "exchange":
            # Before or after the exchange the live leaf is whole; only strays need care.
            if os.path.isdir(staged_leaf) and os.path.isdir(plan["leaf"]):
                _restore_strays(staged_leaf, plan["leaf"], plan)
        else:
            _roll_forward_replace(staged_leaf, plan["leaf"], plan)
        LOGGER.warning("finished an interrupted compaction of %s", plan["leaf"])
    if is_local(staging_root):
        leftovers = [os.path.join(staging_root, name) for name in
                     (os.listdir(staging_root) if os.path.isdir(staging_root) else []) if name.startswith(COMPACT_STAGING_PREFIX)]
    else:
        pattern = join_path(staging_root, f"{COMPACT_STAGING_PREFIX}*", "**")
        leftovers = sorted({join_path(staging_root, _relative(m.path, staging_root).split("/", 1)[0])
                            for m in FileSystems.match([pattern])[0].metadata_list})
    for path in leftovers:
        delete_tree(path)
    return len(plans)


# ---- the lock ---------------------------------------------------------------------------

class CompactLock:
    """``<output>/_compact.lock``, taken atomically (O_EXCL locally, generation 0 on GCS)."""

    def __init__(self, output: str):
        self._lock = FileLock(compact_lock_path(output))

    @property
    def path(self) -> str:
        return self._lock.path

    def __enter__(self) -> "CompactLock":
        try:
            self._lock.acquire()
        except StateLocked:
            raise CompactionLocked(f"another compaction holds {self.path} ({self._lock.describe_holder()}); "
                                   f"if none is running, delete that file") from None
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()


# ---- the whole job ------------------------------------------------------------------------

def _no_step(step: str, partition: str) -> None:
    return None


def compact_leaf(
    output: str,
    leaf: LeafFolder,
    merged: Sequence[DataFile],
    *,
    compact_id: str,
    number: int,
    target_file_bytes: int,
    on_step: StepHook = _no_step,
    allow_exchange: bool = True,
) -> LeafResult:
    """Rewrite ``merged`` (files of ``leaf``) into fewer files and swap them in."""
    staging = join_path(compact_staging(output, compact_id), f"{number:04d}")
    table, data_bytes = read_rows(merged)
    bytes_before = sum(f.size for f in merged)
    rows_per_file = rows_per_output_file(table.num_rows, data_bytes, target_file_bytes)
    count = max(1, math.ceil(table.num_rows / rows_per_file))
    names = [compacted_name(compact_id, leaf.partition, n) for n in range(count)]
    new = write_compacted(table, join_path(staging, STAGED_LEAF), names, rows_per_file)
    strategy = "replace"
    if allow_exchange and is_local(leaf.path) and _swap_by_exchange(leaf, staging, merged, new, on_step):
        strategy = "exchange"
    else:
        _swap_by_replace(leaf, staging, merged, new, on_step)
    delete_tree(staging)
    on_step("done", leaf.partition)
    return LeafResult(leaf.partition, len(merged), len(new), table.num_rows, bytes_before,
                      sum(f.size for f in new), strategy)


def compact_dataset(
    output: str,
    partitions: Sequence[str] = (),
    *,
    target_file_bytes: int = DEFAULT_TARGET_FILE_MB * 1024 * 1024,
    min_files: int = DEFAULT_MIN_FILES,
    compact_id: Optional[str] = None,
    on_step: StepHook = _no_step,
    allow_exchange: bool = True,
    dry_run: bool = False,
) -> CompactionReport:
    """Compact the chosen leaf folders of ``output``; see the module docstring.

    ``on_step(step, partition)`` is called after "staged", ("placed",)
    "swapped" and "done" for each leaf: a seam for tests and progress output.
    Raises CompactionLocked if another compaction runs, ValueError on a bad
    ``--partition``.
    """

    if target_file_bytes <= 0 or min_files < 1:
        raise ValueError(f"target size must be > 0 and min_files >= 1; got {target_file_bytes!r}, {min_files!r}")
    for text in partitions:
        parse_partition(text)
    output = output.rstrip("/")
    if is_local(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is not a folder")
    report = CompactionReport(compact_id or new_run_id())
    if dry_run:
        chosen, report.skipped = select_leaves(find_leaf_folders(output), partitions,
                                               target_file_bytes=target_file_bytes, min_files=min_files)
        report.compacted = [LeafResult(leaf.partition, len(files), 0, 0, sum(f.size for f in files), 0, "dry-run")
                            for leaf, files in chosen]
        return report
    with CompactLock(output):
        report.recovered = recover_compactions(output)
        remove_abandoned_temp_folders(output)  # runs killed mid-write; logs what it removes
        chosen, report.skipped = select_leaves(find_leaf_folders(output), partitions,
                                               target_file_bytes=target_file_bytes, min_files=min_files)
        for number, (leaf, merged) in enumerate(chosen):
            result = compact_leaf(output, leaf, merged, compact_id=report.compact_id, number=number,
                                  target_file_bytes=target_file_bytes, on_step=on_step,
                                  allow_exchange=allow_exchange)
            LOGGER.info("compacted %s: %d -> %d files (%s)", leaf.partition, result.files_before,
                        result.files_after, result.strategy)
            report.compacted.append(result)
        staging_root = join_path(output, TMP_DIR)
        delete_tree(compact_staging(output, report.compact_id))
        if is_local(staging_root) and os.path.isdir(staging_root) and not os.listdir(staging_root):
            os.rmdir(staging_root)
    return report


# ---- the command ----------------------------------------------------------------------------

def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="Dataset folder (local path or gs://).")
    parser.add_argument("--partition", action="append", default=[],
                        help="Only leaf folders under this prefix, e.g. dt=2024-05-01 or dt=2024-05-01/lang=ar "
                             "(repeatable). Default: every leaf with enough small files.")
    parser.add_argument("--target_file_mb", type=float, default=DEFAULT_TARGET_FILE_MB,
                        help="Target size of a compacted file; larger files are left alone (default 128).")
    parser.add_argument("--min_files", type=int, default=DEFAULT_MIN_FILES,
                        help="Compact a leaf only if it has at least this many small files (default 2).")
    parser.add_argument("--dry_run", action="store_true", help="List what would be compacted; change nothing.")


def run(args: argparse.Namespace) -> int:
    try:
        report = compact_dataset(args.output, args.partition, target_file_bytes=int(args.target_file_mb * 1024 * 1024),
                                 min_files=args.min_files, dry_run=args.dry_run)
    except CompactionLocked as error:
        print(f"newsbeam: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except ValueError as error:
        print(f"newsbeam: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.partition and not (report.compacted or report.skipped):
        print(f"newsbeam: no partition folder under {args.output} matches {args.partition!r}", file=sys.stderr)
        return EXIT_CONFIG
    if report.recovered:
        print(f"finished {report.recovered} interrupted compaction(s)")
    verb = "would compact" if args.dry_run else "compacted"
    for result in report.compacted:
        after = "" if args.dry_run else f" -> {result.files_after} file(s), {_size(result.bytes_after)}, {result.rows} rows [{result.strategy}]"
        print(f"{verb} {result.partition}: {result.files_before} files, {_size(result.bytes_before)}{after}")
    print(f"{len(report.compacted)} partition(s) {verb}, {len(report.skipped)} left as they are "
          f"(compaction id {report.compact_id})")
    return EXIT_OK
