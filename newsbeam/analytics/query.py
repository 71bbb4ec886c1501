"""``newsbeam query "SQL"``: DuckDB SQL over the dataset (view ``articles``).

Also registered: ``errors`` (dead letters from ``_errors/``). Output is a
table for people, or CSV, JSON Lines or Parquet for other tools. With
``--table`` the articles are one snapshot of the dataset's Iceberg table.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import decimal
import json
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

import duckdb

from newsbeam.analytics import dates, remote, table_view
from newsbeam.analytics.dataset import DEFAULT_DATA_DIR, connect
from newsbeam.exit_codes import EXIT_CONFIG, EXIT_OK, first_line
from newsbeam.flags import POSITIVE_INT
from newsbeam.iceberg import TableError

FORMATS = ("table", "csv", "json", "parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # nargs "+": an unquoted query (newsbeam query SELECT 1) is its words joined, not "unrecognized arguments: 1"
    parser.add_argument("sql", nargs="+", help="DuckDB SQL; the dataset is the view 'articles', dead letters are "
                                               "'errors' (quote it: the shell expands * and drops quotes)")
    parser.add_argument("--data", type=str, default=DEFAULT_DATA_DIR,
                        help="dataset folder (default: %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (default), csv, json (one object per line) or parquet (needs --out)")
    parser.add_argument("--out", type=Path, help="write to this file instead of standard output")
    parser.add_argument("--max-rows", type=POSITIVE_INT, default=40,
                        help="rows shown by --format table (default: %(default)s); other formats write all")
    dates.add_arguments(parser)
    table_view.add_arguments(parser)
    remote.add_arguments(parser)


def _plain(value: Any) -> Any:
    """A JSON-ready version of one DuckDB value (dates as ISO text, lists/structs kept)."""
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, dt.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _csv_cell(value: Any) -> Any:
    # Nested values (authors, tags, topic_scores) go into one cell as JSON.
    value = _plain(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def write_csv(relation: duckdb.DuckDBPyRelation, stream: TextIO) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(relation.columns)
    for row in relation.fetchall():
        writer.writerow([_csv_cell(value) for value in row])


def write_json_lines(relation: duckdb.DuckDBPyRelation, stream: TextIO) -> None:
    for row in relation.fetchall():
        record = {name: _plain(value) for name, value in zip(relation.columns, row)}
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _open_output(out: Path | None) -> Iterator[TextIO]:
    if out is None:
        yield sys.stdout
        return
    with out.open("w", encoding="utf-8", newline="") as stream:
        yield stream


def _write_text(args: argparse.Namespace, relation: duckdb.DuckDBPyRelation) -> None:
    with _open_output(args.out) as stream:
        if args.format == "table":
            # DuckDB's own box renderer prints to sys.stdout.
            with contextlib.redirect_stdout(stream):
                relation.show(max_rows=args.max_rows)
        elif args.format == "csv":
            write_csv(relation, stream)
        else:
            write_json_lines(relation, stream)


def run(args: argparse.Namespace) -> int:
    """Run ``args.sql``; 0 on success, 2 on a bad request (message on stderr)."""
    if args.format == "parquet" and not args.out:
        print("newsbeam query: --format parquet needs --out FILE", file=sys.stderr)
        return EXIT_CONFIG
    days, problem = table_view.dataset_flags(args)
    if problem:
        print(f"newsbeam query: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        connection = connect(args.data, table=args.table, catalog=args.iceberg_catalog, as_of=args.as_of,
                             dates=days)
    except (TableError, duckdb.Error) as error:  # duckdb: a file of the dataset it cannot read
        print(f"newsbeam query: {first_line(error)}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        relation = connection.sql(" ".join(args.sql) if isinstance(args.sql, list) else args.sql)
        if relation is None:  # a statement without a result, e.g. SET
            return EXIT_OK
        if args.format == "parquet":
            relation.write_parquet(str(args.out), compression="zstd")
        else:
            _write_text(args, relation)
    except duckdb.Error as error:
        print(f"newsbeam query: {error}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        connection.close()
    return EXIT_OK
