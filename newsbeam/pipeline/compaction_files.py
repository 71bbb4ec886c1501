"""Compaction's files: the leaf folders of a dataset, which to compact, and
reading their rows into one table and writing it back as fewer large files
(:mod:`newsbeam.pipeline.compact` has the whole job)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from newsbeam.layout import (
    COMPACT_STAGING_PREFIX,
    PARTITION_SEGMENT_RE,
    join_path,
    make_dirs,
    part_name,
    sanitise_partition_value,
)
from newsbeam.parquet import COMPRESSION, ROW_GROUP_ROWS
from newsbeam.schema import FILE_SCHEMA, SCHEMA_VERSION

LOGGER = logging.getLogger(__name__)

Strategy = str  # "exchange" | "replace"


class UnreadableFile(ValueError):
    """A file of the leaf cannot be read as Parquet: the leaf stays as it is."""


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


# ---- finding and choosing leaf folders --------------------------------------------

def relative_path(path: str, root: str) -> str:
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
        parts = relative_path(metadata.path, output).split("/")
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

def open_file(path: str, mode: str = "r"):
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
        try:
            with open_file(data_file.path) as handle:
                parquet = pq.ParquetFile(handle)
                metadata = parquet.metadata
                data_bytes += sum(metadata.row_group(g).column(c).total_compressed_size
                                  for g in range(metadata.num_row_groups) for c in range(metadata.num_columns))
                tables.append(conform_to_file_schema(parquet.read(), data_file.path))
        except (pa.ArrowException, OSError) as error:  # truncated, not Parquet, or gone
            raise UnreadableFile(f"cannot read {data_file.path}: {error}") from error
    return pa.concat_tables(tables).sort_by("article_id"), data_bytes


def rows_per_output_file(rows: int, data_bytes: int, target_file_bytes: int) -> int:
    """Rows per file so each lands near the target, judged by the inputs' bytes per row."""
    if rows == 0:
        return 1
    bytes_per_row = max(data_bytes, 1) / rows
    return max(1, int(target_file_bytes // bytes_per_row))


def compacted_name(compact_id: str, partition: str, number: int) -> str:
    """Same shape as the sink's ``part-<run_id>-h<hash>-<nnnn>``, run id ``compact-<id>``."""
    return part_name(f"{COMPACT_STAGING_PREFIX}{compact_id}", partition, number)


def write_compacted(table: pa.Table, folder: str, names: Sequence[str], rows_per_file: int) -> list[DataFile]:
    make_dirs(folder)
    written = []
    for name, start in zip(names, range(0, max(table.num_rows, 1), rows_per_file)):
        path = join_path(folder, name)
        stream = open_file(path, "w")
        try:
            with pq.ParquetWriter(stream, FILE_SCHEMA, compression=COMPRESSION) as writer:
                writer.write_table(table.slice(start, rows_per_file), row_group_size=ROW_GROUP_ROWS)
        finally:
            stream.close()
        written.append(DataFile(path, FileSystems.match([path])[0].metadata_list[0].size_in_bytes))
    return written


