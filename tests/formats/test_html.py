"""HTML extraction's dependencies are checked before a run that reads HTML starts.

trafilatura imports jusText, which imports ``lxml.html.clean``; since lxml 5.2
that module only re-exports the separate ``lxml_html_clean`` package. Without
it every page would fail with an ImportError and the run would still commit,
so a run that will extract HTML (--full_text, or .html/.htm --inputs) stops
at start-up instead: one line naming the package, exit 2, nothing written.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a pytest class

from newsbeam.exit_codes import EXIT_CONFIG
from newsbeam.formats.html import check_extraction_dependencies, extract_page
from newsbeam.pipeline.graph import build
from tests.support.pipelines import REPO, SEED_ARTICLE

PAGES = REPO / "tests" / "fixtures" / "pages"


@pytest.fixture
def cleaner_missing(monkeypatch):
    """This process as if lxml_html_clean were not installed, undone after the test.

    ``lxml.html.clean`` is dropped from the import cache so that importing it runs
    lxml's real shim again, which then fails the way it does on a bare install.
    """
    monkeypatch.setitem(sys.modules, "lxml_html_clean", None)
    monkeypatch.delitem(sys.modules, "lxml.html.clean", raising=False)


@pytest.fixture
def blocked_path(tmp_path) -> Path:
    """A PYTHONPATH entry that shadows lxml_html_clean with a package that cannot be imported."""
    shadow = tmp_path / "shadow" / "lxml_html_clean"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'lxml_html_clean\'", name="lxml_html_clean")\n')
    return shadow.parent


def test_the_check_passes_where_extraction_works():
    check_extraction_dependencies()

    page = extract_page((PAGES / "english.html").read_bytes())
    assert page is not None and "solar panels" in page.text


def test_the_check_names_the_missing_cleaner_and_how_to_install_it(cleaner_missing):
    with pytest.raises(ValueError) as caught:
        check_extraction_dependencies()

    message = str(caught.value)
    assert "lxml_html_clean" in message and "pip install lxml_html_clean" in message
    assert "\n" not in message


def _graph_options(tmp_path: Path, *flags: str) -> PipelineOptions:
    return PipelineOptions(["--output", str(tmp_path / "out"), "--skip_labels", *flags])


@pytest.mark.parametrize("flags", [
    ["--full_text", "--inputs", str(SEED_ARTICLE)],
    ["--inputs", str(PAGES / "english.html")],
    ["--inputs", str(PAGES)],  # a folder that holds pages
])
def test_a_graph_that_extracts_html_is_refused_without_the_cleaner(tmp_path, cleaner_missing, flags):
    with pytest.raises(ValueError, match="lxml_html_clean"):
        build(_graph_options(tmp_path, *flags), pipeline=BeamTestPipeline())


def test_a_graph_that_reads_no_html_does_not_need_the_cleaner(tmp_path, cleaner_missing):
    pipeline = build(_graph_options(tmp_path, "--inputs", str(SEED_ARTICLE)), pipeline=BeamTestPipeline())

    assert "ReadFiles" in {transform.full_label for transform in pipeline.transforms_stack[0].parts}


@pytest.mark.parametrize("flags", [
    ["--full_text", "--inputs", str(SEED_ARTICLE)],
    ["--inputs", str(PAGES / "english.html")],
], ids=["full_text", "html_input"])
def test_the_command_exits_2_naming_the_missing_cleaner(tmp_path, blocked_path, flags):
    output = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "newsbeam.pipeline.cli", "run", *flags, "--output", str(output), "--skip_labels"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked_path), str(REPO)]), "HF_HUB_OFFLINE": "1"},
    )

    assert done.returncode == EXIT_CONFIG, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "lxml_html_clean" in lines[0] and "pip install lxml_html_clean" in lines[0], lines
    assert "Traceback" not in done.stderr
    assert not output.exists()
