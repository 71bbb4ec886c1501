"""The one function that assembles newsbeam's Beam graph.

source -> normalise -> (skip already written) -> dedup -> language -> label
-> partition -> write; every stage's failures flow to one dead-letter sink.
"""
from __future__ import annotations

import shutil
from importlib import resources
from typing import Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from newsbeam.formats import is_supported
from newsbeam.formats.html import check_extraction_dependencies, is_html_path
from newsbeam.iceberg import TableSpec, check_table_name
from newsbeam.layout import check_run_id, is_local, new_run_id, validate_partition_keys
from newsbeam.pipeline.options import NewsOptions
from newsbeam.transforms.dedup import DeduplicateArticles
from newsbeam.transforms.files import ReadFiles
from newsbeam.transforms.language import DetectLanguage
from newsbeam.transforms.normalise import NormaliseEntries
from newsbeam.transforms.sink import WriteArticles, WriteDeadLetters

DEAD_LETTER = "dead_letter"


def default_inputs() -> list[str]:
    """The embedded defaults: the seed article and the sample feed files."""
    seeds = resources.files("newsbeam") / "seeds"
    return [str(seeds / "000_adb80237c80a1eea.txt"), str(seeds / "samples")]


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the runner asked for, or on a local runner chosen here.

    Beam's DirectRunner first tries to download the Prism runner; offline that
    fails noisily. Unless ``--runner`` is given, runs go straight to the
    FnApiRunner, which honours --direct_running_mode and runs the polling
    sources (PeriodicImpulse, MatchContinuously: splittable DoFns) that the
    BundleBasedDirectRunner cannot. Locally a --streaming run therefore
    executes its windows when the sources stop (--max_duration); the real
    streaming target is Dataflow.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner:
        return beam.Pipeline(options=options)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return beam.Pipeline(runner=FnApiRunner(), options=options)


def read_sources(pipeline: beam.Pipeline, news: NewsOptions, run_id: str, streaming: bool):
    """All sources' RawEntries and their dead letters, as two lists of PCollections."""
    entries, dead = [], []
    inputs = news.inputs
    if not news.feeds and not inputs:
        if streaming:
            raise ValueError("--streaming needs --feeds or --inputs (a folder to watch)")
        inputs = default_inputs()
    read_files = (ReadFiles(inputs, watch=_poll_settings(news) if streaming else None, encoding=news.input_encoding)
                  if inputs else None)
    if news.full_text or (read_files and _reads_html(read_files)):
        check_extraction_dependencies()  # else every page fails alike and the run still commits
    if news.feeds:
        from newsbeam.fetch.http import fetch_policy_from
        from newsbeam.transforms.feed_source import ReadFeeds

        state = None if news.full_refresh else news.state
        read = ReadFeeds(news.feeds, fetch_policy_from(news), state=state, run_id=run_id,
                         poll=_poll_settings(news) if streaming else None)
        feeds = pipeline | "ReadFeeds" >> read
        entries.append(feeds["entries"])
        dead.append(feeds[DEAD_LETTER])
    if read_files:
        files = pipeline | "ReadFiles" >> read_files
        entries.append(files["entries"])
        dead.append(files[DEAD_LETTER])
    return entries, dead


def _reads_html(read_files: ReadFiles) -> bool:
    """Whether --inputs hands trafilatura any page: one of a batch run's listed files, or,
    when watching, a folder or glob that may receive a page later unless its pattern
    names another format."""
    if any(is_html_path(pattern) for pattern in read_files.patterns):
        return True
    if read_files.files is None:
        return any(not is_supported(pattern) for pattern in read_files.patterns)
    return any(is_html_path(path) for path in read_files.files)


def _poll_settings(news: NewsOptions) -> tuple[float, Optional[float]]:
    if news.poll_interval <= 0:
        raise ValueError(f"--poll_interval must be > 0, got {news.poll_interval!r}")
    return news.poll_interval, news.max_duration


def build(options: PipelineOptions, pipeline: Optional[beam.Pipeline] = None, run_id: Optional[str] = None) -> beam.Pipeline:
    """Assemble the graph on ``pipeline`` (a TestPipeline in tests) or a new one (whose
    local temp folder is removed again when the graph cannot be assembled)."""
    news = options.view_as(NewsOptions)
    if not news.output:
        raise ValueError("--output is required (a local folder or gs:// path)")
    if (news.embeddings or news.stories) and news.skip_labels:
        flag = "--embeddings" if news.embeddings else "--stories"
        raise ValueError(f"{flag} needs the vectors of the labelling pass: it cannot go with --skip_labels")
    table_spec(news)  # a bad --iceberg_table fails here, before anything runs
    streaming = bool(options.view_as(StandardOptions).streaming)
    news.run_id = run_id = check_run_id(run_id or news.run_id or new_run_id())
    if pipeline is not None:
        assemble(pipeline, news, run_id, streaming)
        return pipeline
    pipeline = make_pipeline(options)
    try:
        assemble(pipeline, news, run_id, streaming)
    except BaseException:
        # Beam removes a pipeline's local temp folder when it runs; one that
        # never runs (a bad --inputs, say) would leave it in /tmp for good.
        shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
        raise
    return pipeline


def table_spec(news: NewsOptions) -> Optional[TableSpec]:
    """The Iceberg table of ``--iceberg_table``, or None; a problem is a ValueError of one line."""
    if not news.iceberg_table:
        if news.iceberg_catalog:
            raise ValueError("--iceberg_catalog names the catalog of --iceberg_table: give the table too")
        return None
    spec = TableSpec(check_table_name(news.iceberg_table), news.output, tuple(validate_partition_keys(news.partition_keys)),
                     news.iceberg_catalog)
    if not news.iceberg_catalog and not is_local(news.output):
        raise ValueError(f"--iceberg_table on {news.output} needs --iceberg_catalog: the embedded catalog is a "
                         "SQLite file beside local data (docs/analytics.md has a BigQuery/REST example)")
    return spec


def group_stories(articles, news: NewsOptions, run_id: str, streaming: bool):
    """Articles with story_id, and the dead letters of the grouping. Batch runs with
    --state also join earlier runs' stories and leave theirs aside for the CLI to
    commit after the data; streaming groups within each window (after windowing:
    one group of the global window would never fire)."""
    from newsbeam.transforms.stories import AssignStories, WritePendingStories

    state_dir = news.state if news.state and not news.full_refresh and not streaming else None
    grouped = articles | "AssignStories" >> AssignStories(news.story_threshold, news.story_window, state_dir)
    if state_dir:
        grouped["stories"] | "WritePendingStories" >> WritePendingStories(state_dir, run_id)
    articles = grouped["articles"]
    if not news.embeddings:  # the vectors served the grouping; the dataset was not asked to keep them
        articles = articles | "DropEmbeddings" >> beam.Map(lambda a: a.replace(embedding=None, embedding_scale=None))
    return articles, grouped["dead_letter"]


def assemble(pipeline: beam.Pipeline, news: NewsOptions, run_id: str, streaming: bool) -> None:
    """The graph itself: source -> normalise -> dedup -> language -> label -> write."""
    entry_sets, dead_sets = read_sources(pipeline, news, run_id, streaming)
    entries = entry_sets[0] if len(entry_sets) == 1 else tuple(entry_sets) | "MergeSources" >> beam.Flatten()
    normalised = entries | "Normalise" >> NormaliseEntries()
    dead_sets.append(normalised[DEAD_LETTER])
    articles = normalised["articles"]
    if news.state and not news.full_refresh:
        from newsbeam.transforms.incremental import SkipAlreadyWritten

        articles = articles | "SkipAlreadyWritten" >> SkipAlreadyWritten(news.state, news.output)
    if streaming:
        from newsbeam.transforms.streaming import DeduplicateStream

        articles = (articles | "Deduplicate" >> DeduplicateStream(news.dedup_ttl))["articles"]
    else:
        articles = articles | "Deduplicate" >> DeduplicateArticles()
    if news.full_text:
        from newsbeam.fetch.http import page_fetch_policy_from
        from newsbeam.transforms.full_text import FetchFullText

        # After dedup and the state filter: a page is fetched once, for new articles only.
        # Pages get their own address policy: --allow_private_addresses trusts the feeds, not their links.
        articles = articles | "FetchFullText" >> FetchFullText(
            page_fetch_policy_from(news), news.page_concurrency_per_host, news.page_rate_per_host,
            news.page_user_agent, max_buffering_secs=5.0 if streaming else None)
    articles = articles | "DetectLanguage" >> DetectLanguage(news.min_language_confidence)
    if not news.skip_labels:
        from newsbeam.transforms.labelling import ArticleModelHandler, LabelArticles, LabellerConfig

        labelled = articles | "Label" >> LabelArticles(ArticleModelHandler(LabellerConfig.from_options(news)))
        dead_sets.append(labelled[DEAD_LETTER])
        articles = labelled["articles"]
    dead_letters = tuple(dead_sets) | "MergeDeadLetters" >> beam.Flatten()
    if streaming:
        from newsbeam.transforms.streaming import fixed_windows

        articles = articles | "WindowArticles" >> fixed_windows(news.window_seconds, news.allowed_lateness)
        dead_letters = dead_letters | "WindowDeadLetters" >> fixed_windows(news.window_seconds, news.allowed_lateness)
    if news.stories:
        articles, story_dead = group_stories(articles, news, run_id, streaming)
        dead_letters = (dead_letters, story_dead) | "MergeStoryDeadLetters" >> beam.Flatten()
    articles | "WriteDataset" >> WriteArticles(news.output, run_id, news.partition_keys, news.max_rows_per_file,
                                               table_spec(news))
    dead_letters | "WriteDeadLetters" >> WriteDeadLetters(news.output, run_id)
