"""``--since`` / ``--until`` on ``newsbeam query``, ``report`` and a gs:// copy: the
articles of those days, every one of them, and no folder of another day opened or fetched."""
from __future__ import annotations

import argparse
import datetime as dt
import json

import pytest

from newsbeam.analytics import query, report
from newsbeam.analytics.dataset import connect
from newsbeam.analytics.dates import DateRange, parse_range
from newsbeam.layout import partition_days
from tests.support.datasets import FIRST_DAY, sample_articles, write_articles, write_dataset


def _parsed(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def _count(capsys, data, *flags: str) -> int:
    status = query.run(_parsed(query, "SELECT count(*) AS n FROM articles", "--data", str(data),
                               "--format", "json", *flags))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)["n"]


def _rows_of_days(dataset, first: dt.date, last: dt.date) -> int:
    return sum(n for partition, n in dataset.rows_per_partition.items()
               if first <= dt.date.fromisoformat(partition.split("/")[0].removeprefix("dt=")) <= last)


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "articles")


def test_query_reads_exactly_the_articles_of_the_days_asked(dataset, capsys):
    second, third = FIRST_DAY + dt.timedelta(days=1), FIRST_DAY + dt.timedelta(days=2)
    assert _count(capsys, dataset.root, "--since", str(third)) == _rows_of_days(dataset, third, dt.date.max)
    assert _count(capsys, dataset.root, "--until", str(second)) == _rows_of_days(dataset, dt.date.min, second)
    assert _count(capsys, dataset.root, "--since", str(second), "--until", str(third)) == \
        _rows_of_days(dataset, second, third) > 0
    assert _count(capsys, dataset.root, "--since", "2030-01-01") == 0
    status = query.run(_parsed(query, "SELECT DISTINCT dt FROM articles ORDER BY dt", "--data", str(dataset.root),
                               "--format", "csv", "--since", str(third), "--until", str(third)))
    assert status == 0 and capsys.readouterr().out.split() == ["dt", str(third)]
    # the dead letters carry no article date: all of them, whatever the range
    status = query.run(_parsed(query, "SELECT count(*) AS n FROM errors", "--data", str(dataset.root),
                               "--format", "json", "--since", "2030-01-01"))
    assert status == 0 and json.loads(capsys.readouterr().out)["n"] == 1


def test_folders_of_other_days_are_never_opened(dataset, capsys):
    broken = dataset.root / "dt=2020-01-01" / "lang=en" / "part-old-h00000000-0001.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not parquet: reading this file fails the query")
    assert query.run(_parsed(query, "SELECT count(*) FROM articles", "--data", str(dataset.root))) == 2
    error = capsys.readouterr().err  # without a range it is read, and the problem is one line naming it
    assert error.count("\n") == 1 and error.startswith("newsbeam query: ") and str(broken) in error
    assert _count(capsys, dataset.root, "--since", str(FIRST_DAY)) == dataset.row_count


def test_a_month_partitioned_dataset_is_filtered_by_day_too(tmp_path):
    # month folders hold several days: whole months outside are skipped, the rest filtered row by row
    articles = sample_articles(per_day=3, days=4)
    scratch = tmp_path / "scratch"
    write_articles(scratch, articles, "run1")
    root = tmp_path / "articles"
    for number, path in enumerate(sorted(scratch.rglob("*.parquet"))):
        lang = path.parent.name
        target = root / f"month={path.parent.parent.name[3:10]}" / lang / f"part-run1-h00000000-{number:04d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    second = FIRST_DAY + dt.timedelta(days=1)
    days = DateRange(since=second, until=second)
    rows = connect(root, dates=days).sql("SELECT coalesce(published_at, fetched_at) FROM articles").fetchall()
    assert len(rows) == 3 and {stamp.date() for (stamp,) in rows} == {second}
    assert connect(root, dates=DateRange(until=dt.date(2024, 4, 30))).sql(
        "SELECT count(*) FROM articles").fetchall() == [(0,)]


@pytest.mark.parametrize("relative, days", [
    ("dt=2024-05-01/lang=ar/part-a.parquet", (dt.date(2024, 5, 1), dt.date(2024, 5, 1))),
    ("month=2024-02/lang=ar/part-a.parquet", (dt.date(2024, 2, 1), dt.date(2024, 2, 29))),
    ("year=2023/month=2023-12/part-a.parquet", (dt.date(2023, 12, 1), dt.date(2023, 12, 31))),
    ("lang=ar/part-a.parquet", None),  # no date in the folders: the rows decide
    ("dt=__HIVE_DEFAULT_PARTITION__/lang=ar/part-a.parquet", None),
    ("month=2024-13/part-a.parquet", None),
])
def test_the_layout_says_which_days_a_folder_can_hold(relative, days):
    assert partition_days(relative) == days


@pytest.mark.parametrize("argv, message", [
    (["--since", "2024-13-01"], "newsbeam query: --since must be a date YYYY-MM-DD, got '2024-13-01'"),
    (["--until", "last week"], "newsbeam query: --until must be a date YYYY-MM-DD, got 'last week'"),
    (["--since", "2024-05-03", "--until", "2024-05-01"],
     "newsbeam query: --until 2024-05-01 is before --since 2024-05-03"),
])
def test_a_bad_day_is_one_line_and_exit_2(dataset, capsys, argv, message):
    status = query.run(_parsed(query, "SELECT 1", "--data", str(dataset.root), *argv))
    assert status == 2 and capsys.readouterr().err.strip() == message


def test_the_report_counts_the_days_asked_and_says_which(dataset, tmp_path):
    third = FIRST_DAY + dt.timedelta(days=2)
    out = tmp_path / "report.html"
    assert report.run(_parsed(report, "--data", str(dataset.root), "--out", str(out), "--since", str(third))) == 0
    html = out.read_text(encoding="utf-8")
    assert f"only articles dated from {third}" in html
    expected = _rows_of_days(dataset, third, dt.date.max)
    assert expected < dataset.row_count and f">{expected:,}<" in html


def test_parse_range_is_inclusive_of_both_days():
    days = parse_range("2024-05-02", "2024-05-02")
    assert days.may_hold("dt=2024-05-02/lang=en/x.parquet")
    assert not days.may_hold("dt=2024-05-01/lang=en/x.parquet")
    assert not days.may_hold("dt=2024-05-03/lang=en/x.parquet")
    assert days.may_hold("month=2024-05/x.parquet") and not days.may_hold("month=2024-06/x.parquet")
