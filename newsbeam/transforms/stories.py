"""Story ids in Beam (the grouping: :mod:`newsbeam.stories`; recent stories: :mod:`newsbeam.state.stories`).

Every article of a window meets in one group, which ``assign_stories`` walks
in event-time order: in batch the global window, so the whole run; in
streaming each fixed window (and each late pane) on its own, so there a story
spans one window. In batch with ``state_dir`` the run's articles may also join
the stories of earlier runs. The stories a group created or updated come out
as one tuple (``stories``); the graph writes them to the state's pending area
(:class:`WritePendingStories`) and the CLI folds them in with
``newsbeam.state.stories.commit_stories`` only after the run's data is
committed, as it does with the written ids.

The shuffle carries each article packed (:mod:`newsbeam.packing`), its
embedding bytes included. An article that cannot be grouped (unreadable
time, broken embedding) is dead-lettered with the reason; if the grouping
itself fails, every article of the group is.
"""
from __future__ import annotations

from typing import Iterable, Optional

import apache_beam as beam

from newsbeam.metrics import counter
from newsbeam.packing import pack, unpack
from newsbeam.records import Article, DeadLetter
from newsbeam.state.stories import load_recent_stories, write_pending_stories
from newsbeam.stories import (
    DEFAULT_STORY_THRESHOLD,
    DEFAULT_STORY_WINDOW_SECONDS,
    assign_stories,
    common_dims,
    story_problem,
)

DEAD_LETTER = "dead_letter"
STORIES = "stories"
STAGE = "story"
ONE_KEY = "stories"  # every article of a window in one group


def shuffled_form(article: Article) -> tuple[str, bytes]:
    """What the shuffle carries: the article packed, its embedding bytes with it (newsbeam.packing)."""
    return ONE_KEY, pack(article)


def dead_letter(article: Article, reason: str) -> DeadLetter:
    return DeadLetter(source=article.source, stage=STAGE, reason=reason[:2000],
                      excerpt=DeadLetter.excerpt_of(article.title or article.summary or article.body),
                      article_id=article.article_id)


class _AssignStoriesFn(beam.DoFn):
    """(key, [packed article]) -> Articles with story_id, one ``stories`` tuple, DeadLetters."""

    def __init__(self, threshold: float, window_seconds: float, state_dir: Optional[str]):
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.state_dir = state_dir

    def setup(self):
        self.failed = counter("dead_lettered_story")
        self.touched = counter("stories_created_or_updated")
        self.without = counter("articles_without_story")

    def process(self, keyed_group) -> Iterable:
        _, group = keyed_group
        articles = []
        for packed in group:
            try:
                articles.append(unpack(packed, Article))
            except Exception as error:  # not an article any more: still a row, not a loss
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(
                    source="unknown", stage=STAGE, reason=f"unreadable article: {type(error).__name__}: {error}"))
        recent = load_recent_stories(self.state_dir, window_seconds=self.window_seconds) if self.state_dir else []
        dims = common_dims(articles, recent)
        grouped = []
        for article in articles:
            problem = story_problem(article, dims)
            if problem:
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(article, problem))
            else:
                grouped.append(article)
        try:
            assigned, stories = assign_stories(grouped, recent, self.threshold, self.window_seconds)
        except Exception as error:  # every article must come out: as a dead letter with the reason
            reason = f"story grouping failed: {type(error).__name__}: {error}"
            for article in grouped:
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(article, reason))
            return
        self.touched.inc(len(stories))
        for article in assigned:
            if article.story_id is None:
                self.without.inc()
            yield article
        yield beam.pvalue.TaggedOutput(STORIES, tuple(stories))


class AssignStories(beam.PTransform):
    """Articles -> ``articles`` with story_id, ``stories`` (one tuple of Story per
    window), ``dead_letter`` (DeadLetters)."""

    def __init__(self, threshold: float = DEFAULT_STORY_THRESHOLD,
                 window_seconds: float = DEFAULT_STORY_WINDOW_SECONDS, state_dir: Optional[str] = None):
        super().__init__()
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"story threshold is a cosine, between -1 and 1; got {threshold!r}")
        if not window_seconds > 0:
            raise ValueError(f"story window must be a positive number of seconds, got {window_seconds!r}")
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.state_dir = state_dir

    def expand(self, articles):
        results = (
            articles
            | "KeyAllByOneKey" >> beam.Map(shuffled_form)
            | "GatherWindow" >> beam.GroupByKey()
            | "AssignStoryIds" >> beam.ParDo(_AssignStoriesFn(self.threshold, self.window_seconds, self.state_dir))
            .with_outputs(STORIES, DEAD_LETTER, main="articles")
        )
        return {"articles": results["articles"], STORIES: results[STORIES], DEAD_LETTER: results[DEAD_LETTER]}


class _WritePendingStoriesFn(beam.DoFn):
    def __init__(self, state_dir: str, run_id: str):
        self.state_dir = state_dir
        self.run_id = run_id

    def process(self, stories: tuple) -> Iterable[str]:
        yield write_pending_stories(self.state_dir, self.run_id, stories)


class WritePendingStories(beam.PTransform):
    """AssignStories' ``stories`` -> ``<state>/pending/<run_id>/stories.jsonl`` (batch: one
    tuple, one file); the paths written. Nothing reads it until ``commit_stories``."""

    def __init__(self, state_dir: str, run_id: str):
        super().__init__()
        self.state_dir = state_dir
        self.run_id = run_id

    def expand(self, stories):
        return stories | "WriteStoriesAside" >> beam.ParDo(_WritePendingStoriesFn(self.state_dir, self.run_id))
