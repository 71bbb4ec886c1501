"""Ordinary fetch behaviour against a real server on 127.0.0.1.

Faults (timeouts, bombs, truncation, blocked addresses...) live in
tests/reliability/test_network_faults.py.
"""
from __future__ import annotations

import gzip
import pickle
import zlib

import pytest

from newsbeam import __version__
from newsbeam.fetch.http import FetchError, FetchPolicy, HttpFetcher, is_private_address
from tests.support.httpserver import Response, sequence

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
LOOPBACK = FetchPolicy(allow_private_addresses=True, connect_timeout=2, read_timeout=2,
                       total_timeout=10, backoff_base=0.01)


class RecordingSleep:
    """Stands in for time.sleep: records requested delays, waits not at all."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def fetcher():
    with HttpFetcher(LOOPBACK, sleep=RecordingSleep()) as loopback_fetcher:
        yield loopback_fetcher


def test_200_returns_body_headers_and_validators(http_server, fetcher):
    url = http_server.route("/feed.xml", Response(200, FEED, {
        "Content-Type": "application/rss+xml; charset=utf-8",
        "ETag": '"v1"', "Last-Modified": "Wed, 01 May 2024 10:00:00 GMT"}))

    result = fetcher.fetch(url)

    assert result.status == 200
    assert result.body == FEED
    assert result.url == result.final_url == url
    assert result.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert result.etag == '"v1"'
    assert result.last_modified == "Wed, 01 May 2024 10:00:00 GMT"
    assert result.not_modified is False


def test_301_then_200_follows_redirect_and_reports_final_url(http_server, fetcher):
    final = http_server.route("/new.xml", Response(200, FEED))
    start = http_server.route("/old.xml", Response(301, headers={"Location": "/new.xml"}))

    result = fetcher.fetch(start)

    assert result.body == FEED
    assert result.url == start
    assert result.final_url == final
    assert [r.path for r in http_server.requests] == ["/old.xml", "/new.xml"]


def test_404_is_not_retried(http_server, fetcher):
    url = http_server.route("/gone.xml", Response(404, b"not here"))

    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)

    assert caught.value.reason == "http_404"
    assert caught.value.status == 404
    assert len(http_server.requests_to("/gone.xml")) == 1


def test_500_then_200_is_retried_with_backoff(http_server):
    sleep = RecordingSleep()
    url = http_server.route("/flaky.xml", sequence(Response(500), Response(503), Response(200, FEED)))

    with HttpFetcher(LOOPBACK, sleep=sleep) as fetcher:
        result = fetcher.fetch(url)

    assert result.body == FEED
    assert len(http_server.requests_to("/flaky.xml")) == 3
    assert sleep.delays == [LOOPBACK.backoff_base, LOOPBACK.backoff_base * 2]


def test_429_waits_for_retry_after_seconds(http_server):
    sleep = RecordingSleep()
    url = http_server.route("/busy.xml", sequence(
        Response(429, headers={"Retry-After": "2"}), Response(200, FEED)))

    with HttpFetcher(LOOPBACK, sleep=sleep) as fetcher:
        result = fetcher.fetch(url)

    assert result.body == FEED
    assert sleep.delays == [2.0]
    assert len(http_server.requests_to("/busy.xml")) == 2


def test_429_retry_after_really_waits(http_server):
    """With the real sleep, the second request comes after the Retry-After delay."""
    url = http_server.route("/busy.xml", sequence(
        Response(429, headers={"Retry-After": "1"}), Response(200, FEED)))

    with HttpFetcher(LOOPBACK) as fetcher:
        fetcher.fetch(url)

    first, second = http_server.requests_to("/busy.xml")
    assert 0.95 <= second.time - first.time < 3


def test_gzip_response_is_decompressed(http_server, fetcher):
    url = http_server.route("/gz.xml", Response(200, gzip.compress(FEED), {"Content-Encoding": "gzip"}))

    result = fetcher.fetch(url)

    assert result.body == FEED
    assert "gzip" in http_server.requests_to("/gz.xml")[0].headers["accept-encoding"]


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_deflate_response_is_decompressed_in_both_flavours(http_server, fetcher, wbits):
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    body = compressor.compress(FEED) + compressor.flush()
    url = http_server.route("/deflate.xml", Response(200, body, {"Content-Encoding": "deflate"}))

    assert fetcher.fetch(url).body == FEED


def test_chunked_response_without_length_is_read_whole(http_server, fetcher):
    url = http_server.route("/chunked.xml", Response(200, [FEED[:10], FEED[10:40], FEED[40:]]))

    assert fetcher.fetch(url).body == FEED


def test_conditional_get_sends_validators_and_304_is_not_modified(http_server, fetcher):
    url = http_server.route("/cached.xml", Response(304, headers={"ETag": '"v2"'}))

    result = fetcher.fetch(url, etag='"v1"', last_modified="Wed, 01 May 2024 10:00:00 GMT")

    sent = http_server.requests_to("/cached.xml")[0].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Wed, 01 May 2024 10:00:00 GMT"
    assert result.not_modified is True
    assert result.status == 304
    assert result.body == b""
    assert result.etag == '"v2"'
    assert result.last_modified == "Wed, 01 May 2024 10:00:00 GMT"


def test_unconditional_get_sends_no_validators(http_server, fetcher):
    url = http_server.route("/plain.xml", Response(200, FEED))

    fetcher.fetch(url)

    sent = http_server.requests_to("/plain.xml")[0].headers
    assert "if-none-match" not in sent and "if-modified-since" not in sent


def test_user_agent_names_newsbeam_and_version(http_server, fetcher):
    url = http_server.route("/ua.xml", Response(200, FEED))

    fetcher.fetch(url)

    agent = http_server.requests_to("/ua.xml")[0].headers["user-agent"]
    assert agent.startswith(f"newsbeam/{__version__} ")


def test_fetcher_pickles_without_its_session(http_server):
    url = http_server.route("/p.xml", Response(200, FEED))
    fetcher = HttpFetcher(LOOPBACK)
    fetcher.fetch(url)  # creates the session

    clone = pickle.loads(pickle.dumps(fetcher))

    assert clone.policy == LOOPBACK
    assert clone._session is None
    assert clone.fetch(url).body == FEED
    fetcher.close()
    clone.close()


def test_a_redirect_loops_error_quotes_its_urls_without_their_secrets(http_server, fetcher):
    http_server.route("/a", Response(302, headers={"Location": "/b?token=abc"}))
    http_server.route("/b", Response(302, headers={"Location": "/a?token=abc"}))
    url = http_server.url("/a?token=abc").replace("http://", "http://user:secret@")

    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)

    error = caught.value
    assert error.reason == "redirect_loop" and "/b?token=REDACTED" in error.detail
    for text in (str(error), error.detail, repr(error.args[:2])):
        assert "secret" not in text and "abc" not in text, text


def test_fetch_error_pickles_with_reason():
    error = FetchError("http_503", "server answered 503", "http://example.com/", 503)

    clone = pickle.loads(pickle.dumps(error))

    assert (clone.reason, clone.status, clone.url) == ("http_503", 503, "http://example.com/")


@pytest.mark.parametrize("address, private", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("240.0.0.1", True), ("255.255.255.255", True), ("::1", True), ("fe80::1%eth0", True),
    ("fc00::1", True), ("::ffff:127.0.0.1", True), ("::", True), ("ff02::1", True),
    ("not an ip", True),
    ("93.184.216.34", False), ("8.8.8.8", False), ("2606:4700:4700::1111", False),
    ("::ffff:8.8.8.8", False),
])
def test_is_private_address(address, private):
    assert is_private_address(address) is private


@pytest.mark.parametrize("field, value", [("connect_timeout", 0), ("max_bytes", -1), ("max_retries", -1)])
def test_policy_rejects_nonsense_limits(field, value):
    with pytest.raises(ValueError, match=field):
        FetchPolicy(**{field: value})
