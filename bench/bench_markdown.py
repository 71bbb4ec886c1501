"""docs/bench.md from a benchmark's results (bench/run_bench.py runs them)."""
from __future__ import annotations

from typing import Sequence


def _fmt(value, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}{suffix}" if abs(value) < 100 else f"{value:.0f}{suffix}"
    return f"{value}{suffix}"


def _embeddings_and_search_rows(results: dict) -> list[tuple[str, str, str]]:
    """--embeddings --stories against the default run, and the search query at each size."""
    rows = []
    extra = results.get("embeddings_and_stories")
    if isinstance(extra, dict):
        rows.append(("--embeddings --stories", _fmt(extra.get("articles_per_s"), " articles/s"),
                     f"{_fmt(extra.get('vs_default_run'))} of the default run's rate; {extra.get('stories')} stories "
                     f"for {extra.get('articles')} articles; {_fmt(extra.get('bytes_per_row'))} bytes a row on disk "
                     f"against {_fmt(extra.get('bytes_per_row_default'))}"))
    for name, search in (results.get("search") or {}).items():
        if isinstance(search, dict):
            rows.append((f"search, {name.replace('_', ' ')}", _fmt(search.get("queries_per_s"), " queries/s"),
                         f"median {_fmt(search.get('median_ms'))} ms, p95 {_fmt(search.get('p95_ms'))} ms "
                         "(the DuckDB scoring query, no model)"))
    return rows


def render_markdown(results: dict) -> str:
    """docs/bench.md: the figures table, the machine, the date and the method."""
    figures, machine = results.get("figures", {}), results.get("machine", {})
    newsbeam, limit = results.get("newsbeam") or {}, results.get("limit") or {}
    naive, int8 = results.get("naive") or {}, results.get("int8") or {}
    corpus, settings = results.get("corpus", {}), results.get("settings", {})
    n_run, large_run = newsbeam.get("n") or {}, newsbeam.get("5n") or {}
    stages = (results.get("stages") or {}).get("shares", {})
    full_text = results.get("full_text")
    f1 = figures.get("int8_macro_f1_delta_points") or {}
    def rounds_note(values: Sequence) -> str:
        return f" (rounds: {', '.join(_fmt(value) for value in values)})" if len(values) > 1 else ""

    def by_round(summary: dict, key: str) -> str:
        return rounds_note([one[key] for one in summary.get("rounds") or ()])

    round_ratios = newsbeam.get("e2e_vs_limit_by_round") or []
    rows = [
        ("limit (bare encoder, best batches)", f"{_fmt(limit.get('articles_per_s'))} articles/s",
         f"{limit.get('articles', 'n/a')} articles, {_fmt(limit.get('mean_tokens'))} tokens each on average"
         + by_round(limit, "articles_per_s")),
        ("newsbeam, N articles (whole run)", f"{_fmt(n_run.get('articles_per_s'))} articles/s",
         f"{_fmt(n_run.get('wall_s'))} s incl. start-up; peak RSS {_fmt(n_run.get('peak_rss_mb'))} MB"
         + by_round(n_run, "articles_per_s")),
        ("newsbeam, 5N articles (whole run)", f"{_fmt(large_run.get('articles_per_s'))} articles/s",
         f"{_fmt(large_run.get('wall_s'))} s; peak RSS {_fmt(large_run.get('peak_rss_mb'))} MB"),
        ("newsbeam steady state (5N minus N)", f"{_fmt(newsbeam.get('steady_articles_per_s'))} articles/s",
         "fixed per-run costs cancel out"),
        ("**e2e_vs_limit** (target ≥ 0.85)", _fmt(figures.get("e2e_vs_limit")),
         "whole run at N" + rounds_note(round_ratios)
         + f"; steady state: {_fmt(figures.get('e2e_vs_limit_steady'))}"),
        ("naive loop", f"{_fmt(naive.get('articles_per_s'))} articles/s",
         f"on {naive.get('articles', 'n/a')} articles (per-article rate)"),
        ("**e2e_vs_naive** (target ≥ 5)", _fmt(figures.get("e2e_vs_naive")), "newsbeam whole run at N / naive"),
        ("**int8_speedup** (target ≥ 1.8)", _fmt(figures.get("int8_speedup")),
         (f"encoder only: {_fmt(int8['limit']['articles_per_s'])} articles/s"
          f"{by_round(int8['limit'], 'articles_per_s')}; " if int8 else "encoder only; ")
         + f"whole newsbeam run: {_fmt(figures.get('int8_speedup_e2e'))}"),
        ("**int8_agreement** (target ≥ 0.95)", _fmt(figures.get("int8_agreement")),
         "corpus, topic and sentiment; "
         + (f"topic {_fmt(int8['corpus_agreement']['topic'])}, sentiment {_fmt(int8['corpus_agreement']['sentiment'])}; "
            if int8 else "")
         + f"dev sets: {_fmt(figures.get('int8_agreement_dev'))}"),
        ("int8 macro-F1 change (target ≥ -1 point)",
         ", ".join(f"{task} {_fmt(delta)}" for task, delta in f1.items()) or "n/a",
         "points, XLM-T val ar/en/fr (sentiment), SIB-200 dev ar/en/fr/ru/zh (topic)"),
        ("**rss_growth** (target ≤ 0.10)", _fmt(figures.get("rss_growth")),
         f"peak RSS at 5N / at N - 1 ({settings.get('articles')} and "
         f"{(settings.get('articles') or 0) * (settings.get('memory_factor') or 0)} articles)"),
        ("startup cold / **warm** (target warm ≤ 3 s)",
         f"{_fmt(figures.get('startup_cold_s'), ' s')} / {_fmt(figures.get('startup_warm_s'), ' s')}",
         "process start to first labelled batch; cold includes building the model cache"),
        ("stages (share of one run's wall time)",
         ", ".join(f"{stage} {100 * share:.0f}%" for stage, share in stages.items()) or "n/a",
         "cProfile, in-process, one worker"),
        ("full_text", _fmt(full_text.get("articles_per_s"), " articles/s") if isinstance(full_text, dict)
         else str(full_text),
         (f"{_fmt(full_text.get('wall_s'))} s for {full_text.get('articles')} articles from "
          f"{full_text.get('hosts')} loopback hosts, {full_text.get('bodies_from_pages')} bodies from pages; "
          f"+{_fmt(full_text.get('extra_s_vs_feeds_only'))} s over the same feeds without --full_text")
         if isinstance(full_text, dict) else ""),
        *_embeddings_and_search_rows(results),
    ]
    table = "\n".join(f"| {name} | {value} | {note} |" for name, value, note in rows)
    words = corpus.get("body_words", {})
    errors = results.get("errors") or {}
    error_text = "".join(f"- {name}: {text.splitlines()[0]}\n" for name, text in errors.items())
    return f"""# Benchmark

Produced by `make bench` (`.venv/bin/python bench/run_bench.py`); raw figures in
`bench/results/latest.json`. One run, one machine, all figures side by side.

- **Date**: {results.get('date')} (commit {results.get('commit')})
- **Machine**: {machine.get('cpu')}, {machine.get('cores')} cores; torch {machine.get('torch')} with {machine.get('torch_threads')} threads; Python {machine.get('python')}
- **Corpus**: {corpus.get('articles')} generated articles (seed {corpus.get('seed')}), languages {', '.join(corpus.get('languages', []))}; body {words.get('min')}-{words.get('max')} words, median {words.get('median')}; half as RSS/Atom files, half as JSONL
- **Settings**: N = {settings.get('articles')}, {settings.get('rounds', 1)} rounds of limit, int8 limit and newsbeam at N, memory run {settings.get('memory_factor')}N, naive on {settings.get('naive_articles')}, heads {settings.get('heads')}, `--max_tokens` {settings.get('max_tokens')}, `--max_batch_tokens` {settings.get('max_batch_tokens')}
- **Bench wall time**: {results.get('bench_wall_s')} s

| figure | value | notes |
|---|---|---|
{table}

{('Steps that could not run:' + chr(10) + error_text) if error_text else ''}
## Method

- **Corpus** (`bench/corpus.py`): generated from word lists written for the benchmark, per language a topic and a
  polarity; headline + body of 50-800 words (log-normal, median about 250). Deterministic for a seed.
- **limit** (`bench/limit.py`): the labeller's own texts (`article_text`: headline + lead, `passage:` prefix,
  `--max_tokens` default), tokenised in one call and run through the encoder in length-sorted batches under the
  `--max_batch_tokens` default budget, pooling the layers the heads read. No Beam, no I/O, model already loaded.
- **newsbeam**: `newsbeam run --inputs <corpus> --output <tmp>` with default flags in a child process; articles/s
  = articles / wall time of the whole process (imports and model loading included). Run at N and 5N articles;
  the steady-state rate is (5N - N) / (wall(5N) - wall(N)). Peak RSS is each child's `ru_maxrss` from `os.wait4`.
- **Rounds**: the machine's speed drifts by 5-10% over minutes, so the limit, the int8 limit and newsbeam at N
  are measured one after the other, `--rounds` times (default 2); their figures (rate, wall time, peak RSS at N)
  are the means of the rounds, and every round is in `latest.json`. `e2e_vs_limit` and `int8_speedup` are ratios
  of the means.
- **naive** (`bench/naive.py`): feedparser + json, then per article py3langid, one encoder pass for the topic head
  and another for the sentiment head, each padded to 512 tokens, batch of one; `pandas.DataFrame.to_parquet(
  partition_cols=["dt", "lang"])`. Same encoder and heads. Timed on a subset, model loaded before the clock starts.
- **int8** (`newsbeam run --quantize int8`, `newsbeam/labelling/int8.py`): calibrated with the peaks shipped in the
  heads (432 training texts, recorded by `train-heads`), SmoothQuant input scaling (alpha 0.8), then `quantize_dynamic` with
  `per_channel_dynamic_qconfig` of every `nn.Linear` except the {len(int8.get("kept_fp32") or ())} FFN output projections with the
  worst input outliers, which stay fp32;
  speed-up of the encoder (same texts as the limit) and of a whole newsbeam run; agreement of topic and sentiment
  labels with the fp32 run on the corpus and on the dev sets; macro-F1 change on XLM-T val (ar, en, fr) and
  SIB-200 dev (ar, en, fr, ru, zh) through the shipped label maps.
- **stages** (`bench/stages.py`): cumulative time of the function doing each stage's work in a cProfile of one
  in-process run (`--direct_num_workers=1`); cProfile inflates pure-Python stages, so their shares are upper bounds.
- **startup** (`bench/startup.py`): a fresh process imports the labelling stage, loads the labeller and labels one
  text; cold with `NEWSBEAM_CACHE` empty (the embedded model is built), warm from that cache.
- **full_text** (`bench/news_sites.py`): the first (at most) 100 articles served from one loopback server per language (feeds carry
  headline + summary, pages carry the article); `newsbeam run --feeds ...` without and with `--full_text`
  (default politeness); the difference is the cost of `--full_text`.
- **--embeddings --stories**: the N corpus once more with both flags; its rate against the default run's, the
  stories found, and the Parquet bytes per row of both datasets.
- **search** (`bench/search_bench.py`): `newsbeam search`'s scoring query over synthetic embedded rows (random
  unit vectors, int8 as stored) in 12 partition files; queries per second and latency, the model's query
  embedding not included.
"""
