"""Training rows from the later stretches of long training articles (``train-heads --article_windows``)."""
from __future__ import annotations

from typing import Optional

from newsbeam.labelling import PASSAGE_PREFIX

# Each window is the size of the pipeline's default token budget (--max_tokens).
DEFAULT_ARTICLE_WINDOWS = 10
DEFAULT_WINDOW_TOKENS = 128


class ArticleWindows:
    """More training rows from a long article: its headline followed by each
    later stretch of the body, cut from the body's tokens so that headline
    and stretch fill one ``window_tokens`` budget (but at least ``min_stretch``
    body tokens, however long the headline), at most ``count`` of them.

    The pipeline labels an article from its headline and lead, so a training
    article is otherwise read only as far as its first stretch. The later
    ones are the same article's news in the same desk's words: on the frozen
    encoder, ten of them per MasakhaNEWS training article raised MasakhaNEWS
    dev macro-F1 by 1.5 points and SIB-200's by 1.8, and the whole recipe
    with them (heads-v3) by 3.6 and 1.4 (docs/labels.md).
    """

    def __init__(self, tokenizer, count: int = DEFAULT_ARTICLE_WINDOWS, window_tokens: int = DEFAULT_WINDOW_TOKENS,
                 prefix: str = PASSAGE_PREFIX, min_stretch: int = 16):
        if count < 0 or window_tokens < 8:
            raise ValueError(f"article windows need count >= 0 and window_tokens >= 8, got {count}, {window_tokens}")
        self.tokenizer = tokenizer
        self.count = count
        self.window_tokens = window_tokens
        self.prefix = prefix
        self.min_stretch = min_stretch

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer([text], truncation=False, add_special_tokens=False)["input_ids"][0])

    def __call__(self, headline: Optional[str], body: Optional[str]) -> list[str]:
        from newsbeam.labelling.input_text import article_text

        if self.count == 0 or not body:
            return []
        headline_tokens = len(self._ids(self.prefix + (headline or ""))) + 2  # + the special tokens
        stretch = max(self.min_stretch, self.window_tokens - headline_tokens)
        body_ids = self._ids(body)
        stretches = [body_ids[start:start + stretch]
                     for start in range(stretch, min(len(body_ids), stretch * (self.count + 1)), stretch)]
        stretches = [ids for ids in stretches if len(ids) * 2 >= stretch]  # a last scrap is not an article
        decoded = self.tokenizer.batch_decode(stretches, skip_special_tokens=True)
        return [article_text(headline, None, text) for text in decoded if text.strip()]
