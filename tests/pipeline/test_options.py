"""NewsOptions: list flags in both spellings, --help lists every flag, each
default read from the module that owns it, and bad values rejected cleanly."""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from newsbeam.layout import DEFAULT_PARTITION_KEYS
from newsbeam.pipeline import options as options_module
from newsbeam.pipeline.cli import main
from newsbeam.pipeline.run_flags import run_help_parser
from newsbeam.pipeline.options import NewsOptions

REPO = Path(__file__).resolve().parents[2]

# dest -> (owner module, constant): docs/architecture.md, "Defaults have one owner".
NUMERIC_DEFAULT_OWNERS = {
    "max_rows_per_file": ("newsbeam.transforms.sink", "DEFAULT_MAX_ROWS_PER_FILE"),
    "fetch_timeout": ("newsbeam.fetch.http", "DEFAULT_READ_TIMEOUT"),
    "max_feed_bytes": ("newsbeam.fetch.http", "DEFAULT_MAX_BYTES"),
    "page_concurrency_per_host": ("newsbeam.fetch.pages", "DEFAULT_CONCURRENCY_PER_HOST"),
    "page_rate_per_host": ("newsbeam.fetch.pages", "DEFAULT_RATE_PER_HOST"),
    "max_tokens": ("newsbeam.labelling", "DEFAULT_MAX_TOKENS"),
    "max_batch_tokens": ("newsbeam.labelling", "DEFAULT_MAX_BATCH_TOKENS"),
    "poll_interval": ("newsbeam.transforms.streaming", "DEFAULT_POLL_INTERVAL_SECONDS"),
    "window_seconds": ("newsbeam.transforms.streaming", "DEFAULT_WINDOW_SECONDS"),
    "dedup_ttl": ("newsbeam.transforms.streaming", "DEFAULT_DEDUP_TTL_SECONDS"),
    "allowed_lateness": ("newsbeam.transforms.streaming", "DEFAULT_ALLOWED_LATENESS_SECONDS"),
    "min_language_confidence": ("newsbeam.language", "DEFAULT_MIN_CONFIDENCE"),
    "feed_evidence_weight": ("newsbeam.labelling", "DEFAULT_FEED_EVIDENCE_WEIGHT"),
    "story_threshold": ("newsbeam.stories", "DEFAULT_STORY_THRESHOLD"),
    "story_window": ("newsbeam.stories", "DEFAULT_STORY_WINDOW_SECONDS"),
}


def news_actions() -> list[argparse.Action]:
    """NewsOptions' own arguments, as its option groups declare them."""
    parser = argparse.ArgumentParser(add_help=False)
    NewsOptions._add_argparse_args(parser)
    return list(parser._actions)


def is_numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- list flags ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--partition_keys", "dt,lang"],
    ["--partition_keys=dt", "--partition_keys=lang"],  # what Dataflow workers send
    ["--partition_keys", "dt, lang,"],
])
def test_partition_keys_comma_and_repeated_forms_give_the_same_list(argv):
    assert PipelineOptions(argv).view_as(NewsOptions).partition_keys == ["dt", "lang"]


def test_partition_keys_replace_the_default_rather_than_extend_it():
    assert PipelineOptions(["--partition_keys=source_host"]).view_as(NewsOptions).partition_keys == ["source_host"]
    assert PipelineOptions(["--partition_keys", "lang,dt"]).view_as(NewsOptions).partition_keys == ["lang", "dt"]
    assert PipelineOptions([]).view_as(NewsOptions).partition_keys == list(DEFAULT_PARTITION_KEYS)


# ---- --help -------------------------------------------------------------------------------

def test_every_newsbeam_flag_is_in_run_help(capsys):
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    flags = [flag for action in news_actions() for flag in action.option_strings]
    assert len(flags) >= 30
    missing = [flag for flag in flags if f"  {flag}" not in text]
    assert missing == []


def test_no_beam_flag_shadows_a_newsbeam_flag_in_run_help():
    """run_help_parser resolves conflicts silently: each flag must still be newsbeam's own."""
    parser = run_help_parser()
    for ours in news_actions():
        for flag in ours.option_strings:
            shown = parser._option_string_actions[flag]
            assert (shown.dest, shown.default, shown.help, shown.type) == (
                ours.dest, ours.default, ours.help, ours.type), flag


# ---- defaults have one owner ---------------------------------------------------------------

def test_every_numeric_default_has_an_owner():
    numeric = {action.dest for action in news_actions() if is_numeric(action.default)}
    assert numeric == set(NUMERIC_DEFAULT_OWNERS)


@pytest.mark.parametrize("dest", sorted(NUMERIC_DEFAULT_OWNERS))
def test_numeric_default_equals_the_owners_constant(dest):
    module, name = NUMERIC_DEFAULT_OWNERS[dest]
    expected = getattr(importlib.import_module(module), name)
    assert getattr(PipelineOptions([]).view_as(NewsOptions), dest) == expected


def _default_names_in_source() -> dict[str, ast.expr]:
    """dest -> the expression options.py passes as ``default=``."""
    tree = ast.parse(inspect.getsource(options_module))
    defaults = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flag = node.args[0].value
            for keyword in node.keywords:
                if keyword.arg == "default":
                    defaults[flag.lstrip("-")] = keyword.value
    return defaults


def _imported_names() -> dict[str, str]:
    tree = ast.parse(inspect.getsource(options_module))
    return {alias.asname or alias.name: node.module
            for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_options_restate_no_default_they_import_each_from_its_owner():
    defaults, imported = _default_names_in_source(), _imported_names()
    for dest, (module, name) in NUMERIC_DEFAULT_OWNERS.items():
        expression = defaults[dest]
        assert isinstance(expression, ast.Name) and expression.id == name, (dest, ast.unparse(expression))
        assert imported[name] == module, (dest, name, imported.get(name))
    partition = defaults["partition_keys"]
    assert "DEFAULT_PARTITION_KEYS" in ast.unparse(partition) and imported["DEFAULT_PARTITION_KEYS"] == "newsbeam.layout"


# ---- bad values through the CLI ------------------------------------------------------------

BAD_VALUES = {"quantize": ["--quantize", "int4"], "max_rows_per_file": ["--max_rows_per_file", "abc"]}


@pytest.fixture(scope="module")
def bad_value_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("bad-options") / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return {
        dest: subprocess.run([sys.executable, "-m", "newsbeam.pipeline.cli", "run", "--output", str(output),
                              "--skip_labels", *argv],
                             check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        for dest, argv in BAD_VALUES.items()
    }


@pytest.mark.parametrize("dest", sorted(BAD_VALUES))
def test_a_bad_value_exits_2_naming_flag_and_value_without_a_traceback(bad_value_runs, dest):
    run = bad_value_runs[dest]
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    error_lines = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and f"--{dest}" in error_lines[0] and BAD_VALUES[dest][1] in error_lines[0]


@pytest.mark.parametrize("dest", sorted(BAD_VALUES))
def test_a_bad_value_is_reported_in_one_line(bad_value_runs, dest):
    lines = [line for line in bad_value_runs[dest].stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines


@pytest.mark.parametrize("argv", [
    ["--fetch_timeout", "0"], ["--max_feed_bytes", "-1"], ["--page_rate_per_host", "0"],
    ["--page_concurrency_per_host", "0"], ["--poll_interval", "inf"], ["--max_duration", "-5"],
    ["--window_seconds", "nan"], ["--dedup_ttl", "0"], ["--allowed_lateness", "-1"], ["--max_tokens", "8"],
    ["--max_batch_tokens", "0"], ["--story_threshold", "2"], ["--story_window", "0"], ["--torch_threads", "0"],
    ["--min_language_confidence", "5"], ["--max_rows_per_file", "-3"], ["--max_rows_per_file", "2.5"],
    ["--feed_evidence_weight", "0.5"],
])
def test_a_number_out_of_range_exits_2_in_one_line_before_anything_runs(tmp_path, capsys, argv):
    """Such values ran before: a zero timeout or rate failed late, -3 rows per file crashed the sink."""
    output = tmp_path / "out"
    assert main(["run", "--output", str(output), "--skip_labels", *argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"argument {argv[0]}: must be" in lines[0] and repr(argv[1]) in lines[0], lines
    assert not output.exists()


@pytest.mark.parametrize("value, said", [("klingon", "unknown text encoding 'klingon'"),
                                         ("rot13", "'rot13' is not a text encoding")])
def test_an_input_encoding_that_is_no_text_encoding_exits_2_in_one_line(tmp_path, capsys, value, said):
    output = tmp_path / "out"
    assert main(["run", "--output", str(output), "--skip_labels", "--input_encoding", value]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"argument --input_encoding: {said}" in lines[0], lines
    assert not output.exists()


@pytest.mark.parametrize("argv, value", [(["--allowed_lateness", "0"], 0.0), (["--story_threshold", "1"], 1.0), (["--story_threshold", "-1"], -1.0),
                                         (["--max_rows_per_file=7"], 7), (["--min_language_confidence", "0"], 0.0)])
def test_a_number_at_its_bound_is_accepted(argv, value):
    from newsbeam.pipeline.run_flags import flag_problem

    assert flag_problem(["--output", "out", *argv]) is None
    dest = argv[0].split("=")[0].lstrip("-")
    assert getattr(PipelineOptions(argv).view_as(NewsOptions), dest) == value


@pytest.mark.parametrize("flag", ["--output", "--state"])
def test_a_file_where_a_folder_belongs_exits_2_in_one_line_and_is_left_alone(tmp_path, capsys, flag):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"title": "A title", "body": "Some text here.", "url": "https://x.example/1"}\n')
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    folders = {"--output": str(tmp_path / "out"), "--state": str(tmp_path / "state"), flag: str(a_file)}
    code = main(["run", "--inputs", str(inputs), "--skip_labels", "--output", folders["--output"],
                 "--state", folders["--state"]])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and lines == [f"newsbeam: {flag} {a_file}: is a file, not a folder"]
    assert a_file.read_text() == "keep me"
    assert not any(tmp_path.glob("*/*.parquet")) and not any(tmp_path.glob("*/*=*"))


# ---- unknown flags ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, named", [
    (["--no_such_flag"], "unknown flag --no_such_flag"),
    (["--no_such_flag=1"], "unknown flag --no_such_flag"),
    (["--no_such_flag", "value"], "unknown flag --no_such_flag"),
    (["--ouput", "elsewhere"], "unknown flag --ouput (did you mean --output?)"),
    (["--out", "elsewhere"], "unknown flag --out"),  # no abbreviations, as in Beam's own parser
    (["stray"], "unexpected argument 'stray'"),
])
def test_an_unknown_flag_exits_2_in_one_line_and_runs_nothing(tmp_path, capsys, argv, named):
    output = tmp_path / "out"
    assert main(["run", "--output", str(output), "--skip_labels", *argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], lines
    assert not output.exists()


def beam_option_flags() -> list[tuple[str, argparse.Action]]:
    """Every flag of every PipelineOptions subclass loaded, each parsed on its own as Beam parses it."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    def subclasses(root):
        for cls in root.__subclasses__():
            yield cls
            yield from subclasses(cls)

    flags = []
    for cls in subclasses(PipelineOptions):
        parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
        cls._add_argparse_args(parser)
        flags.extend((flag, action) for action in parser._actions for flag in action.option_strings)
    return flags


def test_every_flag_of_every_beam_options_class_still_passes():
    from newsbeam.pipeline.run_flags import flag_problem

    flags = beam_option_flags()
    assert len(flags) > 150 and {"--runner", "--experiments", "--sdk_container_image", "--dry_run"} <= {f for f, _ in flags}
    refused = {}
    for flag, action in flags:
        values = [[]] if action.nargs == 0 else [[str(action.choices[0])]] if action.choices else [["1"], ["{}"], ["64"], ["utf-8"]]
        problems = [flag_problem(["--output", "out", flag, *value]) for value in values]
        if all(problems):
            refused[flag] = problems
    assert refused == {}


def test_dataflow_flags_parse_next_to_newsbeams():
    from newsbeam.pipeline.run_flags import flag_problem

    assert flag_problem(["--runner", "DataflowRunner", "--project", "p", "--region", "r", "--temp_location", "gs://b/t",
                         "--dry_run=True", "--experiments", "use_runner_v2", "--experiments=a,b", "--setup_file",
                         "./setup.py", "--max_num_workers", "3", "--save_main_session", "--output", "gs://b/o",
                         "--feeds", "https://a.example/rss", "https://b.example/rss", "--partition_keys=dt",
                         "--partition_keys=lang", "--streaming"]) is None


def test_a_value_a_beam_action_chokes_on_is_one_line_naming_its_flag(tmp_path, capsys):
    """--gcs_custom_audit_entries takes a JSON object; Beam's action raises AttributeError on '1'."""
    if "--gcs_custom_audit_entries" not in {flag for flag, _ in beam_option_flags()}:
        pytest.skip("this Beam has no --gcs_custom_audit_entries")
    assert main(["run", "--output", str(tmp_path / "out"), "--gcs_custom_audit_entries", "1"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "argument --gcs_custom_audit_entries: invalid value" in lines[0], lines


@pytest.mark.parametrize("argv, named", [
    (["search", "--max-rows", "0", "harbour"], "newsbeam search: error: argument --max-rows: must be an integer >= 1"),
    (["report", "--top-sources", "0"], "newsbeam report: error: argument --top-sources: must be an integer >= 1"),
    (["report", "--top", "5"], "newsbeam: error: unrecognized arguments: --top 5"),  # no abbreviations
    (["query", "--max-rows", "-1", "SELECT 1"], "newsbeam query: error: argument --max-rows: must be an integer >= 1"),
    (["compact", "--output", "x", "--target_file_mb", "0"], "newsbeam compact: error: argument --target_file_mb"),
    (["compact"], "newsbeam compact: error: the following arguments are required: --output"),
])
def test_every_subcommand_says_a_bad_flag_in_one_line_with_exit_2(capsys, argv, named):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(named) and lines[0].endswith("--help)"), lines
