"""Story grouping (newsbeam.stories) and the recent stories kept in --state (newsbeam.state.stories)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import random

import numpy as np
import pytest

import newsbeam.stories as stories_module
from newsbeam.embeddings import from_record, normalise
from newsbeam.state.stories import (
    commit_stories,
    load_recent_stories,
    pending_stories_path,
    save_recent_stories,
    stories_path,
    write_pending_stories,
)
from newsbeam.stories import Story, assign_stories, story_id_for, story_problem
from tests.support.builders import make_article, with_embedding

DIMS = 64
DAY = 24 * 3600
T0 = dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)


def unit(seed: int) -> np.ndarray:
    return normalise(np.random.default_rng(seed).normal(size=DIMS))


def near(vector: np.ndarray, seed: int, spread: float = 0.25) -> np.ndarray:
    """A vector at a cosine of about 1/sqrt(1 + spread**2) from ``vector``."""
    noise = np.random.default_rng(seed).normal(size=DIMS) / np.sqrt(DIMS)
    return normalise(vector + spread * noise)


def at(days: float) -> str:
    return (T0 + dt.timedelta(days=days)).isoformat()


def article(n: int, vector=None, *, days: float = 0.0, content_hash=None, lang="en", source=None):
    made = make_article(n, lang=lang, published=at(days))
    made = made.replace(content_hash=content_hash or made.content_hash, source=source or made.source)
    return with_embedding(made, vector) if vector is not None else made


def stored(made) -> np.ndarray:
    return normalise(from_record(made.embedding, made.embedding_scale))


def story_ids(articles) -> dict[str, str]:
    return {a.article_id: a.story_id for a in articles}


def test_near_duplicates_share_a_story_named_after_its_first_article():
    flood, transfer = unit(1), unit(2)
    articles = [article(3, near(flood, 30), days=0.5), article(1, flood, days=0.0),
                article(2, near(flood, 20), days=0.2, lang="fr"), article(4, transfer, days=0.1)]
    assigned, stories = assign_stories(articles, threshold=0.8)
    ids = story_ids(assigned)
    first = "st-" + hashlib.sha256(b"id000001").hexdigest()[:16]
    assert ids == {"id000001": first, "id000002": first, "id000003": first, "id000004": story_id_for("id000004")}
    assert [a.article_id for a in assigned] == ["id000003", "id000001", "id000002", "id000004"]  # input order kept
    flood_story = next(s for s in stories if s.story_id == first)
    assert flood_story.article_count == flood_story.vector_count == 3
    assert flood_story.languages == ("en", "fr")
    assert flood_story.first_seen == "2024-05-01T10:00:00.000000+00:00"
    assert flood_story.last_seen == "2024-05-01T22:00:00.000000+00:00"
    mean = normalise(stored(articles[1]) + stored(articles[2]) + stored(articles[0]))
    assert float(mean @ flood_story.centroid) > 0.9999  # the normalised running mean of unit vectors
    assert np.linalg.norm(flood_story.centroid) == pytest.approx(1.0, abs=1e-5)


def test_result_does_not_depend_on_input_order_and_matches_one_article_at_a_time(monkeypatch):
    centres = [unit(100 + k) for k in range(25)]
    rng = random.Random(5)
    articles = [article(n, near(centres[n % 25], n, spread=rng.choice([0.2, 0.5, 0.9])), days=rng.random() * 6,
                        source=f"https://outlet{n % 7}.example/rss")
                for n in range(400)]
    reference, reference_stories = assign_stories(articles, threshold=0.85, window_seconds=2 * DAY)
    assert 25 < len(reference_stories) < 400  # some join, some don't: the order matters
    for seed in range(3):
        shuffled = articles[:]
        random.Random(seed).shuffle(shuffled)
        again, again_stories = assign_stories(shuffled, threshold=0.85, window_seconds=2 * DAY)
        assert story_ids(again) == story_ids(reference)
        assert again_stories == reference_stories
        assert all(np.array_equal(a.centroid, b.centroid) for a, b in zip(again_stories, reference_stories))
    # chunked matrix products give what comparing one article at a time gives
    monkeypatch.setattr(stories_module, "MIN_CHUNK", 1)
    monkeypatch.setattr(stories_module, "MAX_CHUNK", 1)
    one_by_one, one_by_one_stories = assign_stories(articles, threshold=0.85, window_seconds=2 * DAY)
    assert story_ids(one_by_one) == story_ids(reference)
    assert one_by_one_stories == reference_stories


def test_a_story_takes_articles_within_the_window_of_its_last_article():
    vector = unit(7)
    chained = [article(1, vector, days=0), article(2, vector, days=2.5), article(3, vector, days=5.0)]
    gap = [article(4, vector, days=0), article(5, vector, days=3.5)]
    ids = story_ids(assign_stories(chained, window_seconds=3 * DAY)[0])
    assert ids["id000001"] == ids["id000002"] == ids["id000003"]  # 5 days from the first, 2.5 from the last
    ids = story_ids(assign_stories(gap, window_seconds=3 * DAY)[0])
    assert ids["id000004"] != ids["id000005"]


def test_equal_content_hash_always_shares_a_story_and_no_vector_joins_only_by_it():
    one, other = unit(8), unit(9)
    articles = [
        article(1, one, days=0, content_hash="same"),
        article(2, other, days=10, content_hash="same"),  # unlike vector, far outside the window
        article(3, None, days=-1, content_hash="same"),  # no vector, before either: still joins
        article(4, None, days=0, content_hash="alone"),  # no vector, no twin: no story
        article(5, near(one, 1, 0.1), days=0.1),
    ]
    assigned, stories = assign_stories(articles)
    ids = story_ids(assigned)
    assert ids["id000001"] == ids["id000002"] == ids["id000003"] == ids["id000005"] == story_id_for("id000001")
    assert ids["id000004"] is None
    [story] = stories
    assert (story.article_count, story.vector_count) == (4, 3)
    assert story.first_seen == "2024-04-30T10:00:00.000000+00:00"


def test_threshold_is_inclusive_at_the_stored_vectors_cosine():
    base = unit(11)
    orthogonal = normalise(unit(12) - (unit(12) @ base) * base)
    articles = [article(1, base), article(2, 0.8 * base + 0.6 * orthogonal, days=0.1)]
    cosine = float(stored(articles[0]) @ stored(articles[1]))
    assert abs(cosine - 0.8) < 0.01  # int8 rounding moves it a little
    joined = story_ids(assign_stories(articles, threshold=cosine - 1e-4)[0])
    apart = story_ids(assign_stories(articles, threshold=cosine + 1e-4)[0])
    assert joined["id000001"] == joined["id000002"]
    assert apart["id000001"] != apart["id000002"]


def test_articles_that_cannot_be_grouped_are_named_and_refused():
    good = article(1, unit(1))
    assert story_problem(good) is None and story_problem(article(2)) is None
    assert "time" in story_problem(good.replace(published_at="yesterday"))
    assert "come together" in story_problem(good.replace(embedding_scale=None))
    assert "expected 32" in story_problem(good, dims=32)
    assert "positive" in story_problem(good.replace(embedding_scale=float("nan")))
    with pytest.raises(ValueError, match="id000003: embedding has 10 values, expected 64"):
        assign_stories([good, article(2, unit(2)), good.replace(article_id="id000003", embedding=bytes(range(1, 11)))])


def test_recent_stories_round_trip_drop_old_ones_and_take_new_articles(tmp_path):
    state = str(tmp_path / "state")
    vector = unit(21)
    first_run, first_stories = assign_stories(
        [article(1, vector, days=0, source="https://user:pw@feeds.example/rss?token=abc"),
         article(2, unit(22), days=-10)])
    now = T0 + dt.timedelta(days=1)
    assert save_recent_stories(state, first_stories, now=now) == 1  # the story last seen 11 days ago is gone
    [loaded] = load_recent_stories(state, now=now)
    [kept] = [s for s in first_stories if s.story_id == story_ids(first_run)["id000001"]]
    assert loaded == dataclasses.replace(kept, sources=("https://feeds.example/rss?token=REDACTED",))
    assert float(loaded.centroid @ kept.centroid) > 0.9999 and loaded.centroid.dtype == np.float32
    assert "pw@" not in (tmp_path / "state" / "stories.jsonl").read_text(encoding="utf-8")
    assert load_recent_stories(state, now=now + dt.timedelta(days=4)) == []  # out of the window later

    other_encoder = Story("st-other", normalise(np.ones(8)), at(1), at(1), 1, 1)  # another vector size: left out
    second_run, updated = assign_stories([article(3, near(vector, 3, 0.1), days=1.5)], recent=[other_encoder, loaded])
    assert story_ids(second_run)["id000003"] == loaded.story_id
    [story] = updated
    assert (story.story_id, story.article_count, story.first_seen) == (loaded.story_id, 2, loaded.first_seen)


def test_commit_folds_a_runs_pending_stories_into_the_state(tmp_path):
    state = str(tmp_path / "state")
    old = Story("st-old", unit(1), at(0), at(0), 1, 1, ("en",), ("a",))
    kept = Story("st-kept", unit(2), at(0), at(2), 3, 3, ("en", "fr"), ("a", "b"))
    save_recent_stories(state, [old, kept], now=T0 + dt.timedelta(days=2))
    grown = Story("st-kept", unit(2), at(0), at(4), 5, 5, ("de", "en", "fr"), ("a", "b", "c"))
    new = Story("st-new", unit(3), at(4), at(4), 1, 1, ("en",), ("c",))
    write_pending_stories(state, "run-2", [grown, new])
    assert commit_stories(state, "run-2", now=T0 + dt.timedelta(days=4)) == 2
    lines = [json.loads(line) for line in (tmp_path / "state" / "stories.jsonl").read_text().splitlines()]
    assert [(row["story_id"], row["article_count"]) for row in lines] == [("st-kept", 5), ("st-new", 1)]
    assert not (tmp_path / "state" / "pending" / "run-2" / "stories.jsonl").exists()
    assert pending_stories_path(state, "run-2").endswith("pending/run-2/stories.jsonl")
    assert stories_path(state).endswith("stories.jsonl")
    assert commit_stories(str(tmp_path / "empty"), "run-3") == 0  # nothing to keep: nothing written
    assert not (tmp_path / "empty").exists()


FLOOD_EN = ("Flash floods kill 23 in Valencia as the Turia bursts its banks",
            "Torrential rain sent the Turia river over its banks in Valencia on Tuesday night, killing at least "
            "23 people and forcing thousands from their homes, regional officials said.")
FLOOD_FR = ("Inondations à Valence : au moins 23 morts après la crue du Turia",
            "Des pluies diluviennes ont fait déborder le Turia dans la nuit de mardi à mercredi. Les autorités "
            "régionales font état d'au moins 23 morts et de milliers d'habitants évacués à Valence.")
TRANSFER_EN = ("Striker completes record €90m move to Bayern Munich",
               "The 24-year-old forward signed a five-year contract with the German champions on Friday after "
               "passing a medical, ending weeks of talks with his former club.")


def test_a_french_and_an_english_report_of_one_flood_share_a_story_with_the_embedded_model():
    from newsbeam.labelling import PASSAGE_PREFIX
    from newsbeam.labelling.input_text import article_text
    from newsbeam.labelling.labeller import load_labeller

    texts = [FLOOD_EN, FLOOD_FR, TRANSFER_EN]
    vectors = load_labeller().embed([article_text(title, lead, None) for title, lead in texts], prefix=PASSAGE_PREFIX)
    articles = [article(n, vector, days=0.1 * n, lang=lang)
                for n, (vector, lang) in enumerate(zip(vectors, ["en", "fr", "en"]), 1)]
    ids = story_ids(assign_stories(articles)[0])
    assert ids["id000001"] == ids["id000002"] != ids["id000003"]
