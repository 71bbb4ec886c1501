"""Articles from feeds over HTTP: fetch politely, parse, report every feed.

The feed list is read when the graph is built, so a bad list fails at once.
Each feed is fetched by one DoFn call with the run's FetchPolicy; a feed that
fails becomes a dead-letter row and a failed status, and the run goes on.
Statuses (ETag, Last-Modified, outcome) go to the state folder's pending area
and are merged into ``feeds.json`` only once the run's data is committed.
"""
from __future__ import annotations

import logging
from typing import Optional

import apache_beam as beam

from newsbeam.fetch.http import FetchError, FetchPolicy, HttpFetcher
from newsbeam.formats.feedlist import resolve_feed_specs
from newsbeam.metrics import counter
from newsbeam.normalise import redact_text, redact_url, utc_now_iso
from newsbeam.records import DeadLetter, FeedSpec

LOGGER = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"
FEED_STATUS = "feed_status"


class FetchFeedFn(beam.DoFn):
    """FeedSpec -> RawEntries; failures and statuses on tagged outputs."""

    def __init__(self, policy: FetchPolicy, state: Optional[str] = None):
        self.policy = policy
        self.state = state
        self.feeds_ok = counter("feeds_ok")
        self.feeds_failed = counter("feeds_failed")
        self.not_modified = counter("feeds_not_modified")
        self.entries_read = counter("entries_read")

    def setup(self):
        from newsbeam.state.store import feed_state_key, load_feed_state

        self.fetcher = HttpFetcher(self.policy)
        # Read on the worker, not when the graph is built; in streaming,
        # later polls reuse what earlier polls learnt. Keyed like feeds.json:
        # by a hash of the URL, which never stores the URL's credentials.
        self.state_key = feed_state_key
        self.validators = {key: dict(entry) for key, entry in load_feed_state(self.state).items()}

    def teardown(self):
        fetcher = getattr(self, "fetcher", None)
        if fetcher is not None:
            fetcher.close()

    def _failed(self, spec: FeedSpec, stage: str, reason: str, at: str):
        self.feeds_failed.inc()
        reason = redact_text(reason)  # a redirect loop's message quotes URLs, credentials included
        LOGGER.warning("feed %s failed at %s: %s", redact_url(spec.url), stage, reason)
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(source=redact_url(spec.url), stage=stage, reason=reason))
        yield beam.pvalue.TaggedOutput(FEED_STATUS, {"url": spec.url, "ok": False, "reason": reason, "at": at})

    def process(self, spec: FeedSpec):
        from newsbeam.formats.feeds import FeedParseError, parse_feed

        at = utc_now_iso()
        known = self.validators.get(self.state_key(spec.url), {})
        try:
            result = self.fetcher.fetch(spec.url, etag=known.get("etag"), last_modified=known.get("last_modified"))
        except FetchError as error:
            yield from self._failed(spec, "fetch", str(error), at)
            return
        status = {"url": spec.url, "ok": True, "at": at, "status": result.status, "etag": result.etag,
                  "last_modified": result.last_modified, "not_modified": result.not_modified}
        if result.not_modified:
            self.not_modified.inc()
            yield beam.pvalue.TaggedOutput(FEED_STATUS, status)
            return
        try:
            parsed = parse_feed(result.body, source=redact_url(spec.url), response_headers=result.headers,
                                language_hint=spec.language, fetched_at=at)
        except FeedParseError as error:
            yield from self._failed(spec, "parse_feed", str(error), at)
            return
        self.feeds_ok.inc()
        self.entries_read.inc(len(parsed.entries))
        self.validators[self.state_key(spec.url)] = {"etag": result.etag, "last_modified": result.last_modified}
        yield beam.pvalue.TaggedOutput(FEED_STATUS, {**status, "entries": len(parsed.entries)})
        for entry in parsed.entries:
            yield entry if not spec.name else _with_source_title(entry, spec.name)


def _with_source_title(entry, name: str):
    import dataclasses

    return dataclasses.replace(entry, source_title=name)


class _WritePendingStatusesFn(beam.DoFn):
    def __init__(self, state: str, run_id: str):
        self.state = state
        self.run_id = run_id

    def process(self, statuses: list[dict]):
        from newsbeam.state.store import write_pending_feed_statuses

        write_pending_feed_statuses(self.state, self.run_id, statuses)
        yield len(statuses)


class ReadFeeds(beam.PTransform):
    """Feed URLs / feed-list files -> {"entries", "dead_letter", "feed_status"}."""

    def __init__(self, feeds: list[str], policy: FetchPolicy, state: Optional[str] = None, run_id: str = "",
                 poll: Optional[tuple[float, Optional[float]]] = None):
        super().__init__()
        self.specs = resolve_feed_specs(feeds)
        self.policy = policy
        self.state = state
        self.run_id = run_id
        self.poll = poll  # (interval, max_duration) in streaming mode

    def expand(self, pbegin):
        if self.poll:
            from newsbeam.transforms.streaming import PollFeeds

            specs = pbegin | "PollFeeds" >> PollFeeds(self.specs, *self.poll)
        else:
            specs = pbegin | "ListFeeds" >> beam.Create(self.specs)
        outputs = (
            specs
            | "SpreadFeeds" >> beam.Reshuffle()
            | "FetchAndParseFeed" >> beam.ParDo(FetchFeedFn(self.policy, self.state))
            .with_outputs(DEAD_LETTER, FEED_STATUS, main="entries")
        )
        if self.state and not self.poll:
            (
                outputs[FEED_STATUS]
                | "GatherFeedStatuses" >> beam.combiners.ToList()
                | "WritePendingFeedState" >> beam.ParDo(_WritePendingStatusesFn(self.state, self.run_id))
            )
        return {"entries": outputs["entries"], DEAD_LETTER: outputs[DEAD_LETTER], FEED_STATUS: outputs[FEED_STATUS]}
