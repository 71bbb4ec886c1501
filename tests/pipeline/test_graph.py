"""End-to-end batch runs through the real CLI, runner and Parquet files."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.support.pipelines import (
    SAMPLES,
    SEED_ARTICLE,
    SHARED,
    assert_accounting,
    only_manifest,
    read_rows,
    read_with_pyarrow,
    run_cli,
    serve_fixture_feeds,
)

FAST = ["--skip_labels"]  # labels have their own end-to-end test with the real model


def test_seed_article_lands_as_one_arabic_row_with_its_headline(tmp_path):
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--inputs", str(SEED_ARTICLE), *FAST) == 0
    headline = SEED_ARTICLE.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    rows = read_rows(output, "title, lang, language, body, dt")
    assert len(rows) == 1
    assert rows[0]["lang"] == "ar" and rows[0]["language"] == "ar" and rows[0]["title"] == headline
    table = read_with_pyarrow(output)
    assert table.num_rows == 1 and table.column("lang").to_pylist() == ["ar"]
    assert table.column("title").to_pylist() == [headline]


def test_mixed_feeds_and_files_account_for_every_entry(tmp_path, http_server):
    urls = serve_fixture_feeds(http_server)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(SEED_ARTICLE, inputs / "seed.txt")
    (inputs / "articles.jsonl").write_text(
        json.dumps({"title": "Budget vote", "body": "Parliament voted on the budget late on Monday night.",
                    "url": "https://news.example.org/good/0"}) + "\n"
        + json.dumps({"headline": "No body here", "url": "https://files.example.org/a"}) + "\n"
        + json.dumps({"url": "https://files.example.org/empty"}) + "\n",
        encoding="utf-8",
    )
    (inputs / "bad.json").write_text("{not json", encoding="utf-8")
    (inputs / "garbage.xml").write_bytes(b"\x00\x01\x02 binary garbage \xff\xfe")
    (inputs / "page.html").write_text(
        "<html><head><title>Page</title></head><body><nav>Home | About | Contact</nav><article><h1>Library opens</h1>"
        + "<p>The new public library opened its doors on Saturday with thousands of visitors.</p>" * 3
        + "</article><footer>Copyright footer</footer></body></html>",
        encoding="utf-8",
    )
    output = tmp_path / "out"
    code = run_cli("--output", str(output), "--feeds", *urls.values(), "--inputs", str(inputs),
                   "--allow_private_addresses", "--fetch_timeout", "1.5", *FAST)
    assert code == 0
    manifest = only_manifest(output)
    counts = manifest["counts"]
    assert_accounting(manifest)
    rows = read_rows(output, "article_id, url, title, language, source")
    assert counts["rows_written"] == len(rows) == len({r["article_id"] for r in rows})
    # good(5) + gzip(3) + latin1(1) + moved->good(5, dupes) + dupes(3: 2 dupes) + seed + jsonl(2 usable)
    # + html(1) + 1 jsonl entry without text dead-lettered
    failed = {f["source"].rsplit("/", 1)[-1]: f["reason"] for f in manifest["failures"]}
    assert set(failed) >= {"missing.xml", "broken.xml", "slow.xml", "bad.json", "garbage.xml"}
    assert "404" in failed["missing.xml"] and "500" in failed["broken.xml"] and "timeout" in failed["slow.xml"]
    assert counts["feeds_ok"] + counts["feeds_failed"] == 9 and counts["feeds_failed"] >= 3
    assert counts["duplicates"] >= 7 and counts["dead_lettered"] >= 1
    titles = {r["title"] for r in rows}
    # feedparser recovers what it can of malformed XML; what it can't is a dead letter
    import pyarrow.parquet as pq

    dead = [row for path in (output / "_errors").rglob("*.parquet") for row in pq.read_table(path).to_pylist()]
    assert "malformed.xml" in failed or any(r["source"].endswith("malformed.xml") for r in dead)
    assert all(r["reason"] and r["stage"] for r in dead)
    assert "Été chaud à Paris" in titles  # ISO-8859-1 feed decoded
    assert {"zipped story 0", "other story 0", "Library opens", "No body here"} <= titles
    assert not any("utm_" in (r["url"] or "") for r in rows)
    errors = list((output / "_errors").rglob("*.parquet"))
    assert errors, "dead letters must be written under _errors/"


def test_default_run_ingests_the_embedded_samples(tmp_path):
    output = tmp_path / "out"
    assert run_cli("--output", str(output), *FAST) == 0
    rows = read_rows(output, "lang, source")
    languages = {r["lang"] for r in rows}
    assert {"ar", "en", "fr", "es", "ru", "zh"} <= languages
    assert any(r["source"].endswith("000_adb80237c80a1eea.txt") for r in rows)
    assert_accounting(only_manifest(output))


def test_multi_processing_runner_gives_the_same_rows(tmp_path):
    """Pickling problems Dataflow would hit show up here first."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert run_cli("--output", str(single), *FAST) == 0
    assert run_cli("--output", str(multi), "--direct_running_mode=multi_processing", "--direct_num_workers=2", *FAST) == 0
    ids = lambda out: sorted(r["article_id"] for r in read_rows(out, "article_id"))  # noqa: E731
    assert ids(single) == ids(multi) and len(ids(multi)) >= 10
    assert_accounting(only_manifest(multi))


def test_real_feed_files_ingest_without_a_crash(tmp_path):
    real = SHARED / "feeds" / "real"
    if not real.is_dir():
        pytest.skip("../shared/data is absent (a user's fresh clone): real feed files not available")
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--inputs", str(real / "*" / "*"), *FAST) == 0
    manifest = only_manifest(output)
    assert_accounting(manifest)
    assert manifest["counts"]["files_read"] + manifest["counts"]["files_failed"] == 50
    assert manifest["counts"]["files_failed"] == 0, manifest["failures"]
    assert manifest["counts"]["rows_written"] > 500


def test_missing_output_is_a_configuration_error(capsys):
    assert run_cli("--inputs", str(SEED_ARTICLE)) == 2
    assert "--output is required" in capsys.readouterr().err


def test_input_that_matches_nothing_is_a_configuration_error(tmp_path, capsys):
    assert run_cli("--output", str(tmp_path), "--inputs", str(tmp_path / "nope-*.jsonl"), *FAST) == 2
    assert "matches no file" in capsys.readouterr().err


def test_a_configuration_error_leaves_no_beam_temp_folder_behind(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where Beam makes its beam-pipeline-temp* folder
    assert run_cli("--output", str(tmp_path / "out"), "--inputs", str(tmp_path / "nope-*.jsonl"), *FAST) == 2
    assert list(scratch.iterdir()) == []


def test_nothing_readable_exits_3(tmp_path, http_server):
    http_server.route("/gone.xml", __import__("tests.support.httpserver", fromlist=["Response"]).Response(status=404))
    code = run_cli("--output", str(tmp_path / "out"), "--feeds", http_server.url("/gone.xml"),
                   "--allow_private_addresses", *FAST)
    assert code == 3


def test_an_output_below_a_file_exits_2_at_start_up_and_leaves_no_data(tmp_path, capsys):
    """Found before any input is read (it used to fail at the sink, exit 1, after all the work)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = run_cli("--output", str(blocker / "out"), "--inputs", str(SAMPLES / "more-languages.jsonl"), *FAST)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"newsbeam: --output {blocker / 'out'}: cannot be made: {blocker} is a file, not a folder"]
    assert blocker.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["file"]


def _news_jsonl(path, rows):
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)  # recent stories are kept by wall-clock age
    with open(path, "w", encoding="utf-8") as handle:
        for hours_ago, title, body, lang in rows:
            published = (now - dt.timedelta(hours=hours_ago)).isoformat()
            handle.write(json.dumps({"title": title, "body": body, "language": lang, "published": published,
                                     "url": f"https://{lang}.example.org/{abs(hash(title))}",
                                     "source": f"outlet-{lang}"}, ensure_ascii=False) + "\n")
    return path


FLOOD_EN = ("Floods in Valencia kill at least 40 as rivers burst their banks",
            "Torrential rain swept through the Valencia region on Tuesday, flooding towns, cutting roads and "
            "killing at least 40 people, the regional emergency service said.")
FLOOD_FR = ("Inondations à Valence : au moins 40 morts après la crue des rivières",
            "Des pluies torrentielles se sont abattues mardi sur la région de Valence, inondant des villes et "
            "coupant des routes ; les secours régionaux font état d'au moins 40 morts.")
FLOOD_DE = ("Überschwemmungen in Valencia: mindestens 40 Tote nach Sturzfluten",
            "Heftiger Regen hat am Dienstag die Region Valencia überflutet, Straßen abgeschnitten und nach "
            "Angaben des regionalen Rettungsdienstes mindestens 40 Menschen getötet.")
TRANSFER = ("Striker completes record move to Bayern Munich",
            "The forward signed a five-year contract on Monday after the two clubs agreed a record fee.")


def test_stories_group_one_event_across_languages_and_runs_through_the_state(tmp_path):
    output, state = tmp_path / "out", tmp_path / "state"
    first = _news_jsonl(tmp_path / "first.jsonl", [(5, *FLOOD_EN, "en"), (4, *FLOOD_FR, "fr"), (3, *TRANSFER, "en")])
    assert run_cli("--output", str(output), "--inputs", str(first), "--stories", "--state", str(state)) == 0
    rows = {row["title"]: row for row in read_rows(output, "title, story_id, embedding")}
    assert rows[FLOOD_EN[0]]["story_id"] == rows[FLOOD_FR[0]]["story_id"] != rows[TRANSFER[0]]["story_id"]
    assert all(row["story_id"].startswith("st-") and row["embedding"] is None for row in rows.values())
    assert (state / "stories.jsonl").is_file()
    # a later run: the German report of the same floods joins the story the first run opened
    second = _news_jsonl(tmp_path / "second.jsonl", [(1, *FLOOD_DE, "de")])
    assert run_cli("--output", str(output), "--inputs", str(second), "--stories", "--state", str(state),
                   "--embeddings") == 0
    rows = {row["title"]: row for row in read_rows(output, "title, story_id, embedding")}
    assert rows[FLOOD_DE[0]]["story_id"] == rows[FLOOD_EN[0]]["story_id"]
    assert len(rows[FLOOD_DE[0]]["embedding"]) == 384
    assert_accounting(_latest_manifest(output))


def _latest_manifest(output):
    manifests = sorted((output / "_runs").glob("*.json"))
    return json.loads(manifests[-1].read_text(encoding="utf-8"))


def test_input_encoding_flag_lands_legacy_arabic_text_as_the_same_letters(tmp_path):
    headline = "افتتاح مكتبة في المدينة"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "legacy.txt").write_bytes(f"{headline}\nافتتحت المكتبة أبوابها اليوم.\n".encode("cp1256"))
    output = tmp_path / "out"
    code = run_cli("--output", str(output), "--inputs", str(inputs), "--input_encoding", "windows-1256", *FAST)
    assert code == 0
    [row] = read_rows(output, "title, lang")
    assert row == {"title": headline, "lang": "ar"}
