"""``--full_text`` on the Beam side: articles keyed by host and batched, each
batch fetched by the polite :class:`~newsbeam.fetch.pages.PageFetcher`.
What the limits are and where they hold: :mod:`newsbeam.fetch.pages`."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from newsbeam.fetch.http import FetchPolicy
from newsbeam.fetch.pages import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY_PER_HOST,
    DEFAULT_RATE_PER_HOST,
    FAILED,
    MAX_HOSTS_IN_FLIGHT,
    SKIPPED_ROBOTS,
    USED,
    PageFetcher,
    check_limits,
    has_fetchable_url,
    host_of,
)
from newsbeam.metrics import counter
from newsbeam.records import Article


def key_by_host(article: Article) -> tuple[str, Article]:
    return host_of(article.url) or "", article


def route_by_url(article: Article, partitions: int) -> int:
    """Partition 0: articles with a page to fetch; 1: the others, passed through."""
    return 0 if has_fetchable_url(article) else 1


class _FetchFullTextFn(beam.DoFn):
    """(host, batch of Articles) -> the same Articles, with page text where it helps."""

    def __init__(self, policy: FetchPolicy, concurrency_per_host: int, rate_per_host: float,
                 user_agent: Optional[str]):
        self.policy = policy
        self.concurrency_per_host = concurrency_per_host
        self.rate_per_host = rate_per_host
        self.user_agent = user_agent
        self.pages_fetched = counter("pages_fetched")
        self.pages_failed = counter("pages_failed")
        self.pages_used = counter("pages_used")
        self.pages_skipped_robots = counter("pages_skipped_robots")

    def setup(self):
        self.pages = PageFetcher(self.policy, concurrency_per_host=self.concurrency_per_host,
                                 rate_per_host=self.rate_per_host, user_agent=self.user_agent)
        # Host batches run side by side: each host's limiter keeps it polite on
        # its own, so 50 hosts at 1 request/s take 1/50 of the time one after
        # another would, and one slow host no longer holds up the others.
        self.host_pool = ThreadPoolExecutor(max_workers=MAX_HOSTS_IN_FLIGHT, thread_name_prefix="newsbeam-host")

    def teardown(self):
        pages = getattr(self, "pages", None)
        if pages is not None:
            pages.close()
        pool = getattr(self, "host_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def start_bundle(self):
        self.in_flight: deque = deque()

    def process(self, host_batch: tuple[str, Iterable[Article]], timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        _host, articles = host_batch
        articles = list(articles)
        self.in_flight.append((self.host_pool.submit(lambda: list(self.pages.fetch_all(articles))),
                               timestamp, window))
        # bounded: beyond this many waiting batches, finish the oldest first
        while len(self.in_flight) > 2 * MAX_HOSTS_IN_FLIGHT or (self.in_flight and self.in_flight[0][0].done()):
            yield from self._emit_oldest()

    def finish_bundle(self):
        while self.in_flight:
            yield from self._emit_oldest()

    def _emit_oldest(self):
        # Counters are updated here, on the bundle's thread: Beam's metric
        # containers are per thread, so increments in the pool would be lost.
        future, timestamp, window = self.in_flight.popleft()
        for result in future.result():
            if result.fetched:
                self.pages_fetched.inc()
            if result.outcome == FAILED:
                self.pages_failed.inc()
            elif result.outcome == USED:
                self.pages_used.inc()
            elif result.outcome == SKIPPED_ROBOTS:
                self.pages_skipped_robots.inc()
            # each article keeps the window and timestamp of the batch it came in
            yield WindowedValue(result.article, timestamp, (window,))


class FetchFullText(beam.PTransform):
    """Articles -> the same Articles, each with its page's main text where that is better.

    ``max_buffering_secs`` must be set in streaming: it bounds how long a
    host's batch waits to fill (the global window never closes).
    """

    def __init__(self, policy: FetchPolicy, concurrency_per_host: int = DEFAULT_CONCURRENCY_PER_HOST,
                 rate_per_host: float = DEFAULT_RATE_PER_HOST, user_agent: Optional[str] = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_buffering_secs: Optional[float] = None):
        super().__init__()
        check_limits(concurrency_per_host, rate_per_host)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.policy = policy
        self.concurrency_per_host = concurrency_per_host
        self.rate_per_host = rate_per_host
        self.user_agent = user_agent
        self.batch_size = batch_size
        self.max_buffering_secs = max_buffering_secs

    def expand(self, articles):
        with_url, without_url = articles | "RouteByUrl" >> beam.Partition(route_by_url, 2)
        batching = {"max_buffering_duration_secs": self.max_buffering_secs} if self.max_buffering_secs else {}
        fetched = (
            with_url
            | "KeyByHost" >> beam.Map(key_by_host).with_output_types(tuple[str, Article])
            | "BatchPerHost" >> beam.GroupIntoBatches(self.batch_size, **batching)
            | "FetchPages" >> beam.ParDo(_FetchFullTextFn(self.policy, self.concurrency_per_host,
                                                          self.rate_per_host, self.user_agent))
        )
        return (fetched, without_url) | "RejoinArticles" >> beam.Flatten()


