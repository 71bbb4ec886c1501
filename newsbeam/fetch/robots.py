"""robots.txt for page fetching: fetched once per origin, cached, read conservatively.

The file is fetched through the caller's ``fetch`` (an :class:`HttpFetcher`
behind the host's rate limiter), so it obeys the same timeouts, size cap,
retries and address guard as every other request, and counts as a request
to the host. The rules are read by the standard library's
``urllib.robotparser``. What an answer means (after the fetcher's redirects
and retries):

- 2xx: the file's rules apply.
- 4xx other than 429 (404, 410, also 401/403): no usable robots.txt, so
  everything is allowed (RFC 9309 section 2.3.1.3; the issue asked this for
  404).
- 5xx, 429, an unreachable host, a timeout, an oversized file: the site's
  wishes are unknown, so the whole origin is disallowed for the life of the
  cache (one run, or ``max_age`` in a long streaming job). RFC 9309 allows
  this "complete disallow"; it is the conservative reading.
- ``blocked_address``: the fetch policy's address guard refused the origin
  (or where its robots.txt redirects) before connecting. The whole origin is
  disallowed too, but the outcome is ``BLOCKED``, so a page of it is counted
  as refused by the guard, with the guard's reason, not as a robots.txt skip.

Known limits of ``urllib.robotparser``: rules match by plain path prefix (the
``*`` and ``$`` wildcards that Google popularised are taken literally, so such
a rule blocks less than its author meant) and the first matching rule of a
group wins rather than the longest; Crawl-delay is read in whole seconds only
(a fractional one is ignored). A user-agent group applies when its name
occurs in the first token of our User-Agent (``newsbeam`` by default).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from newsbeam.fetch.http import FetchError, FetchResult

LOGGER = logging.getLogger(__name__)

# RFC 9309 section 2.4: a cached robots.txt should not be used for more than 24 hours.
DEFAULT_MAX_AGE_S = 24 * 3600.0

PARSED = "parsed"
MISSING = "missing"  # 4xx: allow all
UNREACHABLE = "unreachable"  # 5xx/429/network: disallow all
BLOCKED = "blocked"  # the address guard refused the origin: disallow all


@dataclass(frozen=True)
class RobotsRules:
    """The rules that hold for one origin, and how they were obtained."""

    origin: str
    outcome: str  # PARSED, MISSING, UNREACHABLE or BLOCKED
    parser: RobotFileParser
    loaded_at: float
    reason: str = ""

    def allows(self, url: str, user_agent: str) -> bool:
        return self.parser.can_fetch(user_agent, url)

    def delay_for(self, user_agent: str) -> Optional[float]:
        """Seconds the site asks between requests (Crawl-delay or Request-rate), if any."""
        delays = []
        crawl_delay = self.parser.crawl_delay(user_agent)
        if crawl_delay is not None:
            delays.append(float(crawl_delay))
        request_rate = self.parser.request_rate(user_agent)
        if request_rate is not None and request_rate.requests > 0:
            delays.append(request_rate.seconds / request_rate.requests)
        return max(delays) if delays else None


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: robots.txt is per origin (RFC 9309 section 2.3)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc, "", "", ""))


def robots_url_for(url: str) -> str:
    return origin_of(url) + "/robots.txt"


def rules_from_fetch(origin: str, fetch: Callable[[str], FetchResult], *,
                     clock: Callable[[], float] = time.monotonic) -> RobotsRules:
    """Fetch ``origin``'s robots.txt and read it under the policy in the module docstring."""
    parser = RobotFileParser(origin + "/robots.txt")
    try:
        result = fetch(origin + "/robots.txt")
    except FetchError as error:
        status = error.status
        if status is not None and 400 <= status < 500 and status != 429:
            parser.allow_all = True
            return RobotsRules(origin, MISSING, parser, clock(), str(error))
        parser.disallow_all = True
        if error.reason == "blocked_address":
            LOGGER.info("not fetching from %s: %s", origin, error)
            return RobotsRules(origin, BLOCKED, parser, clock(), str(error))
        LOGGER.warning("robots.txt of %s unavailable (%s): not fetching from it this run", origin, error)
        return RobotsRules(origin, UNREACHABLE, parser, clock(), str(error))
    text = result.body.decode("utf-8", errors="replace").lstrip("\ufeff")
    parser.parse(text.splitlines())
    return RobotsRules(origin, PARSED, parser, clock())


class RobotsCache:
    """robots.txt rules per origin, fetched at most once per ``max_age``.

    Thread-safe: threads asking about the same origin at once wait for a
    single fetch of its robots.txt.
    """

    def __init__(self, fetch: Callable[[str], FetchResult], user_agent: str, *,
                 max_age: float = DEFAULT_MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.user_agent = user_agent
        self.max_age = max_age
        self._clock = clock
        self._rules: dict[str, RobotsRules] = {}
        self._origin_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def rules_for(self, url: str) -> RobotsRules:
        origin = origin_of(url)
        with self._lock:
            origin_lock = self._origin_locks.setdefault(origin, threading.Lock())
        with origin_lock:
            rules = self._rules.get(origin)
            if rules is None or self._clock() - rules.loaded_at > self.max_age:
                rules = rules_from_fetch(origin, self._fetch, clock=self._clock)
                self._rules[origin] = rules
            return rules

    def is_allowed(self, url: str) -> bool:
        return self.rules_for(url).allows(url, self.user_agent)
