"""Fetch feeds over HTTP(S) without trusting the server or the feed list.

Everything a hostile or broken server can do is bounded: how long we wait
(connect, per read, and in total), how much we read (before and after gzip),
how many redirects we follow and where they may point, and how often we retry.

Redirects are followed here, hop by hop, rather than by ``requests``, so each
hop's scheme is checked; the address check itself runs when a socket is
opened: the host is resolved once, *every* resolved address must be public,
and the socket connects to one of those same addresses. A name that resolves
to a public address for a check and to 127.0.0.1 for the connection (DNS
rebinding) therefore cannot reach a private service.
"""
from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Optional
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util import connection as urllib3_connection

from newsbeam import __version__
from newsbeam.normalise import SECRET_WORDS, redact_url

LOGGER = logging.getLogger(__name__)
SECRET_IN_TEXT_RE = re.compile(
    r"((?:[\w-]*(?:" + "|".join(SECRET_WORDS) + r")[\w-]*)=)[^&\s\"']+", re.IGNORECASE
)


class RedactSecretsFilter(logging.Filter):
    """urllib3 logs request lines with their query strings at DEBUG; mask secret values."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRET_IN_TEXT_RE.sub(r"\1REDACTED", message)
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
READ_CHUNK_BYTES = 64 * 1024


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
        super().__init__(reason, detail, url, status)
        self.reason = reason
        self.detail = detail
        self.url = url
        self.status = status

    def __str__(self) -> str:
        from newsbeam.normalise import redact_url

        where = f" ({redact_url(self.url)})" if self.url else ""
        return f"{self.reason}: {self.detail}{where}" if self.detail else f"{self.reason}{where}"


class _ConnectFailure(Exception):
    """Raised from inside urllib3's connect step.

    Deliberately not an ``OSError``: urllib3 and requests pass it through
    unwrapped, so the reason survives to :class:`HttpFetcher`.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def is_private_address(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for any address a feed fetch must not reach by default.

    Loopback, private (RFC 1918, ULA), link-local (169.254.169.254 cloud
    metadata included), carrier-grade NAT, unspecified, multicast, reserved
    and documentation ranges all count; so does an IPv4-mapped IPv6 form of
    any of them. Anything unparsable counts as private (fail closed).
    """
    try:
        address = ipaddress.ip_address(str(ip).split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d reaches a.b.c.d
            return is_private_address(address.ipv4_mapped)
        if address.sixtofour is not None and is_private_address(address.sixtofour):
            return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


class _CheckedConnectionMixin:
    """Resolve once, check every address, connect only to a checked one."""

    allow_private_addresses = False

    def _new_conn(self) -> socket.socket:
        host = self._dns_host  # type: ignore[attr-defined]
        port = self.port  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise _ConnectFailure("dns", f"cannot resolve {host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not self.allow_private_addresses:
            blocked = [address for address in addresses if is_private_address(address)]
            if blocked:
                raise _ConnectFailure(
                    "blocked_address",
                    f"{host!r} resolves to non-public address {blocked[0]}",
                )
        failure = _ConnectFailure("connection_error", f"no address for {host!r}")
        for address in addresses:
            try:
                return urllib3_connection.create_connection(
                    (address, port),
                    self.timeout,  # type: ignore[attr-defined]
                    source_address=self.source_address,  # type: ignore[attr-defined]
                    socket_options=self.socket_options,  # type: ignore[attr-defined]
                )
            except socket.timeout as exc:
                failure = _ConnectFailure("timeout", f"connect to {address} timed out")
                failure.__cause__ = exc
            except ConnectionRefusedError as exc:
                failure = _ConnectFailure("connection_refused", f"{address}:{port} refused")
                failure.__cause__ = exc
            except OSError as exc:
                failure = _ConnectFailure("connection_error", f"{address}:{port}: {exc}")
                failure.__cause__ = exc
        raise failure


class _CheckedHTTPConnection(_CheckedConnectionMixin, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedConnectionMixin, HTTPSConnection):
    pass


class _OpenHTTPConnection(_CheckedConnectionMixin, HTTPConnection):
    allow_private_addresses = True


class _OpenHTTPSConnection(_CheckedConnectionMixin, HTTPSConnection):
    allow_private_addresses = True


def _pool_classes(allow_private_addresses: bool) -> dict[str, type]:
    http_cls = _OpenHTTPConnection if allow_private_addresses else _CheckedHTTPConnection
    https_cls = _OpenHTTPSConnection if allow_private_addresses else _CheckedHTTPSConnection
    return {
        "http": type("_HTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_cls}),
        "https": type("_HTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_cls}),
    }


class _AddressCheckingAdapter(HTTPAdapter):
    def __init__(self, allow_private_addresses: bool) -> None:
        self._pool_classes = _pool_classes(allow_private_addresses)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


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
            adapter = _AddressCheckingAdapter(self.policy.allow_private_addresses)
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
                raise FetchError("redirect_loop", f"redirect from {current} back to {target}", url)
            current = target
        raise FetchError("too_many_redirects",
                         f"more than {self.policy.max_redirects} redirects", url)

    def _exchange(self, url: str, conditional: Mapping[str, str], deadline: float) -> _Response:
        """One GET, body read in bounded chunks and decompressed under the cap."""
        policy = self.policy
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise FetchError("timeout", f"total_timeout {policy.total_timeout}s exceeded", url)
        timeout = (min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining))
        try:
            response = self.session.get(url, headers=dict(conditional), stream=True,
                                        allow_redirects=False, timeout=timeout)
        except _ConnectFailure as failure:
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
        try:
            headers = {name.lower(): value for name, value in response.headers.items()}
            if response.status_code in REDIRECT_STATUSES or response.status_code == 304 \
                    or response.status_code >= 400:
                # Redirects, 304s and errors: the body is not used.
                return _Response(response.status_code, headers, b"")
            body = self._read_body(response, headers, url, deadline)
            return _Response(response.status_code, headers, body)
        finally:
            response.close()

    def _read_body(self, response: requests.Response, headers: Mapping[str, str],
                   url: str, deadline: float) -> bytes:
        cap = self.policy.max_bytes
        declared = headers.get("content-length")
        expected: Optional[int] = None
        if declared is not None and declared.strip().isdigit():
            expected = int(declared)
            if expected > cap:
                raise FetchError("too_large", f"Content-Length {expected} > cap {cap}", url)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            decompressor = _DeflateDecompressor()
        elif encoding in ("identity", ""):
            decompressor = None
        else:
            raise FetchError("bad_encoding", f"unsupported Content-Encoding {encoding!r}", url)

        raw_seen = 0
        out = bytearray()
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise FetchError("timeout", f"total_timeout {self.policy.total_timeout}s "
                                            f"exceeded after {raw_seen} bytes", url)
            if sock is not None:
                # Each wait is bounded by whichever comes first: read_timeout
                # of silence or the end of the whole fetch's time.
                sock.settimeout(min(self.policy.read_timeout, remaining))
            try:
                # read1: return what one receive brings, so a server dribbling
                # bytes cannot keep a single call (and the deadline check) waiting.
                chunk = response.raw.read1(READ_CHUNK_BYTES, decode_content=False)
            except (ReadTimeoutError, socket.timeout) as exc:
                raise FetchError("timeout", f"read timed out after {raw_seen} bytes", url) from exc
            except ProtocolError as exc:  # urllib3's wrapper for a connection that ended early
                raise FetchError("truncated", f"connection ended early: {exc}", url) from exc
            except (Urllib3Error, OSError) as exc:
                raise FetchError("connection_reset", f"{type(exc).__name__}: {exc}", url) from exc
            if not chunk:
                break
            raw_seen += len(chunk)
            if raw_seen > cap:
                raise FetchError("too_large", f"body exceeds cap {cap} bytes", url)
            if decompressor is None:
                out += chunk
            else:
                self._inflate_into(out, decompressor, chunk, cap, url)
            if len(out) > cap:
                raise FetchError("too_large", f"body exceeds cap {cap} bytes", url)
        if expected is not None and raw_seen < expected:
            raise FetchError("truncated", f"got {raw_seen} of {expected} bytes", url)
        if decompressor is not None:
            if not decompressor.eof:
                raise FetchError("truncated", f"{encoding} stream ended early", url)
        return bytes(out)

    @staticmethod
    def _inflate_into(out: bytearray, decompressor, chunk: bytes, cap: int, url: str) -> None:
        """Inflate ``chunk`` a bounded slice at a time, stopping past the cap.

        ``max_length`` keeps each step's output small, so a gzip bomb costs at
        most ``cap`` bytes of memory, never its decompressed size.
        """
        data = chunk
        while data and not decompressor.eof:
            room = cap + 1 - len(out)
            try:
                out += decompressor.decompress(data, max(1, min(room, READ_CHUNK_BYTES)))
            except zlib.error as exc:
                raise FetchError("bad_encoding", f"corrupt compressed body: {exc}", url) from exc
            if len(out) > cap:
                raise FetchError("too_large", f"decompressed body exceeds cap {cap} bytes", url)
            data = decompressor.unconsumed_tail


class _DeflateDecompressor:
    """HTTP "deflate" is zlib-wrapped by the RFC and raw deflate in practice."""

    def __init__(self) -> None:
        self._inner = None
        self._pending = b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            first, second = self._pending[0], self._pending[1]
            is_zlib = (first & 0x0F) == 8 and ((first << 8) | second) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
            data, self._pending = self._pending, b""
        return self._inner.decompress(data, max_length)


def fetch_policy_from(news) -> FetchPolicy:
    """The run's fetch policy from its options (``NewsOptions``)."""
    return FetchPolicy(
        read_timeout=news.fetch_timeout,
        max_bytes=news.max_feed_bytes,
        allow_private_addresses=news.allow_private_addresses,
    )
