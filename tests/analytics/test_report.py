"""``newsbeam report``: numbers, HTML safety, empty datasets, and a real render in headless Chromium."""
from __future__ import annotations

import argparse
import datetime as dt
import io
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import lxml.html
import pyarrow as pa
import pytest
from PIL import Image

from newsbeam.analytics import report, stories_section
from newsbeam.analytics.dataset import connect, read_run_manifests
from newsbeam.pipeline.cli import main
from newsbeam.schema import FILE_SCHEMA
from tests.support.datasets import (
    FAILED_RUN_ID,
    FIRST_RUN_ID,
    SOURCES,
    sample_article,
    sample_articles,
    write_articles,
    write_dataset,
    write_manifest,
)

CHART_TITLES = [
    "Articles per day by topic",
    "Sentiment share by topic",
    "Sentiment share by language",
    "Top sources",
    "Language mix",
]
ARABIC_SOURCE = SOURCES[1][1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def _parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return parser.parse_args(list(argv))


def _label(value):
    return value.strip() if value and value.strip() else report.NO_LABEL


def _filled_shapes(svg) -> list:
    """Paths filled with a colour other than the white background: bars and legend keys."""
    return [
        path for path in svg.iter("{*}path", "path")
        if "fill: #" in (path.get("style") or "") and "fill: #ffffff" not in path.get("style")
    ]


def test_report_numbers_match_the_written_articles(tmp_path):
    articles = sample_articles()
    write_dataset(tmp_path, articles)
    connection = connect(tmp_path)
    data = report.collect(connection, read_run_manifests(tmp_path))

    assert data.summary["articles"] == len(articles)
    assert data.summary["first_day"] == dt.date(2024, 5, 1)
    assert data.summary["last_day"] == dt.date(2024, 5, 4)
    expected_per_day = Counter((dt.date.fromisoformat(a.partition_date), _label(a.topic)) for a in articles)
    assert {(day, topic): n for day, topic, n in data.per_day_topic} == expected_per_day
    # Null and empty topics are one bucket, never a blank or a missing bar.
    assert expected_per_day and report.NO_LABEL in {topic for _, topic, _ in data.per_day_topic}
    expected_by_language = Counter((a.language, _label(a.sentiment)) for a in articles)
    assert {(lang, s): n for lang, s, n in data.sentiment_by_language} == expected_by_language
    assert dict(data.top_sources) == Counter(a.source_title or a.source for a in articles)
    assert [run["run_id"] for run in data.runs][0] == FAILED_RUN_ID  # newest first


def test_report_html_is_self_contained_and_escaped(tmp_path):
    write_dataset(tmp_path)
    html = report.build_report(tmp_path)
    page = lxml.html.fromstring(html)

    assert [h2.text_content() for h2 in page.iter("h2")] == CHART_TITLES + ["Top stories", "Latest headlines",
                                                                           "Latest runs"]
    svgs = list(page.iter("svg"))
    assert len(svgs) == len(CHART_TITLES)
    for svg, title in zip(svgs, CHART_TITLES):
        assert svg.get("aria-label") == title
        assert len(_filled_shapes(svg)) >= 4, f"{title}: no bars drawn"
    # Nothing is fetched from anywhere: no scripts, stylesheets, images or frames.
    assert not page.xpath("//script | //link | //img | //iframe | //object")
    assert "default-src 'none'" in page.xpath("//meta[@http-equiv='Content-Security-Policy']/@content")[0]
    # Feed-supplied text is text: "<Daily>" did not become an element.
    assert not page.xpath("//daily")
    assert 'Tom & Jerry <Daily> "Quotes"' in page.text_content()
    assert ARABIC_SOURCE in page.text_content()
    arabic_cells = [td for td in page.iter("td") if ARABIC_SOURCE in td.text_content()]
    assert arabic_cells and all(td.get("dir") == "auto" for td in arabic_cells)
    failed_row = [tr for tr in page.iter("tr") if FAILED_RUN_ID in tr.text_content()][0]
    assert "خطأ: <timeout> & retry" in failed_row.text_content()
    assert "failed" in failed_row.text_content()
    assert "RuntimeError: <model> not found" in failed_row.text_content()


def test_report_links_only_web_urls(tmp_path):
    unsafe = sample_article(1, day=dt.date(2024, 5, 1), source_index=0).replace(url="javascript:alert(1)")
    safe = sample_article(2, day=dt.date(2024, 5, 1), source_index=0)
    write_dataset(tmp_path, [unsafe, safe])
    page = lxml.html.fromstring(report.build_report(tmp_path))

    assert [a.get("href") for a in page.iter("a")] == [safe.url]
    assert unsafe.title in page.text_content()


# Feed text that looks like markup: matplotlib's mathtext, LaTeX, HTML.
MARKUP_LOOKALIKES = ("Money $$ Talk", "$_$", "a \\frac{1}{2} b", "<script>alert(1)</script>")


def test_report_shows_feed_text_that_looks_like_maths_or_html_literally(tmp_path, capsys):
    articles = [
        sample_article(number, day=dt.date(2024, 5, 1 + number % 2), source_index=0).replace(
            source_title=text, title=text, topic=text)
        for number, text in enumerate(MARKUP_LOOKALIKES * 2)
    ]
    write_dataset(tmp_path / "data", articles)
    out = tmp_path / "report.html"

    assert main(["report", "--data", str(tmp_path / "data"), "--out", str(out)]) == 0, capsys.readouterr().err
    page = lxml.html.fromstring(out.read_text(encoding="utf-8"))
    assert not page.xpath("//script")
    svgs = {svg.get("aria-label"): svg.text_content() for svg in page.iter("svg")}
    headlines = page.xpath("//h2[text()='Latest headlines']/following-sibling::table")[0].text_content()
    for text in MARKUP_LOOKALIKES:
        assert text in svgs["Top sources"]  # a tick label
        assert text in svgs["Articles per day by topic"]  # a legend entry
        assert f"{text} (2)" in svgs["Sentiment share by topic"]  # a tick label with its count
        assert headlines.count(text) == 6  # two rows: the source, title and topic cells


def test_report_on_an_empty_dataset_explains_instead_of_failing(tmp_path):
    write_manifest(tmp_path, FAILED_RUN_ID, status="failed", failures=[{"source": "feed", "reason": "DNS"}])
    page = lxml.html.fromstring(report.build_report(tmp_path))

    assert not list(page.iter("svg"))
    notes = [p.text_content() for p in page.find_class("empty")]
    assert notes.count("No articles in this dataset yet.") == len(CHART_TITLES) + 1
    assert stories_section.NO_STORIES in notes
    assert FAILED_RUN_ID in page.text_content() and "DNS" in page.text_content()


def test_report_command_writes_the_file_and_rejects_a_missing_folder(tmp_path, capsys):
    write_dataset(tmp_path / "data")
    out = tmp_path / "site" / "report.html"

    assert report.run(_parse_args("--data", str(tmp_path / "data"), "--out", str(out), "--runs", "1")) == 0
    page = lxml.html.fromstring(out.read_text(encoding="utf-8"))
    assert len(page.xpath("//h2[text()='Latest runs']/following-sibling::table//tr")) == 2  # header + 1 run
    assert report.run(_parse_args("--data", str(tmp_path / "missing"), "--out", str(out))) == 2
    assert "no dataset folder" in capsys.readouterr().err


# --- top stories -------------------------------------------------------------

V2_COLUMNS = ("embedding", "embedding_scale", "story_id")
V1_SCHEMA = pa.schema([field for field in FILE_SCHEMA if field.name not in V2_COLUMNS])
MARKUP_TITLE = "<b>Flood</b> & سيول"


def _event_time(article) -> str:
    return article.published_at or article.fetched_at


def _story_rows(page) -> list[list[str]]:
    tables = page.xpath("//h2[text()='Top stories']/following-sibling::table")
    assert len(tables) == 1
    return [[td.text_content() for td in tr.iter("td")] for tr in tables[0].iter("tr")][1:]  # less the header


def test_top_stories_rank_by_outlets_then_languages(tmp_path):
    articles = sample_articles()  # 48: 12 a day over 4 days, cycling through the 6 sources
    # Day one's first six articles are one story in all six outlets and 4 languages; article 1 (Arabic,
    # published 07:30) is its earliest: article 0 has no published_at and counts from its fetch at 20:30.
    stories = {number: "st-wide" for number in range(6)}
    # The others, but the last four, make 12 more stories of 3-4 articles; 13 in all, 10 shown.
    stories.update({number: f"st-{number % 12:02d}" for number in range(6, 44)})
    articles = [article.replace(story_id=stories.get(number)) for number, article in enumerate(articles)]
    articles[1] = articles[1].replace(title=MARKUP_TITLE)
    write_dataset(tmp_path, articles)
    page = lxml.html.fromstring(report.build_report(tmp_path))
    rows = _story_rows(page)

    assert len(rows) == stories_section.MAX_STORIES
    title, count, outlets, languages, first, last = rows[0]
    assert title == f"{MARKUP_TITLE} (ar)"  # the earliest article's, escaped: no <b> element
    assert not page.xpath("//table[@class='stories']//b")
    assert (count, outlets, languages) == ("6", "6", "ar, de, en, fr")
    assert (first, last) == ("2024-05-01 07:30", "2024-05-01 20:30")
    # Every row against the written articles, ranked by outlets, languages, articles, then the latest first.
    expected = []
    for story in sorted(set(stories.values())):
        members = sorted((a for a in articles if a.story_id == story), key=lambda a: (_event_time(a), a.article_id))
        times = [_event_time(a)[:16].replace("T", " ") for a in members]
        languages = sorted({a.language for a in members})
        expected.append([f"{members[0].title} ({members[0].language})", str(len(members)),
                         str(len({a.source for a in members})), ", ".join(languages), min(times), max(times)])
    expected.sort(key=lambda row: row[5], reverse=True)  # stable sorts: the last key first
    expected.sort(key=lambda row: (-int(row[2]), -len(row[3].split(", ")), -int(row[1])))
    assert rows == expected[: stories_section.MAX_STORIES]
    assert [int(row[2]) for row in rows] == sorted((int(row[2]) for row in rows), reverse=True)


@pytest.mark.parametrize("old_files", [False, True], ids=["no-story-ids", "schema-v1-files"])
def test_top_stories_without_story_ids_says_so_in_one_line(old_files, tmp_path):
    if old_files:  # written before story_id existed: the view has no such column
        write_articles(tmp_path, sample_articles(), FIRST_RUN_ID, schema=V1_SCHEMA)
    else:  # written without --stories: the column is there, all null
        write_dataset(tmp_path)
    page = lxml.html.fromstring(report.build_report(tmp_path))

    section = page.xpath("//h2[text()='Top stories']/parent::section")[0]
    assert not section.xpath(".//table")
    assert [p.text_content() for p in section.iter("p")] == [stories_section.NO_STORIES]
    assert "\n" not in stories_section.NO_STORIES
    assert len(list(page.iter("svg"))) == len(CHART_TITLES)  # the rest of the report is all there


# --- real rendering ----------------------------------------------------------

def _chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); the report render is untested")
    return binary


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, timeout=120, check=True,
    )


def _colour_pixels(image: Image.Image, hex_colour: str) -> int:
    wanted = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return sum(count for count, colour in image.getcolors(maxcolors=1 << 24) if colour[:3] == wanted)


@pytest.mark.timeout(300)
def test_report_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    write_dataset(tmp_path / "data")
    page_path = tmp_path / "report.html"
    page_path.write_text(report.build_report(tmp_path / "data"), encoding="utf-8")
    url = page_path.as_uri()

    dom = _run_chromium(binary, tmp_path / "profile", "--dump-dom", url).stdout.decode("utf-8")
    page = lxml.html.fromstring(dom)
    assert [h2.text_content() for h2 in page.iter("h2")][: len(CHART_TITLES)] == CHART_TITLES
    assert all(len(_filled_shapes(svg)) >= 4 for svg in page.iter("svg"))
    assert ARABIC_SOURCE in page.text_content()

    screenshot = tmp_path / "report.png"
    _run_chromium(binary, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,2000", url)
    image = Image.open(io.BytesIO(screenshot.read_bytes())).convert("RGB")
    assert image.size == (1200, 2000)
    colours = image.getcolors(maxcolors=1 << 24)
    assert len(colours) > 100, "screenshot is (nearly) uniform: nothing rendered"
    # The bars themselves were painted: the first topic colour and each sentiment colour cover real areas.
    for colour in (report.TOPIC_COLOURS[0], *(report.SENTIMENT_COLOURS[s] for s in ("negative", "neutral", "positive"))):
        assert _colour_pixels(image, colour) > 2000, f"no {colour} bars in the screenshot"
