"""--inputs: a path that exists is read literally, even with glob characters in its name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsbeam.formats import expand_inputs
from tests.support.pipelines import read_rows, run_cli

LITERAL_NAMES = ("a[1].jsonl", "q?mark.jsonl", "qXmark.jsonl")


def slug_of(path: Path) -> str:
    return str(LITERAL_NAMES.index(path.name)) if path.name in LITERAL_NAMES else path.stem


def _write_articles(path: Path, count: int) -> None:
    lines = [
        json.dumps({"title": f"{path.stem} story {n} about the harbour",
                    "url": f"https://files.example.org/{slug_of(path)}/{n}",
                    "body": f"Body of {path.stem} story {n}: the harbour authority reported {n} ships today.",
                    "published": "2024-05-02T08:00:00Z"})
        for n in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """One folder holding files whose names are also valid glob patterns."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for count, name in enumerate(LITERAL_NAMES, start=2):
        _write_articles(inputs / name, count)
    return inputs


def test_existing_file_with_brackets_is_read_literally(folder):
    assert expand_inputs([str(folder / "a[1].jsonl")]) == [str(folder / "a[1].jsonl")]


def test_existing_file_with_a_question_mark_matches_only_itself(folder):
    assert expand_inputs([str(folder / "q?mark.jsonl")]) == [str(folder / "q?mark.jsonl")]


def test_a_glob_that_is_not_an_existing_path_still_globs(folder):
    assert expand_inputs([str(folder / "*.jsonl")]) == sorted(str(folder / name) for name in LITERAL_NAMES)
    assert expand_inputs([str(folder / "q[XY]mark.jsonl")]) == [str(folder / "qXmark.jsonl")]


def test_existing_folder_with_glob_characters_is_walked_literally(tmp_path):
    odd = tmp_path / "batch[2024]"
    odd.mkdir()
    _write_articles(odd / "one.jsonl", 1)
    (tmp_path / "batch2").mkdir()  # what the pattern "batch[2024]" would match as a glob
    _write_articles(tmp_path / "batch2" / "other.jsonl", 1)
    assert expand_inputs([str(odd)]) == [str(odd / "one.jsonl")]


def test_a_pattern_matching_nothing_is_still_an_error(folder):
    with pytest.raises(ValueError, match="matches no file"):
        expand_inputs([str(folder / "b[1].jsonl")])


def test_cli_reads_a_file_named_like_a_glob(tmp_path, folder):
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--inputs", str(folder / "a[1].jsonl"), "--skip_labels") == 0
    rows = read_rows(output, "url")
    assert sorted(row["url"] for row in rows) == [f"https://files.example.org/0/{n}" for n in range(2)]
