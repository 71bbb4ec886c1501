"""The normalise stage: RawEntry -> Article, failures dead-lettered (rules: :mod:`newsbeam.normalise`)."""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam

from newsbeam.metrics import counter
from newsbeam.normalise import normalise_entry
from newsbeam.records import DeadLetter, RawEntry

DEAD_LETTER = "dead_letter"
STAGE = "normalise"


class NormaliseEntries(beam.PTransform):
    """RawEntry -> Article, with entries that can't be cleaned dead-lettered."""

    def expand(self, entries):
        return entries | "CleanEntry" >> beam.ParDo(_NormaliseFn()).with_outputs(DEAD_LETTER, main="articles")


class _NormaliseFn(beam.DoFn):
    def __init__(self):
        self.failed = counter("dead_lettered_normalise")

    def process(self, entry: RawEntry) -> Iterable:
        try:
            yield normalise_entry(entry)
        except Exception as error:  # any bad entry must become a row, not a crash
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                DeadLetter(
                    source=entry.source,
                    stage=STAGE,
                    reason=f"{type(error).__name__}: {error}",
                    excerpt=DeadLetter.excerpt_of(entry.title or entry.summary or entry.body),
                ),
            )
