"""Shared pieces for end-to-end tests: fixture feeds, running the CLI, reading back."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Optional

import duckdb
import pyarrow.dataset as ds

from newsbeam.pipeline.cli import main
from tests.support.httpserver import FixtureServer, Response

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "newsbeam" / "seeds"
SEED_ARTICLE = SEEDS / "000_adb80237c80a1eea.txt"
SAMPLES = SEEDS / "samples"
SHARED = REPO.parent / "shared" / "data"


def rss(items: list[tuple[str, str, str]], *, title: str = "Fixture feed", encoding: str = "utf-8",
        language: str = "en") -> bytes:
    """An RSS 2.0 document; items are (title, link, description)."""
    body = "".join(
        f"<item><title>{t}</title><link>{l}</link><description>{d}</description>"
        f"<pubDate>Mon, 06 May 2024 10:00:00 +0000</pubDate></item>"
        for t, l, d in items
    )
    xml = (f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0"><channel><title>{title}</title>'
           f"<link>http://example.org/</link><language>{language}</language>{body}</channel></rss>")
    return xml.encode(encoding)


def english_items(prefix: str, count: int) -> list[tuple[str, str, str]]:
    topics = ["the city council approved a new budget for schools and roads",
              "the football team won the championship final on Sunday evening",
              "heavy rain caused flooding in several villages near the river",
              "the central bank kept interest rates unchanged this month"]
    return [(f"{prefix} story {n}", f"https://news.example.org/{prefix}/{n}?utm_source=rss",
             f"Reporters said that {topics[n % len(topics)]}, officials confirmed on {prefix} {n}.")
            for n in range(count)]


def serve_fixture_feeds(server: FixtureServer) -> dict[str, str]:
    """Good, broken and awkward feeds on one loopback server; name -> URL."""
    french = rss([("Été chaud à Paris", "https://news.example.fr/ete",
                   "Les températures ont dépassé quarante degrés cette semaine à Paris.")],
                 encoding="iso-8859-1", language="fr")
    server.route("/good.xml", Response(body=rss(english_items("good", 5))))
    server.route("/gzip.xml", Response(body=gzip.compress(rss(english_items("zipped", 3))),
                                       headers={"Content-Encoding": "gzip"}))
    server.route("/latin1.xml", Response(body=french, headers={"Content-Type": "application/rss+xml; charset=iso-8859-1"}))
    server.route("/moved.xml", Response(status=301, headers={"Location": "/good.xml"}))
    server.route("/missing.xml", Response(status=404, body=b"not here"))
    server.route("/broken.xml", Response(status=500, body=b"oops"))
    server.route("/slow.xml", Response(body=rss(english_items("slow", 1)), delay_before=4.0))
    server.route("/malformed.xml", Response(body=b"<rss><channel><title>x</title><item><title>a</titl"))
    server.route("/dupes.xml", Response(body=rss(english_items("good", 2) + english_items("other", 1))))
    names = ["good", "gzip", "latin1", "moved", "missing", "broken", "slow", "malformed", "dupes"]
    return {name: server.url(f"/{name}.xml") for name in names}


def run_cli(*args: str) -> int:
    return main(["run", *args])


def read_rows(output: Path, columns: str = "*") -> list[dict]:
    relation = duckdb.sql(
        f"SELECT {columns} FROM read_parquet('{output}/*=*/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    )
    names = relation.columns
    return [dict(zip(names, row)) for row in relation.fetchall()]


def read_with_pyarrow(output: Path):
    files = [str(p) for p in output.glob("*=*/**/*.parquet")]
    return ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(output)).to_table()


def only_manifest(output: Path, run_id: Optional[str] = None) -> dict:
    manifests = sorted((output / "_runs").glob("*.json"))
    if run_id:
        manifests = [m for m in manifests if m.stem == run_id]
    assert manifests, f"no run manifest under {output}"
    return json.loads(manifests[-1].read_text(encoding="utf-8"))


def assert_accounting(manifest: dict) -> None:
    counts = manifest["counts"]
    assert counts["entries_read"] == (
        counts["rows_written"] + counts["duplicates"] + counts["dead_lettered"] + counts["already_written"]
    ), counts
    assert manifest["accounting_ok"] is True
