"""Incremental runs on the Beam side: drop what earlier runs committed
(the state itself: :mod:`newsbeam.state`)."""
from __future__ import annotations

import apache_beam as beam

from newsbeam.metrics import counter
from newsbeam.records import Article
from newsbeam.state.store import load_written_ids


class _SkipWrittenFn(beam.DoFn):
    def __init__(self, state: str):
        self.state = state
        self.skipped = counter("already_written")

    def setup(self):
        self.written_ids, self.written_hashes = load_written_ids(self.state)

    def process(self, article: Article):
        if article.article_id in self.written_ids or article.content_hash in self.written_hashes:
            self.skipped.inc()
            return
        yield article


class SkipAlreadyWritten(beam.PTransform):
    """Drop articles an earlier committed run wrote (same id or same content)."""

    def __init__(self, state: str, output: str):
        super().__init__()
        self.state = state
        self.output = output

    def expand(self, articles):
        return articles | "DropWrittenIds" >> beam.ParDo(_SkipWrittenFn(self.state))
