"""The total fetch deadline holds in every phase of a response (audit #27, item 1).

A server that sends one byte every 0.3 s never trips the 1 s read timeout,
whichever part of the response it trickles: the status line, the headers,
a chunk-size line of a chunked body, or the body. ``total_timeout`` (2 s
here) must end the fetch anyway, within a small margin, with a FetchError
that names the deadline, for feeds, robots.txt and pages alike (all three go
through ``HttpFetcher``). The server gives up after 10 s, so a fetch that
ignores its deadline fails these tests instead of hanging them.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from newsbeam.fetch.http import FetchError, FetchPolicy, HttpFetcher
from newsbeam.fetch.pages import FAILED, SKIPPED_ROBOTS, PageFetcher
from tests.support.builders import make_article
from tests.support.trickleserver import PHASES, TrickleServer

DEADLINE_S = 2.0
MARGIN_S = 1.0
# read_timeout (1 s) is longer than the gap between two bytes (0.3 s): only the deadline can end these fetches.
POLICY = FetchPolicy(allow_private_addresses=True, connect_timeout=2, read_timeout=1.0,
                     total_timeout=DEADLINE_S, max_retries=3, backoff_base=0.01)
FAST_PAGES = dict(concurrency_per_host=2, rate_per_host=100.0)


@pytest.fixture
def trickle_server() -> Iterator[TrickleServer]:
    server = TrickleServer({f"/{phase}": phase for phase in PHASES})
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_response_phase_trickled_forever__fetch_fails_timeout_within_total_timeout(trickle_server, phase):
    """Status line, headers, chunk-size line or body arriving a byte every 0.3 s: 'timeout'
    naming total_timeout, after about 2 s (never the 10 s the server would trickle for)."""
    started = time.monotonic()
    with HttpFetcher(POLICY) as fetcher, pytest.raises(FetchError) as caught:
        fetcher.fetch(trickle_server.url(f"/{phase}"))
    elapsed = time.monotonic() - started

    assert caught.value.reason == "timeout"
    assert f"total_timeout {DEADLINE_S}s exceeded" in caught.value.detail
    assert elapsed < DEADLINE_S + MARGIN_S, elapsed
    assert trickle_server.trickled[f"/{phase}"] >= 3  # bytes kept arriving inside the read timeout


def test_trickled_page__page_fails_within_total_timeout_and_keeps_feed_text(trickle_server):
    """An article page whose headers trickle: the page counts as failed (reason names the
    deadline) within 2 s + margin, and the article keeps its feed text."""
    article = make_article(1).replace(url=trickle_server.url("/headers"))

    started = time.monotonic()
    with PageFetcher(POLICY, **FAST_PAGES) as pages:
        outcome = pages.full_text(article)
    elapsed = time.monotonic() - started

    assert outcome.outcome == FAILED and not outcome.fetched
    assert "total_timeout" in outcome.reason
    assert outcome.article == article
    assert elapsed < DEADLINE_S + MARGIN_S, elapsed
    assert trickle_server.requested == ["/robots.txt", "/headers"]


def test_trickled_robots_txt__origin_skipped_within_total_timeout():
    """robots.txt whose status line trickles: the origin is treated as unreachable (disallow all)
    within 2 s + margin, and the page itself is never requested."""
    server = TrickleServer({"/robots.txt": "status_line", "/story": "body"})
    try:
        article = make_article(2).replace(url=server.url("/story"))

        started = time.monotonic()
        with PageFetcher(POLICY, **FAST_PAGES) as pages:
            outcome = pages.full_text(article)
        elapsed = time.monotonic() - started

        assert outcome.outcome == SKIPPED_ROBOTS and not outcome.fetched
        assert "unreachable" in outcome.reason
        assert elapsed < DEADLINE_S + MARGIN_S, elapsed
        assert server.requested == ["/robots.txt"]
    finally:
        server.close()


def test_fast_response_after_slow_phase_on_same_fetcher__deadline_is_per_fetch(trickle_server):
    """The deadline belongs to one fetch: after a trickled fetch timed out, the same fetcher
    still fetches a prompt answer (here the server's immediate 404) without a stale deadline."""
    with HttpFetcher(POLICY) as fetcher:
        with pytest.raises(FetchError) as slow:
            fetcher.fetch(trickle_server.url("/body"))
        with pytest.raises(FetchError) as prompt:
            fetcher.fetch(trickle_server.url("/missing"))

    assert slow.value.reason == "timeout"
    assert prompt.value.reason == "http_404"


def test_name_resolution_that_hangs__fetch_fails_timeout_within_total_timeout(monkeypatch):
    """A resolver that answers after 8 s (a dead DNS server): the fetch ends at the 2 s deadline,
    reason 'timeout', naming the host; the answer, when it comes, is never used."""
    import socket
    import threading

    real_getaddrinfo = socket.getaddrinfo
    released = threading.Event()

    def hanging_getaddrinfo(host, port, *args, **kwargs):
        if host == "slow-dns.example":
            released.wait(8)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    started = time.monotonic()
    try:
        with HttpFetcher(POLICY) as fetcher, pytest.raises(FetchError) as caught:
            fetcher.fetch("http://slow-dns.example:9/feed.xml")
    finally:
        released.set()
    elapsed = time.monotonic() - started

    assert caught.value.reason == "timeout"
    assert caught.value.detail.startswith("resolving 'slow-dns.example' outlasted the")
    assert elapsed < DEADLINE_S + MARGIN_S, elapsed
