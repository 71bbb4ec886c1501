"""newsbeam's pipeline options: one PipelineOptions subclass.

Being a PipelineOptions subclass means every Beam runner flag works next to
these, ``--help`` lists them, and Dataflow ships them to workers.
"""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from newsbeam.fetch.http import DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT
from newsbeam.fetch.pages import DEFAULT_CONCURRENCY_PER_HOST, DEFAULT_RATE_PER_HOST
from newsbeam.flags import (
    COSINE_THRESHOLD,
    EVIDENCE_WEIGHT,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    TOKEN_BUDGET,
)
from newsbeam.formats.text import DEFAULT_ENCODING, text_encoding
from newsbeam.labelling import (
    DEFAULT_FEED_EVIDENCE_WEIGHT,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_TOKENS,
    QUANTIZE_CHOICES,
)
from newsbeam.language import DEFAULT_MIN_CONFIDENCE
from newsbeam.layout import DEFAULT_PARTITION_KEYS
from newsbeam.stories import DEFAULT_STORY_THRESHOLD, DEFAULT_STORY_WINDOW_SECONDS
from newsbeam.transforms.sink import DEFAULT_MAX_ROWS_PER_FILE
from newsbeam.transforms.streaming import (
    DEFAULT_ALLOWED_LATENESS_SECONDS,
    DEFAULT_DEDUP_TTL_SECONDS,
    DEFAULT_POLL_INTERVAL_SECONDS,
    DEFAULT_WINDOW_SECONDS,
)


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class _CommaListAction(argparse.Action):
    """`--partition_keys dt,lang` and repeated `--partition_keys=dt --partition_keys=lang`
    (the form Beam's from_dictionary uses on Dataflow workers) give the same list."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        base = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, base + list(values))


def _text_encoding(value: str) -> str:
    try:
        return text_encoding(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class NewsOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        io = parser.add_argument_group("newsbeam input/output")
        io.add_argument("--output", help="Dataset folder (local path or gs://). Required.")
        io.add_argument("--feeds", nargs="+", action="extend", default=None,
                        help="Feed URLs, or files listing them (text, OPML, YAML, TOML).")
        io.add_argument("--inputs", nargs="+", action="extend", default=None,
                        help="Files, folders or globs: .xml/.rss/.atom, .jsonl/.json, .txt, .html, each also .gz/.bz2/.zst/.xz.")
        io.add_argument("--input_encoding", type=_text_encoding, default=DEFAULT_ENCODING,
                        help="Encoding of the .jsonl/.json/.txt inputs, e.g. windows-1256 for legacy Arabic "
                             "exports (default utf-8; a UTF-8 byte-order mark always wins; feeds and pages "
                             "name their own).")
        io.add_argument("--run_id", default=None, help="Run id (default: UTC time + random suffix).")
        io.add_argument("--partition_keys", type=_comma_list, action=_CommaListAction,
                        default=list(DEFAULT_PARTITION_KEYS),
                        help="Hive partition keys, comma-separated, from dt,lang,month,year,source_host.")
        io.add_argument("--max_rows_per_file", type=POSITIVE_INT, default=DEFAULT_MAX_ROWS_PER_FILE)
        io.add_argument("--state", default=None,
                        help="State folder for incremental runs (local or gs://).")
        io.add_argument("--iceberg_table", default=None,
                        help="Also commit every run's (every window's) files to this Apache Iceberg table, "
                             "NAMESPACE.TABLE, as one snapshot (the same files, no second copy).")
        io.add_argument("--iceberg_catalog", default=None,
                        help="pyiceberg catalog name configured in .pyiceberg.yaml or PYICEBERG_CATALOG__* "
                             "(default: an embedded SQLite catalog in <output>/_iceberg).")
        io.add_argument("--full_refresh", action="store_true", default=False,
                        help="Ignore the state: fetch and write everything again.")

        fetch = parser.add_argument_group("newsbeam fetching")
        fetch.add_argument("--allow_private_addresses", action="store_true", default=False,
                           help="Allow feed URLs on loopback/private addresses (tests, intranets). "
                                "Not article pages (see below); link-local and cloud metadata never.")
        fetch.add_argument("--allow_private_page_addresses", action="store_true", default=False,
                           help="With --full_text: also allow article pages, their redirects and robots.txt "
                                "on loopback/private addresses. Off by default: a feed, not you, chooses "
                                "its links. Link-local and cloud metadata never.")
        fetch.add_argument("--fetch_timeout", type=POSITIVE, default=DEFAULT_READ_TIMEOUT, help="Read timeout per request, seconds.")
        fetch.add_argument("--max_feed_bytes", type=POSITIVE_INT, default=DEFAULT_MAX_BYTES)
        fetch.add_argument("--full_text", action="store_true", default=False,
                           help="Fetch each new entry's page and use its main text when longer (robots.txt honoured).")
        fetch.add_argument("--page_concurrency_per_host", type=POSITIVE_INT, default=DEFAULT_CONCURRENCY_PER_HOST)
        fetch.add_argument("--page_rate_per_host", type=POSITIVE, default=DEFAULT_RATE_PER_HOST, help="Page requests/second per host.")
        fetch.add_argument("--page_user_agent", default=None, help="User-Agent for pages (newsbeam is always named).")
        fetch.add_argument("--poll_interval", type=POSITIVE, default=DEFAULT_POLL_INTERVAL_SECONDS, help="Streaming: seconds between polls.")
        fetch.add_argument("--max_duration", type=POSITIVE, default=None,
                           help="Streaming: stop polling after this many seconds.")
        fetch.add_argument("--window_seconds", type=POSITIVE, default=DEFAULT_WINDOW_SECONDS,
                           help="Streaming: files are written per fixed window of this length.")
        fetch.add_argument("--dedup_ttl", type=POSITIVE, default=DEFAULT_DEDUP_TTL_SECONDS,
                           help="Streaming: seconds an article id is remembered for dedup.")
        fetch.add_argument("--allowed_lateness", type=NON_NEGATIVE, default=DEFAULT_ALLOWED_LATENESS_SECONDS,
                           help="Streaming: late elements within this many seconds get an extra pane.")

        labels = parser.add_argument_group("newsbeam labels")
        labels.add_argument("--skip_labels", action="store_true", default=False,
                            help="Write articles without running the model (label columns null).")
        labels.add_argument("--encoder", default=None,
                            help="Sentence-embedding model: hub id or path (default: embedded e5-small).")
        labels.add_argument("--heads", default=None, help="Trained label heads folder (default: shipped heads).")
        labels.add_argument("--taxonomy", default=None, help="Topic taxonomy YAML (default: IPTC top level).")
        labels.add_argument("--topic_model", default=None, help="Text-classification checkpoint for topics.")
        labels.add_argument("--sentiment_model", default=None, help="Text-classification checkpoint for sentiment.")
        labels.add_argument("--label_map", default=None, help="JSON mapping classifier labels onto newsbeam ids.")
        labels.add_argument("--max_tokens", type=TOKEN_BUDGET, default=DEFAULT_MAX_TOKENS,
                            help="Token budget per article: headline + lead (128 labels as well as 256 at twice the speed).")
        labels.add_argument("--max_batch_tokens", type=TOKEN_BUDGET, default=DEFAULT_MAX_BATCH_TOKENS, help="Token budget per encoder batch.")
        labels.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                            help="int8: dynamic per-channel int8 weights (faster; see the benchmark for agreement).")
        labels.add_argument("--embeddings", action="store_true", default=False,
                            help="Also store each article's embedding (the vector its labels were read from: no "
                                 "second encoder pass; 388 bytes a row before compression) for newsbeam search.")
        labels.add_argument("--stories", action="store_true", default=False,
                            help="Give each article a story_id: articles about one event, across outlets and "
                                 "languages (near-duplicate embeddings within --story_window, or one content hash). "
                                 "Batch: the whole run, and recent stories in --state; streaming: each window.")
        labels.add_argument("--story_threshold", type=COSINE_THRESHOLD, default=DEFAULT_STORY_THRESHOLD,
                            help="Cosine from which an article joins a story (chosen on a labelled pair set; "
                                 "see docs/analytics.md).")
        labels.add_argument("--story_window", type=POSITIVE, default=DEFAULT_STORY_WINDOW_SECONDS,
                            help="Seconds a story stays open to new articles.")
        labels.add_argument("--feed_evidence_weight", type=EVIDENCE_WEIGHT, default=DEFAULT_FEED_EVIDENCE_WEIGHT,
                            help="How much a feed's own section for an article (a <category> tag, a URL section "
                                 "such as /sport/) weighs on its topic; 1 ignores it.")
        labels.add_argument("--torch_threads", type=POSITIVE_INT, default=None, help="torch intra-op threads per process.")
        labels.add_argument("--model_cache", default=None, help="Where the embedded model is built (default ~/.cache/newsbeam).")
        labels.add_argument("--min_language_confidence", type=FRACTION, default=DEFAULT_MIN_CONFIDENCE)
