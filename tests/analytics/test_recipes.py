"""The Python recipes in docs/analytics.md, run as written.

Each ``<!-- recipe: NAME -->`` block is executed in a folder holding
``data/articles``: once with the shared sample dataset and once with files
written by the pipeline's own sink, both with embeddings and story ids. Every
load recipe must see every row, with ``dt`` as a date; the search and story
recipes must give what the written articles say.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from newsbeam.analytics.dataset import connect
from newsbeam.embeddings import from_record
from newsbeam.transforms.sink import WriteArticles
from tests.support.datasets import sample_articles, with_stories, write_dataset

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
RECIPE_RE = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\s*```python\n(?P<code>.*?)```", re.DOTALL)
RECIPES = {match["name"]: match["code"] for match in RECIPE_RE.finditer(DOC.read_text(encoding="utf-8"))}
LOAD_RECIPES = {"duckdb", "polars", "polars-mixed-versions", "pyarrow", "pandas"}
STORY_RECIPES = {"duckdb-stories", "polars-stories"}
SEARCH_RECIPES = {"duckdb-search"}


def _rows_and_dates(name: str, namespace: dict) -> tuple[int, set]:
    """Row count and distinct dt values of what recipe ``name`` left behind."""
    if name == "duckdb":
        per_day = namespace["per_day"]
        return sum(n for _, n in per_day), {day for day, _ in per_day}
    if name.startswith("polars"):
        frame = namespace["articles"].collect()
        return frame.height, set(frame["dt"].to_list())
    if name == "pyarrow":
        table = namespace["table"]
        assert table.schema.field("dt").type == pa.date32()
        return table.num_rows, set(table.column("dt").to_pylist())
    if name == "pandas":
        frame = namespace["df"]
        return len(frame), set(frame["dt"])
    raise AssertionError(f"no check for recipe {name!r}")


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    articles = with_stories(sample_articles())
    written = write_dataset(folder / "data" / "articles", articles)
    return folder, written.row_count, set(written.dates), articles


@pytest.fixture(scope="module")
def sink_folder(tmp_path_factory):
    """The same articles written by newsbeam.transforms.sink.WriteArticles on the DirectRunner."""
    folder = tmp_path_factory.mktemp("sink")
    articles = with_stories(sample_articles(per_day=5, days=3))
    with BeamTestPipeline() as pipeline:
        _ = (pipeline | "CreateArticles" >> beam.Create(articles)
             | "WriteArticles" >> WriteArticles(str(folder / "data" / "articles"), "run-sink-test"))
    return folder, len(articles), {dt.date.fromisoformat(a.partition_date) for a in articles}, articles


def test_every_recipe_in_the_doc_is_checked():
    assert set(RECIPES) == LOAD_RECIPES | STORY_RECIPES | SEARCH_RECIPES


@pytest.mark.parametrize("dataset", ["sample_folder", "sink_folder"])
@pytest.mark.parametrize("name", sorted(LOAD_RECIPES))
def test_recipe_reads_every_row_with_dt_as_a_date(name, dataset, request, monkeypatch):
    folder, row_count, dates, _ = request.getfixturevalue(dataset)
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(RECIPES[name], f"{DOC.name}:{name}", "exec"), namespace)

    rows, seen_dates = _rows_and_dates(name, namespace)
    assert rows == row_count
    assert seen_dates == dates
    assert all(type(day) is dt.date for day in seen_dates)


@pytest.mark.parametrize("dataset", ["sample_folder", "sink_folder"])
def test_newsbeam_view_agrees_with_the_recipes(dataset, request):
    folder, row_count, dates, _ = request.getfixturevalue(dataset)
    connection = connect(folder / "data" / "articles")

    assert connection.execute("SELECT count(*) FROM articles").fetchone() == (row_count,)
    assert {day for (day,) in connection.execute("SELECT DISTINCT dt FROM articles").fetchall()} == dates


def _run_recipe(name: str, folder: Path, monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(RECIPES[name], f"{DOC.name}:{name}", "exec"), namespace)
    return namespace


def _expected_stories(articles) -> dict[str, tuple[int, int, list[str], str]]:
    """story_id -> (articles, outlets, languages, first seen as YYYY-MM-DDTHH:MM) of the written articles."""
    stories: dict[str, list] = {}
    for article in articles:
        if article.story_id is not None:
            stories.setdefault(article.story_id, []).append(article)
    return {
        story: (len(members), len({a.source for a in members}), sorted({a.language for a in members}),
                min((a.published_at or a.fetched_at)[:16] for a in members))
        for story, members in stories.items()
    }


@pytest.mark.parametrize("dataset", ["sample_folder", "sink_folder"])
@pytest.mark.parametrize("name", sorted(STORY_RECIPES))
def test_story_recipes_count_articles_outlets_and_languages(name, dataset, request, monkeypatch):
    folder, _, _, articles = request.getfixturevalue(dataset)
    expected = _expected_stories(articles)
    assert any(a.story_id is None for a in articles) and len(expected) > 1
    namespace = _run_recipe(name, folder, monkeypatch)

    stories, multilingual = namespace["stories"], namespace["multilingual"]
    if name.startswith("polars"):  # frames; the DuckDB recipe leaves fetchall() rows
        stories = stories.rows()
        multilingual = [(row["story_id"], row["articles"], row["languages"]) for row in multilingual.to_dicts()]
    seen = {story: (n, outlets, list(languages), first.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M"))
            for story, n, outlets, languages, first in stories}
    assert seen == expected and len(stories) == len(expected)
    assert [row[2] for row in stories] == sorted((row[2] for row in stories), reverse=True)  # most outlets first
    assert {story: (n, list(languages)) for story, n, languages in multilingual} == {
        story: (n, languages) for story, (n, _, languages, _) in expected.items() if len(languages) > 1}
    if dataset == "sample_folder":  # the filter has something to leave out
        assert len(multilingual) < len(stories)


class _Labeller:
    """Stands in for load_labeller(): the recipe's query vector is one stored article's own vector."""

    model_id = "test-model@1"  # tests.support.datasets.sample_article's model

    def __init__(self, vector):
        self.vector = vector

    def embed(self, texts):
        assert texts and all(isinstance(text, str) for text in texts)
        return np.stack([self.vector] * len(texts))


@pytest.mark.parametrize("dataset", ["sample_folder", "sink_folder"])
def test_search_recipe_scores_the_stored_cosine(dataset, request, monkeypatch):
    import newsbeam.labelling.labeller as labeller_module

    folder, _, _, articles = request.getfixturevalue(dataset)
    embedded = [a for a in articles if a.embedding is not None]
    target = embedded[len(embedded) // 2]
    query = from_record(target.embedding, target.embedding_scale)
    query /= np.linalg.norm(query)
    monkeypatch.setattr(labeller_module, "load_labeller", lambda **kwargs: _Labeller(query))
    namespace = _run_recipe("duckdb-search", folder, monkeypatch)

    nearest = namespace["nearest"]
    stored = {a.title: float(query @ from_record(a.embedding, a.embedding_scale)) for a in embedded}
    best = sorted(stored, key=stored.get, reverse=True)[:10]
    assert [row[1] for row in nearest] == best and best[0] == target.title
    assert [row[0] for row in nearest] == pytest.approx([stored[title] for title in best], abs=1e-4)
    assert nearest[0][0] == pytest.approx(1.0, abs=0.01)
    assert nearest[0][4] == target.story_id
