"""Fetch feeds over HTTP(S) without trusting the server or the feed list.

Everything a hostile or broken server can do is bounded: how long we wait
(connect, per read, and in total), how much we read (before and after gzip),
how many redirects we follow and where they may point, and how often we retry.

Redirects are followed here, hop by hop, rather than by ``requests``, so each
hop's scheme is checked; where a hop may connect is checked when its socket
is opened (:mod:`newsbeam.fetch.addresses`, DNS rebinding included). The
total deadline holds on the sockets themselves (:mod:`newsbeam.fetch.deadline`),
so a server trickling its status line, headers or chunk sizes is cut off at
``total_timeout`` like one trickling its body.
"""
from __future__ import annotations

import dataclasses
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional
from urllib.parse import urljoin, urlsplit

import requests

from newsbeam import __version__
from newsbeam.fetch.addresses import AddressCheckingAdapter, ConnectFailure, is_private_address
from newsbeam.fetch.body import BodyFailure, read_body
from newsbeam.fetch.deadline import SocketDeadline
from newsbeam.normalise import redact_text, redact_url

__all__ = ["FetchError", "FetchPolicy", "FetchResult", "HttpFetcher", "fetch_policy_from",
           "is_private_address", "page_fetch_policy_from"]

LOGGER = logging.getLogger(__name__)


class RedactSecretsFilter(logging.Filter):
    """urllib3 logs request lines with their query strings at DEBUG; mask secret values
    (by normalise's rule: one place says what a secret looks like)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


logging.getLogger("urllib3.connectionpool").addFilter(RedactSecretsFilter())

DEFAULT_USER_AGENT = f"newsbeam/{__version__} (+https://github.com/newsbeam/newsbeam)"
ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Failures worth another attempt: the server or the path to it may recover.
# DNS failures, refused connections, blocked addresses, oversized bodies and
# 4xx answers (other than 429) are definite and are not retried.
RETRYABLE_REASONS = frozenset({"timeout", "connection_reset", "truncated"})


DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 20_000_000


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch; plain data so a pipeline can pickle it."""

    connect_timeout: float = 5.0
    read_timeout: float = DEFAULT_READ_TIMEOUT  # longest silence between two reads
    total_timeout: float = 60.0  # whole fetch, retries and redirects included
    max_bytes: int = DEFAULT_MAX_BYTES  # body cap, on the wire and after decompression
    max_redirects: int = 5
    max_retries: int = 3
    backoff_base: float = 0.5  # seconds; doubles per retry
    max_retry_after: float = 60.0  # a longer Retry-After ends the fetch instead
    # loopback and private ranges; link-local and cloud metadata stay refused (fetch.addresses)
    allow_private_addresses: bool = False
    user_agent: str = DEFAULT_USER_AGENT

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout", "max_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FetchPolicy.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_redirects", "max_retries", "backoff_base", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"FetchPolicy.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class FetchResult:
    """A fetched body, or a 304 (``not_modified``, empty body).

    ``headers`` has lower-case names (what ``feedparser`` expects) and
    describes the final response after redirects.
    """

    url: str
    final_url: str
    status: int
    body: bytes
    headers: dict[str, str]
    etag: Optional[str]
    last_modified: Optional[str]
    not_modified: bool


class FetchError(Exception):
    """A fetch that failed for good; ``reason`` is short and machine-readable.

    Reasons: ``bad_scheme``, ``bad_url``, ``blocked_address``, ``dns``,
    ``connection_refused``, ``connection_error``, ``connection_reset``,
    ``tls``, ``timeout``, ``too_large``, ``truncated``, ``bad_encoding``,
    ``redirect_loop``, ``too_many_redirects``, ``http_<status>``.
    """

    def __init__(self, reason: str, detail: str = "", url: Optional[str] = None,
                 status: Optional[int] = None) -> None:
        # Details quote URLs (a redirect's hops, an HTTP library's message):
        # redacted here, so no caller can store or log a credential by forgetting to.
        detail = redact_text(detail) or ""
        super().__init__(reason, detail, url, status)
        self.reason = reason
        self.detail = detail
        self.url = url
        self.status = status

    def __str__(self) -> str:
        where = f" ({redact_url(self.url)})" if self.url else ""
        return f"{self.reason}: {self.detail}{where}" if self.detail else f"{self.reason}{where}"


def _parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def _check_scheme(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise FetchError("bad_scheme", f"only http and https are fetched, got {parts.scheme!r}", url)
    if not parts.hostname:
        raise FetchError("bad_url", "no host in URL", url)


class _Response:
    """What one request/response exchange produced (body read and bounded)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class HttpFetcher:
    """Fetch URLs under a :class:`FetchPolicy`.

    Holds one ``requests.Session``, made on first use so a pipeline can build
    the fetcher in ``DoFn.setup()`` (or pickle it: the session is not pickled).
    ``sleep`` and ``clock`` are injectable so retry tests need not wait.
    """

    def __init__(self, policy: FetchPolicy = FetchPolicy(), *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._session: Optional[requests.Session] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def __enter__(self) -> "HttpFetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or .netrc from the environment
            adapter = AddressCheckingAdapter(self.policy.allow_private_addresses)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update({
                "User-Agent": self.policy.user_agent,
                "Accept-Encoding": "gzip, deflate",
                "Accept": "application/rss+xml, application/atom+xml, application/rdf+xml, "
                          "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
            })
            self._session = session
        return self._session

    def fetch(self, url: str, etag: Optional[str] = None,
              last_modified: Optional[str] = None) -> FetchResult:
        """Fetch ``url``; a 304 to a conditional GET gives ``not_modified``.

        Raises :class:`FetchError` when the fetch fails after any retries.
        """
        policy = self.policy
        deadline = self._clock() + policy.total_timeout
        conditional: dict[str, str] = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified

        attempt = 0
        while True:
            try:
                final_url, response = self._follow_redirects(url, conditional, deadline)
            except FetchError as error:
                if error.reason in RETRYABLE_REASONS and attempt < policy.max_retries:
                    self._wait(self._backoff(attempt), deadline, error)
                    attempt += 1
                    continue
                raise
            status = response.status
            if status == 304:
                return FetchResult(
                    url=url, final_url=final_url, status=status, body=b"",
                    headers=response.headers,
                    etag=response.headers.get("etag", etag),
                    last_modified=response.headers.get("last-modified", last_modified),
                    not_modified=True,
                )
            if 200 <= status < 300:
                return FetchResult(
                    url=url, final_url=final_url, status=status, body=response.body,
                    headers=response.headers,
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                    not_modified=False,
                )
            error = FetchError(f"http_{status}", f"server answered {status}", final_url, status)
            if (status >= 500 or status == 429) and attempt < policy.max_retries:
                retry_after = _parse_retry_after(response.headers.get("retry-after"), time.time())
                if retry_after is not None and retry_after > policy.max_retry_after:
                    error.detail += f"; Retry-After {retry_after:.0f}s exceeds the policy's limit"
                    raise error
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                self._wait(delay, deadline, error)
                attempt += 1
                continue
            raise error

    def _backoff(self, attempt: int) -> float:
        return self.policy.backoff_base * (2 ** attempt)

    def _wait(self, delay: float, deadline: float, error: FetchError) -> None:
        if self._clock() + delay >= deadline:
            error.detail += "; no time left to retry within total_timeout"
            raise error
        LOGGER.info("retrying %s in %.2fs after %s", redact_url(error.url), delay, error.reason)
        self._sleep(delay)

    def _follow_redirects(self, url: str, conditional: Mapping[str, str],
                          deadline: float) -> tuple[str, _Response]:
        visited: set[str] = set()
        current = url
        for _hop in range(self.policy.max_redirects + 1):
            _check_scheme(current)
            visited.add(current)
            response = self._exchange(current, conditional, deadline)
            if response.status not in REDIRECT_STATUSES:
                return current, response
            location = response.headers.get("location")
            if not location:
                return current, response
            target = urljoin(current, location.strip())
            if target in visited:
                raise FetchError("redirect_loop",
                                 f"redirect from {redact_url(current)} back to {redact_url(target)}", url)
            current = target
        raise FetchError("too_many_redirects",
                         f"more than {self.policy.max_redirects} redirects", url)

    def _exchange(self, url: str, conditional: Mapping[str, str], deadline: float) -> _Response:
        """One GET under the fetch's deadline, body read in bounded chunks and decompressed under the cap.

        The deadline is enforced by a watchdog on the sockets (see
        :mod:`newsbeam.fetch.deadline`): read timeouts alone cannot end a
        server that sends each byte just in time, and the status line,
        headers and chunk-size lines are read where no loop of ours can check
        the clock.
        """
        policy = self.policy
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise FetchError("timeout", f"total_timeout {policy.total_timeout}s exceeded", url)
        timeout = (min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining))
        with SocketDeadline(remaining) as watchdog:
            try:
                response = self._send(url, conditional, timeout)
                try:
                    result = self._response_of(response, url, deadline)
                finally:
                    response.close()
                # Once the watchdog has cut the socket, what was read cannot be
                # trusted: http.client takes a status line cut short for a whole
                # one, a chunk-size line of zeros cut short for the last chunk.
                if not watchdog.expired:
                    return result
                cause = None
            except FetchError as error:
                if not watchdog.expired:
                    raise
                cause = error  # a reset or a truncation the watchdog caused: report the deadline
        raise FetchError("timeout", f"total_timeout {policy.total_timeout}s exceeded "
                                    "before the response was complete", url) from cause

    def _send(self, url: str, conditional: Mapping[str, str],
              timeout: tuple[float, float]) -> requests.Response:
        """The request sent and the status line and headers read; the body is left on the socket."""
        try:
            return self.session.get(url, headers=dict(conditional), stream=True,
                                    allow_redirects=False, timeout=timeout)
        except ConnectFailure as failure:
            raise FetchError(failure.reason, failure.detail, url) from failure
        except requests.Timeout as exc:
            raise FetchError("timeout", str(exc), url) from exc
        except requests.exceptions.SSLError as exc:
            raise FetchError("tls", str(exc), url) from exc
        except requests.ConnectionError as exc:
            raise FetchError("connection_reset", str(exc), url) from exc
        except requests.exceptions.InvalidURL as exc:
            raise FetchError("bad_url", str(exc), url) from exc
        except requests.RequestException as exc:
            raise FetchError("connection_error", str(exc), url) from exc

    def _response_of(self, response: requests.Response, url: str, deadline: float) -> _Response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        if response.status_code in REDIRECT_STATUSES or response.status_code == 304 \
                or response.status_code >= 400:
            # Redirects, 304s and errors: the body is not used.
            return _Response(response.status_code, headers, b"")
        return _Response(response.status_code, headers, self._read_body(response, headers, url, deadline))

    def _read_body(self, response: requests.Response, headers: Mapping[str, str],
                   url: str, deadline: float) -> bytes:
        policy = self.policy
        try:
            return read_body(response.raw, headers, cap=policy.max_bytes,
                             time_left=lambda: deadline - self._clock(), total_timeout=policy.total_timeout)
        except BodyFailure as failure:
            raise FetchError(failure.reason, failure.detail, url) from failure


def fetch_policy_from(news) -> FetchPolicy:
    """The run's policy for feeds, from its options (``NewsOptions``)."""
    return FetchPolicy(
        read_timeout=news.fetch_timeout,
        max_bytes=news.max_feed_bytes,
        allow_private_addresses=news.allow_private_addresses,
    )


def page_fetch_policy_from(news) -> FetchPolicy:
    """The policy for article pages, their redirects and robots.txt: the feeds' limits, with
    private addresses allowed only by ``--allow_private_page_addresses``.

    The feed list is the operator's choice; an article link is the feed's, so
    trusting an intranet feed must not let its links reach internal pages.
    """
    return dataclasses.replace(fetch_policy_from(news), allow_private_addresses=news.allow_private_page_addresses)
