"""Articles from files (formats: :mod:`newsbeam.formats`). Each file is read
by one DoFn call; a file that can't be read or parsed becomes a dead-letter
row, the others go on."""
from __future__ import annotations

from typing import Optional

import apache_beam as beam

from newsbeam.formats import DEFAULT_MAX_FILE_BYTES, entries_from_file, expand_inputs, read_bytes
from newsbeam.formats.text import DEFAULT_ENCODING, text_encoding
from newsbeam.metrics import counter
from newsbeam.normalise import utc_now_iso
from newsbeam.records import DeadLetter

DEAD_LETTER = "dead_letter"
STAGE = "read_file"


class _ReadFileFn(beam.DoFn):
    def __init__(self, max_bytes: int, encoding: str):
        self.max_bytes = max_bytes
        self.encoding = encoding
        self.files_read = counter("files_read")
        self.files_failed = counter("files_failed")
        self.entries_read = counter("entries_read")

    def process(self, path: str):
        fetched_at = utc_now_iso()
        try:
            # A JSONL file with one bad line fails whole: partial reads would
            # make reruns ambiguous. The reason names the line.
            entries = list(entries_from_file(path, read_bytes(path, self.max_bytes), fetched_at=fetched_at,
                                             encoding=self.encoding))
        except Exception as error:  # every unreadable file becomes a dead-letter row
            self.files_failed.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter(source=path, stage=STAGE, reason=f"{type(error).__name__}: {error}")
            )
            return
        self.files_read.inc()
        self.entries_read.inc(len(entries))
        yield from entries


class ReadFiles(beam.PTransform):
    """Paths/globs/directories -> RawEntry, with unreadable files dead-lettered."""

    def __init__(self, patterns: list[str], max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 watch: Optional[tuple[float, Optional[float]]] = None, encoding: str = DEFAULT_ENCODING):
        super().__init__()
        self.patterns = list(patterns)
        self.max_bytes = max_bytes
        self.encoding = text_encoding(encoding)  # of JSON and text files; a bad name fails the graph build
        self.watch = watch  # (poll interval, max duration): watch for new files
        # A batch run's files, listed once when the graph is built (a pattern that
        # matches nothing fails here); the graph also asks them whether any is a page.
        self.files = None if watch else expand_inputs(self.patterns)

    def expand(self, pbegin):
        if self.watch:
            from newsbeam.transforms.streaming import WatchFiles

            paths = pbegin | "WatchInputFiles" >> WatchFiles(self.patterns, *self.watch)
        else:
            paths = pbegin | "ListInputFiles" >> beam.Create(self.files)
        return (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFile" >> beam.ParDo(_ReadFileFn(self.max_bytes, self.encoding)).with_outputs(DEAD_LETTER,
                                                                                             main="entries")
        )
