"""``newsbeam search "text"``: the articles nearest in meaning to a text, in any language.

The text is embedded with e5's ``query: `` prefix by the encoder that made the
articles' embeddings (``newsbeam run --embeddings``: mean-pooled last layer,
int8 values + scale, newsbeam/embeddings.py); DuckDB scores every embedded row
of the ``articles`` view in SQL and keeps the best ``--k``. Output as
``newsbeam query``: a table for people, or CSV or JSON Lines.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import duckdb

from newsbeam.analytics import dates, remote
from newsbeam.analytics.dataset import ARTICLES_VIEW, DEFAULT_DATA_DIR, connect, detect_partition_keys
from newsbeam.analytics.query import write_csv, write_json_lines
from newsbeam.exit_codes import EXIT_CONFIG, EXIT_OK, first_line
from newsbeam.flags import POSITIVE_INT
from newsbeam.labelling import QUANTIZE_CHOICES
from newsbeam.layout import articles_glob

FORMATS = ("table", "csv", "json")
DEFAULT_K = 10
OUTPUT_COLUMNS = ("title", "language", "published_at", "url", "source", "topic", "story_id")
EMBEDDED = "embedding IS NOT NULL AND embedding_scale IS NOT NULL"
NO_EMBEDDINGS_HINT = "run newsbeam run --embeddings"


class SearchError(Exception):
    """A request search cannot answer; the message is the one line it prints."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to look for, in any language (e.g. \"central bank raises rates\")")
    parser.add_argument("--data", type=str, default=DEFAULT_DATA_DIR,
                        help="dataset folder, written with --embeddings (default: %(default)s)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="articles to show (default: %(default)s)")
    parser.add_argument("--lang", help="only articles in this language (the language column, e.g. fr)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (default), csv or json (one object per line)")
    parser.add_argument("--heads", default=None,
                        help="the heads folder the dataset was labelled with (default: the shipped heads)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="int8 when the dataset was written with newsbeam run --quantize int8")
    parser.add_argument("--model_cache", default=None,
                        help="where the embedded model is built (default ~/.cache/newsbeam)")
    parser.add_argument("--max-rows", type=POSITIVE_INT, default=40,
                        help="rows shown by --format table (default: %(default)s)")
    dates.add_arguments(parser)
    remote.add_arguments(parser)


def view_columns(connection: duckdb.DuckDBPyConnection) -> list[str]:
    return connection.table(ARTICLES_VIEW).columns


def embedded_models(connection: duckdb.DuckDBPyConnection, data: Path) -> dict[Optional[str], int]:
    """Embedded rows per ``model``; SearchError when the dataset holds none.

    Files of schema version 1 have no embedding columns: in a dataset of only
    such files the view lacks them, in a mixed one they read as null."""
    if not {"embedding", "embedding_scale"} <= set(view_columns(connection)):
        raise SearchError(f"{data} has no article embeddings: {NO_EMBEDDINGS_HINT}")
    # embedding_scale alone: a float column is far cheaper to scan than the vectors
    rows = connection.execute(
        f"SELECT model, count(*) FROM {ARTICLES_VIEW} WHERE embedding_scale IS NOT NULL GROUP BY model").fetchall()
    if not rows:
        raise SearchError(f"{data} has no article embeddings: {NO_EMBEDDINGS_HINT}")
    return dict(rows)


def nearest(connection: duckdb.DuckDBPyConnection, vector: Sequence[float], k: int, *,
            lang: Optional[str] = None, model: Optional[str] = None) -> duckdb.DuckDBPyRelation:
    """The ``k`` embedded articles with the highest ``embedding_scale * dot(embedding, vector)``
    (their cosine with the unit ``vector``), best first; only rows embedded by ``model`` when given."""
    columns = set(view_columns(connection))
    shown = ", ".join(name for name in OUTPUT_COLUMNS if name in columns)
    conditions, params = [EMBEDDED], [list(map(float, vector))]
    if model is not None:
        conditions.append("model = ?")
        params.append(model)
    if lang is not None:
        conditions.append("language = ?")
        params.append(lang)
    # list_dot_product over FLOAT[]: the fastest measured on 100,000 rows (bench/search_bench.py layout,
    # 2 busy cores, DuckDB 2.0): ~305 ms a query, DOUBLE[] the same, array_inner_product over FLOAT[384]
    # ~355 ms. Reading the int8 vectors from Parquet is about half of it.
    sql = (f"SELECT round(CAST(score AS DOUBLE), 4) AS score, {shown} FROM ("
           f"SELECT embedding_scale * list_dot_product(CAST(embedding AS FLOAT[]), ?::FLOAT[]) AS score, {shown} "
           f"FROM {ARTICLES_VIEW} WHERE {' AND '.join(conditions)}) "
           f"ORDER BY score DESC LIMIT {int(k)}")
    return connection.sql(sql, params=params)


def _load_labeller(args: argparse.Namespace):
    # The embedded encoder never needs the hub; don't let a library try (as `newsbeam run` does).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from newsbeam.labelling.labeller import load_labeller

    try:
        return load_labeller(heads=args.heads, cache_dir=args.model_cache,
                             quantize=None if args.quantize == "none" else args.quantize)
    except (OSError, ValueError, RuntimeError) as error:
        raise SearchError(f"cannot load the model: {error}") from None


def _comparable_model(models: dict[Optional[str], int], model_id: str, data: Path) -> None:
    """SearchError when no row was embedded by ``model_id``; a note when some others are skipped."""
    others = {model or "unknown": count for model, count in models.items() if model != model_id}
    names = ", ".join(repr(model) for model in sorted(others))
    if model_id not in models:
        raise SearchError(f"the articles in {data} were embedded by {names}, the search text by {model_id!r}: "
                          "vectors of two models do not compare (pass the --heads and --quantize the dataset was labelled with)")
    if others:
        print(f"newsbeam search: skipping {sum(others.values())} articles embedded by {names}, "
              f"not {model_id!r}", file=sys.stderr)


def _write(args: argparse.Namespace, relation: duckdb.DuckDBPyRelation) -> None:
    if args.format == "table":
        relation.show(max_rows=args.max_rows)
    elif args.format == "csv":
        write_csv(relation, sys.stdout)
    else:
        write_json_lines(relation, sys.stdout)


def run(args: argparse.Namespace) -> int:
    """Print the ``--k`` nearest articles; 0 on success, 2 on a bad request (message on stderr)."""
    try:
        _search(args)
    except SearchError as error:
        print(f"newsbeam search: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _search(args: argparse.Namespace) -> None:
    text = (args.text or "").strip()
    if not text:
        raise SearchError("the search text is empty")
    if args.k < 1:
        raise SearchError(f"--k must be at least 1, got {args.k}")
    days, problem = dates.from_args(args)
    problem = problem or remote.localise(args, days)
    if problem:
        raise SearchError(problem)
    if not Path(args.data).is_dir():
        raise SearchError(f"no dataset folder at {args.data}")
    if next(glob.iglob(articles_glob(args.data, detect_partition_keys(args.data))), None) is None:
        raise SearchError(f"{args.data} has no article embeddings: {NO_EMBEDDINGS_HINT}")  # not one article file
    try:
        connection = connect(args.data, dates=days)
    except duckdb.Error as error:  # a file of the dataset it cannot read
        raise SearchError(first_line(error)) from None
    with contextlib.closing(connection):
        try:
            models = embedded_models(connection, args.data)  # cheap checks first: the model takes seconds
            labeller = _load_labeller(args)
            _comparable_model(models, labeller.model_id, args.data)
            vector = labeller.embed([text])[0]
            relation = nearest(connection, vector, args.k, lang=args.lang, model=labeller.model_id)
            _write(args, relation)
        except duckdb.Error as error:
            raise SearchError(str(error)) from None
