"""Hive-partitioned Parquet sink with a two-phase commit.

Phase 1 writes every file under ``<output>/_tmp/<run_id>/`` with a name no
reader globs (``*.inprogress``). Phase 2, once all of them exist, creates the
partition folders and renames each file to
``<output>/<key>=<value>/.../part-<run_id>-<n>.parquet``. A rename is atomic
on local disk and object creation is atomic on GCS, so a reader never sees a
partial file; a run that fails before phase 2 leaves nothing visible.

Beam's ``fileio.WriteToFiles`` is not used: into Hive folders on local disk its
final rename fails on the missing folder and the rows are lost with exit 0.
"""
from __future__ import annotations

import functools
import itertools
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from newsbeam.faults import crash_point
from newsbeam.iceberg import TableSpec, commit_files
from newsbeam.layout import (
    DEFAULT_PARTITION_KEYS,
    errors_partition,
    join_path,
    make_dirs,
    part_name,
    partition_path,
    partition_values,
    temp_file,
    validate_partition_keys,
)
from newsbeam.metrics import counter
from newsbeam.packing import pack, unpack
from newsbeam.parquet import write_parquet
from newsbeam.records import Article, DeadLetter
from newsbeam.schema import ERROR_SCHEMA, FILE_SCHEMA, article_to_row, dead_letter_row

LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_ROWS_PER_FILE = 50_000


@dataclass(frozen=True)
class WrittenFile:
    temp_path: str
    final_path: str
    partition: str
    rows: int


class _WriteTempFilesFn(beam.DoFn):
    """(partition, packed records) -> WrittenFile per chunk, each a finished temp file."""

    def __init__(self, output: str, run_id: str, schema: pa.Schema, max_rows_per_file: int,
                 record_type: type, to_row: Callable[[Any], dict]):
        self.output = output
        self.run_id = run_id
        self.schema = schema
        self.max_rows_per_file = max_rows_per_file
        self.record_type = record_type
        self.to_row = to_row

    def process(self, keyed_rows, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        # The partition's rows are streamed into files, never listed whole:
        # one partition of one run can be larger than a worker's memory.
        partition, packed_records = keyed_rows
        rows = (self.to_row(unpack(packed, self.record_type)) for packed in packed_records)
        window_tag = _window_tag(window, pane)
        remaining = iter(rows)
        for number in itertools.count():
            first = next(remaining, None)
            if first is None:
                return
            file_rows = itertools.islice(itertools.chain((first,), remaining), self.max_rows_per_file)
            temp_path = temp_file(self.output, self.run_id, uuid.uuid4().hex)
            count = write_parquet(temp_path, self.schema, file_rows)
            crash_point("after_temp_file")
            name = part_name(self.run_id, partition, number, window_tag)
            yield WrittenFile(temp_path, join_path(self.output, partition, name), partition, count)


def _window_tag(window, pane) -> str:
    """Streaming files name their window and pane, so late panes never collide."""
    if isinstance(window, beam.window.IntervalWindow):
        index = getattr(pane, "index", 0) or 0
        return f"-w{int(window.start.micros // 1_000_000)}p{index}"
    return ""


class _CommitFilesFn(beam.DoFn):
    """Phase 2: rename every finished temp file to its final Hive path."""

    def __init__(self, output: str, run_id: str, counter: str, table: Optional[TableSpec] = None):
        self.output = output
        self.run_id = run_id
        self.counter_name = counter
        self.table = table

    def setup(self):
        self.rows_committed = counter(self.counter_name)
        self.files_committed = counter(f"{self.counter_name}_files")

    def process(self, written: list[WrittenFile], window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        items = sorted(written, key=lambda w: w.final_path)
        # Every folder first: a folder that can't be made fails the commit
        # before anything of the run became visible.
        for folder in sorted({FileSystems.split(item.final_path)[0] for item in items}):
            make_dirs(folder)
        moved: list[WrittenFile] = []
        try:
            for item in items:
                if FileSystems.exists(item.final_path) and not FileSystems.exists(item.temp_path):
                    moved.append(item)  # a retried commit: this file already landed
                    continue
                FileSystems.rename([item.temp_path], [item.final_path])
                moved.append(item)
                crash_point("mid_commit")
        except Exception:
            self._roll_back(moved)
            raise
        if self.table is not None and moved:
            # The files are committed; the table names them next as one snapshot. A kill
            # in between is repaired by the next run's sync (newsbeam.iceberg).
            crash_point("before_table")
            tag = _window_tag(window, pane)
            commit_files(self.table, [item.final_path for item in moved], self.run_id,
                         {"newsbeam.window": tag} if tag else None)
        for item in moved:
            self.rows_committed.inc(item.rows)
            self.files_committed.inc()
            yield item

    @staticmethod
    def _roll_back(moved: list[WrittenFile]) -> None:
        """Take back what this commit made visible, so a failed run shows nothing."""
        for item in moved:
            try:
                FileSystems.rename([item.final_path], [item.temp_path])
            except Exception:  # best effort; the original error is what gets raised
                LOGGER.warning("could not roll back %s", item.final_path, exc_info=True)


class _WriteRecords(beam.PTransform):
    """(partition, record) pairs -> committed WrittenFile records.

    Records cross the partition shuffle packed and become rows in the writer.
    """

    def __init__(self, output: str, run_id: str, schema: pa.Schema, max_rows_per_file: int, counter: str,
                 record_type: type, to_row: Callable[[Any], dict], table: Optional[TableSpec] = None):
        super().__init__()
        self.output, self.run_id, self.schema = output, run_id, schema
        self.max_rows_per_file, self.counter = max_rows_per_file, counter
        self.record_type, self.to_row, self.table = record_type, to_row, table

    def expand(self, keyed_records):
        writer = _WriteTempFilesFn(self.output, self.run_id, self.schema, self.max_rows_per_file,
                                   self.record_type, self.to_row)
        return (
            keyed_records
            | "PackRecords" >> beam.MapTuple(lambda partition, record: (partition, pack(record)))
            | "GroupByPartition" >> beam.GroupByKey()
            | "WriteTempFiles" >> beam.ParDo(writer)
            | "GatherWrittenFiles" >> beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()
            | "CommitFiles" >> beam.ParDo(_CommitFilesFn(self.output, self.run_id, self.counter, self.table))
        )


class WriteArticles(beam.PTransform):
    """Articles -> Hive-partitioned Parquet files under ``output``."""

    def __init__(
        self,
        output: str,
        run_id: str,
        partition_keys: Sequence[str] = DEFAULT_PARTITION_KEYS,
        max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
        table: Optional[TableSpec] = None,
    ):
        super().__init__()
        self.output = output
        self.run_id = run_id
        self.partition_keys = validate_partition_keys(partition_keys)
        self.max_rows_per_file = max_rows_per_file
        self.table = table  # also commit each run's (window's) files to this Iceberg table

    def expand(self, articles):
        keys, run_id = self.partition_keys, self.run_id
        return (
            articles
            | "KeyByPartition" >> beam.Map(lambda a: (partition_path(partition_values(a, keys)), a))
            | "WritePartitions" >> _WriteRecords(self.output, run_id, FILE_SCHEMA, self.max_rows_per_file, "rows_written",
                                                 Article, functools.partial(article_to_row, run_id=run_id),
                                                 self.table)
        )


class WriteDeadLetters(beam.PTransform):
    """DeadLetter records -> ``<output>/_errors/run_id=<id>/part-*.parquet``."""

    def __init__(self, output: str, run_id: str):
        super().__init__()
        self.output = output
        self.run_id = run_id

    def expand(self, letters):
        run_id = self.run_id
        folder = errors_partition(run_id)
        return (
            letters
            | "KeyErrors" >> beam.Map(lambda letter: (folder, letter))
            | "WriteErrors" >> _WriteRecords(self.output, run_id, ERROR_SCHEMA, DEFAULT_MAX_ROWS_PER_FILE,
                                             "dead_letters_written", DeadLetter,
                                             functools.partial(dead_letter_row, run_id=run_id))
        )
