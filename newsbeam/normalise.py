"""Turn a RawEntry into a clean Article: text, dates, canonical URL, hashes.

Everything here is a pure function so it can be property-tested without Beam;
``NormaliseEntries`` is the thin Beam wrapper with a dead-letter output.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import unicodedata
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dateutil import parser as date_parser

from newsbeam.records import Article, RawEntry

LOGGER = logging.getLogger(__name__)


# Query parameters that identify a campaign or a click, never the article.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "igshid",
        "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "ref_src", "ref_url",
        "cmpid", "ncid", "ocid", "spm", "at_medium", "at_campaign", "xtor",
        "__twitter_impression", "s_cid", "sr_share", "ito",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "at_custom")
DEFAULT_PORTS = {"http": "80", "https": "443"}

# Characters with no visible form that only hide or disguise text: zero-width
# space, word joiner, BOM, soft hyphen, and the bidi embedding/override/isolate
# controls (the "Trojan Source" set). Line/paragraph separators become newlines.
INVISIBLE_CHARS = "\u200b\u2060\ufeff\u00ad\u180e\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
INVISIBLE_RE = re.compile(f"[{INVISIBLE_CHARS}]")
# ZWNJ/ZWJ are spelling in Persian, Urdu, Indic scripts and emoji sequences, so
# they are kept inside words and removed only where they join nothing.
STRAY_JOINER_RE = re.compile(r"(?:(?<=\s)|^)[\u200c\u200d]+|[\u200c\u200d]+(?=\s|$)", re.MULTILINE)
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
INLINE_SPACE_RE = re.compile(r"[^\S\n]+")
MANY_NEWLINES_RE = re.compile(r"\n{3,}")
HTML_HINT_RE = re.compile(r"<[a-zA-Z!/][^>]*>|&(?:[a-zA-Z]{2,8}|#\d{1,7}|#x[0-9a-fA-F]{1,6});")

BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
DROPPED_TAGS = ("script", "style", "noscript", "template", "iframe", "object", "svg", "head")

EARLIEST_PLAUSIBLE = dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)
FUTURE_TOLERANCE = dt.timedelta(days=2)  # time zones and clock skew, not "next year"


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def clean_text(text: Optional[str]) -> str:
    """NFC, invisible and control characters removed, whitespace collapsed.

    Paragraph breaks survive as one blank line; nothing else about the
    characters changes, so Arabic and other RTL text stays byte-exact.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = INVISIBLE_RE.sub("", text)
    text = CONTROL_RE.sub(" ", text)
    text = STRAY_JOINER_RE.sub("", text)
    text = INLINE_SPACE_RE.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return MANY_NEWLINES_RE.sub("\n\n", text).strip()


def looks_like_html(text: str) -> bool:
    return bool(HTML_HINT_RE.search(text))


def html_to_text(html: Optional[str]) -> str:
    """Visible text of an HTML fragment with block elements as paragraph breaks."""
    if not html:
        return ""
    if not looks_like_html(html):
        return clean_text(html)
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return clean_text(html)
    for dropped in list(root.iter(*DROPPED_TAGS)):
        if dropped.getparent() is not None:
            dropped.drop_tree()
    etree.strip_elements(root, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    parts: list[str] = []

    def walk(element) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        is_block = tag.lower() in BLOCK_TAGS
        if is_block:
            parts.append("\n\n" if tag.lower() != "br" else "\n")
        if element.text:
            parts.append(element.text)
        for child in element:
            walk(child)
            if child.tail:
                parts.append(child.tail)
        if is_block and tag.lower() != "br":
            parts.append("\n\n")

    walk(root)
    return clean_text("".join(parts))


def parse_timestamp(value: Optional[str], *, now: Optional[dt.datetime] = None) -> Optional[str]:
    """ISO-8601 UTC for a date string, or None if absent, unparsable or absurd.

    Naive dates are taken as UTC. Absurd means before 1900 or more than two days
    in the future: such a date would put the article in a wrong partition.
    """
    if not value or not value.strip():
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    parsed = _parse_any_date(value.strip())
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    try:
        parsed = parsed.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None
    if parsed < EARLIEST_PLAUSIBLE or parsed > now + FUTURE_TOLERANCE:
        return None
    return parsed.isoformat(timespec="microseconds")


def _parse_any_date(value: str) -> Optional[dt.datetime]:
    # ISO-8601 first: exact and fast; dateutil for RFC 822 and the rest.
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        pass
    try:
        return date_parser.parse(value)
    except (ValueError, OverflowError, TypeError):
        return None


def is_tracking_param(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def canonical_url(url: Optional[str]) -> Optional[str]:
    """Lower-case scheme and host, no default port, fragment or tracking params.

    IPv6 hosts keep their brackets (``http://[::1]:8080/a``).

    Remaining query parameters are sorted so that the same article reached
    with parameters in another order gets the same id. Path case is kept.
    """
    if not url or not url.strip():
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    scheme = parts.scheme.lower()
    # hostname drops any user:password@ part: credentials never identify an article.
    host = (parts.hostname or "").lower().rstrip(".")
    if ":" in host:  # an IPv6 literal: hostname strips the brackets the URL needs
        host = f"[{host}]"
    if port is not None and str(port) != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not is_tracking_param(k)]
    path = parts.path or "/"
    return urlunsplit((scheme, host, path, urlencode(sorted(query), doseq=True), ""))


# Words that mark a name (query parameter, option) as holding a secret.
SECRET_WORDS = ("token", "key", "secret", "passw", "auth", "sig", "session", "credential")
SECRET_PARAM_RE = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_PARAM_RE.search(name))


def redact_url(url: Optional[str]) -> Optional[str]:
    """The URL fit for logs, manifests and rows: no user:password@, no secret query values.

    Fetching uses the real URL; everything newsbeam prints or stores uses this.
    """
    if not url or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable url>"
    if netloc == parts.netloc and not any(is_secret_name(k) for k, _ in query):
        return url
    cleaned = [(k, "REDACTED" if is_secret_name(k) else v) for k, v in query]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(cleaned), parts.fragment))


# A URL inside free text ends at white space, brackets or quotes: "(http://h/x?a=1)".
URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s()<>\"']+")
# "token=abc" anywhere, e.g. the path and query an HTTP library quotes in its error.
SECRET_VALUE_IN_TEXT_RE = re.compile(r"((?:[\w-]*(?:" + "|".join(SECRET_WORDS) + r")[\w-]*)=)[^&\s\"')]+", re.IGNORECASE)


def redact_text(text: Optional[str]) -> Optional[str]:
    """Free text (an error message) with every URL in it redacted and secret ``name=value`` masked."""
    if not text:
        return text
    text = URL_IN_TEXT_RE.sub(lambda match: redact_url(match.group(0)) or "", text)
    return SECRET_VALUE_IN_TEXT_RE.sub(r"\1REDACTED", text)


def stable_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def content_text(title: str, body: str) -> str:
    return f"{title}\n\n{body}".strip()


def normalise_entry(entry: RawEntry, *, now: Optional[dt.datetime] = None) -> Article:
    """Clean one entry. Raises ValueError when nothing of the article is left."""
    to_text = html_to_text if entry.body_is_html else clean_text
    title = html_to_text(entry.title) if entry.title else ""
    summary = to_text(entry.summary) if entry.summary else ""
    body = to_text(entry.body) if entry.body else ""
    if not title and not summary and not body:
        raise ValueError("entry has no title, summary or body text")
    url = canonical_url(entry.url)
    main_text = body or summary
    content_hash = stable_hash(content_text(title, main_text))
    article_id = stable_hash(url) if url else stable_hash(entry.source, content_hash)
    fetched_at = parse_timestamp(entry.fetched_at, now=now) if entry.fetched_at else None
    return Article(
        article_id=article_id,
        url=url,
        source=clean_text(entry.source) or entry.source,
        source_title=clean_text(entry.source_title) or None,
        title=title or None,
        summary=summary or None,
        body=body or None,
        authors=tuple(a for a in (clean_text(a) for a in entry.authors) if a),
        tags=tuple(t for t in (clean_text(t) for t in entry.tags) if t),
        published_at=parse_timestamp(entry.published, now=now),
        fetched_at=fetched_at or utc_now_iso(),
        content_hash=content_hash,
        language_hint=(entry.language_hint or "").strip().lower()[:16] or None,
    )
