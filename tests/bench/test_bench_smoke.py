"""The benchmark's pieces on a tiny corpus: they run and measure what they say.

No timing is asserted here, ever: only that each function produces its figures
from real runs (rows written, labels produced, files parsed).
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import corpus  # noqa: E402
from measure import python_argv, run_child  # noqa: E402
from quality import macro_f1  # noqa: E402
from run_bench import label_agreement, newsbeam_argv, read_labels, render_markdown  # noqa: E402
from stages import stage_shares  # noqa: E402

from newsbeam.formats import entries_from_file  # noqa: E402


def test_corpus_is_deterministic_multilingual_and_within_length_bounds():
    articles = corpus.generate_articles(25, seed=7)
    assert articles == corpus.generate_articles(25, seed=7)
    assert articles[:10] == corpus.generate_articles(10, seed=7)  # a larger corpus extends a smaller one
    assert articles != corpus.generate_articles(25, seed=8)
    assert {a.language for a in articles} == set(corpus.LANGUAGES)
    assert all(corpus.MIN_WORDS <= a.word_count <= corpus.MAX_WORDS for a in articles)
    assert len({a.url for a in articles}) == 25


def test_corpus_files_parse_back_into_every_article(tmp_path):
    articles = corpus.generate_articles(12, seed=1)
    paths = corpus.write_corpus(articles, tmp_path)
    assert {p.suffix for p in paths} == {".rss", ".atom", ".jsonl"}
    entries = [entry for path in paths
               for entry in entries_from_file(str(path), path.read_bytes(), fetched_at="2024-05-06T00:00:00Z")]
    assert sorted(e.url for e in entries) == sorted(a.url for a in articles)
    by_url = {a.url: a for a in articles}
    assert all(e.title == by_url[e.url].title for e in entries)


def test_macro_f1_and_agreement_on_known_values():
    assert macro_f1(["a", "a", "b", "b"], ["a", "a", "b", "b"]) == 1.0
    # class a: tp 1, fn 1 -> 2/3; class b: tp 2, fp 1 -> 4/5
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    first = {"u1": ("sport", "positive", "en"), "u2": ("politics", "negative", "fr")}
    second = {"u1": ("sport", "neutral", "en"), "u2": ("politics", "negative", "fr"), "u3": ("x", "y", "z")}
    assert label_agreement(first, second) == {"articles": 2, "topic": 1.0, "sentiment": 0.5, "both_labels": 0.75}


def test_stage_shares_attribute_profiled_time_to_the_stage_functions(tmp_path):
    from newsbeam.normalise import normalise_entry
    from newsbeam.records import RawEntry

    profiler = cProfile.Profile()
    entry = RawEntry(source="s", title="Title", body="<p>Body text</p>", fetched_at="2024-05-06T00:00:00Z")
    profiler.runcall(lambda: [normalise_entry(entry) for _ in range(200)])
    shares = stage_shares(pstats.Stats(profiler), wall_s=10.0)
    assert shares["seconds"]["normalise"] > 0
    assert shares["seconds"]["model"] == 0
    assert shares["shares"]["other"] == pytest.approx(1 - sum(v for k, v in shares["shares"].items() if k != "other"),
                                                      abs=1e-3)


def test_newsbeam_child_run_is_measured_and_its_rows_read_back(tmp_path):
    articles = corpus.generate_articles(6, seed=2)
    corpus.write_corpus(articles, tmp_path / "in")
    run = run_child(newsbeam_argv([str(tmp_path / "in")], tmp_path / "out", ["--skip_labels"]),
                    log_dir=tmp_path).check()
    assert run.wall_s > 0 and run.peak_rss_bytes > 50 * 2**20  # a Python process with Beam loaded
    rows = read_labels(tmp_path / "out")
    assert sorted(rows) == sorted(a.url for a in articles)
    assert {language for _, _, language in rows.values()} == set(corpus.LANGUAGES)
    held_by_the_benchmark = bytearray(600 * 2**20)  # not the child's memory: must not be charged to it
    small = run_child(python_argv("-c", "block = bytearray(50 * 2**20)"), log_dir=tmp_path).check()
    assert 50 * 2**20 < small.peak_rss_bytes < 300 * 2**20
    del held_by_the_benchmark
    failing = run_child(python_argv("-c", "import sys; sys.exit(3)"), log_dir=tmp_path)
    assert failing.returncode == 3
    with pytest.raises(RuntimeError, match="exited 3"):
        failing.check()


def test_child_without_a_log_dir_leaves_no_files_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # tempfile caches the folder it picked first
    try:
        run = run_child(python_argv("-c", "print('out'); import sys; print('err', file=sys.stderr)")).check()
    finally:
        tempfile.tempdir = None
    assert (run.stdout.strip(), run.stderr.strip()) == ("out", "err")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def random_heads(tmp_path_factory):
    """Heads with random weights on the embedded encoder: enough to run the code paths."""
    from newsbeam_lab.heads_writer import save_heads

    from newsbeam.labelling import EMBEDDED_MODEL_ID
    from newsbeam.labelling.heads import Head, HeadSet
    from newsbeam.labelling.taxonomy import load_taxonomy

    taxonomy, rng = load_taxonomy(), np.random.default_rng(0)
    heads = {}
    for task in ("topic", "sentiment"):
        labels, layers = taxonomy.ids_for(task), (6, 12)
        width = 384 * len(layers)
        heads[task] = Head(task, labels, layers, np.zeros(width, np.float32), np.ones(width, np.float32),
                           (rng.normal(0, 0.05, (width, len(labels))).astype(np.float32),),
                           (np.zeros(len(labels), np.float32),))
    folder = tmp_path_factory.mktemp("heads")
    save_heads(HeadSet("test-random", EMBEDDED_MODEL_ID, 32, heads, taxonomy_digest=taxonomy.digest), folder)
    return str(folder)


@pytest.mark.timeout(300)
def test_limit_int8_and_naive_label_the_same_articles(tmp_path, random_heads):
    from limit import int8_encoder, measure_limit
    from naive import NaiveLabeller, naive_run

    from newsbeam.labelling.embedded import ensure_embedded_model
    from newsbeam.labelling.heads import load_heads
    from newsbeam.labelling.labeller import load_labeller

    articles = corpus.generate_articles(5, seed=3)
    texts = corpus.labelling_texts(articles)
    labeller = load_labeller(heads=random_heads, max_tokens=32)
    limit = measure_limit(labeller, texts)
    assert limit["articles"] == 5 and limit["tokens"] == 5 * 32 and limit["layers"] == [6, 12]

    fp32_model = labeller.encoder.model
    with int8_encoder(labeller) as int8_model:
        assert labeller.encoder.model is int8_model is not fp32_model
        assert any("quantized" in type(module).__module__ for module in int8_model.modules())
        int8_labels = labeller.label_texts(texts)
    assert labeller.encoder.model is fp32_model
    assert not any("quantized" in type(module).__module__ for module in fp32_model.modules())
    assert all(label.topic in labeller.taxonomy.ids_for("topic") for label in int8_labels)

    corpus.write_corpus(articles[:2], tmp_path / "naive_in")
    naive = naive_run(tmp_path / "naive_in", tmp_path / "naive_out",
                      NaiveLabeller(ensure_embedded_model(), load_heads(random_heads)))
    assert naive["articles"] == 2
    assert sorted(row["url"] for row in naive["rows"]) == sorted(a.url for a in articles[:2])
    assert len(list((tmp_path / "naive_out").glob("dt=*/lang=*/*.parquet"))) == 2


def test_markdown_reports_missing_steps_instead_of_numbers():
    results = {"figures": {"e2e_vs_limit": 0.9}, "machine": {"cpu": "Test CPU", "cores": 2},
               "limit": {"articles_per_s": 10.0, "articles": 5, "mean_tokens": 200.0},
               "full_text": "not measured: --skip_full_text", "errors": {"naive": "RuntimeError: boom"}}
    markdown = render_markdown(results)
    assert "| **e2e_vs_limit** (target ≥ 0.85) | 0.9 |" in markdown
    assert "Test CPU, 2 cores" in markdown
    assert "not measured: --skip_full_text" in markdown
    assert "- naive: RuntimeError: boom" in markdown


def test_bench_int8_uses_the_peaks_the_run_uses():
    """The bench's in-process int8 must be what `newsbeam run --quantize int8` loads."""
    from limit import int8_encoder

    from newsbeam.labelling.labeller import load_labeller

    texts = corpus.labelling_texts(corpus.generate_articles(8, seed=5))
    run_labeller = load_labeller(quantize="int8")
    bench_labeller = load_labeller()
    with int8_encoder(bench_labeller):
        bench_ids = bench_labeller.encoder.pooled_layers(bench_labeller.token_ids(texts), (12,))
        kept = bench_labeller.encoder.model.int8_kept_fp32
    run_ids = run_labeller.encoder.pooled_layers(run_labeller.token_ids(texts), (12,))
    assert kept == run_labeller.encoder.model.int8_kept_fp32
    assert np.allclose(bench_ids, run_ids, atol=1e-5)


def test_rounds_are_averaged_and_kept_apart_from_the_rest_of_a_summary():
    from run_bench import mean_of

    rounds = [{"articles": 10, "wall_s": 2.0, "articles_per_s": 5.0, "peak_rss_mb": 100.0},
              {"articles": 10, "wall_s": 4.0, "articles_per_s": 2.5, "peak_rss_mb": 110.0}]
    merged = mean_of(rounds, "wall_s", "articles_per_s", "peak_rss_mb")
    assert merged == {"articles": 10, "wall_s": 3.0, "articles_per_s": 3.75, "peak_rss_mb": 105.0}
    assert rounds[0]["wall_s"] == 2.0  # the rounds themselves are untouched
