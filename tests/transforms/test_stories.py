"""AssignStories in a real pipeline: story ids on the rows, the stories aside, bad rows dead-lettered."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from newsbeam.embeddings import normalise
from newsbeam.state.stories import commit_stories, load_recent_stories, save_recent_stories
from newsbeam.stories import Story, story_id_for
from newsbeam.transforms.stories import DEAD_LETTER, STORIES, AssignStories, WritePendingStories
from tests.support.builders import make_article, with_embedding

DIMS = 32


def unit(seed: int) -> np.ndarray:
    return normalise(np.random.default_rng(seed).normal(size=DIMS))


def embedded(n: int, vector, **changes):
    return with_embedding(make_article(n).replace(**changes), vector)


def test_rows_get_story_ids_stories_come_aside_and_broken_rows_are_dead_lettered():
    flood, transfer = unit(1), unit(2)
    articles = [
        embedded(1, flood, source="https://a.example/rss"),
        embedded(2, normalise(flood + 0.05 * unit(3)), source="https://b.example/rss", language="fr",
                 published_at="2024-05-01T12:00:00+00:00"),
        embedded(3, transfer),
        make_article(4).replace(content_hash=make_article(1).content_hash),  # no vector, same content as 1
        make_article(5),  # no vector, nothing alike: no story
        embedded(6, flood).replace(embedding_scale=float("inf")),
        embedded(7, flood).replace(published_at=None, fetched_at="not a time"),
    ]
    flood_id, transfer_id = story_id_for("id000001"), story_id_for("id000003")
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        results = pipeline | beam.Create(articles) | AssignStories(threshold=0.9)
        assert_that(results["articles"] | beam.Map(lambda a: (a.article_id, a.story_id)), equal_to([
            ("id000001", flood_id), ("id000002", flood_id), ("id000003", transfer_id),
            ("id000004", flood_id), ("id000005", None)]), label="StoryIds")
        assert_that(results["articles"] | "EmbeddingsKept" >> beam.Map(lambda a: a.embedding is not None),
                    equal_to([True, True, True, False, False]), label="EmbeddingsSurviveTheShuffle")
        assert_that(results[STORIES] | beam.Map(lambda stories: sorted(
            (s.story_id, s.article_count, s.vector_count, s.languages) for s in stories)),
            equal_to([sorted([(flood_id, 3, 2, ("en", "fr")), (transfer_id, 1, 1, ("en",))])]), label="Stories")
        assert_that(results[DEAD_LETTER] | beam.Map(lambda d: (d.article_id, d.stage, d.reason.split(" ")[0])),
                    equal_to([("id000006", "story", "embedding_scale"), ("id000007", "story", "unreadable")]),
                    label="DeadLetters")


def test_a_batch_run_joins_the_stories_in_state_and_commits_them_after_its_data(tmp_path):
    state = str(tmp_path / "state")
    now = dt.datetime.now(dt.timezone.utc)
    vector = unit(9)
    earlier = Story("st-earlier", vector, (now - dt.timedelta(days=1)).isoformat(),
                    (now - dt.timedelta(days=1)).isoformat(), 2, 2, ("de",), ("https://c.example/rss",))
    save_recent_stories(state, [earlier], now=now)
    today = now.isoformat()
    articles = [embedded(1, normalise(vector + 0.05 * unit(10)), published_at=today), embedded(2, unit(11),
                                                                                              published_at=today)]
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        results = pipeline | beam.Create(articles) | AssignStories(state_dir=state)
        assert_that(results["articles"] | beam.Map(lambda a: (a.article_id, a.story_id)),
                    equal_to([("id000001", "st-earlier"), ("id000002", story_id_for("id000002"))]))
        results[STORIES] | WritePendingStories(state, "run-1")
    assert [s.article_count for s in load_recent_stories(state)] == [2]  # nothing moves before the commit
    assert commit_stories(state, "run-1") == 2
    assert {(s.story_id, s.article_count) for s in load_recent_stories(state)} == {
        ("st-earlier", 3), (story_id_for("id000002"), 1)}
