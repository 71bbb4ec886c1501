"""The streaming pieces: polled sources, stateful dedup, fixed windows.

Timestamps: every element carries the time its poll fired (PeriodicImpulse)
or its file was seen (MatchContinuously), not its published date, so the
watermark tracks ingestion and elements are not late under normal running.
The ``dt`` partition still comes from the published date. Elements that a
runner does deliver late (behind the watermark, within ``allowed_lateness``)
are written in an extra pane of their window, into a file of their own;
nothing is overwritten.

Dedup across polls uses per-key state in the global window, so a story seen
in poll 1 and again in poll 50 is written once; an event-time timer clears
each key's state after ``dedup_ttl`` seconds, which bounds memory over days.
"""
from __future__ import annotations

import time
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms import trigger, window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from newsbeam.metrics import counter
from newsbeam.records import Article, FeedSpec

DUPLICATES = "duplicates"
DEFAULT_POLL_INTERVAL_SECONDS = 300.0
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_DEDUP_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_ALLOWED_LATENESS_SECONDS = 24 * 3600


class PollFeeds(beam.PTransform):
    """FeedSpecs, re-emitted every ``poll_interval`` seconds until ``max_duration``."""

    def __init__(self, specs: list[FeedSpec], poll_interval: float, max_duration: Optional[float] = None):
        super().__init__()
        self.specs = list(specs)
        self.poll_interval = poll_interval
        self.max_duration = max_duration

    def expand(self, pbegin):
        start = time.time()
        stop = start + self.max_duration if self.max_duration else None
        specs = self.specs
        return (
            pbegin
            | "FirePolls" >> PeriodicImpulse(
                start_timestamp=Timestamp.of(start),
                stop_timestamp=Timestamp.of(stop) if stop else Timestamp.of(2**62 / 1e6),
                fire_interval=self.poll_interval,
            )
            | "FeedsOfPoll" >> beam.FlatMap(lambda _tick: specs)
        )


class WatchFiles(beam.PTransform):
    """Paths of new files matching ``patterns``, as they appear."""

    # A file path, once seen, is remembered this long (a file is read once).
    path_ttl_seconds = 30 * 24 * 3600

    def __init__(self, patterns: list[str], poll_interval: float, max_duration: Optional[float] = None):
        super().__init__()
        self.patterns = list(patterns)
        self.poll_interval = poll_interval
        self.max_duration = max_duration

    def expand(self, pbegin):
        from apache_beam.io import fileio

        from newsbeam.formats import is_supported, is_watched, named_folder, watch_glob

        stop = Timestamp.of(time.time() + self.max_duration) if self.max_duration else None
        matched = []
        for number, pattern in enumerate(self.patterns):
            # The batch rule (formats.expand_inputs): a path that exists is
            # itself, even with glob characters in its name; hidden files
            # below the named folder are skipped.
            (glob, literal), named = watch_glob(pattern), named_folder(pattern)
            # Beam's own dedup here (Watch) does not wait between polls on the
            # local FnApiRunner; matching every poll and keeping each path's
            # first sighting in state works the same on every runner.
            matched.append(
                pbegin
                | f"WatchPattern{number}" >> fileio.MatchContinuously(
                    glob, interval=self.poll_interval, has_deduplication=False,
                    stop_timestamp=stop or Timestamp.of(2**62 / 1e6), empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW,
                )
                | f"PathOf{number}" >> beam.Map(lambda metadata: metadata.path)
                | f"WatchedOf{number}" >> beam.Filter(
                    lambda path, named=named, literal=literal: is_watched(path, named, literal))
            )
        paths = matched[0] if len(matched) == 1 else tuple(matched) | "MergeWatched" >> beam.Flatten()
        return (
            paths
            | "SupportedFilesOnly" >> beam.Filter(is_supported)
            | "KeyByPath" >> beam.Map(lambda path: (path, path)).with_output_types(tuple[str, str])
            # The FnApiRunner keeps no state across a splittable DoFn's
            # resumptions inside one fused stage: a shuffle separates them.
            | "SeparateFromPolling" >> beam.Reshuffle()
            | "FirstSightingOfPath" >> beam.ParDo(_FirstSightingFn(self.path_ttl_seconds, counter=None))
        )


class _FirstSightingFn(beam.DoFn):
    """Per key: pass the first element, count the rest, forget after the TTL."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ttl_seconds: float, counter: Optional[str]):
        self.ttl_seconds = ttl_seconds
        self.counter = counter

    def setup(self):
        self.duplicates = counter("duplicates")
        self.by_reason = counter(f"duplicates_by_{self.counter}")

    def process(
        self,
        keyed: tuple[str, Article],
        timestamp=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Article]:
        if seen.read():
            if self.counter:
                self.duplicates.inc()
                self.by_reason.inc()
                yield beam.pvalue.TaggedOutput(DUPLICATES, keyed[1])
            return
        seen.write(True)
        expiry.set(timestamp + Duration(seconds=self.ttl_seconds))
        yield keyed[1]

    @on_timer(EXPIRY)
    def forget(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class DeduplicateStream(beam.PTransform):
    """Streaming dedup by article_id, then by content_hash, with expiring state.

    Returns {"articles": first sightings, "duplicates": the repeats}; the
    repeats are data, so tests and audits can count them on any runner.
    """

    def __init__(self, ttl_seconds: float = DEFAULT_DEDUP_TTL_SECONDS):
        super().__init__()
        self.ttl_seconds = ttl_seconds

    def expand(self, articles):
        by_id = (
            articles
            | "KeyByArticleId" >> beam.Map(lambda a: (a.article_id, a)).with_output_types(tuple[str, Article])
            | "FirstSightingOfId" >> beam.ParDo(_FirstSightingFn(self.ttl_seconds, "article_id"))
            .with_outputs(DUPLICATES, main="articles")
        )
        by_content = (
            by_id["articles"]
            | "KeyByContentHash" >> beam.Map(lambda a: (a.content_hash, a)).with_output_types(tuple[str, Article])
            | "FirstSightingOfContent" >> beam.ParDo(_FirstSightingFn(self.ttl_seconds, "content_hash"))
            .with_outputs(DUPLICATES, main="articles")
        )
        duplicates = (by_id[DUPLICATES], by_content[DUPLICATES]) | "MergeDuplicates" >> beam.Flatten()
        return {"articles": by_content["articles"], DUPLICATES: duplicates}


def fixed_windows(window_seconds: float, allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS):
    """Windows that fire at the watermark and again for each late element."""
    return beam.WindowInto(
        window.FixedWindows(window_seconds),
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING,
        allowed_lateness=Duration(seconds=allowed_lateness_seconds),
    )
