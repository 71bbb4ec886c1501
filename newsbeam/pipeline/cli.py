"""The ``newsbeam`` command. It parses, calls, and reports; the work is elsewhere.

Exit codes: :mod:`newsbeam.exit_codes`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from newsbeam.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED, EXIT_NOTHING_READ, EXIT_OK, first_line
from newsbeam.faults import crash_point
from newsbeam.pipeline.run_flags import flag_problem, run_help_parser

if TYPE_CHECKING:  # Beam is imported when a command needs it, so `console_main` can pause the collector first
    from apache_beam.options.pipeline_options import PipelineOptions

LOGGER = logging.getLogger("newsbeam")


def public_options(options: PipelineOptions) -> dict:
    """Options for the manifest: secret-looking options dropped, URLs redacted."""
    from newsbeam.normalise import is_secret_name, redact_url

    def clean(value):
        if isinstance(value, str):
            return redact_url(value)
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return {
        key: clean(value)
        for key, value in options.get_all_options(drop_default=True).items()
        if not is_secret_name(key)
    }


def run_pipeline(argv: Sequence[str]) -> int:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    from newsbeam.gcp import gcs_credentials_problem
    from newsbeam.layout import RUN_ID_RE, new_run_id
    from newsbeam.pipeline.options import NewsOptions

    if any(flag in ("-h", "--help") for flag in argv):
        run_help_parser().print_help()
        return EXIT_OK
    problem = flag_problem(argv)
    if problem:
        print(f"newsbeam run: error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    options = PipelineOptions(list(argv))
    news = options.view_as(NewsOptions)
    if not _workers_share_cwd(options):
        _make_local_paths_absolute(news)
    if not (news.encoder or news.topic_model or news.sentiment_model):
        # The embedded default never needs the hub; don't let a library try.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    news.run_id = news.run_id or new_run_id()
    if not RUN_ID_RE.fullmatch(news.run_id):
        print(f"newsbeam: --run_id {news.run_id!r} must match {RUN_ID_RE.pattern} (it names files)", file=sys.stderr)
        return EXIT_CONFIG
    if not news.output:
        print("newsbeam: --output is required (a local folder or gs:// path)", file=sys.stderr)
        return EXIT_CONFIG
    dry_run = _is_dry_run(options)  # builds a graph: takes no lock, reads and writes no state or output
    if not dry_run:
        cloud = options.view_as(GoogleCloudOptions)
        credentials_problem = gcs_credentials_problem(
            [news.output, news.state, cloud.temp_location, cloud.staging_location])
        if credentials_problem:
            print(f"newsbeam: {credentials_problem}", file=sys.stderr)
            return EXIT_CONFIG
        for flag, folder in (("--output", news.output), ("--state", news.state)):
            problem = folder and _local_folder_problem(folder)
            if problem:  # found now, not after every source was fetched and labelled
                print(f"newsbeam: {flag} {folder}: {problem}", file=sys.stderr)
                return EXIT_CONFIG
    lock = None
    if news.state and not dry_run:
        from newsbeam.state.lock import StateLock, StateLocked
        from newsbeam.state.store import recover_uncommitted

        try:
            lock = StateLock(news.state).acquire()
        except StateLocked as error:
            print(f"newsbeam: {error}", file=sys.stderr)
            return EXIT_LOCKED
        except ValueError as error:  # --state where no lock can be taken
            print(f"newsbeam: --state {news.state}: {error}", file=sys.stderr)
            return EXIT_CONFIG
        except OSError as error:  # a folder that cannot be made or written
            print(f"newsbeam: --state {news.state}: {error.strerror or first_line(error)}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        if news.state and not news.full_refresh and not dry_run:
            recover_uncommitted(news.state, news.output)
        if news.iceberg_table and not dry_run:
            from newsbeam.pipeline.table_commit import repair_table

            problem = repair_table(news)
            if problem:
                print(f"newsbeam: {problem}", file=sys.stderr)
                return EXIT_CONFIG
        return _run_and_report(options, news, dry_run=dry_run)
    finally:
        if lock is not None:
            lock.release()


def _local_folder_problem(path: str) -> Optional[str]:
    """Why a local folder cannot be used as one (it is a file, or cannot be made here); None when it can.

    Nothing is created: a run that stops on a later problem leaves no folder behind."""
    from newsbeam.layout import is_local

    if not is_local(path):
        return None
    if os.path.exists(path):
        return None if os.path.isdir(path) else "is a file, not a folder"
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"cannot be made: {ancestor} is a file, not a folder"
    return None if os.access(ancestor, os.W_OK | os.X_OK) else f"cannot be made: {ancestor} is not writable"


def _is_dry_run(options: PipelineOptions) -> bool:
    """Beam's ``--dry_run``: the Dataflow runner builds the job and submits nothing.

    Beam takes any non-empty value as true, and so does this; other runners
    ignore the flag and really run, so for them it is no dry run.
    """
    from apache_beam.options.pipeline_options import StandardOptions, TestOptions

    if not options.view_as(TestOptions).dry_run:
        return False
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.runner import create_runner

    runner = options.view_as(StandardOptions).runner
    try:
        return isinstance(create_runner(runner) if isinstance(runner, str) else runner, DataflowRunner)
    except ValueError:  # an unknown runner: the graph build reports it
        return False


LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def _is_remote_streaming(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    standard = options.view_as(StandardOptions)
    return bool(standard.streaming) and standard.runner not in LOCAL_RUNNERS


def _workers_share_cwd(options: PipelineOptions) -> bool:
    """Whether the SDK workers are this process or its children, started in its working folder.

    Any other runner's workers open paths from their own folder: a portable
    job service's external worker pool (``--environment_type EXTERNAL``) was
    started wherever its operator stood, a Dataflow worker on another machine.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


PATH_OPTIONS = ("output", "state", "inputs", "heads", "taxonomy", "label_map", "model_cache")
MODEL_OPTIONS = ("encoder", "topic_model", "sentiment_model")  # a hub id, or a path when one exists here


def _make_local_paths_absolute(news) -> None:
    """Resolve relative local paths against this folder before the job is built.

    The launcher lists --inputs, takes the --state lock, commits the state and
    reads the committed files back for the manifest, all from its own folder;
    the workers read and write the same relative paths from theirs. Run
    through a worker pool started elsewhere, ``--output out`` put the rows in
    the pool's ``out/`` and the manifest, written here, found none of them
    (rows_written 0, accounting_ok false, exit 0). Remote paths (gs://,
    file://) are left as they are.
    """
    from newsbeam.layout import filesystems

    def absolute(path):
        if not isinstance(path, str) or filesystems().get_scheme(path) is not None or os.path.isabs(path):
            return path
        return os.path.abspath(path)

    for name in PATH_OPTIONS:
        value = getattr(news, name, None)
        if isinstance(value, list):
            setattr(news, name, [absolute(item) for item in value])
        elif value:
            setattr(news, name, absolute(value))
    for name in MODEL_OPTIONS:
        value = getattr(news, name, None)
        if value and os.path.exists(value):
            setattr(news, name, absolute(value))


def _runs_in_this_process(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    return (options.view_as(StandardOptions).runner in LOCAL_RUNNERS
            and options.view_as(DirectOptions).direct_running_mode != "multi_processing")


def _claim_temp_folder(options: PipelineOptions, news) -> None:
    """Clear what killed runs left in ``_tmp``, then mark this run's temp folder as ours.

    Only a pipeline that runs on this machine writes OWNER: a remote job's
    workers go on writing after the launcher's pid is gone. So do a portable
    job's, even with the job service on this machine: the job service runs the
    job on when the launcher dies, so the launcher's pid can't vouch for it.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    from newsbeam.runs import remove_abandoned_temp_folders, write_temp_owner

    try:
        remove_abandoned_temp_folders(news.output, keep_run_id=news.run_id)
        if options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
            write_temp_owner(news.output, news.run_id)
    except Exception:  # leftovers cost disk space only; an unwritable output fails the run where it writes
        LOGGER.warning("could not clean up the temp folders under %s", news.output, exc_info=True)


def _run_and_report(options: PipelineOptions, news, *, dry_run: bool = False) -> int:
    from apache_beam.options.pipeline_options import StandardOptions

    from newsbeam.layout import remove_temp_files
    from newsbeam.pipeline.graph import build
    from newsbeam.pipeline.manifest import build_manifest, format_summary, write_manifest

    started_at = dt.datetime.now(dt.timezone.utc)
    try:
        pipeline = build(options)
    except ValueError as error:
        print(f"newsbeam: {error}", file=sys.stderr)
        return EXIT_CONFIG
    _start_up_done()
    if dry_run:
        steps = [part.full_label for part in pipeline.transforms_stack[0].parts]
        pipeline.run().wait_until_finish()  # the Dataflow runner translates the job and returns
        print(f"dry run: the {options.view_as(StandardOptions).runner} job graph was built ({len(steps)} steps: "
              f"{', '.join(steps)}); nothing was submitted, no lock taken, no state or output touched")
        return EXIT_OK
    _claim_temp_folder(options, news)
    if _is_remote_streaming(options):
        # An unbounded job never finishes: submit it and hand back the job.
        result = pipeline.run()
        print(f"newsbeam: submitted streaming job {getattr(result, 'job_id', lambda: '?')()} "
              f"(state {result.state}); drain it to flush open windows")
        return EXIT_OK
    result, status, error_text = None, "committed", None
    if _runs_in_this_process(options):
        from newsbeam.language import start_loading_identifier

        start_loading_identifier()  # off the critical path: ready when the language stage starts
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as error:  # the run failed: report it, exit non-zero
        LOGGER.exception("pipeline failed")
        status, error_text = "failed", f"{type(error).__name__}: {error}"[:2000]
    try:
        remove_temp_files(news.output, news.run_id)
    except Exception:  # a failed run's leftovers are hidden anyway; never mask the real error
        LOGGER.warning("could not remove temporary files of run %s", news.run_id, exc_info=True)
    if status == "committed":
        if news.state:
            from newsbeam.state.store import commit_state

            crash_point("before_state")
            commit_state(news.state, news.output, news.run_id)
            if news.stories and not news.full_refresh:
                from newsbeam.state.stories import commit_stories

                commit_stories(news.state, news.run_id)
        crash_point("before_manifest")
    manifest = build_manifest(output=news.output, run_id=news.run_id, result=result, started_at=started_at,
                              status=status, error=error_text, options=public_options(options))
    if news.iceberg_table:
        from newsbeam.pipeline.table_commit import table_report

        manifest["iceberg"] = table_report(news, news.run_id)
    print(format_summary(manifest))
    try:
        print(f"manifest: {write_manifest(news.output, manifest)}")
    except Exception as error:  # an unwritable output already failed the run; say so, keep the exit code
        print(f"newsbeam: could not write the run manifest: {error}", file=sys.stderr)
        return EXIT_FAILED
    if status != "committed":
        return EXIT_FAILED
    counts = manifest["counts"]
    sources_failed = counts["feeds_failed"] + counts["files_failed"]
    if sources_failed and counts["entries_read"] == 0 and counts["feeds_ok"] + counts["feeds_not_modified"] + counts["files_read"] == 0:
        return EXIT_NOTHING_READ
    output = news.output.rstrip("/")
    print(f"data: {output}/")
    command = sys.argv[0] if os.path.basename(sys.argv[0]) == "newsbeam" else "newsbeam"
    print(f"query: {command} query --data {output} \"SELECT dt, lang, topic, sentiment, title FROM articles LIMIT 20\"")
    print(f"   or: duckdb -c \"SELECT dt, lang, topic, sentiment, title FROM read_parquet('{output}/*=*/**/*.parquet', "
          f"hive_partitioning=true, union_by_name=true) LIMIT 20\"")
    return EXIT_OK


def _subcommand(module: str) -> tuple[Callable, Callable]:
    import importlib

    loaded = importlib.import_module(module)
    return loaded.add_arguments, loaded.run


LAB_INSTALL_HINT = "pip install -e ./lab (from a newsbeam checkout)"
SUBCOMMANDS = {
    "eval": ("newsbeam_lab.evaluate", "Score topic or sentiment labels on labelled JSONL (needs the lab)."),
    "train-heads": ("newsbeam_lab.training", "Train the topic and sentiment heads from labelled JSONL (needs the lab)."),
    "report": ("newsbeam.analytics.report", "Write a self-contained HTML report of a dataset."),
    "query": ("newsbeam.analytics.query", "Run DuckDB SQL over the dataset (view `articles`)."),
    "search": ("newsbeam.analytics.search", "Find articles by meaning, across languages (needs --embeddings data)."),
    "compact": ("newsbeam.pipeline.compact", "Rewrite a partition's small files into fewer large ones."),
}


class _OneLineArgumentParser(argparse.ArgumentParser):
    """A bad flag of any subcommand is one line and exit 2, as for ``run`` (argparse prints the usage block)."""

    def error(self, message: str):
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("NEWSBEAM_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv and argv[0] == "run":
        return run_pipeline(argv[1:])
    parser = _OneLineArgumentParser(prog="newsbeam", description="News feeds to labelled Parquet, with Apache Beam.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="Run the ingestion pipeline (newsbeam run --help for its flags).", add_help=False)
    handlers, missing = {}, {}
    for name, (module, description) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=description, description=description, allow_abbrev=False)
        try:
            add_arguments, handlers[name] = _subcommand(module)
        except ImportError as error:
            if not module.startswith("newsbeam_lab") or (error.name or "").split(".")[0] != "newsbeam_lab":
                raise  # a broken runtime module is a bug, not a missing extra
            missing[name] = module
            continue
        add_arguments(sub)
    if argv and argv[0] in missing:  # before parsing: the command's own flags are unknown without the lab
        print(f"newsbeam {argv[0]}: the lab is not installed ({LAB_INSTALL_HINT})", file=sys.stderr)
        return EXIT_CONFIG
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(handlers[args.command](args) or 0)
    except (ValueError, OSError) as error:  # a bad option value or an unreadable file: one line, not a traceback
        print(f"newsbeam {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIG


def console_main() -> int:
    """The installed ``newsbeam`` command: ``main`` with the garbage collector
    kept away from start-up and exit, where it only scans objects that live until
    the process ends. Measured on a 1,000-article run: six full collections
    while importing torch and Beam (0.5 s) and the collections
    during interpreter shutdown (1.1 s), out of 40 s."""
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        gc.disable()  # until the graph is built: see _start_up_done
    try:
        code = main(argv)
    finally:
        gc.enable()
    # Everything still alive is about to be freed by the OS; nothing left holds
    # unwritten data (the sink and the manifest close their files, logging
    # flushes at exit), so the shutdown collections have nothing to do.
    gc.freeze()
    return code


def _start_up_done() -> None:
    """The modules, options and graph built so far live as long as the process:
    move them out of the collector's sight and let it run on what the pipeline
    makes. A no-op unless ``console_main`` paused the collector."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


if __name__ == "__main__":
    sys.exit(console_main())
