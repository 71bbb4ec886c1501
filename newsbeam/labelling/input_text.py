"""The text a model reads: an article's headline and lead (:func:`article_text`),
with escape sequences that reached it undecoded, decoded (:func:`model_text`).

Text that passed through JSON or HTML encoders once too often keeps their
escapes as characters: ``i\\u2019m``, ``Gaffrey\\u002c``, ``AT&amp;T``. To a
human reader (and in the Parquet row) that is a blemish; to a subword
tokenizer it is a different word (``\\u002c`` becomes four pieces where a
comma is one). One English tweet in eight in XLM-T carries them; none of
the 50 real feeds in ``../shared`` does, so for feed text this is a guard
rather than a fix.

:func:`model_text` decodes both kinds until nothing changes, so text escaped
twice comes out whole and calling it again changes nothing. Training,
evaluation and the pipeline all pass text through it at the point where it
becomes token ids, so the heads read at inference what they were trained on.
The stored article text is never changed.
"""
from __future__ import annotations

import html
import json
import re
from typing import Optional

# a run of \uXXXX escapes, so a surrogate pair (\ud83d\ude00) decodes as one emoji
UNICODE_ESCAPES = re.compile(r"(?:\\u[0-9a-fA-F]{4})+")
# a bare '&' (AT&T, "R&D") is not a reference and survives
HTML_REFERENCE = re.compile(r"&(?:#[0-9]{1,7};|#[xX][0-9a-fA-F]{1,6};|[A-Za-z][A-Za-z0-9]{1,31};)")
MAX_ROUNDS = 8  # escaped more often than this is not text any more


def _decode_unicode_escapes(match: re.Match) -> str:
    decoded = json.loads(f'"{match.group(0)}"')
    # a lone surrogate cannot be encoded as UTF-8 later: it becomes U+FFFD here
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _decode_html_reference(match: re.Match) -> str:
    # one reference at a time: html.unescape on the whole text would also decode
    # legacy references without ';' inside URLs ("?a=1&para=2" -> "?a=1¶=2")
    return html.unescape(match.group(0))


def model_text(text: str) -> str:
    """``text`` with literal ``\\uXXXX`` escapes and HTML character references decoded."""
    for _ in range(MAX_ROUNDS):
        if "\\u" not in text and "&" not in text:
            return text
        decoded = UNICODE_ESCAPES.sub(_decode_unicode_escapes, text)
        decoded = HTML_REFERENCE.sub(_decode_html_reference, decoded)
        if decoded == text:
            return text
        text = decoded
    return text


# headline + lead only: far more characters than any token budget needs, so
# tokenising a very long body costs nothing extra
MAX_LEAD_CHARS = 6000
WHITESPACE = re.compile(r"[ \t\r\f\v\u00a0]+")
BLANK_LINES = re.compile(r"\n\s*\n+")


def _clean(text: Optional[str]) -> str:
    if not text:
        return ""
    return BLANK_LINES.sub("\n", WHITESPACE.sub(" ", text)).strip()


def article_text(title: Optional[str], summary: Optional[str], body: Optional[str]) -> str:
    """Headline, then the lead: the summary unless the body already opens with
    it, then the body. Cut at ``MAX_LEAD_CHARS``; the token budget cuts further."""
    title, summary, body = _clean(title), _clean(summary), _clean(body)
    parts = [title] if title else []
    repeats_body = bool(body) and summary[:100] in body[:len(summary) + 200]
    if summary and summary != title and not repeats_body:
        parts.append(summary)
    if body:
        parts.append(body)
    return "\n".join(parts)[:MAX_LEAD_CHARS]
