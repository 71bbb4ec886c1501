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
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from newsbeam.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED, EXIT_OK
from newsbeam.flags import POSITIVE, POSITIVE_INT
from newsbeam.iceberg import TableSpec, check_table_name, sync
from newsbeam.layout import (
    TMP_DIR,
    compact_lock_path,
    compact_staging,
    delete_tree,
    is_local,
    join_path,
    new_run_id,
)
from newsbeam.pipeline.compaction_files import (
    DataFile,
    LeafFolder,
    LeafResult,
    UnreadableFile,
    compacted_name,
    find_leaf_folders,
    parse_partition,
    read_rows,
    rows_per_output_file,
    select_leaves,
    write_compacted,
)
from newsbeam.pipeline.compaction_swap import (
    STAGED_LEAF,
    StepHook,
    recover_compactions,
    swap_by_exchange,
    swap_by_replace,
)
from newsbeam.runs import remove_abandoned_temp_folders
from newsbeam.state.lock import FileLock, StateLocked

LOGGER = logging.getLogger(__name__)

DEFAULT_TARGET_FILE_MB = 128
DEFAULT_MIN_FILES = 2


class CompactionLocked(RuntimeError):
    """Another compaction holds the dataset's compaction lock."""


@dataclass
class CompactionReport:
    compact_id: str
    compacted: list[LeafResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recovered: int = 0
    unreadable: list[str] = field(default_factory=list)  # per leaf left as it is: which file and why


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
    if allow_exchange and is_local(leaf.path) and swap_by_exchange(leaf, staging, merged, new, on_step):
        strategy = "exchange"
    else:
        swap_by_replace(leaf, staging, merged, new, on_step)
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
    table: Optional[TableSpec] = None,
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
        if table is not None:
            sync(table)  # the table holds what the folders hold before anything is rewritten
        chosen, report.skipped = select_leaves(find_leaf_folders(output), partitions,
                                               target_file_bytes=target_file_bytes, min_files=min_files)
        for number, (leaf, merged) in enumerate(chosen):
            try:
                result = compact_leaf(output, leaf, merged, compact_id=report.compact_id, number=number,
                                      target_file_bytes=target_file_bytes, on_step=on_step,
                                      allow_exchange=allow_exchange)
            except UnreadableFile as error:  # read before anything is staged: the leaf is untouched
                report.unreadable.append(f"{leaf.partition} as it is: {error}")
                continue
            LOGGER.info("compacted %s: %d -> %d files (%s)", leaf.partition, result.files_before,
                        result.files_after, result.strategy)
            report.compacted.append(result)
            if table is not None:  # the partition's rewrite: one snapshot, old files out, new in
                sync(table, operation="compact", only=[leaf.path])
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
    parser.add_argument("--target_file_mb", type=POSITIVE, default=DEFAULT_TARGET_FILE_MB,
                        help="Target size of a compacted file; larger files are left alone (default 128).")
    parser.add_argument("--min_files", type=POSITIVE_INT, default=DEFAULT_MIN_FILES,
                        help="Compact a leaf only if it has at least this many small files (default 2).")
    parser.add_argument("--dry_run", action="store_true", help="List what would be compacted; change nothing.")
    parser.add_argument("--iceberg_table", default=None,
                        help="The dataset's Iceberg table (NAMESPACE.TABLE): each compacted partition is one snapshot.")
    parser.add_argument("--iceberg_catalog", default=None,
                        help="pyiceberg catalog name (default: the embedded catalog in <output>/_iceberg).")


def run(args: argparse.Namespace) -> int:
    try:
        table = None
        if args.iceberg_table:  # partition keys: whatever the table already has
            table = TableSpec(check_table_name(args.iceberg_table), args.output.rstrip("/"), (), args.iceberg_catalog)
        report = compact_dataset(args.output, args.partition, target_file_bytes=int(args.target_file_mb * 1024 * 1024),
                                 min_files=args.min_files, dry_run=args.dry_run, table=table)
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
    for problem in report.unreadable:
        print(f"newsbeam compact: left {problem}", file=sys.stderr)
    print(f"{len(report.compacted)} partition(s) {verb}, {len(report.skipped) + len(report.unreadable)} left as "
          f"they are (compaction id {report.compact_id})")
    return EXIT_FAILED if report.unreadable else EXIT_OK
