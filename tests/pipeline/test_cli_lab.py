"""eval and train-heads come from the lab; without it they say how to get it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A runtime-only install (a Dataflow worker, a plain `pip install .`) has no newsbeam_lab.
WITHOUT_LAB = ("import sys; sys.modules['newsbeam_lab'] = None; "
               "from newsbeam.pipeline.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("arguments", [["eval", "--dev_report", "--data_root", "/data"],
                                       ["train-heads", "--tasks", "topic"]], ids=["eval", "train-heads"])
def test_a_lab_command_without_the_lab_says_how_to_install_it_in_one_line(arguments):
    result = subprocess.run([sys.executable, "-c", WITHOUT_LAB, *arguments], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"newsbeam {arguments[0]}: the lab is not installed (pip install -e ./lab (from a newsbeam checkout))"]


def test_the_runtime_commands_work_without_the_lab(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_LAB, "query", "--data", str(tmp_path), "SELECT 1 AS one"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "one" in result.stdout and "1" in result.stdout


def test_eval_of_a_file_that_is_not_there_is_one_line_before_any_model_loads(tmp_path):
    missing = tmp_path / "labelled" / "*.jsonl"
    result = subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "eval", "--task", "topic",
                             "--data", str(missing)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"newsbeam eval: no files match {str(missing)!r}"]


def test_a_file_a_command_cannot_write_is_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the report's folder should be", encoding="utf-8")
    out = blocker / "report.html"
    result = subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "report", "--data", str(tmp_path),
                             "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if "no article files" not in line]
    assert len(lines) == 1 and lines[0].startswith("newsbeam report: ") and str(blocker) in lines[0]


def test_eval_of_rows_without_a_usable_label_is_one_line_saying_what_a_row_needs(tmp_path):
    data = tmp_path / "unlabelled.jsonl"
    data.write_text('{"text": "Rain fell all day in the capital."}\n'
                    '{"text": "Markets rose.", "label": "no_such_subject"}\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "eval", "--task", "topic",
                             "--data", str(data)], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("newsbeam eval:")]
    assert len(lines) == 1 and "no usable rows" in lines[0] and "2 skipped" in lines[0] and "topic label" in lines[0]
    assert "Traceback" not in result.stderr


def test_train_heads_with_an_anchor_folder_that_is_not_there_is_one_line_before_any_training(tmp_path):
    missing = tmp_path / "no-heads"
    result = subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "train-heads", "--anchor_heads",
                             str(missing), "--tasks", "topic", "--topic_data", str(tmp_path / "none.jsonl"),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                            timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("newsbeam train-heads: ") and str(missing) in lines[0]
    assert not (tmp_path / "out").exists()
