"""The Python load recipes in docs/analytics.md, run as written.

Each ``<!-- recipe: NAME -->`` block is executed in a folder holding
``data/articles``: once with the shared sample dataset and once with files
written by the pipeline's own sink. Every recipe must see every row, with
``dt`` as a date.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from newsbeam.analytics.dataset import connect
from newsbeam.transforms.sink import WriteArticles
from tests.support.datasets import sample_articles, write_dataset

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
RECIPE_RE = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\s*```python\n(?P<code>.*?)```", re.DOTALL)
RECIPES = {match["name"]: match["code"] for match in RECIPE_RE.finditer(DOC.read_text(encoding="utf-8"))}


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
    written = write_dataset(folder / "data" / "articles")
    return folder, written.row_count, set(written.dates)


@pytest.fixture(scope="module")
def sink_folder(tmp_path_factory):
    """The same articles written by newsbeam.transforms.sink.WriteArticles on the DirectRunner."""
    folder = tmp_path_factory.mktemp("sink")
    articles = sample_articles(per_day=5, days=3)
    with BeamTestPipeline() as pipeline:
        _ = (pipeline | "CreateArticles" >> beam.Create(articles)
             | "WriteArticles" >> WriteArticles(str(folder / "data" / "articles"), "run-sink-test"))
    return folder, len(articles), {dt.date.fromisoformat(a.partition_date) for a in articles}


def test_every_recipe_in_the_doc_is_checked():
    assert set(RECIPES) == {"duckdb", "polars", "polars-mixed-versions", "pyarrow", "pandas"}


@pytest.mark.parametrize("dataset", ["sample_folder", "sink_folder"])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_reads_every_row_with_dt_as_a_date(name, dataset, request, monkeypatch):
    folder, row_count, dates = request.getfixturevalue(dataset)
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(RECIPES[name], f"{DOC.name}:{name}", "exec"), namespace)

    rows, seen_dates = _rows_and_dates(name, namespace)
    assert rows == row_count
    assert seen_dates == dates
    assert all(type(day) is dt.date for day in seen_dates)


@pytest.mark.parametrize("dataset", ["sample_folder", "sink_folder"])
def test_newsbeam_view_agrees_with_the_recipes(dataset, request):
    folder, row_count, dates = request.getfixturevalue(dataset)
    connection = connect(folder / "data" / "articles")

    assert connection.execute("SELECT count(*) FROM articles").fetchone() == (row_count,)
    assert {day for (day,) in connection.execute("SELECT DISTINCT dt FROM articles").fetchall()} == dates
