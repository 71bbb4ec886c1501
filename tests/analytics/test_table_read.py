"""``newsbeam query``/``report --table``: the dataset's Iceberg table, now and as of a snapshot.

A dataset of two runs, synced into the embedded catalog after each, so the
table has one snapshot per run. The ``iceberg-recipe`` blocks of
docs/analytics.md (pyiceberg, DuckDB, Polars) run here too and must see the
articles ``newsbeam query --table`` sees.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import lxml.html
import pytest

from newsbeam import iceberg
from newsbeam.layout import PART_NAME_RE
from newsbeam.pipeline.cli import main
from tests.support.datasets import (
    FIRST_RUN_ID,
    SECOND_RUN_ID,
    sample_articles,
    write_articles,
    write_errors,
    write_manifest,
)

TABLE = "news.articles"
DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
RECIPE_RE = re.compile(r"<!-- iceberg-recipe: (?P<name>[\w-]+) -->\s*```python\n(?P<code>.*?)```", re.DOTALL)
RECIPES = {match["name"]: match["code"] for match in RECIPE_RE.finditer(DOC.read_text(encoding="utf-8"))}
IDS_SQL = "SELECT article_id, dt, lang FROM articles ORDER BY article_id"


def _write_run(root: Path, articles, run_id: str) -> None:
    """One run's files, named as the sink names them (part-<run>-h<hash>-NNNN) so sync knows the run."""
    write_articles(root, articles, run_id)
    for path in sorted(root.rglob(f"part-{run_id}-*.parquet")):
        if not PART_NAME_RE.match(path.name):
            path.rename(path.with_name(f"part-{run_id}-h0123abcd-{int(path.stem.rsplit('-', 1)[1]):04d}.parquet"))


def _iso(milliseconds: int) -> str:
    return dt.datetime.fromtimestamp(milliseconds / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """data/articles with two runs and a table of two snapshots; what each run wrote."""
    folder = tmp_path_factory.mktemp("iceberg")
    root = folder / "data" / "articles"
    articles = sample_articles()
    first, second = articles[:27], articles[27:]
    spec = iceberg.TableSpec(TABLE, str(root), ("dt", "lang"))
    _write_run(root, first, FIRST_RUN_ID)
    write_manifest(root, FIRST_RUN_ID)
    write_errors(root, FIRST_RUN_ID, ["not well-formed"])
    [first_snapshot] = iceberg.sync(spec)
    time.sleep(0.05)  # the two commits a few milliseconds apart, for a time between them
    _write_run(root, second, SECOND_RUN_ID)
    write_manifest(root, SECOND_RUN_ID, started_at="2024-05-04T06:00:00+00:00")
    [second_snapshot] = iceberg.sync(spec)
    stamps = {s.snapshot_id: s.timestamp_ms for s in iceberg.open_table(spec, create=False).snapshots()}
    assert stamps[second_snapshot] - stamps[first_snapshot] >= 2
    return {
        "folder": folder, "root": root,
        "first": _rows(first), "all": _rows(articles),
        "first_snapshot": first_snapshot, "second_snapshot": second_snapshot,
        "between": _iso((stamps[first_snapshot] + stamps[second_snapshot]) // 2),
    }


def _rows(articles) -> list[tuple[str, str, str]]:
    return sorted((a.article_id, a.partition_date, a.language) for a in articles)


def _query(capsys, root: Path, *flags: str, sql: str = IDS_SQL) -> tuple[int, str, str]:
    status = main(["query", "--data", str(root), "--format", "json", *flags, sql])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _json_rows(out: str) -> list[tuple[str, str, str]]:
    return [(row["article_id"], row["dt"], row["lang"]) for row in map(json.loads, out.splitlines())]


def test_query_reads_the_current_snapshot_with_dt_and_lang_from_the_folders(table, capsys):
    status, out, err = _query(capsys, table["root"], "--table", TABLE)

    assert (status, err) == (0, "")
    assert _json_rows(out) == table["all"]
    status, out, _ = _query(capsys, table["root"], "--table", TABLE, "--format", "csv",
                            sql="SELECT typeof(dt), count(*) FROM articles GROUP BY ALL")
    assert out.splitlines()[1] == f"DATE,{len(table['all'])}"


@pytest.mark.parametrize("as_of", ["first_snapshot", "between"])
def test_as_of_a_snapshot_id_or_a_time_reads_that_snapshot(as_of, table, capsys):
    status, out, err = _query(capsys, table["root"], "--table", TABLE, "--as_of", str(table[as_of]))

    assert (status, err) == (0, "")
    assert _json_rows(out) == table["first"]


def test_errors_view_still_comes_from_the_folder(table, capsys):
    status, out, _ = _query(capsys, table["root"], "--table", TABLE, sql="SELECT count(*) AS n FROM errors")
    assert status == 0 and json.loads(out) == {"n": 1}


BAD_REQUESTS = {
    "not a time": (["--table", TABLE, "--as_of", "yesterday"], "expected a snapshot id or an ISO time"),
    "unknown snapshot": (["--table", TABLE, "--as_of", "12345"], "no snapshot with that id"),
    "before the first": (["--table", TABLE, "--as_of", "2001-01-01T00:00Z"], "no snapshot that old"),
    "missing table": (["--table", "news.missing"], "no Iceberg table news.missing in catalog newsbeam"),
    "missing namespace": (["--table", "other.articles"], "no Iceberg table other.articles"),
    "bad table name": (["--table", "articles"], "expected NAMESPACE.TABLE"),
    "as_of alone": (["--as_of", "12345"], "--as_of needs --table"),
    "unconfigured catalog": (["--table", TABLE, "--iceberg_catalog", "nowhere"], "--iceberg_catalog nowhere:"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
@pytest.mark.parametrize("command", ["query", "report"])
def test_table_problems_are_one_line_and_exit_2(case, command, table, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))  # no user .pyiceberg.yaml names the catalog
    flags, message = BAD_REQUESTS[case]
    if command == "query":
        status = main(["query", "--data", str(table["root"]), *flags, "SELECT 1"])
    else:
        status = main(["report", "--data", str(table["root"]), "--out", str(tmp_path / "r.html"), *flags])
    captured = capsys.readouterr()

    assert status == 2
    assert captured.out == ""
    assert captured.err.startswith(f"newsbeam {command}: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "r.html").exists()


def test_a_dataset_without_a_catalog_says_so_and_makes_none(tmp_path, capsys):
    root = tmp_path / "plain"
    _write_run(root, sample_articles(per_day=2, days=1), FIRST_RUN_ID)
    status, out, err = _query(capsys, root, "--table", TABLE)

    assert status == 2 and out == ""
    assert err.startswith("newsbeam query: no Iceberg table news.articles:") and err.count("\n") == 1
    assert not (root / "_iceberg").exists()


def test_an_empty_table_gives_the_empty_typed_view(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    iceberg.open_table(iceberg.TableSpec(TABLE, str(root), ("dt", "lang")))  # created, no snapshot
    status, out, err = _query(capsys, root, "--table", TABLE, "--format", "csv",
                              sql="SELECT typeof(dt), count(*) FROM articles GROUP BY ALL")
    assert status == 0 and out.splitlines() == ["typeof(dt),count_star()"]


def _report(tmp_path, table, *flags: str):
    out = tmp_path / "report.html"
    assert main(["report", "--data", str(table["root"]), "--out", str(out), "--table", TABLE, *flags]) == 0
    page = lxml.html.fromstring(out.read_text(encoding="utf-8"))
    articles = int(page.xpath("//dl[@class='summary']/div[1]/dd")[0].text_content())
    return page.find_class("meta")[0].text_content(), articles


def test_report_names_the_table_and_snapshot_it_read(table, tmp_path):
    header, articles = _report(tmp_path, table)
    assert f"Iceberg table {TABLE} (catalog newsbeam), snapshot {table['second_snapshot']} committed" in header
    assert articles == len(table["all"])

    header, articles = _report(tmp_path, table, "--as_of", table["between"])
    assert f"snapshot {table['first_snapshot']} committed" in header
    assert articles == len(table["first"])


def test_the_doc_recipes_read_what_query_reads(table, capsys, monkeypatch):
    """pyiceberg's scan, DuckDB and Polars (the iceberg-recipe blocks) against newsbeam query --table."""
    assert set(RECIPES) == {"pyiceberg", "duckdb", "polars"}
    _, out, _ = _query(capsys, table["root"], "--table", TABLE)
    queried = _json_rows(out)
    monkeypatch.chdir(table["folder"])
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")
    namespace: dict = {}
    for name in ("pyiceberg", "duckdb", "polars"):
        exec(compile(RECIPES[name], f"{DOC.name}:{name}", "exec"), namespace)

    def rows(arrow) -> list[tuple[str, str, str]]:
        return sorted(zip(arrow.column("article_id").to_pylist(), map(str, arrow.column("dt").to_pylist()),
                          arrow.column("lang").to_pylist()))

    assert rows(namespace["articles"]) == queried == table["all"]
    assert rows(namespace["first_run"]) == table["first"]
    assert namespace["runs"] == {FIRST_RUN_ID: table["first_snapshot"], SECOND_RUN_ID: table["second_snapshot"]}
    assert sorted(namespace["french"].column("article_id").to_pylist()) == [i for i, _, lang in queried if lang == "fr"]
    assert namespace["recent"] == sum(day >= "2024-05-02" for _, day, _ in queried)
    by_lang: dict[str, int] = {}
    for _, _, lang in queried:
        by_lang[lang] = by_lang.get(lang, 0) + 1
    assert namespace["per_lang"] == sorted(by_lang.items())
    assert rows(namespace["articles_pl"].collect().to_arrow()) == queried
    assert rows(namespace["first_run_pl"].collect().to_arrow()) == table["first"]
