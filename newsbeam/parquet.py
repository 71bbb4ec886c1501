"""Writing one Parquet file: the settings every writer of the dataset shares
(the sink, compaction), so a compacted file reads like a fresh one."""
from __future__ import annotations

import itertools
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1_000  # about 10 MB of news rows: what one writer holds in memory
COMPRESSION = "zstd"


def write_parquet(path: str, schema: pa.Schema, rows: Iterable[dict]) -> int:
    """Write ``rows`` (any iterable, read once) to one Parquet file; returns how many.

    Rows are taken a row group at a time, so a writer holds one group in
    memory, not the file; each group is sorted by article_id.
    """
    from apache_beam.io.filesystems import FileSystems  # local and gs:// alike

    stream = FileSystems.create(path)
    written = 0
    try:
        with pq.ParquetWriter(stream, schema, compression=COMPRESSION) as writer:
            iterator = iter(rows)
            while group := list(itertools.islice(iterator, ROW_GROUP_ROWS)):
                group.sort(key=lambda row: row.get("article_id") or "")
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                written += len(group)
    finally:
        stream.close()
    return written
