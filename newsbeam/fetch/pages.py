"""Fetching article pages politely and merging their main text into articles
(the Beam side is :mod:`newsbeam.transforms.full_text`).

``--full_text`` runs :class:`FetchFullText` on articles that are new to the
dataset: the graph drops articles that earlier runs wrote (``--state``) before
this stage, so a page already fetched for an article_id is not fetched again.

Politeness, per host (``host[:port]``):

- robots.txt is honoured (see :mod:`newsbeam.fetch.robots`), and so is a
  Crawl-delay / Request-rate up to :data:`MAX_CRAWL_DELAY_S`; a host asking
  for longer is skipped for the run, like a disallow;
- at most ``concurrency_per_host`` requests are in flight and request starts
  are at least ``1 / rate_per_host`` seconds apart (robots.txt included). A
  redirect hop or a retry (the fetcher's backoff) happens inside the request's
  slot and is not spaced again;
- the User-Agent names newsbeam; timeouts, size caps and retries are the
  run's, as for feeds. The address guard is the pages' own
  (``page_fetch_policy_from``): ``--allow_private_addresses`` trusts the feeds
  the operator lists, not the links inside them, so pages, their redirects
  and their robots.txt stay on public addresses unless
  ``--allow_private_page_addresses`` is given. A page whose host the guard
  refuses is never requested (nor its robots.txt) and counts as failed.

Where the limits hold: articles are keyed by host and batched
(``GroupIntoBatches``); one worker fetches up to :data:`MAX_HOSTS_IN_FLIGHT`
batches side by side (different hosts don't wait for each other), and the
per-host limiter is shared by every thread of the worker process, so two
batches of one host still share its limits. If a runner does spread
one host's batches over several worker processes (rebalancing, many workers
and few hosts), each process keeps its own limits, so the host may see up to
that many times the rate.

A page that fails (fetch error, not HTML, nothing extracted, disallowed) never
drops the article: it keeps the feed's text and ``body_source`` stays "feed".
Pure pieces (:func:`extract_page`, :func:`merge_page`) are testable without
Beam or a network.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional
from urllib.parse import urlsplit

from newsbeam import __version__
from newsbeam.fetch.http import DEFAULT_USER_AGENT, FetchError, FetchPolicy, FetchResult, HttpFetcher
from newsbeam.fetch.robots import BLOCKED, RobotsCache
from newsbeam.formats.html import PageContent, extract_page
from newsbeam.language import UNDETERMINED, detect_language
from newsbeam.records import Article

LOGGER = logging.getLogger(__name__)

DEFAULT_CONCURRENCY_PER_HOST = 2
DEFAULT_RATE_PER_HOST = 1.0  # requests per second
DEFAULT_BATCH_SIZE = 50
MAX_HOSTS_IN_FLIGHT = 16  # host batches fetched at once by one DoFn instance
# A site asking for more than this between requests is skipped for the run:
# honouring it would stall the pipeline for hours on one host.
MAX_CRAWL_DELAY_S = 30.0
PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
HTML_CONTENT_TYPE_MARKERS = ("html", "xml")

# Outcomes of one article's page.
USED = "used"  # the page's text replaced the feed's
KEPT_FEED_TEXT = "kept_feed_text"  # page fetched and read, feed text kept (not longer / other language)
FAILED = "failed"  # fetch error, not HTML, or no main text
SKIPPED_ROBOTS = "skipped_robots"  # robots.txt disallows it, or is unavailable

@dataclass(frozen=True)
class PageOutcome:
    article: Article  # the updated article, or the input one unchanged
    outcome: str  # USED, KEPT_FEED_TEXT, FAILED or SKIPPED_ROBOTS
    fetched: bool  # a 2xx page body was received
    reason: str = ""


def feed_text(article: Article) -> str:
    """The text the feed gave: its body, else its summary (the teaser)."""
    return article.body or article.summary or ""


def is_same_language(article: Article, page: PageContent,
                     detect: Callable[..., tuple[str, float]] = detect_language) -> bool:
    """True when the page reads as the feed's language, or the feed's is unknown.

    A page in another language is usually not the article (a consent wall, a
    regional redirect); a feed too short to judge cannot contradict the page.
    """
    feed_sample = "\n".join(part for part in (article.title, feed_text(article)) if part)
    feed_language, _ = detect(feed_sample, article.language_hint)
    if feed_language == UNDETERMINED:
        return True
    page_language, _ = detect(page.text, article.language_hint)
    return page_language == feed_language


def merge_page(article: Article, page: PageContent,
               detect: Callable[..., tuple[str, float]] = detect_language) -> Article:
    """The article with what the page adds; unchanged when the page is in another language.

    The page's text replaces the feed's when it is longer (the feed's teaser is
    kept as ``summary`` if that was empty) and ``body_source`` becomes "page".
    Title, authors and date fill only what the feed left empty.
    ``content_hash`` keeps describing the feed's text, so dedup and the
    incremental skip give the same answer with and without ``--full_text``.
    """
    if not is_same_language(article, page, detect):
        return article
    changes: dict = {}
    if len(page.text) > len(feed_text(article)):
        changes.update(body=page.text, body_source="page", summary=article.summary or article.body)
    if not article.title and page.title:
        changes["title"] = page.title
    if not article.authors and page.authors:
        changes["authors"] = page.authors
    if not article.published_at and page.published_at:
        changes["published_at"] = page.published_at
    return article.replace(**changes) if changes else article


def page_user_agent(custom: Optional[str] = None) -> str:
    """The User-Agent for pages: newsbeam's, or ``custom`` with newsbeam named in it."""
    if not custom or not custom.strip():
        return DEFAULT_USER_AGENT
    custom = custom.strip()
    return custom if "newsbeam" in custom.lower() else f"{custom} newsbeam/{__version__}"


def host_of(url: Optional[str]) -> Optional[str]:
    """``host[:port]``, lower-case, of an http(s) URL; None for anything else."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    return f"{host}:{port}" if port else host


def has_fetchable_url(article: Article) -> bool:
    return host_of(article.url) is not None


def is_html_response(result: FetchResult) -> bool:
    content_type = result.headers.get("content-type", "").lower()
    return not content_type or any(marker in content_type for marker in HTML_CONTENT_TYPE_MARKERS)


# --- per-host limits ----------------------------------------------------------------------------


class HostLimiter:
    """At most ``concurrency`` requests in flight, request starts ``1 / rate`` s apart."""

    def __init__(self, concurrency: int, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        check_limits(concurrency, rate)
        self.concurrency = concurrency
        self.interval = 1.0 / rate
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._next_start = float("-inf")
        self._clock = clock
        self._sleep = sleep

    def respect_delay(self, seconds: float) -> None:
        """Space requests at least ``seconds`` apart from now on (a robots.txt Crawl-delay)."""
        with self._lock:
            self.interval = max(self.interval, seconds)

    @contextmanager
    def request(self) -> Iterator[None]:
        with self._slots:
            with self._lock:
                now = self._clock()
                start = max(now, self._next_start)
                self._next_start = start + self.interval
            if start > now:
                self._sleep(start - now)
            yield


def check_limits(concurrency: int, rate: float) -> None:
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"page concurrency per host must be an integer >= 1, got {concurrency!r}")
    if not rate > 0:
        raise ValueError(f"page rate per host must be > 0 requests/second, got {rate!r}")


_LIMITERS: dict[tuple[str, int, float], HostLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def host_limiter(host: str, concurrency: int, rate: float) -> HostLimiter:
    """The worker process's one limiter for ``host`` under these limits.

    Process-wide because Beam gives each worker thread its own DoFn instance:
    two threads fetching from one host must still share one budget.
    """
    with _LIMITERS_LOCK:
        key = (host, concurrency, rate)
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = HostLimiter(concurrency, rate)
        return limiter


# --- fetching -----------------------------------------------------------------------------------


class PageFetcher:
    """Fetch and merge the pages of articles, politely; usable without Beam.

    Holds one :class:`HttpFetcher` (thread-safe connection pool) and one
    robots.txt cache; :meth:`fetch_all` runs up to ``concurrency_per_host``
    threads, and every request waits for its host's limiter.
    """

    def __init__(self, policy: FetchPolicy = FetchPolicy(), *,
                 concurrency_per_host: int = DEFAULT_CONCURRENCY_PER_HOST,
                 rate_per_host: float = DEFAULT_RATE_PER_HOST, user_agent: Optional[str] = None,
                 detect: Callable[..., tuple[str, float]] = detect_language) -> None:
        check_limits(concurrency_per_host, rate_per_host)
        agent = page_user_agent(user_agent or policy.user_agent)
        self.policy = dataclasses.replace(policy, user_agent=agent)
        self.concurrency_per_host = concurrency_per_host
        self.rate_per_host = rate_per_host
        self.detect = detect
        self.http = HttpFetcher(self.policy)
        self.http.session.headers["Accept"] = PAGE_ACCEPT  # the fetcher's default asks for feeds
        self.robots = RobotsCache(self._fetch_politely, agent)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "PageFetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def limiter_for(self, url: str) -> HostLimiter:
        return host_limiter(host_of(url) or "", self.concurrency_per_host, self.rate_per_host)

    def _fetch_politely(self, url: str) -> FetchResult:
        with self.limiter_for(url).request():
            return self.http.fetch(url)

    def _robots_verdict(self, url: str) -> Optional[str]:
        """None when ``url`` may be fetched, else why not."""
        rules = self.robots.rules_for(url)
        if not rules.allows(url, self.robots.user_agent):
            return f"robots.txt of {rules.origin} ({rules.outcome}) disallows {url}"
        delay = rules.delay_for(self.robots.user_agent)
        if delay is not None:
            if delay > MAX_CRAWL_DELAY_S:
                return f"robots.txt of {rules.origin} asks {delay:g}s between requests (> {MAX_CRAWL_DELAY_S:g}s)"
            self.limiter_for(url).respect_delay(delay)
        return None

    def full_text(self, article: Article) -> PageOutcome:
        """One article's page fetched, read and merged; never raises for a bad page or host."""
        url = article.url
        if not url or host_of(url) is None:
            return PageOutcome(article, FAILED, fetched=False, reason="no http(s) URL")
        rules = self.robots.rules_for(url)
        if rules.outcome == BLOCKED:
            # The guard refused the host when robots.txt was asked for; the page would be refused alike.
            LOGGER.info("page not fetched, keeping the feed's text: %s", rules.reason)
            return PageOutcome(article, FAILED, fetched=False, reason=rules.reason)
        refusal = self._robots_verdict(url)
        if refusal:
            LOGGER.info("not fetching page: %s", refusal)
            return PageOutcome(article, SKIPPED_ROBOTS, fetched=False, reason=refusal)
        try:
            result = self._fetch_politely(url)
        except FetchError as error:
            LOGGER.info("page fetch failed, keeping the feed's text: %s", error)
            return PageOutcome(article, FAILED, fetched=False, reason=str(error))
        if result.final_url != url:
            # The fetcher followed redirects without asking robots.txt; its
            # answer for where they led decides whether the page may be used.
            refusal = self._robots_verdict(result.final_url)
            if refusal:
                LOGGER.info("not using redirected page: %s", refusal)
                return PageOutcome(article, SKIPPED_ROBOTS, fetched=True, reason=refusal)
        if not is_html_response(result):
            reason = f"not an HTML page: {result.headers.get('content-type')!r} ({result.final_url})"
            return PageOutcome(article, FAILED, fetched=True, reason=reason)
        try:
            page = extract_page(result.body, result.final_url)
        except Exception as error:  # a parser crash on one hostile page must not fail the bundle
            LOGGER.warning("page extraction failed for %s: %r", result.final_url, error)
            return PageOutcome(article, FAILED, fetched=True, reason=f"{type(error).__name__}: {error}")
        if page is None:
            return PageOutcome(article, FAILED, fetched=True, reason=f"no main text in {result.final_url}")
        merged = merge_page(article, page, self.detect)
        outcome = USED if merged.body_source == "page" and article.body_source != "page" else KEPT_FEED_TEXT
        return PageOutcome(merged, outcome, fetched=True)

    def full_text_or_failure(self, article: Article) -> PageOutcome:
        """:meth:`full_text`, with any unforeseen error kept as a failed outcome.

        One odd URL or response must cost its page, not the whole bundle (a
        bundle that raises is retried and can fail the run).
        """
        try:
            return self.full_text(article)
        except Exception as error:  # counted as pages_failed; the article goes on with its feed text
            LOGGER.exception("unexpected error fetching the page of %s", article.url)
            return PageOutcome(article, FAILED, fetched=False, reason=f"{type(error).__name__}: {error}")

    def fetch_all(self, articles: Iterable[Article]) -> Iterator[PageOutcome]:
        """Outcomes for ``articles`` in input order, fetched by up to K threads."""
        with ThreadPoolExecutor(max_workers=self.concurrency_per_host,
                                thread_name_prefix="newsbeam-page") as pool:
            yield from pool.map(self.full_text_or_failure, articles)


# --- Beam ---------------------------------------------------------------------------------------


