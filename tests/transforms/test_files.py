"""ReadFiles on a real Beam runner, and the format registry it uses
(expand_inputs, entries_from_file, read_bytes in newsbeam.formats)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from newsbeam.formats import entries_from_file, expand_inputs, read_bytes
from newsbeam.metrics import NAMESPACE
from newsbeam.records import DeadLetter, RawEntry
from newsbeam.transforms.files import DEAD_LETTER, STAGE, ReadFiles
from tests.support.pipelines import english_items, rss

FETCHED_AT = "2024-05-02T00:00:00+00:00"
PAGE = ("<html><head><title>Library opens</title></head><body><nav>Home | About | Contact</nav>"
        "<article><h1>Library opens</h1>"
        + "<p>The new public library opened its doors on Saturday with thousands of visitors.</p>" * 3
        + "</article><footer>Copyright footer</footer></body></html>")


def jsonl(rows: list) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def make_inputs(folder: Path) -> dict[str, Path]:
    """One file of each supported kind, an unsupported one and hidden ones."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "jsonl": folder / "articles.jsonl",
        "json": folder / "list.json",
        "txt": folder / "seed.txt",
        "html": folder / "page.html",
        "feed": folder / "feed.xml",
        "csv": folder / "table.csv",
        "hidden": folder / ".draft.jsonl",
        "in_hidden_folder": folder / ".git" / "notes.txt",
    }
    files["jsonl"].write_text(jsonl([
        {"title": "Budget vote", "body": "Parliament voted on the budget.", "url": "https://f.example/1"},
        {"headline": "Rail strike ends", "text": "Trains run again from Monday.", "url": "https://f.example/2"},
    ]), encoding="utf-8")
    files["json"].write_text(json.dumps([
        {"title": "Harbour reopens", "body": "Ships are back in the harbour."},
        {"title": "Museum night", "content": "Museums stay open until midnight."},
    ]), encoding="utf-8")
    files["txt"].write_text("Heatwave warning\nTemperatures will pass forty degrees this week.\n", encoding="utf-8")
    files["html"].write_text(PAGE, encoding="utf-8")
    files["feed"].write_bytes(rss(english_items("filed", 2)))
    files["csv"].write_text("title,body\nCSV row,never read\n", encoding="utf-8")
    files["hidden"].write_text(jsonl([{"title": "Hidden draft", "body": "not for reading"}]), encoding="utf-8")
    files["in_hidden_folder"].parent.mkdir()
    files["in_hidden_folder"].write_text("Hidden notes\nnot for reading\n", encoding="utf-8")
    return files


SUPPORTED_TITLES = ["Budget vote", "Rail strike ends", "Harbour reopens", "Museum night", "Heatwave warning",
                    "Library opens", "filed story 0", "filed story 1"]


def _save(pcoll, path: Path, label: str):
    return (pcoll
            | f"Gather{label}" >> beam.combiners.ToList()
            | f"Save{label}" >> beam.Map(lambda items, p=str(path): Path(p).write_bytes(pickle.dumps(items))))


def run_read_files(patterns: list[str], folder: Path, **kwargs) -> tuple[list[RawEntry], list[DeadLetter], dict]:
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    outputs = pipeline | ReadFiles(patterns, **kwargs)
    _save(outputs["entries"], folder / "entries.pickle", "Entries")
    _save(outputs[DEAD_LETTER], folder / "letters.pickle", "Letters")
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return (pickle.loads((folder / "entries.pickle").read_bytes()),
            pickle.loads((folder / "letters.pickle").read_bytes()),
            {c.key.metric.name: c.committed for c in counters})


# ---- the registry -----------------------------------------------------------------------

def test_a_folder_expands_to_its_supported_visible_files_sorted(tmp_path):
    files = make_inputs(tmp_path / "in")
    found = expand_inputs([str(tmp_path / "in")])
    expected = sorted(str(files[k]) for k in ("jsonl", "json", "txt", "html", "feed"))
    assert found == expected


def test_globs_and_paths_overlap_without_duplicates(tmp_path):
    files = make_inputs(tmp_path / "in")
    found = expand_inputs([str(tmp_path / "in" / "*.json*"), str(files["jsonl"])])
    assert found == sorted([str(files["jsonl"]), str(files["json"])])


@pytest.mark.parametrize("pattern", ["nothing-*.jsonl", "missing.txt", "no_such_folder/"])
def test_a_pattern_that_matches_nothing_is_a_value_error_naming_it(tmp_path, pattern):
    make_inputs(tmp_path / "in")
    full = str(tmp_path / "in" / pattern)
    with pytest.raises(ValueError, match="matches no file") as caught:
        expand_inputs([str(tmp_path / "in"), full])
    assert full in str(caught.value)


def test_read_files_fails_while_the_graph_is_built_for_a_pattern_that_matches_nothing(tmp_path):
    pattern = str(tmp_path / "typo*.jsonl")
    with pytest.raises(ValueError, match="typo"):
        beam.Pipeline(runner=FnApiRunner()) | ReadFiles([pattern])


def test_an_input_folder_inside_a_hidden_folder_is_still_read(tmp_path):
    drop = tmp_path / ".staging" / "drop"
    drop.mkdir(parents=True)
    (drop / "a.jsonl").write_text(jsonl([{"title": "Kept", "body": "b"}]), encoding="utf-8")
    assert expand_inputs([str(drop)]) == [str(drop / "a.jsonl")]


def test_hidden_means_hidden_below_the_named_folder_for_folders_and_globs(tmp_path):
    files = make_inputs(tmp_path / ".cache" / "in")  # hidden above what is named: not our business
    visible = sorted(str(files[k]) for k in ("jsonl", "json", "txt", "html", "feed"))
    assert expand_inputs([str(tmp_path / ".cache" / "in")]) == visible
    assert expand_inputs([str(tmp_path / ".cache" / "in" / "**")]) == visible  # .draft.jsonl, .git/ still skipped
    assert expand_inputs([str(tmp_path / ".cache" / "*" / "*.jsonl")]) == [str(files["jsonl"])]


def test_a_hidden_file_named_on_its_own_is_read(tmp_path):
    files = make_inputs(tmp_path / "in")
    assert expand_inputs([str(files["hidden"])]) == [str(files["hidden"])]


def test_a_named_file_of_an_unsupported_type_is_an_error_naming_it_and_the_supported_types(tmp_path):
    files = make_inputs(tmp_path / "in")
    with pytest.raises(ValueError, match="unsupported file type") as caught:
        expand_inputs([str(files["jsonl"]), str(files["csv"])])
    assert str(files["csv"]) in str(caught.value) and ".jsonl" in str(caught.value) and ".html" in str(caught.value)
    assert expand_inputs([str(tmp_path / "in")]) == sorted(  # inside a folder it is one of many: skipped
        str(files[k]) for k in ("jsonl", "json", "txt", "html", "feed"))


def test_the_cli_refuses_a_named_unsupported_file_in_one_line_with_exit_2(tmp_path, capsys):
    from tests.support.pipelines import run_cli

    files = make_inputs(tmp_path / "in")
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--inputs", str(files["csv"]), "--skip_labels") == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(error) == 1 and str(files["csv"]) in error[0] and "unsupported file type" in error[0], error
    assert not output.exists()


def test_entries_from_file_reads_each_format_and_refuses_others(tmp_path):
    files = make_inputs(tmp_path / "in")

    def titles(key):
        path = str(files[key])
        return [e.title for e in entries_from_file(path, files[key].read_bytes(), fetched_at=FETCHED_AT)]

    assert titles("jsonl") == ["Budget vote", "Rail strike ends"]
    assert titles("json") == ["Harbour reopens", "Museum night"]
    assert titles("txt") == ["Heatwave warning"]
    assert titles("html") == ["Library opens"]
    assert titles("feed") == ["filed story 0", "filed story 1"]
    [text_entry] = entries_from_file(str(files["txt"]), files["txt"].read_bytes(), fetched_at=FETCHED_AT)
    assert text_entry.source == str(files["txt"]) and text_entry.fetched_at == FETCHED_AT
    assert text_entry.body.strip() == "Temperatures will pass forty degrees this week."
    with pytest.raises(ValueError, match="unsupported file type: table.csv"):
        list(entries_from_file(str(files["csv"]), files["csv"].read_bytes(), fetched_at=FETCHED_AT))


def test_read_bytes_allows_exactly_the_cap_and_refuses_one_more(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 100)
    assert read_bytes(str(path), max_bytes=100) == b"x" * 100
    with pytest.raises(ValueError, match="larger than 99 bytes"):
        read_bytes(str(path), max_bytes=99)


# ---- ReadFiles on a runner ------------------------------------------------------------

def test_read_files_gives_entries_of_the_supported_files_only(tmp_path):
    make_inputs(tmp_path / "in")
    entries, letters, counters = run_read_files([str(tmp_path / "in")], tmp_path / "run")
    assert sorted(e.title for e in entries) == sorted(SUPPORTED_TITLES)
    assert letters == []
    assert (counters["files_read"], counters["entries_read"]) == (5, len(SUPPORTED_TITLES))
    assert counters.get("files_failed", 0) == 0


def test_a_jsonl_file_with_a_bad_line_fails_whole_and_names_the_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "bad.jsonl"
    bad.write_text(jsonl([{"title": "Bad file line 1", "body": "b"}, {"title": "Bad file line 2", "body": "b"}])
                   + "{not json\n" + jsonl([{"title": "Bad file line 4", "body": "b"}]), encoding="utf-8")
    (folder / "good.jsonl").write_text(jsonl([{"title": "Good line", "body": "b"}]), encoding="utf-8")

    entries, letters, counters = run_read_files([str(folder)], tmp_path / "run")

    assert [e.title for e in entries] == ["Good line"]
    [letter] = letters
    assert letter.source == str(bad) and letter.stage == STAGE == "read_file"
    assert "line 3" in letter.reason
    assert (counters["files_read"], counters["files_failed"], counters["entries_read"]) == (1, 1, 1)


@pytest.mark.parametrize("name, content, named", [
    ("number-title.jsonl", '{"title": 5, "body": "b"}\n', "line 1: field 'title' is a JSON number, expected a string"),
    ("list-body.jsonl", '{"title": "t", "body": "b"}\n{"title": "t", "text": ["a"]}\n',
     "line 2: field 'text' is a JSON array, expected a string"),
    ("number-url.jsonl", '{"title": "t", "url": 7}\n', "line 1: field 'url' is a JSON number"),
    ("array.json", '[{"title": "t", "body": "b"}, 1]', "item 2: expected a JSON object, got a JSON number"),
    ("null.json", 'null', "expected a JSON object, got a JSON null"),
    ("string.jsonl", '"a headline alone"\n', "line 1: expected a JSON object, got a JSON string"),
])
def test_a_json_field_of_the_wrong_type_fails_its_file_naming_line_and_field(tmp_path, name, content, named):
    """Such a row crashed the whole pipeline in normalise (TypeError), taking every other file with it."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_text(content, encoding="utf-8")
    (folder / "good.jsonl").write_text(jsonl([{"title": "Good line", "body": "b", "tags": [1], "author": 7}]),
                                       encoding="utf-8")

    entries, letters, counters = run_read_files([str(folder)], tmp_path / "run")

    assert [(e.title, e.tags, e.authors) for e in entries] == [("Good line", ("1",), ("7",))]
    [letter] = letters
    assert letter.source == str(folder / name) and named in letter.reason


@pytest.mark.parametrize("name, content", [("latin1.txt", "Titre\nCorps \u00e0 lire\n".encode("latin-1")),
                                           ("cp1256.jsonl", b'{"title": "ok"}\n' + '{"title": "\u062e\u0628\u0631"}\n'.encode("cp1256"))])
def test_a_file_that_is_not_utf8_fails_saying_so_and_where(tmp_path, name, content):
    """No guessing of legacy code pages (detectors confuse cp1252 with cp1250 on short texts)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes(content)
    entries, letters, _ = run_read_files([str(folder)], tmp_path / "run")
    assert entries == []
    [letter] = letters
    assert "not UTF-8 text (line 2: byte 0x" in letter.reason and "save the file as UTF-8" in letter.reason


def test_a_file_over_max_bytes_is_a_dead_letter_naming_the_cap(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    big = folder / "big.txt"
    big.write_text("Big headline\n" + "word " * 1000, encoding="utf-8")
    (folder / "small.txt").write_text("Small headline\nshort body\n", encoding="utf-8")

    entries, letters, _ = run_read_files([str(folder)], tmp_path / "run", max_bytes=2000)

    assert [e.title for e in entries] == ["Small headline"]
    [letter] = letters
    assert letter.source == str(big) and letter.stage == "read_file"
    assert "2000" in letter.reason and "larger" in letter.reason


ARABIC_HEADLINE = "افتتاح مكتبة عامة في المدينة"


def test_input_encoding_reads_legacy_json_and_text_files_and_a_utf8_bom_still_wins(tmp_path):
    """Arabic exports in windows-1256: each field comes back as the same letters;
    a file in the folder saved again as UTF-8 with a byte-order mark is read as UTF-8."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "legacy.txt").write_bytes(f"{ARABIC_HEADLINE}\nالنص\n".encode("cp1256"))
    (folder / "legacy.jsonl").write_bytes(
        (json.dumps({"title": ARABIC_HEADLINE + " 2", "body": "نص"}, ensure_ascii=False) + "\n")
        .encode("cp1256"))
    (folder / "resaved.txt").write_bytes(b"\xef\xbb\xbf" + "R\u00e9\u00e9crit en UTF-8\nCorps\n".encode("utf-8"))

    entries, letters, _ = run_read_files([str(folder)], tmp_path / "run", encoding="windows-1256")

    assert letters == []
    assert sorted(e.title for e in entries) == sorted([ARABIC_HEADLINE, ARABIC_HEADLINE + " 2", "Réécrit en UTF-8"])
    assert {e.body.strip() for e in entries} == {"النص", "نص", "Corps"}


def test_a_file_not_in_the_named_encoding_fails_naming_it_and_where(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "odd.txt").write_bytes(b"Titre\nOctet \x81 inconnu\n")  # 0x81 is not a cp1252 character
    (folder / "fine.txt").write_bytes("Caf\u00e9 ouvert\nCorps\n".encode("cp1252"))

    entries, letters, _ = run_read_files([str(folder)], tmp_path / "run", encoding="cp1252")

    assert [e.title for e in entries] == ["Caf\u00e9 ouvert"]
    [letter] = letters
    assert letter.source == str(folder / "odd.txt")
    assert "not cp1252 text (line 2: byte 0x81 at offset 12): is --input_encoding right for it?" in letter.reason


@pytest.mark.parametrize("name, message", [("klingon", "unknown text encoding 'klingon'"),
                                           ("base64", "'base64' is not a text encoding")])
def test_an_encoding_that_is_not_a_text_encoding_is_refused_before_any_read(tmp_path, name, message):
    (tmp_path / "a.txt").write_text("t\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        ReadFiles([str(tmp_path)], encoding=name)


def test_compressed_inputs_are_read_by_the_format_under_their_compression_suffix(tmp_path):
    """Dumps often come compressed (articles.jsonl.gz): each supported format is read
    whatever the compression; a compressed file of an unsupported type is still skipped."""
    import bz2
    import gzip
    import lzma

    import zstandard

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "articles.jsonl.gz").write_bytes(gzip.compress(jsonl([{"title": "Gzip line", "body": "b"}]).encode()))
    (folder / "feed.xml.bz2").write_bytes(bz2.compress(rss([("Bzip2 item", "https://e.example/1", "body")])))
    (folder / "seed.TXT.zst").write_bytes(zstandard.ZstdCompressor().compress(b"Zstd headline\nbody\n"))
    (folder / "list.json.xz").write_bytes(lzma.compress(b'[{"title": "Xz item", "body": "b"}]'))
    (folder / "table.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n"))

    assert [Path(p).name for p in expand_inputs([str(folder)])] == [
        "articles.jsonl.gz", "feed.xml.bz2", "list.json.xz", "seed.TXT.zst"]
    entries, letters, _ = run_read_files([str(folder)], tmp_path / "run")
    assert letters == []
    assert sorted(e.title for e in entries) == ["Bzip2 item", "Gzip line", "Xz item", "Zstd headline"]
    assert expand_inputs([str(folder / "articles.jsonl.gz")]) == [str(folder / "articles.jsonl.gz")]
    with pytest.raises(ValueError, match=r"unsupported file type .*each also compressed: \.gz"):
        expand_inputs([str(folder / "table.csv.gz")])


def test_a_corrupt_or_too_large_compressed_file_is_a_dead_letter_and_the_others_land(tmp_path):
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    bomb = gzip.compress(b"Headline\n" + b"0" * 3_000_000)  # 3 MB of text in a few kB
    assert len(bomb) < 20_000
    (folder / "bomb.txt.gz").write_bytes(bomb)
    (folder / "good.txt.gz").write_bytes(gzip.compress(b"Fine headline\nbody\n"))

    entries, letters, _ = run_read_files([str(folder)], tmp_path / "run", max_bytes=1_000_000)

    assert [e.title for e in entries] == ["Fine headline"]
    reasons = {Path(letter.source).name: letter.reason for letter in letters}
    assert set(reasons) == {"broken.jsonl.gz", "bomb.txt.gz"}
    assert "larger than 1000000 bytes once decompressed" in reasons["bomb.txt.gz"]
