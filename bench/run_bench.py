"""newsbeam's benchmark: every figure side by side, one run, one machine.

``make bench`` (or ``.venv/bin/python bench/run_bench.py [--articles N]``) writes
``bench/results/latest.json`` and ``docs/bench.md``. The figures (see
docs/bench.md for the method):

- limit: the bare encoder on the labeller's texts, best batches;
- newsbeam: ``newsbeam run`` on the corpus files, default flags, in a child
  process, at N and 5N articles (peak RSS of each, and their throughput); the
  limit, the int8 limit and the N run alternate for ``--rounds`` rounds and
  are averaged;
- naive: a per-article loop (two padded encoder passes, pandas to Parquet) on
  a subset;
- int8: newsbeam with per-channel dynamic int8 weights, speed and agreement,
  and macro-F1 on the shared dev sets;
- stages: a cProfile of one run; startup: cold and warm; full_text: the cost
  of fetching article pages from loopback servers; search: ``newsbeam search``'s
  scoring query (no model) over 10,000 and 100,000 synthetic embedded rows.

Benchmarks report; they never fail on a timing. A step that cannot run records
why instead of a number.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_markdown import render_markdown  # noqa: E402
from corpus import generate_articles, labelling_texts, write_corpus  # noqa: E402
from measure import ChildRun, python_argv, run_child  # noqa: E402

RESULTS = BENCH / "results" / "latest.json"
DOCS = REPO / "docs" / "bench.md"
FULL_TEXT_ARTICLES = 100  # pages at 1 request/s per host: the politeness floor dominates
SEARCH_ROWS, SEARCH_QUERIES = (10_000, 100_000), 20
TARGETS = {"e2e_vs_limit": 0.85, "e2e_vs_naive": 5.0, "int8_speedup": 1.8, "int8_agreement": 0.95,
           "int8_macro_f1_loss_points": 1.0, "rss_growth": 0.10, "startup_warm_s": 3.0}


def machine_info() -> dict:
    import torch

    model_name = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": model_name, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def newsbeam_argv(inputs: Sequence[str], output: Path, extra: Sequence[str] = (), int8: bool = False) -> list[str]:
    quantize = ["--quantize", "int8"] if int8 else []
    return python_argv("-m", "newsbeam.pipeline.cli", "run", "--inputs", *inputs, "--output", str(output),
                       *extra, *quantize)


def read_labels(output: Path) -> dict[str, tuple]:
    """url -> (topic, sentiment, language) of every row newsbeam wrote."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(output), format="parquet", partitioning="hive",
                       exclude_invalid_files=True).to_table(columns=["url", "topic", "sentiment", "language"])
    return {row["url"]: (row["topic"], row["sentiment"], row["language"]) for row in table.to_pylist()}


def label_agreement(first: dict[str, tuple], second: dict[str, tuple]) -> dict:
    """Share of identical topic and sentiment labels on the articles both labelled."""
    common = sorted(set(first) & set(second))
    if not common:
        return {"articles": 0, "topic": None, "sentiment": None, "both_labels": None}
    topic = sum(first[url][0] == second[url][0] for url in common) / len(common)
    sentiment = sum(first[url][1] == second[url][1] for url in common) / len(common)
    return {"articles": len(common), "topic": round(topic, 4), "sentiment": round(sentiment, 4),
            "both_labels": round((topic + sentiment) / 2, 4)}


def run_summary(run: ChildRun, articles: int) -> dict:
    return {"articles": articles, "wall_s": round(run.wall_s, 3),
            "articles_per_s": round(articles / run.wall_s, 3),
            "peak_rss_mb": round(run.peak_rss_bytes / 2**20, 1)}


def corpus_stats(articles) -> dict:
    words = [a.word_count for a in articles]
    languages = sorted({a.language for a in articles})
    return {"articles": len(articles), "languages": languages,
            "per_language": {lang: sum(a.language == lang for a in articles) for lang in languages},
            "body_words": {"min": min(words), "median": statistics.median(words), "mean": round(statistics.mean(words), 1),
                           "max": max(words)}}


def ratio(numerator: Optional[float], denominator: Optional[float], digits: int = 3) -> Optional[float]:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)


def step(name: str, results: dict, function, *args, **kwargs):
    """Run one benchmark step; a failure is recorded in ``results["errors"]``, not raised."""
    started = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    try:
        return function(*args, **kwargs)
    except Exception as error:  # a step that cannot run says why; the others still run
        results.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"[:2000]
        print(f"[bench] {name} FAILED: {error}", flush=True)
        return None
    finally:
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f} s", flush=True)


def mean_of(summaries: Sequence[dict], *keys: str) -> dict:
    """The first summary with ``keys`` replaced by their mean over all of them."""
    merged = dict(summaries[0])
    for key in keys:
        merged[key] = round(statistics.mean(summary[key] for summary in summaries), 3)
    return merged


def run_newsbeam(corpus: dict, output: Path, heads_args: list[str]) -> dict:
    """``newsbeam run`` on ``corpus`` in a child process; its summary, once every article is a row."""
    run = run_child(newsbeam_argv([str(corpus["dir"])], output, heads_args)).check()
    rows = len(read_labels(output))
    if rows != corpus["articles"]:
        raise RuntimeError(f"newsbeam wrote {rows} rows for {corpus['articles']} articles")
    return run_summary(run, rows)


def measure_limit_and_newsbeam(labeller, texts: Sequence[str], corpus_dirs: dict, work: Path,
                               heads_args: list[str], rounds: int) -> tuple[dict, dict, dict]:
    """The limit, the int8 limit and newsbeam at N, one after the other,
    ``rounds`` times; then newsbeam at 5N. Returns (limit, int8 limit, newsbeam).

    This machine's speed drifts by 5-10% over minutes, and e2e_vs_limit and
    int8_speedup divide one figure by another: measuring them side by side,
    in rounds, and averaging the rounds keeps the drift out of the ratios.
    Every round is kept in the results.
    """
    from limit import int8_encoder, measure_limit

    small, large = corpus_dirs["n"], corpus_dirs["5n"]
    limits, int8_limits, n_summaries = [], [], []
    for number in range(rounds):
        limits.append(measure_limit(labeller, texts))
        with int8_encoder(labeller):
            int8_limits.append(measure_limit(labeller, texts))
        n_summaries.append(run_newsbeam(small, work / f"out_n{number}", heads_args))
    large_summary = run_newsbeam(large, work / "out_5n", heads_args)
    limit, int8_limit = mean_of(limits, "seconds", "articles_per_s"), mean_of(int8_limits, "seconds", "articles_per_s")
    for merged, measured in ((limit, limits), (int8_limit, int8_limits)):
        merged["rounds"] = [{"seconds": one["seconds"], "articles_per_s": one["articles_per_s"]} for one in measured]
    n_summary = mean_of(n_summaries, "wall_s", "articles_per_s", "peak_rss_mb")
    n_summary["rounds"] = n_summaries
    extra_articles = large_summary["articles"] - n_summary["articles"]
    extra_seconds = large_summary["wall_s"] - n_summary["wall_s"]
    newsbeam = {
        "n": n_summary,
        "5n": large_summary,
        # what the second 4N articles cost: the run's fixed costs (start-up) cancel out
        "steady_articles_per_s": round(extra_articles / extra_seconds, 3) if extra_seconds > 0 else None,
        "e2e_vs_limit_by_round": [ratio(run["articles_per_s"], one["articles_per_s"])
                                  for run, one in zip(n_summaries, limits)],
    }
    return limit, int8_limit, newsbeam


def measure_int8(labeller, int8_limit: Optional[dict], corpus_dir: Path, work: Path, heads_args: list[str],
                 dev_sets: Optional[dict]) -> dict:
    """int8 against fp32: the encoder's speed (``int8_limit``, measured next to
    the fp32 limit), a whole run, and the labels on the corpus and dev sets."""
    from limit import int8_encoder
    from quality import compare_predictions, dev_predictions

    if int8_limit is None:
        raise RuntimeError("the int8 limit was not measured (see the limit step's error)")
    fp32_dev = dev_predictions(labeller, dev_sets) if dev_sets else None
    with int8_encoder(labeller) as int8_model:
        int8_dev = dev_predictions(labeller, dev_sets) if dev_sets else None
    run = run_child(newsbeam_argv([str(corpus_dir)], work / "out_int8", heads_args, int8=True)).check()
    rows = read_labels(work / "out_int8")
    return {
        "method": ("newsbeam.labelling.int8: SmoothQuant input scaling (alpha 0.8) + quantize_dynamic per-channel "
                   "qint8 of every nn.Linear except the FFN output projections kept fp32"),
        "kept_fp32": list(getattr(int8_model, "int8_kept_fp32", ())),
        "limit": int8_limit,
        "newsbeam": run_summary(run, len(rows)),
        "corpus_agreement": label_agreement(read_labels(work / "out_n0"), rows),
        "dev_sets": compare_predictions(dev_sets, fp32_dev, int8_dev) if dev_sets else
        "not measured: ../shared/data absent",
    }


def measure_naive(corpus_dir: Path, work: Path, heads: Optional[str]) -> dict:
    from naive import NaiveLabeller, naive_run

    from newsbeam.labelling.embedded import ensure_embedded_model
    from newsbeam.labelling.heads import load_heads

    labeller = NaiveLabeller(ensure_embedded_model(), load_heads(heads))
    result = naive_run(corpus_dir, work / "out_naive", labeller)
    result.pop("rows")
    return result


def measure_stages(corpus_dir: Path, work: Path, heads_args: list[str]) -> dict:
    report = work / "stages.json"
    run_child(python_argv(str(BENCH / "stages.py"), str(report), "run", "--inputs", str(corpus_dir),
                          "--output", str(work / "out_stages"), *heads_args)).check()
    return json.loads(report.read_text())


def measure_full_text_run(articles, work: Path, heads_args: list[str], baseline: Optional[dict]) -> dict:
    """The same feeds run twice, without and with --full_text: the difference is its cost."""
    from news_sites import NewsSites

    with NewsSites(articles) as sites:
        feeds_only = run_child(python_argv("-m", "newsbeam.pipeline.cli", "run", "--feeds", *sites.feed_urls,
                                           "--allow_private_addresses", "--output", str(work / "out_feeds_only"),
                                           *heads_args)).check()
        run = run_child(python_argv("-m", "newsbeam.pipeline.cli", "run", "--feeds", *sites.feed_urls,
                                    "--full_text", "--allow_private_addresses", "--allow_private_page_addresses",
                                    "--output", str(work / "out_full_text"), *heads_args)).check()
    import pyarrow.dataset as ds

    table = ds.dataset(str(work / "out_full_text"), format="parquet", partitioning="hive",
                       exclude_invalid_files=True).to_table(columns=["body_source"])
    from_pages = sum(1 for value in table.column("body_source").to_pylist() if value != "feed")
    summary = run_summary(run, table.num_rows)
    summary.update({
        "hosts": len(sites.feed_urls),
        "bodies_from_pages": from_pages,
        "flags": "--full_text (default politeness: 2 requests in flight and 1 request/s per host)",
        "politeness_floor_s": round(table.num_rows / len(sites.feed_urls), 1),
        "feeds_only_wall_s": round(feeds_only.wall_s, 3),
        "extra_s_vs_feeds_only": round(run.wall_s - feeds_only.wall_s, 3),
    })
    return summary


def dataset_bytes(output: Path) -> int:
    return sum(path.stat().st_size for path in output.rglob("*.parquet"))


def measure_embeddings_and_stories(corpus: dict, work: Path, heads_args: list[str], baseline: Optional[dict]) -> dict:
    """The N corpus again with --embeddings --stories: the cost of keeping the vectors and
    grouping stories, next to the default run of the same corpus, and the bytes a row takes."""
    output = work / "out_embeddings_stories"
    run = run_child(newsbeam_argv([str(corpus["dir"])], output, [*heads_args, "--embeddings", "--stories"])).check()
    import pyarrow.dataset as ds

    table = ds.dataset(str(output), format="parquet", partitioning="hive",
                       exclude_invalid_files=True).to_table(columns=["embedding", "story_id"])
    if table.num_rows != corpus["articles"]:
        raise RuntimeError(f"newsbeam wrote {table.num_rows} rows for {corpus['articles']} articles")
    summary = run_summary(run, table.num_rows)
    stories = table.column("story_id").to_pylist()
    plain_output = work / "out_n0"  # the first default run of the same corpus
    summary.update({
        "flags": "--embeddings --stories",
        "stories": len(set(stories)),
        "bytes_per_row": round(dataset_bytes(output) / table.num_rows, 1),
        "bytes_per_row_default": (round(dataset_bytes(plain_output) / corpus["articles"], 1)
                                  if plain_output.is_dir() else None),
        "vs_default_run": ratio(summary["articles_per_s"], (baseline or {}).get("articles_per_s")),
    })
    return summary


def headline_figures(results: dict) -> dict:
    newsbeam, limit = results.get("newsbeam") or {}, results.get("limit") or {}
    naive, int8 = results.get("naive") or {}, results.get("int8") or {}
    limit_rate = limit.get("articles_per_s")
    n_rate = (newsbeam.get("n") or {}).get("articles_per_s")
    figures = {
        "e2e_vs_limit": ratio(n_rate, limit_rate),
        "e2e_vs_limit_steady": ratio(newsbeam.get("steady_articles_per_s"), limit_rate),
        "e2e_vs_naive": ratio(n_rate, naive.get("articles_per_s"), 2),
    }
    if int8:
        figures["int8_speedup"] = ratio(int8["limit"]["articles_per_s"], limit_rate)
        figures["int8_speedup_e2e"] = ratio(int8["newsbeam"]["articles_per_s"], n_rate)
        figures["int8_agreement"] = int8["corpus_agreement"]["both_labels"]
        if isinstance(int8.get("dev_sets"), dict):
            dev = int8["dev_sets"]
            figures["int8_agreement_dev"] = round(statistics.mean(task["agreement"] for task in dev.values()), 4)
            figures["int8_macro_f1_delta_points"] = {task: values["delta_points"] for task, values in dev.items()}
    if newsbeam.get("n") and newsbeam.get("5n"):
        figures["rss_growth"] = ratio(newsbeam["5n"]["peak_rss_mb"], newsbeam["n"]["peak_rss_mb"], 4)
        figures["rss_growth"] = round(figures["rss_growth"] - 1, 4) if figures["rss_growth"] else None
    startup = results.get("startup") or {}
    figures["startup_cold_s"], figures["startup_warm_s"] = startup.get("cold_s"), startup.get("warm_s")
    return figures


def run(args: argparse.Namespace) -> dict:
    import torch  # noqa: F401  (imported before timing anything)

    from newsbeam.transforms.labelling import LabellerConfig

    work = Path(tempfile.mkdtemp(prefix="newsbeam-bench-", dir=args.work_dir))
    heads_args = ["--heads", args.heads] if args.heads else []
    started = time.perf_counter()
    results: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "settings": {"articles": args.articles, "rounds": args.rounds, "full_text_articles": min(args.articles, FULL_TEXT_ARTICLES), "memory_factor": args.memory_factor,
                     "naive_articles": args.naive_articles, "seed": args.seed,
                     "heads": args.heads or "shipped", "max_tokens": LabellerConfig().max_tokens,
                     "max_batch_tokens": LabellerConfig().max_batch_tokens},
        "targets": TARGETS,
    }
    large_count = args.articles * args.memory_factor
    articles = generate_articles(large_count, args.seed)
    small = articles[:args.articles]
    corpus_dirs = {"n": {"dir": work / "corpus_n", "articles": len(small)},
                   "5n": {"dir": work / "corpus_5n", "articles": len(articles)}}
    write_corpus(small, corpus_dirs["n"]["dir"])
    write_corpus(articles, corpus_dirs["5n"]["dir"])
    write_corpus(small[:args.naive_articles], work / "corpus_naive")
    results["corpus"] = corpus_stats(small)
    results["corpus"]["seed"] = args.seed

    labeller = LabellerConfig(heads=args.heads).load()
    texts = labelling_texts(small)
    paired = step("limit and newsbeam", results, measure_limit_and_newsbeam, labeller, texts, corpus_dirs, work,
                  heads_args, args.rounds)
    results["limit"], int8_limit, results["newsbeam"] = paired if paired else (None, None, None)
    dev_sets = None
    if not args.skip_dev_sets:
        from quality import load_dev_sets

        dev_sets = load_dev_sets(per_set=args.dev_per_set)
    results["int8"] = step("int8", results, measure_int8, labeller, int8_limit, corpus_dirs["n"]["dir"], work,
                           heads_args, dev_sets)
    del labeller
    results["naive"] = step("naive", results, measure_naive, work / "corpus_naive", work, args.heads)
    if results["naive"]:
        results["naive"]["note"] = (f"timed on the first {results['naive']['articles']} articles of the corpus "
                                    "(per-article rate), model loaded before the clock starts")
    results["stages"] = step("stages", results, measure_stages, corpus_dirs["n"]["dir"], work, heads_args)
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    from startup import measure_cold_and_warm

    results["startup"] = step("startup", results, measure_cold_and_warm, cache, args.heads)
    shutil.rmtree(cache, ignore_errors=True)
    if args.skip_full_text:
        results["full_text"] = "not measured: --skip_full_text"
    else:
        baseline = (results.get("newsbeam") or {}).get("n")
        results["full_text"] = step("full_text", results, measure_full_text_run, small[:FULL_TEXT_ARTICLES], work,
                                    heads_args, baseline)
    results["embeddings_and_stories"] = step("embeddings_and_stories", results, measure_embeddings_and_stories,
                                             corpus_dirs["n"], work, heads_args,
                                             (results.get("newsbeam") or {}).get("n"))
    from search_bench import measure_search

    results["search"] = {f"{rows}_rows": step(f"search {rows} rows", results, measure_search, rows, SEARCH_QUERIES)
                         for rows in SEARCH_ROWS}
    results["figures"] = headline_figures(results)
    results["bench_wall_s"] = round(time.perf_counter() - started, 1)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000,
                        help="N: corpus size (memory also runs 5N); 1000 keeps the bench under 10 minutes on 2 cores.")
    parser.add_argument("--memory_factor", type=int, default=5, help="The memory run's size, in N.")
    parser.add_argument("--rounds", type=int, default=2,
                        help="Times the limit and newsbeam at N are measured, alternately (figures are the means).")
    parser.add_argument("--naive_articles", type=int, default=60, help="Subset the naive loop is timed on.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", default=None, help="Heads folder (default: the shipped heads).")
    parser.add_argument("--dev_per_set", type=int, default=None, help="Rows per dev file (default: all).")
    parser.add_argument("--skip_dev_sets", action="store_true")
    parser.add_argument("--skip_full_text", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--docs", default=str(DOCS), help="Markdown summary to write ('' to skip).")
    parser.add_argument("--work_dir", default=None, help="Where temporary corpora and outputs go.")
    parser.add_argument("--keep_work", action="store_true")
    args = parser.parse_args(argv)
    if args.articles < 1 or args.memory_factor < 2 or args.naive_articles < 1 or args.rounds < 1:
        parser.error("--articles, --naive_articles and --rounds must be >= 1, --memory_factor >= 2")
    results = run(args)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown = render_markdown(results)
    if args.docs:
        Path(args.docs).write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
