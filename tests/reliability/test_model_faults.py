"""The model raises during inference -> that batch's articles become dead letters, the rest go on.

The real ``LabelArticles`` transform and ``ArticleModelHandler`` (RunInference,
batching, exception handling) run on Beam's FnApiRunner; only ``load_model``
is replaced, by a test double of the labeller that raises for any batch
holding the word EXPLODE, as a model can on odd input (out of memory, a
tokenizer edge case, a NaN check).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from newsbeam.normalise import normalise_entry
from newsbeam.records import Article, DeadLetter, RawEntry
from newsbeam.transforms.labelling import DEAD_LETTER, ArticleModelHandler, LabelArticles, LabellerConfig

FAKE_MODEL_ID = "exploding-test-double"


@dataclass(frozen=True)
class FakeLabels:
    topic: Optional[str]
    topic_score: Optional[float]
    topic_scores: tuple[tuple[str, float], ...]
    sentiment: Optional[str]
    sentiment_score: Optional[float]
    embedding: Optional[object] = None


class ExplodingLabeller:
    """Same interface as newsbeam.labelling.labeller.Labeller; raises on a batch with EXPLODE in it."""

    model_id = FAKE_MODEL_ID
    feed_evidence_weight = 1.0

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [[ord(ch) for ch in text] for text in texts]

    def label_token_ids(self, token_ids: list[list[int]], evidence=None) -> list[FakeLabels]:
        texts = ["".join(map(chr, ids)) for ids in token_ids]
        for text in texts:
            if "EXPLODE" in text:
                raise RuntimeError(f"CUDA-like failure on input of {len(text)} characters (EXPLODE)")
        return [FakeLabels("economy", 0.9, (("economy", 0.9), ("sport", 0.1)), "neutral", 0.8) for _ in texts]


class ExplodingHandler(ArticleModelHandler):
    def __init__(self, batch_size: int):
        super().__init__(LabellerConfig())
        self.batch_size = batch_size

    def load_model(self):
        return ExplodingLabeller()

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}


def make_articles(titles: list[str]) -> list[Article]:
    return [normalise_entry(RawEntry(source="test://model", url=f"https://model.example.org/{n}", title=title,
                                     body=f"Body of article {n} about markets and prices.",
                                     fetched_at="2024-05-06T10:00:00+00:00"))
            for n, title in enumerate(titles)]


def run_labelling(articles: list[Article], batch_size: int, check_labelled, check_dead) -> dict[str, int]:
    """Run LabelArticles over ``articles``; returns the newsbeam counters."""
    pipeline = beam.Pipeline(runner=FnApiRunner())
    outputs = (pipeline
               | "CreateArticles" >> beam.Create(articles)
               | "Label" >> LabelArticles(ExplodingHandler(batch_size)))
    check_labelled(outputs["articles"])
    check_dead(outputs[DEAD_LETTER])
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("newsbeam"))["counters"]
    return {counter.key.metric.name: counter.committed for counter in counters}


def test_batch_that_raises__its_articles_dead_lettered_with_reason_others_labelled():
    """Batches of one: the two EXPLODE articles are DeadLetters (stage 'label', the exception in the
    reason, their ids kept); the other four come out labelled; 4 + 2 == 6."""
    titles = ["Markets rally", "Prices EXPLODE overnight", "Bank holds rates", "Oil steady",
              "EXPLODE again", "Bonds calm"]
    articles = make_articles(titles)
    exploding = {a.article_id for a in articles if "EXPLODE" in a.title}
    fine = [a for a in articles if a.article_id not in exploding]

    def check_labelled(labelled):
        assert_that(labelled | beam.Map(lambda a: (a.article_id, a.topic, a.sentiment, a.model)),
                    equal_to([(a.article_id, "economy", "neutral", FAKE_MODEL_ID) for a in fine]),
                    label="LabelledAreTheOthers")

    def check_dead(dead):
        def describe(letter: DeadLetter):
            return (letter.article_id, letter.stage, letter.source,
                    letter.reason.startswith("inference failed:") and "RuntimeError" in letter.reason
                    and "CUDA-like failure on input of" in letter.reason)

        assert_that(dead | beam.Map(describe),
                    equal_to([(article_id, "label", "test://model", True) for article_id in exploding]),
                    label="DeadAreTheExploding")

    counters = run_labelling(articles, 1, check_labelled, check_dead)

    assert counters["dead_lettered_label"] == len(exploding) == 2


def every_article_once(all_ids: list[str], bad_id: str, outcomes: list[tuple]) -> None:
    """Matcher: each id labelled or dead-lettered, never both; the bad one dead with its batch-mates."""
    from apache_beam.testing.util import BeamAssertException

    labelled = [outcome[1] for outcome in outcomes if outcome[0] == "labelled"]
    dead = [outcome[1:] for outcome in outcomes if outcome[0] == "dead"]
    dead_ids = [article_id for article_id, _stage, _has_reason in dead]
    problems = []
    if sorted(labelled + dead_ids) != sorted(all_ids):
        problems.append("labelled + dead-lettered is not every article exactly once")
    if bad_id not in dead_ids:
        problems.append("the EXPLODE article was not dead-lettered")
    if not all(stage == "label" and has_reason for _id, stage, has_reason in dead):
        problems.append("a dead letter lacks stage 'label' or the exception in its reason")
    if len(dead_ids) < 2:
        problems.append("the failed batch's other articles were not dead-lettered with it")
    if problems:
        raise BeamAssertException(f"{problems}: {outcomes}")


def test_batch_of_many_with_one_bad_article__whole_batch_dead_lettered_nothing_lost():
    """Batches of four: the batch holding the EXPLODE article fails as a unit (its batch-mates are
    dead-lettered with it, each with the reason); every article is either labelled or dead-lettered."""
    import functools

    articles = make_articles([f"Quiet market day {n}" for n in range(7)] + ["Silent EXPLODE"])
    all_ids = [a.article_id for a in articles]
    bad_id = next(a.article_id for a in articles if "EXPLODE" in a.title)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    outputs = (pipeline
               | "CreateArticles" >> beam.Create(articles)
               | "Label" >> LabelArticles(ExplodingHandler(4)))
    outcomes = (
        (outputs["articles"] | "TagLabelled" >> beam.Map(lambda a: ("labelled", a.article_id)),
         outputs[DEAD_LETTER] | "TagDead" >> beam.Map(lambda d: ("dead", d.article_id, d.stage, "EXPLODE" in d.reason)))
        | "AllOutcomes" >> beam.Flatten()
    )
    assert_that(outcomes, functools.partial(every_article_once, all_ids, bad_id))
    result = pipeline.run()
    result.wait_until_finish()

    counters = {c.key.metric.name: c.committed
                for c in result.metrics().query(MetricsFilter().with_namespace("newsbeam"))["counters"]}
    assert 2 <= counters["dead_lettered_label"] < len(articles)


def test_dead_letter_reason__names_the_exception_without_a_traceback():
    """The reason a reader sees in _errors is the exception, short: not a tuple dump of a traceback."""
    articles = make_articles(["EXPLODE alone"])

    def check_dead(dead):
        assert_that(dead | beam.Map(lambda d: ("Traceback" not in d.reason and "tuple" not in d.reason
                                                and d.reason.startswith("inference failed: RuntimeError"))),
                    equal_to([True]), label="ReasonIsShort")

    run_labelling(articles, 1, lambda labelled: None, check_dead)
