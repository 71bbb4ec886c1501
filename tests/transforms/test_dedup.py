"""Within-run dedup: same article_id or same content written once, counted."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from newsbeam.transforms.dedup import DeduplicateArticles, pick_survivor
from tests.support.builders import make_article


def test_same_article_under_three_urls_is_written_once_with_the_fullest_text():
    base = make_article(1)
    copies = [
        base.replace(article_id="a", url="https://a.com/x", body="short"),
        base.replace(article_id="b", url="https://b.com/x", content_hash=base.content_hash, body="a longer body"),
        base.replace(article_id="c", url="https://c.com/x"),
    ]
    survivor, dropped = pick_survivor(copies)
    assert dropped == 2 and survivor.body == "a longer body"


def test_pipeline_counts_duplicates_by_id_and_by_content():
    first = make_article(1)
    same_id = first.replace(source="another feed")
    same_content = make_article(2).replace(content_hash=first.content_hash)
    distinct = make_article(3)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    result_ids = (
        pipeline
        | beam.Create([first, same_id, same_content, distinct])
        | DeduplicateArticles()
        | beam.Map(lambda a: a.content_hash)
    )
    assert_that(result_ids, equal_to([first.content_hash, distinct.content_hash]))
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:  # one result per step: sum them
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + counter.committed
    assert counters["duplicates"] == 2
    assert counters["duplicates_by_article_id"] == 1 and counters["duplicates_by_content_hash"] == 1
