"""Where page fetches may connect (audit #27, item 2).

``--allow_private_addresses`` trusts the *feeds* the operator lists; the
article links inside a feed are the feed's choice, so pages (their
redirects, their robots.txt) keep the default address checks unless
``--allow_private_page_addresses`` says otherwise. Link-local and cloud
metadata addresses (169.254.0.0/16, fe80::/10, metadata.google.internal, ...)
are refused under every flag, for feeds too.

No test sends anything beyond 127.0.0.1: socket creation and DNS are
recorded, and any address or name other than loopback is refused by the
stubs themselves, so even a regressed guard cannot reach 169.254.169.254.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from newsbeam.fetch.addresses import is_never_allowed_address
from newsbeam.fetch.http import FetchError, FetchPolicy, HttpFetcher, fetch_policy_from, page_fetch_policy_from
from newsbeam.fetch.pages import FAILED, PageFetcher
from newsbeam.pipeline.options import NewsOptions
from tests.support.builders import make_article
from tests.support.httpserver import Response
from tests.support.pipelines import assert_accounting, only_manifest, read_rows, rss, run_cli

PAGE_HTML = (Path(__file__).resolve().parents[1] / "fixtures" / "pages" / "english.html").read_bytes()
HTML = {"Content-Type": "text/html; charset=utf-8"}
TEASER = "Westerby launched a ferry powered by solar panels on Monday."
PAGE_SENTENCE = "Westerby launched its first ferry powered entirely by solar panels"
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
FAST = ["--skip_labels", "--page_rate_per_host", "50"]


@pytest.fixture
def connections(monkeypatch) -> list[str]:
    """Every address a fetch opens a socket to; anything but 127.0.0.1 is refused here, unsent."""
    import urllib3.util.connection

    opened: list[str] = []
    real_create_connection = urllib3.util.connection.create_connection

    def loopback_only(address, *args, **kwargs):
        opened.append(address[0])
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(f"test stub: no traffic to {address[0]}")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", loopback_only)
    return opened


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """Every name a fetch resolves; only IP literals resolve (no DNS query leaves the machine),
    and ``*.link-local.example`` / ``*.mapped.example`` stand for names that resolve to metadata."""
    real_getaddrinfo = socket.getaddrinfo
    resolved: list[str] = []
    fake = {"metadata.link-local.example": "169.254.169.254", "v6.link-local.example": "fe80::1",
            "metadata.mapped.example": "::ffff:169.254.169.254"}

    def no_dns(host, port, *args, **kwargs):
        resolved.append(host)
        if host in fake:
            family = socket.AF_INET6 if ":" in fake[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (fake[host], port))]
        try:
            return real_getaddrinfo(host, port, *args, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, f"test stub: no DNS for {host}") from None

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return resolved


def serve_feed_and_page(http_server, page: Response) -> tuple[str, str]:
    """A feed on 127.0.0.1 whose one item links to ``page``, also on 127.0.0.1."""
    page_url = http_server.route("/news/story.html", page)
    feed = rss([("Solar ferry for Westerby", page_url, TEASER)])
    return http_server.route("/feed.xml", Response(body=feed)), page_url


def run_full_text(tmp_path: Path, feed_url: str, *flags: str) -> tuple[int, Path]:
    output = tmp_path / "out"
    code = run_cli("--output", str(output), "--feeds", feed_url, "--full_text", *flags, *FAST)
    return code, output


def page_failures(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "newsbeam.fetch.pages" and "page" in record.getMessage()]


# --- pages under --allow_private_addresses alone --------------------------------------------

def test_private_feed_allowed_but_its_private_page_link_is_not_fetched(tmp_path, http_server, caplog, connections):
    """--allow_private_addresses only: the feed on 127.0.0.1 is read, its page on 127.0.0.1 is
    refused before connecting (no robots.txt or page request reaches the server), the row keeps
    the feed's text, and the manifest counts one failed page; the log gives 'blocked_address'."""
    caplog.set_level(logging.INFO, logger="newsbeam.fetch.pages")
    feed_url, page_url = serve_feed_and_page(http_server, Response(body=PAGE_HTML, headers=HTML))

    code, output = run_full_text(tmp_path, feed_url, "--allow_private_addresses")

    assert code == 0
    assert [request.path for request in http_server.requests] == ["/feed.xml"]
    rows = read_rows(output, "url, summary, body, body_source")
    assert [(row["url"], row["summary"], row["body"], row["body_source"]) for row in rows] == [
        (page_url, TEASER, None, "feed")]
    manifest = only_manifest(output)
    assert manifest["pages"]["failed"] == 1 and manifest["pages"]["fetched"] == 0
    assert manifest["pages"]["used"] == 0
    assert any("blocked_address" in message and "127.0.0.1" in message for message in page_failures(caplog))
    assert_accounting(manifest)


def test_private_page_fetched_with_allow_private_page_addresses(tmp_path, http_server):
    """Both flags: the page on 127.0.0.1 is fetched (after its robots.txt) and its text used."""
    feed_url, page_url = serve_feed_and_page(http_server, Response(body=PAGE_HTML, headers=HTML))

    code, output = run_full_text(tmp_path, feed_url, "--allow_private_addresses", "--allow_private_page_addresses")

    assert code == 0
    assert sorted(request.path for request in http_server.requests) == ["/feed.xml", "/news/story.html", "/robots.txt"]
    [row] = read_rows(output, "body, body_source")
    assert row["body_source"] == "page" and PAGE_SENTENCE in row["body"]
    assert only_manifest(output)["pages"]["used"] == 1


# --- link-local and cloud metadata: never, under any flag -----------------------------------

def test_page_redirect_to_metadata_address__refused_before_connecting_even_with_both_flags(
        tmp_path, http_server, caplog, connections):
    """An allowed page on 127.0.0.1 redirecting to 169.254.169.254: refused at that hop with
    'blocked_address' ... 'never fetched', no socket to it; the row keeps the feed's text."""
    caplog.set_level(logging.INFO, logger="newsbeam.fetch.pages")
    feed_url, _page_url = serve_feed_and_page(http_server, Response(302, headers={"Location": METADATA_URL}))

    code, output = run_full_text(tmp_path, feed_url, "--allow_private_addresses", "--allow_private_page_addresses")

    assert code == 0
    assert "169.254.169.254" not in connections and set(connections) == {"127.0.0.1"}
    [row] = read_rows(output, "summary, body, body_source")
    assert (row["summary"], row["body"], row["body_source"]) == (TEASER, None, "feed")
    assert only_manifest(output)["pages"]["failed"] == 1
    refusals = [message for message in page_failures(caplog) if "blocked_address" in message]
    assert refusals and "169.254.169.254" in refusals[0] and "never fetched" in refusals[0]


def test_page_redirect_to_metadata_address__outcome_names_the_refusal(http_server, connections):
    """The same redirect through PageFetcher under the page policy of both flags: the outcome is
    FAILED, its reason 'blocked_address' naming 169.254.169.254, and nothing connected there."""
    page_url = http_server.route("/news/story.html", Response(302, headers={"Location": METADATA_URL}))
    policy = page_fetch_policy_from(NewsOptions(["--allow_private_addresses", "--allow_private_page_addresses"]))
    article = make_article(1).replace(url=page_url)

    with PageFetcher(policy, rate_per_host=50.0) as pages:
        outcome = pages.full_text(article)

    assert outcome.outcome == FAILED and not outcome.fetched
    assert outcome.reason.startswith("blocked_address") and "169.254.169.254" in outcome.reason
    assert outcome.article == article
    assert "169.254.169.254" not in connections


def test_feed_on_metadata_address_with_allow_private_addresses__refused_exit_3(tmp_path, connections, lookups):
    """--feeds http://169.254.169.254/... and http://metadata.google.internal/... under
    --allow_private_addresses: both fail 'blocked_address' with a reason that says the address or
    name is never fetched; no socket opens, the metadata name is not even looked up; exit 3."""
    by_name = "http://metadata.google.internal/computeMetadata/v1/instance/"
    output = tmp_path / "out"

    code = run_cli("--output", str(output), "--feeds", METADATA_URL, by_name, "--allow_private_addresses", *FAST)

    assert code == 3
    failed = {failure["source"]: failure["reason"] for failure in only_manifest(output)["failures"]}
    assert set(failed) == {METADATA_URL, by_name}
    assert failed[METADATA_URL].startswith("blocked_address") and "169.254.169.254" in failed[METADATA_URL]
    assert "never fetched" in failed[METADATA_URL]
    assert failed[by_name].startswith("blocked_address") and "cloud metadata host name" in failed[by_name]
    assert connections == []
    assert "metadata.google.internal" not in lookups


@pytest.mark.parametrize("url", [
    "http://metadata.link-local.example/latest/meta-data/",  # a name resolving to 169.254.169.254
    "http://v6.link-local.example/",  # ... to fe80::1
    "http://metadata.mapped.example/",  # ... to ::ffff:169.254.169.254
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6
    "http://metadata.goog/computeMetadata/v1/",
    "http://METADATA.google.internal./",  # case and a trailing dot change nothing
])
def test_link_local_and_metadata_targets__refused_with_private_addresses_allowed(url, connections, lookups):
    """Whatever form the target takes, allow_private_addresses=True still refuses it before any socket."""
    with HttpFetcher(FetchPolicy(allow_private_addresses=True, max_retries=0)) as fetcher, \
            pytest.raises(FetchError) as caught:
        fetcher.fetch(url)

    assert caught.value.reason == "blocked_address", caught.value
    assert "never fetched" in caught.value.detail
    assert connections == []


@pytest.mark.parametrize("address, never", [
    ("169.254.169.254", True), ("169.254.0.23", True), ("fe80::1", True), ("fe80::1%eth0", True),
    ("::ffff:169.254.169.254", True), ("64:ff9b::a9fe:a9fe", True), ("2002:a9fe:a9fe::1", True),
    ("fd00:ec2::254", True), ("100.100.100.200", True), ("168.63.129.16", True), ("not an ip", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("192.168.1.1", False), ("::1", False), ("fc00::1", False),
    ("93.184.216.34", False),
])
def test_is_never_allowed_address(address, never):
    assert is_never_allowed_address(address) is never


def test_page_policy_follows_its_own_flag_not_the_feeds_one():
    """fetch_policy_from (feeds) and page_fetch_policy_from (pages) read separate flags; both off by default."""
    def policies(*flags: str) -> tuple[bool, bool]:
        news = NewsOptions(list(flags))
        return fetch_policy_from(news).allow_private_addresses, page_fetch_policy_from(news).allow_private_addresses

    assert policies() == (False, False)
    assert policies("--allow_private_addresses") == (True, False)
    assert policies("--allow_private_page_addresses") == (False, True)
    assert policies("--allow_private_addresses", "--allow_private_page_addresses") == (True, True)
