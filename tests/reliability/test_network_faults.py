"""Network faults -> what newsbeam does.

Each test is one row of the table: the test name reads "fault -> outcome",
the docstring states the behaviour. Every fault ends in a ``FetchError`` with
a short ``reason`` (which the pipeline writes to its dead-letter output), in
bounded time and bounded memory; none hangs or crashes the worker.
"""
from __future__ import annotations

import resource
import socket
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from newsbeam.fetch.http import FetchError, FetchPolicy, HttpFetcher
from tests.support.httpserver import Response, sequence

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
LOOPBACK = FetchPolicy(allow_private_addresses=True, connect_timeout=2, read_timeout=2,
                       total_timeout=10, backoff_base=0.01)


def fetch_error(url: str, policy: FetchPolicy = LOOPBACK, sleep=lambda _seconds: None) -> FetchError:
    with HttpFetcher(policy, sleep=sleep) as fetcher, pytest.raises(FetchError) as caught:
        fetcher.fetch(url)
    return caught.value


def gzip_of_zeros(total_bytes: int, block: int = 1 << 20) -> Iterator[bytes]:
    """gzip of ``total_bytes`` zeros, produced lazily (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(block)
    for _ in range(total_bytes // block):
        out = compressor.compress(zeros)
        if out:
            yield out
    yield compressor.flush()


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- time ---------------------------------------------------------------

def test_server_silent_past_read_timeout__fails_timeout(http_server):
    """A server that sends nothing for longer than read_timeout: reason 'timeout' after about read_timeout."""
    url = http_server.route("/slow.xml", Response(200, FEED, delay_before=3))
    policy = FetchPolicy(allow_private_addresses=True, read_timeout=0.5, max_retries=0)

    started = time.monotonic()
    error = fetch_error(url, policy)

    assert error.reason == "timeout"
    assert time.monotonic() - started < 2


def test_body_stalls_mid_stream__fails_timeout(http_server):
    """Headers arrive, then the body stalls past read_timeout: reason 'timeout'."""
    url = http_server.route("/stall.xml", Response(200, [FEED[:20], FEED[20:]], chunk_delay=3))
    policy = FetchPolicy(allow_private_addresses=True, read_timeout=0.5, max_retries=0)

    started = time.monotonic()
    error = fetch_error(url, policy)

    assert error.reason == "timeout"
    assert time.monotonic() - started < 2


def test_server_trickles_bytes_forever__total_deadline_stops_it(http_server):
    """A byte every 0.1 s never trips read_timeout; total_timeout ends the fetch anyway."""
    def trickle() -> Iterator[bytes]:
        while True:
            yield b" "

    url = http_server.route("/trickle.xml", Response(200, trickle(), chunk_delay=0.1))
    policy = FetchPolicy(allow_private_addresses=True, read_timeout=1, total_timeout=1.5,
                         max_retries=3)

    started = time.monotonic()
    error = fetch_error(url, policy)

    assert error.reason == "timeout"
    assert "total_timeout" in error.detail
    assert time.monotonic() - started < 3


def test_timeout_is_retried_then_succeeds(http_server):
    """A timeout is transient: the next attempt is made and its body returned."""
    url = http_server.route("/once-slow.xml", sequence(Response(200, FEED, delay_before=1.5),
                                                       Response(200, FEED)))
    policy = FetchPolicy(allow_private_addresses=True, read_timeout=0.5, max_retries=1,
                         backoff_base=0.01)

    with HttpFetcher(policy) as fetcher:
        assert fetcher.fetch(url).body == FEED
    assert len(http_server.requests_to("/once-slow.xml")) == 2


# --- size ---------------------------------------------------------------

def test_declared_content_length_over_cap__fails_too_large_before_reading(http_server):
    """Content-Length above max_bytes: 'too_large' without reading the body."""
    url = http_server.route("/big.xml", Response(200, bytes(2000)))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_bytes=1000))

    assert error.reason == "too_large"
    assert "Content-Length" in error.detail


def test_undeclared_body_over_cap__fails_too_large(http_server):
    """A chunked body with no length that grows past max_bytes: 'too_large'."""
    url = http_server.route("/endless.xml", Response(200, (bytes(1000) for _ in range(100))))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_bytes=10_000))

    assert error.reason == "too_large"


def test_gzip_bomb__stopped_at_cap_in_bounded_memory(http_server):
    """1 GB of zeros gzipped to ~1 MB: decompression stops past max_bytes; memory stays near the cap."""
    cap = 5_000_000
    url = http_server.route("/bomb.xml", Response(200, gzip_of_zeros(1 << 30),
                                                  {"Content-Encoding": "gzip"}))
    peak_rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_bytes=cap))
        _, peak_traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_rss_before_kib) / 1024

    assert error.reason == "too_large"
    assert "decompressed" in error.detail
    assert peak_traced < 4 * cap
    assert rss_growth_mib < 200


def test_gzip_body_over_cap_after_decompression__fails_too_large(http_server):
    """A body small on the wire but over max_bytes once decompressed: 'too_large'."""
    body = b"".join(gzip_of_zeros(4 << 20))
    url = http_server.route("/gz-big.xml", Response(200, body, {"Content-Encoding": "gzip"}))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_bytes=1 << 20))

    assert error.reason == "too_large"


# --- broken responses -----------------------------------------------------

def test_body_shorter_than_content_length__fails_truncated(http_server):
    """Content-Length promises 1000 bytes, the connection closes after 80: 'truncated', after retries."""
    url = http_server.route("/cut.xml", Response(200, FEED, content_length=1000))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_retries=1, backoff_base=0))

    assert error.reason == "truncated"
    assert len(http_server.requests_to("/cut.xml")) == 2


def test_gzip_stream_cut_short__fails_truncated(http_server):
    """A gzip body missing its end (no length declared): 'truncated', never a partial feed."""
    whole = b"".join(gzip_of_zeros(1 << 20))
    url = http_server.route("/cut.gz", Response(200, [whole[: len(whole) // 2]],
                                                {"Content-Encoding": "gzip"}))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_retries=0))

    assert error.reason == "truncated"


def test_corrupt_gzip__fails_bad_encoding(http_server):
    """Content-Encoding: gzip over bytes that are not gzip: 'bad_encoding'."""
    url = http_server.route("/corrupt.gz", Response(200, b"\x1f\x8b\x08\x00garbage-garbage",
                                                    {"Content-Encoding": "gzip"}))

    assert fetch_error(url).reason == "bad_encoding"


def test_unknown_content_encoding__fails_bad_encoding(http_server):
    """An encoding we never asked for (e.g. br): 'bad_encoding' rather than bytes we cannot read."""
    url = http_server.route("/br.xml", Response(200, b"\x0b\x02\x80", {"Content-Encoding": "br"}))

    assert fetch_error(url).reason == "bad_encoding"


def test_5xx_every_time__fails_after_bounded_retries(http_server):
    """Always 503: max_retries + 1 requests, with growing backoff, then 'http_503'."""
    delays: list[float] = []
    url = http_server.route("/down.xml", Response(503))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_retries=3,
                                         backoff_base=0.5), sleep=delays.append)

    assert error.reason == "http_503"
    assert len(http_server.requests_to("/down.xml")) == 4
    assert delays == [0.5, 1.0, 2.0]


def test_retry_after_beyond_policy_limit__fails_at_once(http_server):
    """429 with Retry-After longer than max_retry_after: no waiting, 'http_429' after one request."""
    url = http_server.route("/later.xml", Response(429, headers={"Retry-After": "3600"}))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, max_retry_after=60))

    assert error.reason == "http_429"
    assert len(http_server.requests_to("/later.xml")) == 1


def test_retry_that_would_pass_the_total_deadline__not_attempted(http_server):
    """A backoff that cannot finish before total_timeout: fail now instead of sleeping."""
    url = http_server.route("/wait.xml", Response(503, headers={"Retry-After": "30"}))

    error = fetch_error(url, FetchPolicy(allow_private_addresses=True, total_timeout=5))

    assert error.reason == "http_503"
    assert "total_timeout" in error.detail
    assert len(http_server.requests_to("/wait.xml")) == 1


def test_other_4xx__never_retried(http_server):
    """403 (like 404, 410...) is a definite answer: one request, 'http_403'."""
    url = http_server.route("/forbidden.xml", Response(403))

    assert fetch_error(url).reason == "http_403"
    assert len(http_server.requests_to("/forbidden.xml")) == 1


# --- redirects ----------------------------------------------------------

def test_redirect_loop__fails_redirect_loop(http_server):
    """/a -> /b -> /a: 'redirect_loop' naming the hop, not max-redirects exhaustion."""
    http_server.route("/a", Response(302, headers={"Location": "/b"}))
    url_b = http_server.route("/b", Response(302, headers={"Location": "/a"}))

    error = fetch_error(http_server.url("/a"))

    assert error.reason == "redirect_loop"
    assert url_b in error.detail
    assert len(http_server.requests) == 2


def test_more_than_max_redirects__fails_too_many_redirects(http_server):
    """A chain of 7 distinct redirects with max_redirects=5: 'too_many_redirects' after 6 requests."""
    for hop in range(7):
        http_server.route(f"/hop{hop}", Response(307, headers={"Location": f"/hop{hop + 1}"}))
    http_server.route("/hop7", Response(200, FEED))

    error = fetch_error(http_server.url("/hop0"), FetchPolicy(allow_private_addresses=True,
                                                              max_redirects=5))

    assert error.reason == "too_many_redirects"
    assert len(http_server.requests) == 6


def test_five_redirects__followed(http_server):
    """Exactly max_redirects hops is allowed."""
    for hop in range(5):
        http_server.route(f"/hop{hop}", Response(308, headers={"Location": f"/hop{hop + 1}"}))
    final = http_server.route("/hop5", Response(200, FEED))

    with HttpFetcher(LOOPBACK) as fetcher:
        assert fetcher.fetch(http_server.url("/hop0")).final_url == final


def test_redirect_to_file_scheme__fails_bad_scheme(http_server):
    """A redirect to file:///etc/passwd: 'bad_scheme', nothing read from disk."""
    url = http_server.route("/to-file", Response(302, headers={"Location": "file:///etc/passwd"}))

    error = fetch_error(url)

    assert error.reason == "bad_scheme"


# --- where we may connect -------------------------------------------------

def test_loopback_url_with_private_addresses_off__fails_blocked_address(http_server):
    """The default policy refuses 127.0.0.1 outright: 'blocked_address', no request reaches the server."""
    url = http_server.route("/feed.xml", Response(200, FEED))

    error = fetch_error(url, FetchPolicy())

    assert error.reason == "blocked_address"
    assert http_server.requests == []


def test_public_looking_redirect_to_private_address__fails_blocked_address(http_server, monkeypatch):
    """A public host redirecting to 169.254.169.254 (cloud metadata): 'blocked_address' at that hop.

    DNS is stubbed so ``public.example`` resolves to a public address whose
    connection is routed to the loopback server; the redirect target is the
    metadata address, which the default policy must refuse.
    """
    http_server.route("/feed.xml", Response(302, headers={
        "Location": "http://169.254.169.254/latest/meta-data/"}))
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "public.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def route_public_to_loopback(address, *args, **kwargs):
        host, port = address
        if host == "93.184.216.34":
            return real_create_connection(("127.0.0.1", http_server.port), *args, **kwargs)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr("urllib3.util.connection.create_connection",
                        lambda address, *a, **k: route_public_to_loopback(address))

    error = fetch_error(f"http://public.example:{http_server.port}/feed.xml", FetchPolicy())

    assert error.reason == "blocked_address"
    assert "169.254.169.254" in error.detail
    assert [r.path for r in http_server.requests] == ["/feed.xml"]


def test_name_resolving_to_public_and_private_addresses__fails_blocked_address(http_server, monkeypatch):
    """DNS rebinding: a name with any private address among its answers is refused, no connection made."""
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)

    error = fetch_error(f"http://rebind.example:{http_server.port}/", FetchPolicy())

    assert error.reason == "blocked_address"
    assert http_server.requests == []


def test_connection_refused__fails_connection_refused_without_retry():
    """Nothing listening on the port: 'connection_refused', one attempt, no backoff."""
    delays: list[float] = []
    error = fetch_error(f"http://127.0.0.1:{free_loopback_port()}/feed.xml", sleep=delays.append)

    assert error.reason == "connection_refused"
    assert delays == []


def test_unresolvable_host__fails_dns():
    """A name under .invalid (never resolvable, RFC 2606): 'dns'."""
    assert fetch_error("http://no-such-feed.invalid/rss.xml").reason == "dns"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/feed.xml",
                                 "gopher://example.com/", "data:text/xml,<rss/>", "/etc/passwd"])
def test_non_http_url__fails_bad_scheme(url):
    """file://, ftp://, data:, bare paths: 'bad_scheme' before any I/O."""
    assert fetch_error(url).reason == "bad_scheme"


def test_https_to_a_server_without_tls__fails_tls(http_server):
    """https:// to a port that speaks plain HTTP: 'tls' (the handshake fails), no retry storm."""
    http_server.route("/feed.xml", Response(200, FEED))
    url = f"https://127.0.0.1:{http_server.port}/feed.xml"

    assert fetch_error(url).reason == "tls"


def test_https_to_loopback_with_private_addresses_off__fails_blocked_address(http_server):
    """The address check guards https:// as it does http://: no connection is made."""
    error = fetch_error(f"https://127.0.0.1:{http_server.port}/feed.xml", FetchPolicy())

    assert error.reason == "blocked_address"
    assert http_server.requests == []
