"""Streaming: TestStream across polls and windows, and a real local polled run."""
from __future__ import annotations

import re
import shutil
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from newsbeam.transforms.sink import WriteArticles
from newsbeam.transforms.streaming import DeduplicateStream, fixed_windows
from tests.support.builders import make_article
from tests.support.httpserver import Response
from tests.support.pipelines import SAMPLES, assert_accounting, english_items, only_manifest, read_rows, rss, run_cli

WINDOW = 60


def stamped(article, seconds):
    return TimestampedValue(article, Timestamp(seconds))


def run_stream(stream: TestStream, output, ttl: float = 3600.0) -> int:
    """Run dedup -> windows -> sink on a TestStream; returns the duplicates count."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    deduplicated = pipeline | stream | DeduplicateStream(ttl_seconds=ttl)
    (
        deduplicated["articles"]
        | "Windows" >> fixed_windows(WINDOW, allowed_lateness_seconds=600)
        | "Write" >> WriteArticles(str(output), "stream-run")
    )
    log = output / "duplicates.log"  # the test's own ledger of every dropped element

    def record(article):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(article.article_id + "\n")

    deduplicated["duplicates"] | "RecordDuplicates" >> beam.Map(record)
    pipeline.run().wait_until_finish()
    return len(log.read_text().split()) if log.exists() else 0


def window_files(output) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in output.rglob("*.parquet"):
        tag = re.search(r"-w(\d+)p(\d+)-", path.name)
        found.setdefault(f"{tag.group(1)}p{tag.group(2)}", []).append(path.name)
    return found


def test_polls_across_windows_write_each_article_once_with_late_data_in_its_own_pane(tmp_path):
    first_poll = [make_article(n) for n in range(3)]
    second_poll = [make_article(1), make_article(2), make_article(3), make_article(4)]  # 2 repeats
    late = make_article(5)
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([stamped(a, 10) for a in first_poll])
        .advance_watermark_to(WINDOW + 10)  # window [0, 60) fires
        .add_elements([stamped(a, WINDOW + 15) for a in second_poll])
        .advance_watermark_to(2 * WINDOW + 10)  # window [60, 120) fires
        .add_elements([stamped(late, 20)])  # behind the watermark, within allowed lateness
        .advance_watermark_to_infinity()
    )
    duplicates = run_stream(stream, tmp_path)
    rows = read_rows(tmp_path, "article_id, run_id")
    assert sorted(r["article_id"] for r in rows) == sorted(make_article(n).article_id for n in range(6))
    assert duplicates == 2
    assert len(rows) + duplicates == len(first_poll) + len(second_poll) + 1  # every element accounted for
    panes = window_files(tmp_path)
    assert set(panes) == {"0p0", "60p0", "0p1"}, panes  # on-time windows, then the late pane of [0, 60)


def test_dedup_state_expires_after_the_ttl(tmp_path):
    article = make_article(7)
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([stamped(article, 1)])
        .advance_watermark_to(50)
        .add_elements([stamped(article, 55)])  # within the TTL: a duplicate
        .advance_watermark_to(500)  # TTL (100 s) passed: state cleared by the timer
        .add_elements([stamped(article, 505)])
        .advance_watermark_to_infinity()
    )
    duplicates = run_stream(stream, tmp_path, ttl=100)
    assert duplicates == 1
    assert len(read_rows(tmp_path, "article_id")) == 2  # remembered for 100 s, not forever


def test_local_streaming_run_polls_a_feed_and_a_folder_then_ends_with_files_committed(tmp_path, http_server):
    items = english_items("poll", 6)
    served = iter([rss(items[:3]), rss(items[:5]), rss(items)])
    last = rss(items)
    http_server.route("/feed.xml", lambda _r: Response(body=next(served, last)))
    watched = tmp_path / "watched"
    watched.mkdir()
    shutil.copy(SAMPLES / "more-languages.jsonl", watched / "first.jsonl")

    def drop_a_file_later():
        time.sleep(3)
        (watched / "later.jsonl").write_text(
            '{"title": "Harbour reopens after the storm", "body": "Ships returned to the harbour on Tuesday.", '
            '"url": "https://files.example.org/later"}\n', encoding="utf-8")

    threading.Thread(target=drop_a_file_later, daemon=True).start()
    output = tmp_path / "out"
    started = time.monotonic()
    code = run_cli("--output", str(output), "--streaming", "--feeds", http_server.url("/feed.xml"),
                   "--inputs", str(watched), "--poll_interval", "2", "--max_duration", "7",
                   "--window_seconds", "3", "--allow_private_addresses", "--skip_labels")
    assert code == 0 and time.monotonic() - started < 120
    assert len(http_server.requests_to("/feed.xml")) >= 3
    rows = read_rows(output, "article_id, title")
    titles = {r["title"] for r in rows}
    assert {f"poll story {n}" for n in range(6)} <= titles
    assert "Harbour reopens after the storm" in titles
    assert len(rows) == len({r["article_id"] for r in rows}) == 6 + 3 + 1
    manifest = only_manifest(output)
    assert manifest["counts"]["duplicates"] >= 3 + 5  # feed items repeat across polls
    assert_accounting(manifest)
    assert not list(output.rglob("*.inprogress"))


BRIDGE_EN = ("Santa Luzia bridge collapses in Porto Verde, killing 14",
             "https://news.example.org/world/porto-verde-bridge",
             "The Santa Luzia bridge over the Rio Verde in Porto Verde collapsed on Monday morning at rush hour, "
             "sending cars and a bus into the river. Rescuers said 14 people were killed and about 30 injured.")
BRIDGE_FR = ("Porto Verde : l'effondrement du pont Santa Luzia fait quatorze morts",
             "https://actu.example.fr/monde/pont-santa-luzia",
             "Le pont Santa Luzia, qui enjambe le Rio Verde à Porto Verde, s'est effondré lundi matin à l'heure "
             "de pointe. Un bus et plusieurs voitures sont tombés dans le fleuve ; les secours comptent quatorze "
             "morts et une trentaine de blessés.")
CHESS_EN = ("Twelve-year-old wins the national chess championship",
            "https://news.example.org/culture/chess-final",
            "A twelve-year-old schoolgirl won the national chess championship on Sunday, beating the defending "
            "champion in a five-hour final game watched by hundreds of fans.")


def test_local_streaming_run_with_stories_groups_two_languages_of_one_event_in_one_window(tmp_path, http_server):
    # One feed, every item in its first poll: all three articles share that poll's event time, so one
    # fixed window; later polls only repeat them (dedup). Stories span one window in streaming.
    http_server.route("/feed.xml", Response(body=rss([BRIDGE_EN, BRIDGE_FR, CHESS_EN])))
    output = tmp_path / "out"
    started = time.monotonic()
    code = run_cli("--output", str(output), "--streaming", "--feeds", http_server.url("/feed.xml"),
                   "--poll_interval", "2", "--max_duration", "5", "--window_seconds", "60",
                   "--allow_private_addresses", "--max_tokens", "128", "--stories", "--embeddings")
    assert code == 0 and time.monotonic() - started < 120
    assert len(http_server.requests_to("/feed.xml")) >= 2
    rows = {r["title"]: r for r in read_rows(output, "title, lang, story_id, embedding")}
    assert set(rows) == {BRIDGE_EN[0], BRIDGE_FR[0], CHESS_EN[0]}
    assert rows[BRIDGE_EN[0]]["lang"] == "en" and rows[BRIDGE_FR[0]]["lang"] == "fr"
    for row in rows.values():
        assert row["story_id"] and row["story_id"].startswith("st-"), row["title"]
        assert row["embedding"] is not None and len(row["embedding"]) == 384, row["title"]
    assert rows[BRIDGE_EN[0]]["story_id"] == rows[BRIDGE_FR[0]]["story_id"]  # one event, two languages
    assert rows[CHESS_EN[0]]["story_id"] != rows[BRIDGE_EN[0]]["story_id"]
    manifest = only_manifest(output)
    assert manifest["counts"]["rows_written"] == 3 and manifest["counts"]["dead_lettered"] == 0
    assert_accounting(manifest)
    assert not list(output.rglob("*.inprogress"))


# ---- which paths a watch matches: the batch rule (formats.expand_inputs) -------------------------

def watch_plan(pattern: str) -> tuple[str, bool, str]:
    """What WatchFiles decides for ``pattern`` when the graph is built."""
    from newsbeam.formats import named_folder, watch_glob

    return (*watch_glob(pattern), named_folder(pattern))


def poll(plan: tuple[str, bool, str]) -> list[str]:
    """What one poll of WatchFiles' glob and filter finds."""
    from apache_beam.io.filesystems import FileSystems

    from newsbeam.formats import is_watched

    glob, literal, named = plan
    paths = sorted(m.path for m in FileSystems.match([glob])[0].metadata_list)
    return [path for path in paths if is_watched(path, named, literal)]


def test_a_watched_path_that_exists_is_watched_as_itself(tmp_path):
    for name in ("a[1].jsonl", "a1.jsonl", "aX1].jsonl", "q?mark.jsonl", "qXmark.jsonl", "plain.jsonl"):
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    for name in ("a[1].jsonl", "q?mark.jsonl", "plain.jsonl"):  # a file: itself, never a folder below it
        assert poll(watch_plan(str(tmp_path / name))) == [str(tmp_path / name)], name
    odd, sibling = tmp_path / "batch[2024]", tmp_path / "batch2"
    for folder in (odd, sibling):
        folder.mkdir()
        (folder / "one.jsonl").write_text("{}\n", encoding="utf-8")
        (folder / ".draft.jsonl").write_text("{}\n", encoding="utf-8")
    assert poll(watch_plan(str(odd))) == [str(odd / "one.jsonl")]
    assert poll(watch_plan(str(tmp_path / "q[XY]mark.jsonl"))) == [str(tmp_path / "qXmark.jsonl")]  # a glob


def test_a_watched_folder_that_does_not_exist_yet_is_watched_below(tmp_path):
    later = tmp_path / ".cache" / "later"  # hidden above the named folder: still read
    plan = watch_plan(str(later))
    later.mkdir(parents=True)
    (later / "first.jsonl").write_text("{}\n", encoding="utf-8")
    (later / ".part.jsonl").write_text("{}\n", encoding="utf-8")
    assert poll(plan) == [str(later / "first.jsonl")]


def test_watching_a_named_file_of_an_unsupported_type_is_a_configuration_error(tmp_path):
    from newsbeam.formats import watch_glob

    (tmp_path / "table.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type"):
        watch_glob(str(tmp_path / "table.csv"))
