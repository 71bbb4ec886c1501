"""train-heads: data reading, weighting, head fitting, and the command end to end
on a tiny random BERT saved to tmp_path (no network, no shared data)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from newsbeam_lab import head_fitting, training, training_data
from newsbeam_lab.article_windows import ArticleWindows

from newsbeam.labelling.heads import load_heads
from newsbeam.labelling.taxonomy import load_taxonomy
from tests.support.builders import (
    FILLER,
    HAPPY_WORDS,
    SAD_WORDS,
    SPORT_WORDS,
    WEATHER_WORDS,
    save_tiny_bert,
    toy_sentences,
    write_jsonl,
    write_toy_sets,
)


@pytest.fixture(scope="module")
def tiny_encoder_path(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def trained_heads(tmp_path_factory, tiny_encoder_path) -> Path:
    """Heads trained by the train-heads command on the toy sets."""
    folder = tmp_path_factory.mktemp("toy")
    topic_file, sentiment_file = write_toy_sets(folder)
    (folder / "toy_map.json").write_text(json.dumps({"football": "sport", "meteo": "weather"}))
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    args = parser.parse_args([
        "--topic_data", f"{topic_file}@{folder / 'toy_map.json'}",
        "--sentiment_data", sentiment_file,
        "--encoder", tiny_encoder_path,
        "--output", str(folder / "heads"),
        "--feature_cache", str(folder / "features"),
        "--max_tokens", "32",
        "--topic_layers", "1,3",
        "--sentiment_layers", "-1",
        "--version", "heads-toy",
    ])
    assert training.run(args) == 0
    return folder / "heads"


def test_train_heads_command_writes_small_heads_that_separate_the_toy_set(trained_heads, tiny_encoder_path):
    from newsbeam.labelling.labeller import load_labeller

    head_set = load_heads(str(trained_heads))
    assert head_set.version == "heads-toy"
    assert head_set.encoder_id == tiny_encoder_path
    assert head_set.heads["topic"].labels == load_taxonomy().topic_ids
    assert head_set.heads["topic"].metadata["label_counts"]["sport"] == 40
    assert head_set.heads["topic"].metadata["label_counts"]["weather"] == 40
    # own training data: the recipe's held-out sets don't apply, so no temperature is fitted
    assert head_set.heads["topic"].temperature == 1.0 and "temperature_fit" not in head_set.heads["topic"].metadata
    assert (trained_heads / "heads.safetensors").stat().st_size < 200_000
    # the stored vectors' centre: the mean unit vector of the distinct topic training texts
    from newsbeam.labelling import PASSAGE_PREFIX
    from newsbeam.labelling.encoder import load_encoder

    topic_rows = [json.loads(line) for line in (trained_heads.parent / "topic.jsonl").read_text().splitlines()]
    texts = sorted({row["text"] for row in topic_rows if row["label"] in ("football", "meteo")})  # mapped rows
    expected = load_encoder(tiny_encoder_path).embed(texts, 32, PASSAGE_PREFIX).mean(axis=0)
    np.testing.assert_allclose(head_set.embedding_centre, expected, atol=1e-5)
    assert head_set.embedding_centre_source["texts"] == len(texts) and head_set.embedding_centre_source["seed"] == 0

    labeller = load_labeller(encoder=tiny_encoder_path, heads=str(trained_heads), max_tokens=32)
    sport, weather = toy_sentences(SPORT_WORDS, 20, 99), toy_sentences(WEATHER_WORDS, 20, 98)
    happy, sad = toy_sentences(HAPPY_WORDS, 20, 97), toy_sentences(SAD_WORDS, 20, 96)
    labels = labeller.label_texts(sport + weather)
    assert [label.topic for label in labels] == ["sport"] * 20 + ["weather"] * 20
    assert all(label.topic_score > 0.5 and len(label.topic_scores) == 3 for label in labels)
    sentiments = [label.sentiment for label in labeller.label_texts(happy + sad)]
    assert sentiments == ["positive"] * 20 + ["negative"] * 20
    assert labeller.model_id == f"{tiny_encoder_path}+heads-toy"


def test_features_are_cached_per_file_and_reused(trained_heads, tiny_encoder_path, tmp_path):
    from newsbeam.labelling.encoder import load_encoder

    cache = trained_heads.parent / "features"
    cached = sorted(cache.glob("features-*.npy"))
    assert len(cached) == 2  # one per training file
    encoder = load_encoder(tiny_encoder_path)
    texts = toy_sentences(SPORT_WORDS, 5, 3)
    first = head_fitting.pooled_features(encoder, texts, (1, 3), 32, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("features-*.npy")
    assert np.load(entry).shape == (5, encoder.num_layers + 1, encoder.hidden_size)
    again = head_fitting.pooled_features(encoder, texts, (1, 3), 32, cache_dir=tmp_path)
    # bit for bit: heads fitted after a cold cache and after a warm one must be the same heads
    assert first.dtype == again.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    uncached = head_fitting.pooled_features(encoder, texts, (1, 3), 32)
    np.testing.assert_array_equal(first, uncached)


def test_read_labelled_jsonl_maps_skips_and_uses_headline_and_body(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"headline": "Cup final tonight", "body": "The team  travels\n\n\nto the stadium.", "text": "ignored",
         "label": "sports", "lang": "en"},
        {"text": "A plain sentence.", "label": "sports"},
        {"text": "Unmapped.", "label": "cooking", "lang": "en"},
        {"text": "   ", "label": "sports", "lang": "en"},
    ])
    rows = training_data.read_labelled_jsonl(path, {"sports": "sport"}, load_taxonomy().topic_ids)
    assert rows.texts == ["Cup final tonight\nThe team travels\nto the stadium.", "A plain sentence."]
    assert rows.labels == ["sport", "sport"]
    assert rows.languages == ["en", "und"]
    assert rows.skipped == 2


def toy_article(count: int, seed: int) -> list[str]:
    """``count`` words of a sports article in the toy vocabulary."""
    return np.random.default_rng(seed).choice(SPORT_WORDS + FILLER, count).tolist()


def test_article_windows_are_the_headline_with_each_later_stretch_of_the_body(tiny_encoder_path):
    from newsbeam.labelling.encoder import load_encoder

    tokenizer = load_encoder(tiny_encoder_path).tokenizer
    # "passage : coach says" is 4 word tokens + 2 special ones: a 30-token window leaves 24 for the body
    words = toy_article(24 * 3 + 5, seed=1)
    windows = ArticleWindows(tokenizer, count=10, window_tokens=30)
    assert windows("coach says", " ".join(words)) == [
        "coach says\n" + " ".join(words[24:48]),
        "coach says\n" + " ".join(words[48:72]),
    ]  # the first stretch is the row itself; the 5-word scrap at the end is not a window
    assert ArticleWindows(tokenizer, count=1, window_tokens=30)("coach says", " ".join(words)) == [
        "coach says\n" + " ".join(words[24:48])]
    assert ArticleWindows(tokenizer, count=0, window_tokens=30)("coach says", " ".join(words)) == []
    assert windows("coach says", " ".join(words[:30])) == []  # one stretch and a scrap
    assert windows("coach says", None) == []
    with pytest.raises(ValueError, match="window_tokens"):
        ArticleWindows(tokenizer, count=2, window_tokens=4)


def test_read_labelled_jsonl_adds_windows_of_bodies_with_the_row_label_and_language(tmp_path, tiny_encoder_path):
    from newsbeam.labelling.encoder import load_encoder

    long_body = " ".join(toy_article(60, seed=2))
    path = write_jsonl(tmp_path / "news.jsonl", [
        {"headline": "cup", "body": long_body, "label": "sports", "lang": "fr"},
        {"headline": "cup", "body": long_body, "label": "cooking", "lang": "fr"},  # skipped: no windows either
        {"text": " ".join(toy_article(60, seed=3)), "label": "sports", "lang": "en"},  # no body: no windows
    ])
    windows = ArticleWindows(load_encoder(tiny_encoder_path).tokenizer, count=5, window_tokens=24)
    rows = training_data.read_labelled_jsonl(path, {"sports": "sport"}, load_taxonomy().topic_ids, windows=windows)
    stretches = windows("cup", long_body)
    assert len(stretches) == 2  # 60 words: stretches of 19 tokens at 19 and 38, then a 3-word scrap
    assert rows.texts[1:3] == stretches and rows.texts[0].startswith("cup\n")
    assert rows.labels == ["sport"] * 4 and rows.languages == ["fr", "fr", "fr", "en"]
    assert (rows.windows, rows.skipped) == (2, 1)


def test_train_heads_counts_article_windows_and_trains_on_them(tmp_path, tiny_encoder_path):
    articles = [{"headline": "cup", "body": " ".join(toy_article(50, seed)), "label": "sport", "lang": "en"}
                for seed in range(4)]
    articles += [{"headline": "storm", "body": " ".join(np.random.default_rng(seed).choice(WEATHER_WORDS, 50)),
                  "label": "weather", "lang": "en"} for seed in range(4)]
    news = write_jsonl(tmp_path / "news.jsonl", articles)
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)

    def train(*flags: str) -> dict:
        output = tmp_path / f"heads{len(flags)}"
        args = parser.parse_args(["--topic_data", news, "--tasks", "topic", "--encoder", tiny_encoder_path,
                                  "--output", str(output), "--feature_cache", str(tmp_path / "features"),
                                  "--max_tokens", "32", "--topic_layers", "-1", *flags])
        assert training.run(args) == 0
        return load_heads(str(output)).heads["topic"].metadata

    # "passage : cup" leaves 11 of 16 tokens, raised to the 16-token least stretch: 50 words make
    # full stretches at 16 and 32 after the row itself (the 2-word scrap at 48 is dropped)
    windowed = train("--article_windows", "2", "--window_tokens", "16")
    assert windowed["article_windows"] == {"per_article": 2, "tokens": 16, "rows": 16}
    assert windowed["train_rows"] == 24 and windowed["label_counts"]["weather"] == 12
    plain = train("--article_windows", "0")
    assert plain["article_windows"]["rows"] == 0 and plain["train_rows"] == 8


def test_parse_source_splits_only_a_map_suffix():
    assert training_data.parse_source("data/*/train.jsonl@sib200") == ("data/*/train.jsonl", "sib200")
    assert training_data.parse_source("data/x.jsonl@maps/my map.json") == ("data/x.jsonl", "maps/my map.json")
    assert training_data.parse_source("data/user@host/x.jsonl") == ("data/user@host/x.jsonl", None)
    assert training_data.parse_source("x.jsonl") == ("x.jsonl", None)


def test_missing_training_files_fail_with_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        training_data.read_sources([str(tmp_path / "nothing-here*.jsonl")], ["sport"])


def test_balanced_weights_even_out_sources_and_labels():
    labels = np.array([0] * 90 + [1] * 10 + [0] * 5 + [1] * 5)
    sources = ["big"] * 100 + ["small"] * 10
    weights = head_fitting.balanced_weights(labels, sources, 3, source_power=0.0)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    # with equal source weight, the 10 small-source rows together weigh as much as the 100 big ones
    # before label balancing; label balancing then rescales per label, keeping the within-label ratio
    assert weights[100] / weights[0] == pytest.approx(10.0)
    proportional = head_fitting.balanced_weights(labels, sources, 3, source_power=1.0)
    assert proportional[100] / proportional[0] == pytest.approx(1.0)


def test_source_weight_multiplies_one_sources_total_before_label_balancing():
    labels = np.array([0, 1] * 50 + [0, 1] * 50)
    sources = ["sentiment/xlmt/*/train.jsonl@xlmt"] * 100 + ["lab/labels/*.jsonl"] * 100
    even = head_fitting.balanced_weights(labels, sources, 2, source_power=0.0)
    assert even[:100].sum() == pytest.approx(even[100:].sum())
    tripled = head_fitting.balanced_weights(labels, sources, 2, source_power=0.0, source_weights={"xlmt": 3.0})
    assert tripled.mean() == pytest.approx(1.0)
    assert tripled[:100].sum() == pytest.approx(3 * tripled[100:].sum())
    assert tripled[labels == 0].sum() == pytest.approx(tripled[labels == 1].sum())


@pytest.mark.parametrize("value, expected", [("xlmt=3", {"xlmt": 3.0}),
                                             ("xlmt=3, lab/written=0.5", {"xlmt": 3.0, "lab/written": 0.5})])
def test_source_weight_flag_parses(value, expected):
    assert training._source_weights(value) == expected


def test_a_task_prefixed_source_weight_applies_to_that_task_only_and_wins_there():
    weights = training._source_weights("xlmt=3,masakhanews=0.5,topic:masakhanews=2,sentiment:ant_v21=0.5")
    assert training.source_weights_of("topic", weights) == {"masakhanews": 2.0, "xlmt": 3.0}
    assert training.source_weights_of("sentiment", weights) == {"ant_v21": 0.5, "xlmt": 3.0, "masakhanews": 0.5}
    sources = ["lab/labels/masakhanews_*.jsonl"] * 10 + ["lab/labels/ant_v21_*.jsonl"] * 10
    labels = np.array([0, 1] * 10)
    topic = head_fitting.balanced_weights(labels, sources, 2, source_power=0.0,
                                          source_weights=training.source_weights_of("topic", weights))
    assert topic[:10].sum() == pytest.approx(2 * topic[10:].sum())


@pytest.mark.parametrize("value", ["xlmt", "xlmt=0", "xlmt=-1", "=2", "xlmt=many"])
def test_source_weight_flag_rejects_bad_values(value):
    with pytest.raises(argparse.ArgumentTypeError):
        training._source_weights(value)


def test_fit_head_linear_and_mlp_separate_gaussian_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 2, 8)) * 3
    label_ids = np.repeat(np.arange(3), 50)
    pooled = (centres[label_ids] + rng.normal(size=(150, 2, 8))).astype(np.float32)
    for hidden in (0, 16):
        head = head_fitting.fit_head("sentiment", ["negative", "neutral", "positive"], (4, 6), pooled, label_ids,
                                 np.ones(150), l2=0.01, hidden=hidden, epochs=60)
        accuracy = np.mean(head.logits(pooled).argmax(axis=1) == label_ids)
        assert accuracy > 0.95, (hidden, accuracy)
        assert head.metadata["kind"] == ("linear" if hidden == 0 else "mlp")


def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20_000, 5))
    scaled = logits / 2.5
    probabilities = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in probabilities])
    assert head_fitting.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    # labels the logits always get right: sharper is better, so the fitted temperature falls below 1
    assert head_fitting.fit_temperature(logits, logits.argmax(axis=1)) < 0.5


def test_temperature_softens_scores_without_changing_the_best_label():
    from newsbeam.labelling.heads import Head

    rng = np.random.default_rng(1)
    base = Head(task="sentiment", labels=("negative", "neutral", "positive"), layers=(1,), mean=np.zeros(4),
                scale=np.ones(4), weights=(rng.normal(size=(4, 3)),), biases=(np.zeros(3),))
    softer = Head(**{**base.__dict__, "temperature": 3.0})
    pooled = rng.normal(size=(50, 1, 4)).astype(np.float32)
    sharp, soft = base.probabilities(pooled), softer.probabilities(pooled)
    assert (sharp.argmax(axis=1) == soft.argmax(axis=1)).all()
    assert (soft.max(axis=1) <= sharp.max(axis=1) + 1e-7).all() and soft.max(axis=1).mean() < sharp.max(axis=1).mean()
    with pytest.raises(ValueError, match="temperature"):
        Head(**{**base.__dict__, "temperature": 0.0})


def test_resolve_layers_accepts_negative_indices_and_rejects_out_of_range():
    assert head_fitting.resolve_layers((-1, 6, 8, -3), 12) == (6, 8, 10, 12)
    with pytest.raises(ValueError, match="out of range"):
        head_fitting.resolve_layers((13,), 12)


def test_default_recipe_points_at_shared_data_and_own_examples():
    data = training_data.default_data("/data")
    assert "/data/topic/sib200/*/train.jsonl@sib200" in data["topic"]
    assert "/data/sentiment/xlmt/*/train.jsonl@xlmt" in data["sentiment"]
    own = [spec for spec in data["topic"] if "topic_*.jsonl" in spec]
    assert own and training_data.expand_pattern(own[0])
    assert not any("dev" in spec or "val" in spec for specs in data.values() for spec in specs)


def test_own_written_examples_cover_the_subjects_public_sets_lack():
    rows = training_data.read_sources([str(training_data.OWN_TRAINING_DIR / "topic_*.jsonl")], load_taxonomy().topic_ids)
    counts = {label: rows.labels.count(label) for label in set(rows.labels)}
    for subject in ("conflict_war_peace", "crime_law_justice", "disaster_accident_emergency", "education",
                    "human_interest", "labour", "society", "weather"):
        assert counts.get(subject, 0) >= 20, subject
    languages = set(rows.languages)
    assert {"ar", "en", "fr"} <= languages


def test_int8_uses_the_peaks_train_heads_recorded_else_calibrates_at_load(trained_heads, tiny_encoder_path):
    from newsbeam.labelling.labeller import load_labeller

    head_set = load_heads(str(trained_heads))
    document = json.loads((trained_heads / "heads.json").read_text())
    assert document["int8_calibration"]["texts"] == 2 * training.INT8_CALIBRATION_PER_FILE  # 2 files
    assert any(name.endswith("intermediate.dense") for name in head_set.int8_peaks)

    with_peaks = load_labeller(encoder=tiny_encoder_path, heads=str(trained_heads), max_tokens=32, quantize="int8")
    sport = toy_sentences(SPORT_WORDS, 10, 95)
    assert [label.topic for label in with_peaks.label_texts(sport)] == ["sport"] * 10
    # the shipped heads belong to another encoder: their peaks don't apply, so it calibrates itself
    calibrated_here = load_labeller(encoder=tiny_encoder_path, max_tokens=32, quantize="int8")
    # the tiny model has 3 layers, so all its FFN outputs are among the 4 kept in fp32
    assert len(calibrated_here.encoder.model.int8_kept_fp32) == 3
    assert "+int8" in calibrated_here.model_id
