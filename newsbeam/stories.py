"""Stories: the articles about one real-world event, across outlets and languages.

An article joins a story when its embedding (:mod:`newsbeam.embeddings`) is
close to the story's centroid and the story was last seen within a window of
the article's time; articles with equal ``content_hash`` always share one.

:func:`assign_stories` walks the articles in event-time order (published, else
fetched; then article_id), so its result does not depend on input order. Each
article, in turn:

1. joins the story that already holds its ``content_hash``, if any (at any age);
2. else, if it has an embedding, joins the story whose centroid is the most
   similar (cosine >= threshold) among stories with ``last_seen >= t - window``
   and ``first_seen <= t + window`` (a tie goes to the older story);
3. else opens a story of its own, ``"st-" + sha256(article_id)[:16]``.

An article without an embedding never opens a story: it gets the story of an
article with the same ``content_hash`` (whenever in the run that article
comes), else ``story_id`` None. A story's centroid is the normalised running
mean of its articles' vectors: ``c <- normalise(n * c + v)`` with ``n`` the
vectors already in it, which needs only ``c`` and ``n`` to carry on across runs.

The similarities are matrix products over chunks of articles against the
centroids of the stories still in the window; stories touched inside a chunk
are compared afresh, so the result is exactly that of one article at a time.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from newsbeam.embeddings import dequantise
from newsbeam.records import Article

# Cosine of an article's (centred) embedding with a story's centroid from which it joins the story.
# The rule (bench/story_pairs.py): the lowest threshold at which the largest story of the 1,878
# real-feed entries is a real story (7 articles), so one outlet's briefs do not chain; precision
# first. With heads-v25's centred vectors that is 0.53: on the 369 labelled pairs P 0.97, R 0.77
# (across languages 1.00, 0.76). The threshold follows the heads (docs/research/stories.md).
DEFAULT_STORY_THRESHOLD = 0.53
# How far apart in event time an article and a story's last article may be.
DEFAULT_STORY_WINDOW_SECONDS = 3 * 24 * 3600

STORY_ID_PREFIX = "st-"
STORY_ID_HEX = 16
MICROS = 1_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
CHUNK_ELEMENTS = 1 << 22  # similarities held at once (16 MB of float32)
MIN_CHUNK, MAX_CHUNK = 16, 1024


@dataclass(frozen=True)
class Story:
    """One event's articles so far. Times are ISO-8601 UTC; the centroid is a float32 unit vector."""

    story_id: str
    centroid: np.ndarray = field(compare=False, repr=False)
    first_seen: str
    last_seen: str
    article_count: int  # every article in the story
    vector_count: int  # the articles whose vectors make the centroid
    languages: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


def event_time(article: Article) -> str:
    """When the article happened for grouping: published, else fetched."""
    return article.published_at or article.fetched_at


def to_micros(timestamp: str) -> int:
    """ISO-8601 (naive taken as UTC) as microseconds since the epoch."""
    parsed = dt.datetime.fromisoformat(timestamp)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return (parsed - EPOCH) // dt.timedelta(microseconds=1)


def from_micros(micros: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=int(micros))).isoformat(timespec="microseconds")


def story_id_for(article_id: str, attempt: int = 0) -> str:
    """The id of a story opened by this article (``attempt`` > 0 only when that id is taken)."""
    key = article_id if attempt == 0 else f"{article_id}#{attempt}"
    return STORY_ID_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:STORY_ID_HEX]


def common_dims(articles: Iterable[Article], recent: Sequence[Story] = ()) -> Optional[int]:
    """The vector size of this run: its most common embedding length, else the recent stories'."""
    sizes = Counter(len(a.embedding) for a in articles if a.embedding is not None)
    if sizes:
        return min(sizes, key=lambda size: (-sizes[size], size))
    return int(recent[0].centroid.shape[-1]) if recent else None


def story_problem(article: Article, dims: Optional[int] = None) -> Optional[str]:
    """Why the article cannot be grouped (unreadable time, broken embedding), or None."""
    try:
        to_micros(event_time(article))
    except (TypeError, ValueError):
        return f"unreadable event time {event_time(article)!r}"
    if (article.embedding is None) != (article.embedding_scale is None):
        return "embedding and embedding_scale must come together"
    if article.embedding is None:
        return None
    if not article.embedding or (dims is not None and len(article.embedding) != dims):
        return f"embedding has {len(article.embedding)} values, expected {dims}"
    scale = article.embedding_scale
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        return f"embedding_scale must be a positive number, got {scale!r}"
    if not any(article.embedding):
        return "embedding is all zeros"
    return None


def assign_stories(articles: Iterable[Article], recent: Sequence[Story] = (),
                   threshold: float = DEFAULT_STORY_THRESHOLD,
                   window_seconds: float = DEFAULT_STORY_WINDOW_SECONDS) -> tuple[list[Article], list[Story]]:
    """Articles (in input order) with ``story_id`` set, and the stories they created or updated.

    ``recent`` are stories of earlier runs that these articles may join (those
    of another vector size, from another encoder, are left out). Raises
    ValueError for an article :func:`story_problem` refuses (vet them first).
    """
    articles = list(articles)
    dims = common_dims(articles, recent)
    recent = sorted((story for story in recent if story.centroid.shape[-1] == dims),
                    key=lambda story: (story.first_seen, story.story_id))
    for article in articles:
        problem = story_problem(article, dims)
        if problem:
            raise ValueError(f"article {article.article_id}: {problem}")
    times = [to_micros(event_time(article)) for article in articles]
    order = sorted(range(len(articles)), key=lambda i: (times[i], articles[i].article_id, articles[i].content_hash,
                                                        articles[i].source, articles[i].url or ""))
    book = _StoryBook(dims or 0, recent)
    window = int(window_seconds * MICROS)
    limit = np.float32(threshold)
    story_of: list[Optional[int]] = [None] * len(articles)
    deferred: list[int] = []
    start = 0
    while start < len(order):
        book.retire(before=times[order[start]] - window)
        chunk = order[start:start + book.chunk_size()]
        start += len(chunk)
        embedded = [i for i in chunk if articles[i].embedding is not None]
        vectors = _vectors([articles[i] for i in embedded], dims or 0)
        row_of = {i: row for row, i in enumerate(embedded)}
        prior = book.prior_candidates(vectors, np.array([times[i] for i in embedded], dtype=np.int64), limit, window)
        book.begin_chunk(len(chunk))
        for i in chunk:
            article, vector = articles[i], None
            story = book.by_hash.get(article.content_hash)
            if article.embedding is not None:
                vector = vectors[row_of[i]]
                if story is None:
                    story = book.most_similar(vector, times[i], prior[row_of[i]], limit, window)
                if story is None:
                    story = book.open(article.article_id, times[i])
            elif story is None:
                deferred.append(i)
                continue
            book.join(story, article, times[i], vector)
            story_of[i] = story
        book.end_chunk()
    for i in deferred:  # no vector: only an article of the same content, wherever it came in the run
        story = book.by_hash.get(articles[i].content_hash)
        if story is not None:
            book.join(story, articles[i], times[i], None)
            story_of[i] = story
    assigned = [article.replace(story_id=None if story is None else book.ids[story])
                for article, story in zip(articles, story_of)]
    return assigned, book.stories()


def _vectors(articles: list[Article], dims: int) -> np.ndarray:
    """(N, dims) float32 unit vectors of the articles' stored embeddings."""
    if not articles:
        return np.zeros((0, dims), dtype=np.float32)
    values = np.frombuffer(b"".join(a.embedding for a in articles), dtype=np.int8).reshape(len(articles), dims)
    vectors = dequantise(values, np.array([a.embedding_scale for a in articles], dtype=np.float32))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    if size <= len(array):
        return array
    bigger = np.zeros((max(size, 2 * len(array), 64),) + array.shape[1:], dtype=array.dtype)
    bigger[:len(array)] = array
    return bigger


class _StoryBook:
    """Every story of a run, as arrays by story index, and the ones still in the window.

    The first ``held`` rows of ``held_stories`` / ``held_centroids`` are the
    stories similarity is computed against; stories out of the window leave
    them in batches (one not yet gone fails the window test). Stories touched
    in the current chunk are ``live``: compared with their current centroid.
    """

    def __init__(self, dims: int, recent: Sequence[Story]):
        count = len(recent)
        self.dims = dims
        self.ids = [story.story_id for story in recent]
        self.taken = set(self.ids)
        self.centroids = _grown(np.zeros((0, dims), dtype=np.float32), count)
        self.first = _grown(np.zeros(0, dtype=np.int64), count)
        self.last = _grown(np.zeros(0, dtype=np.int64), count)
        self.weights = _grown(np.zeros(0, dtype=np.int64), count)
        self.counts = [story.article_count for story in recent]
        self.languages = [set(story.languages) for story in recent]
        self.sources = [set(story.sources) for story in recent]
        for index, story in enumerate(recent):
            self.centroids[index] = story.centroid
            self.first[index], self.last[index] = to_micros(story.first_seen), to_micros(story.last_seen)
            self.weights[index] = story.vector_count
        self.by_hash: dict[str, int] = {}
        self.touched: set[int] = set()
        self.held = count
        self.held_stories = _grown(np.arange(count, dtype=np.int64), count)
        self.held_centroids = _grown(self.centroids[:count].copy(), count)
        self.position = {story: story for story in range(count)}
        self.live: Optional[np.ndarray] = None
        self.live_stories: list[int] = []
        self.live_row: dict[int, int] = {}

    @property
    def active(self) -> np.ndarray:
        return self.held_stories[:self.held]

    def chunk_size(self) -> int:
        return max(MIN_CHUNK, min(MAX_CHUNK, CHUNK_ELEMENTS // max(1, self.held)))

    def retire(self, before: int) -> None:
        """Drop stories last seen before ``before`` once a quarter of those held are out."""
        alive = np.nonzero(self.last[self.active] >= before)[0]
        if len(alive) < 0.75 * self.held:
            self.held_stories[:len(alive)] = self.held_stories[alive]
            self.held_centroids[:len(alive)] = self.held_centroids[alive]
            self.held = len(alive)
            self.position = {int(story): position for position, story in enumerate(self.active)}

    def prior_candidates(self, vectors: np.ndarray, times: np.ndarray, limit: np.float32,
                         window: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per vector: the held stories (and cosines) over ``limit`` and inside the window, as the chunk starts."""
        if not len(vectors) or not len(self.active):
            return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))] * len(vectors)
        similarity = vectors @ self.held_centroids[:self.held].T
        rows, columns = np.nonzero(similarity >= limit)
        stories = self.active[columns]
        inside = (self.last[stories] >= times[rows] - window) & (self.first[stories] <= times[rows] + window)
        rows, columns, stories = rows[inside], columns[inside], stories[inside]
        values = similarity[rows, columns]
        bounds = np.searchsorted(rows, np.arange(len(vectors) + 1))
        return [(stories[bounds[k]:bounds[k + 1]], values[bounds[k]:bounds[k + 1]]) for k in range(len(vectors))]

    def most_similar(self, vector: np.ndarray, time: int, prior: tuple[np.ndarray, np.ndarray],
                     limit: np.float32, window: int) -> Optional[int]:
        best: Optional[tuple[float, int]] = None  # (-cosine, story): the smallest wins
        for story, value in zip(prior[0].tolist(), prior[1].tolist()):
            if story not in self.live_row and (best is None or (-value, story) < best):
                best = (-value, story)
        if self.live_stories:
            similarity = self.live[:len(self.live_stories)] @ vector
            for row in np.nonzero(similarity >= limit)[0].tolist():
                story = self.live_stories[row]
                if self.last[story] >= time - window and self.first[story] <= time + window:
                    candidate = (-float(similarity[row]), story)
                    best = candidate if best is None or candidate < best else best
        return None if best is None else best[1]

    def open(self, article_id: str, time: int) -> int:
        attempt = 0
        while story_id_for(article_id, attempt) in self.taken:
            attempt += 1
        story = len(self.ids)
        self.ids.append(story_id_for(article_id, attempt))
        self.taken.add(self.ids[-1])
        self.centroids = _grown(self.centroids, story + 1)
        self.first, self.last = _grown(self.first, story + 1), _grown(self.last, story + 1)
        self.weights = _grown(self.weights, story + 1)
        self.first[story] = self.last[story] = time
        self.counts.append(0)
        self.languages.append(set())
        self.sources.append(set())
        return story

    def join(self, story: int, article: Article, time: int, vector: Optional[np.ndarray]) -> None:
        if vector is not None:
            mean = self.centroids[story] * np.float32(self.weights[story]) + vector
            norm = np.linalg.norm(mean)
            self.centroids[story] = mean / norm if norm > 0 else vector
            self.weights[story] += 1
        self.counts[story] += 1
        self.first[story] = min(self.first[story], time)
        self.last[story] = max(self.last[story], time)
        self.languages[story].add(article.language)
        self.sources[story].add(article.source)
        self.by_hash.setdefault(article.content_hash, story)
        self.touched.add(story)
        if self.live is not None:
            row = self.live_row.setdefault(story, len(self.live_stories))
            if row == len(self.live_stories):
                self.live_stories.append(story)
            self.live[row] = self.centroids[story]

    def begin_chunk(self, size: int) -> None:
        self.live = np.zeros((size, self.dims), dtype=np.float32)
        self.live_stories, self.live_row = [], {}

    def end_chunk(self) -> None:
        """Touched stories' centroids into the held matrix; new (or revived) stories appended."""
        for story in self.live_stories:
            position = self.position.setdefault(story, self.held)
            if position == self.held:
                self.held += 1
                self.held_stories = _grown(self.held_stories, self.held)
                self.held_centroids = _grown(self.held_centroids, self.held)
                self.held_stories[position] = story
            self.held_centroids[position] = self.centroids[story]
        self.live, self.live_stories, self.live_row = None, [], {}

    def stories(self) -> list[Story]:
        """The stories created or updated, oldest first."""
        made = [Story(story_id=self.ids[s], centroid=self.centroids[s].copy(), first_seen=from_micros(self.first[s]),
                      last_seen=from_micros(self.last[s]), article_count=self.counts[s],
                      vector_count=int(self.weights[s]), languages=tuple(sorted(self.languages[s])),
                      sources=tuple(sorted(self.sources[s])))
                for s in self.touched]
        return sorted(made, key=lambda story: (story.first_seen, story.story_id))
