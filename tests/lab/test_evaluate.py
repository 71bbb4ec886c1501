"""newsbeam eval: metrics on hand-made data with known answers, closed-set
restriction, label maps, and the command end to end on a tiny model."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from newsbeam_lab import evaluate, scoring, training

from tests.support.builders import SPORT_WORDS, WEATHER_WORDS, toy_sentences, write_jsonl


def test_f1_scores_match_hand_computed_values():
    gold = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    scores = scoring.f1_scores(gold, predicted)
    # a: P 2/2, R 2/3 -> F1 0.8; b: P 1/2, R 1/2 -> 0.5; c: P 1/2, R 1/1 -> 2/3
    assert scores["per_label"]["a"]["f1"] == pytest.approx(0.8)
    assert scores["per_label"]["b"]["f1"] == pytest.approx(0.5)
    assert scores["per_label"]["c"]["f1"] == pytest.approx(2 / 3)
    assert scores["per_label"]["c"]["precision"] == pytest.approx(0.5)
    assert scores["per_label"]["a"]["support"] == 3
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_a_predicted_label_absent_from_gold_counts_in_the_macro_average():
    scores = scoring.f1_scores(["a", "a"], ["a", "z"])
    assert scores["per_label"]["z"]["f1"] == 0.0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_classification_report_per_language_and_confusion():
    gold = ["a", "b", "a", "b", "a", "b"]
    predicted = ["a", "b", "b", "b", "a", "a"]
    languages = ["en", "en", "fr", "fr", "ar", "ar"]
    report = scoring.classification_report(gold, predicted, languages)
    assert report["n"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_language"]["en"] == {"n": 2, "accuracy": 1.0, "macro_f1": 1.0}
    assert report["per_language"]["fr"]["accuracy"] == 0.5
    assert report["per_language"]["fr"]["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)
    assert report["per_language"]["ar"]["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert report["confusion"] == {"labels": ["a", "b"], "matrix": [[2, 1], [1, 2]]}
    with pytest.raises(ValueError, match="differ in length"):
        scoring.classification_report(["a"], [], ["en"])


def test_restriction_picks_the_best_label_among_each_languages_gold_labels():
    label_ids = ("sport", "weather", "politics")
    probabilities = np.array([[0.1, 0.3, 0.6], [0.5, 0.2, 0.3], [0.2, 0.1, 0.7]])
    languages = ["en", "en", "fr"]
    assert scoring.choose_labels(label_ids, probabilities, languages) == ["politics", "sport", "politics"]
    allowed = scoring.allowed_labels_by_language(["sport", "weather", "weather"], languages)
    assert allowed == {"en": {"sport", "weather"}, "fr": {"weather"}}
    assert scoring.choose_labels(label_ids, probabilities, languages, allowed) == ["weather", "sport", "weather"]


def test_format_report_shows_every_section():
    report = scoring.classification_report(["a", "b"], ["a", "a"], ["en", "fr"])
    report.update({"task": "topic", "model": "m", "restricted": False, "skipped": 1, "seconds": 0.1,
                   "texts_per_second": 20.0})
    text = scoring.format_report(report)
    for fragment in ("macro-F1 0.3333", "skipped 1", "confusion (rows gold, columns predicted)", "fr"):
        assert fragment in text


@pytest.fixture(scope="module")
def toy_eval(tmp_path_factory, trained_heads_module):
    folder = tmp_path_factory.mktemp("eval")
    rows = [{"text": t, "label": "football", "lang": "en"} for t in toy_sentences(SPORT_WORDS, 10, 50)]
    rows += [{"headline": t.split(" ", 3)[-1], "body": t, "label": "meteo", "lang": "fr"}
             for t in toy_sentences(WEATHER_WORDS, 10, 51)]
    rows += [{"text": "the news today", "label": "gossip", "lang": "en"}] * 3
    data = write_jsonl(folder / "dev.jsonl", rows)
    label_map = folder / "map.json"
    label_map.write_text(json.dumps({"football": "sport", "meteo": "weather", "gossip": None}))
    return data, str(label_map)


@pytest.fixture(scope="module")
def trained_heads_module(tmp_path_factory):
    """The toy heads of test_training, trained once for this module."""
    from newsbeam_lab import training

    from tests.support.builders import save_tiny_bert, write_toy_sets

    encoder_path = save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-eval"))
    folder = tmp_path_factory.mktemp("toy-train")
    topic_file, sentiment_file = write_toy_sets(folder)
    (folder / "toy_map.json").write_text(json.dumps({"football": "sport", "meteo": "weather"}))
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    assert training.run(parser.parse_args([
        "--topic_data", f"{topic_file}@{folder / 'toy_map.json'}", "--sentiment_data", sentiment_file,
        "--encoder", encoder_path, "--output", str(folder / "heads"), "--feature_cache", str(folder / "cache"),
        "--max_tokens", "32", "--topic_layers", "1,3", "--sentiment_layers", "3"])) == 0
    return encoder_path, str(folder / "heads")


def run_eval(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    status = evaluate.run(parser.parse_args(argv))
    return status, capsys.readouterr().out


def test_eval_command_json_on_the_toy_set(toy_eval, trained_heads_module, capsys):
    data, label_map = toy_eval
    encoder_path, heads = trained_heads_module
    status, out = run_eval(["--task", "topic", "--data", data, "--label_map", label_map, "--json",
                            "--encoder", encoder_path, "--heads", heads, "--max_tokens", "32"], capsys)
    assert status == 0
    report = json.loads(out)
    assert {"accuracy", "macro_f1", "n", "per_language", "per_class", "confusion", "skipped"} <= set(report)
    assert report["n"] == 20 and report["skipped"] == 3
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0
    assert set(report["per_language"]) == {"en", "fr"}
    assert report["per_language"]["fr"]["n"] == 10
    assert report["model"] == f"{encoder_path}+{training.DEFAULT_VERSION}"


def test_eval_restrict_closes_the_label_set_per_language(toy_eval, trained_heads_module, capsys, tmp_path):
    _, label_map = toy_eval
    encoder_path, heads = trained_heads_module
    # weather texts labelled 'football': open-set the model says weather; closed-set (only sport
    # occurs for this language) it must say sport
    data = write_jsonl(tmp_path / "odd.jsonl",
                       [{"text": t, "label": "football", "lang": "de"} for t in toy_sentences(WEATHER_WORDS, 5, 7)])
    common = ["--task", "topic", "--data", data, "--label_map", label_map, "--json", "--encoder", encoder_path,
              "--heads", heads, "--max_tokens", "32"]
    _, open_out = run_eval(common, capsys)
    _, closed_out = run_eval(common + ["--restrict"], capsys)
    assert json.loads(open_out)["accuracy"] == 0.0
    closed = json.loads(closed_out)
    assert closed["accuracy"] == 1.0 and closed["restricted"] is True


def test_eval_text_output_and_empty_data(toy_eval, trained_heads_module, capsys, tmp_path):
    data, label_map = toy_eval
    encoder_path, heads = trained_heads_module
    status, out = run_eval(["--task", "topic", "--data", data, "--label_map", label_map,
                            "--encoder", encoder_path, "--heads", heads], capsys)
    assert status == 0 and "macro-F1 1.0000" in out and "weather" in out
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "x", "label": "gossip", "lang": "en"}])
    status, _ = run_eval(["--task", "topic", "--data", empty, "--label_map", label_map,
                          "--encoder", encoder_path, "--heads", heads], capsys)
    assert status == 2  # bad input, as every command's exit codes say (newsbeam.exit_codes)


def test_shipped_label_maps_hit_distinct_taxonomy_ids():
    from newsbeam.labelling.taxonomy import load_label_map, load_taxonomy

    taxonomy = load_taxonomy()
    sib = load_label_map("sib200")
    assert set(sib) == {"science/technology", "travel", "politics", "sports", "health", "entertainment",
                        "geography"}
    assert len(set(sib.values())) == 7 and set(sib.values()) <= set(taxonomy.topic_ids)
    masakha = load_label_map("masakhanews")
    assert set(masakha) == {"business", "entertainment", "health", "politics", "sports", "technology", "religion"}
    assert len(set(masakha.values())) == 7 and set(masakha.values()) <= set(taxonomy.topic_ids)
    assert load_label_map("xlmt") == {label: label for label in taxonomy.sentiment_ids}
    with pytest.raises(ValueError, match="no shipped label map named 'nope'"):
        load_label_map("nope")


def toy_dev_sets(root):
    """A data root shaped like ../shared/data's, with the toy head's labels, and the sets scoring it."""
    from newsbeam_lab.dev_report import DevSet

    from tests.support.builders import HAPPY_WORDS, SAD_WORDS

    (root / "topic").mkdir(parents=True)
    (root / "sentiment").mkdir()
    write_jsonl(root / "topic" / "dev.jsonl",
                [{"text": t, "label": "football", "lang": "en"} for t in toy_sentences(SPORT_WORDS, 8, 70)]
                + [{"text": t, "label": "meteo", "lang": "zh"} for t in toy_sentences(WEATHER_WORDS, 8, 71)])
    write_jsonl(root / "sentiment" / "dev.jsonl",
                [{"text": t, "label": "positive", "lang": "ar"} for t in toy_sentences(HAPPY_WORDS, 8, 72)]
                + [{"text": t, "label": "negative", "lang": "ar"} for t in toy_sentences(SAD_WORDS, 8, 73)]
                + [{"text": t, "label": "positive", "lang": "en"} for t in toy_sentences(SAD_WORDS, 8, 74)])
    (root / "map.json").write_text(json.dumps({"football": "sport", "meteo": "weather"}))
    return (DevSet("toy sentiment", "sentiment", ("sentiment/dev.jsonl",), None, False, 0.7, ("ar", "en")),
            DevSet("toy topic", "topic", ("topic/dev.jsonl",), str(root / "map.json"), True, 0.9))


def test_dev_report_scores_each_set_per_language_against_its_target(trained_heads_module, tmp_path):
    from newsbeam_lab.dev_report import dev_report, format_dev_report

    from newsbeam.labelling.labeller import load_labeller

    encoder_path, heads = trained_heads_module
    labeller = load_labeller(encoder=encoder_path, heads=heads, max_tokens=32)
    report = dev_report(labeller, str(tmp_path), toy_dev_sets(tmp_path))
    sentiment, topic = report["sets"]
    assert topic["per_language"] == {"en": 1.0, "zh": 1.0} and topic["n"] == 16 and topic["met"]
    # Arabic is right; the "positive" English rows are all sad words, so English scores 0: target missed
    assert sentiment["per_language"] == {"ar": 1.0, "en": 0.0} and not sentiment["met"]
    table = format_dev_report(report)
    assert "| toy topic |  | 1.000 |  |  |  | 1.000 |  | 1.000 | >= 0.90: met |" in table
    assert "| toy sentiment | 1.000 | 0.000 |" in table and ">= 0.70 in each of ar, en: not met |" in table


def test_dev_report_option_needs_its_splits_and_excludes_task_and_data(trained_heads_module, capsys, tmp_path):
    encoder_path, heads = trained_heads_module
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    status = evaluate.run(parser.parse_args(["--dev_report", "--data_root", str(tmp_path), "--encoder", encoder_path]))
    assert status == 1 and "sib200/eng_Latn/dev.jsonl" in capsys.readouterr().err
    assert run_eval(["--dev_report", "--task", "topic", "--encoder", encoder_path], capsys)[0] == 2
    assert run_eval(["--task", "topic", "--encoder", encoder_path], capsys)[0] == 2


def test_the_reported_dev_splits_exist_in_the_shared_data_and_no_training_step_reads_them():
    from newsbeam_lab.dev_report import DEV_SETS, REAL_NEWS_SETS, check_splits
    from newsbeam_lab.training_data import DEFAULT_TEMPERATURE_RECIPE, default_data, expand_pattern, parse_source

    from tests.support.pipelines import SHARED

    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone)")
    check_splits(str(SHARED))  # raises on any missing split
    # the real-news sets are the lab's labels, one file for both halves: training reads only
    # their train split (tests/lab/test_shared_labels.py, test_feed_entries.py)
    reported = {str(SHARED / path) for dev_set in DEV_SETS if dev_set not in REAL_NEWS_SETS for path in dev_set.files}
    for recipe in (default_data(str(SHARED)), default_data(str(SHARED), DEFAULT_TEMPERATURE_RECIPE)):
        read = {path for specs in recipe.values() for spec in specs for path in expand_pattern(parse_source(spec)[0])}
        assert read and reported.isdisjoint(read)


def test_bootstrap_resample_scores_equal_f1_scores_on_the_same_rows():
    rng = np.random.default_rng(3)
    gold = rng.choice(["a", "b", "c", "d"], 60).tolist()
    predicted = [label if rng.random() < 0.7 else "c" for label in gold]
    for seed in range(5):
        # one resample: the interval collapses onto that resample's macro-F1
        (picks,) = np.random.default_rng(seed).integers(0, len(gold), size=(1, len(gold)))
        expected = scoring.f1_scores([gold[i] for i in picks], [predicted[i] for i in picks])["macro_f1"]
        low, high = scoring.bootstrap_macro_f1(gold, predicted, samples=1, seed=seed)
        assert low == pytest.approx(expected) and high == pytest.approx(expected)


def test_bootstrap_interval_holds_the_score_and_narrows_with_more_rows():
    rng = np.random.default_rng(4)

    def noisy(n):
        gold = rng.choice(["pos", "neg", "neu"], n).tolist()
        return gold, [label if rng.random() < 0.75 else "neu" for label in gold]

    small, large = noisy(100), noisy(2000)
    low, high = scoring.bootstrap_macro_f1(*small)
    assert low < scoring.f1_scores(*small)["macro_f1"] < high
    large_low, large_high = scoring.bootstrap_macro_f1(*large)
    assert (large_high - large_low) < (high - low) / 3  # width shrinks like 1/sqrt(n)


def _gold_base_and_better() -> tuple[list[str], list[str], list[str]]:
    """400 rows, a model right on about 80% of them, and the same model fixing 20 of its mistakes."""
    rng = np.random.default_rng(5)
    gold = rng.choice(["x", "y", "z"], 400).tolist()
    base = [label if rng.random() < 0.7 else rng.choice(["x", "y", "z"]) for label in gold]
    mistakes = [i for i, (g, p) in enumerate(zip(gold, base)) if g != p][:20]
    better = [gold[i] if i in mistakes else label for i, label in enumerate(base)]
    return gold, base, better


def test_paired_bootstrap_tells_a_small_real_gain_from_noise():
    # the same model fixing 20 of its mistakes: a few points, inside each single interval's width
    gold, base, better = _gold_base_and_better()
    low, high = scoring.bootstrap_macro_f1(gold, better, against=base)
    assert 0 < low < high
    single_low, single_high = scoring.bootstrap_macro_f1(gold, base)
    gain = scoring.f1_scores(gold, better)["macro_f1"] - scoring.f1_scores(gold, base)["macro_f1"]
    assert gain < single_high - single_low
    assert scoring.bootstrap_macro_f1(gold, base, against=base) == (0.0, 0.0)
    with pytest.raises(ValueError):
        scoring.bootstrap_macro_f1(gold, base[:-1])


def test_paired_accuracy_interval_holds_the_gain_and_ignores_rows_both_models_share():
    gold, base, better = _gold_base_and_better()
    low, high = scoring.bootstrap_accuracy_difference(gold, better, base)
    assert 0 < low < 20 / 400 < high  # 20 more rows right of 400: +0.05, told from zero
    worse_low, worse_high = scoring.bootstrap_accuracy_difference(gold, base, better)
    assert (worse_low, worse_high) == pytest.approx((-high, -low))
    assert scoring.bootstrap_accuracy_difference(gold, base, base) == (0.0, 0.0)
    with pytest.raises(ValueError):
        scoring.bootstrap_accuracy_difference(gold, base, better[:-1])


def test_dev_report_with_bootstrap_and_against_compares_two_head_sets(trained_heads_module, tmp_path, capsys):
    encoder_path, heads = trained_heads_module
    sets = toy_dev_sets(tmp_path)
    import newsbeam_lab.dev_report as dev_report_module

    from newsbeam.labelling.labeller import load_labeller

    labeller = load_labeller(encoder=encoder_path, heads=heads, max_tokens=32)
    zero_shot = load_labeller(encoder=encoder_path, max_tokens=32)  # no heads: another model for the same rows
    report = dev_report_module.dev_report(labeller, str(tmp_path), sets, bootstrap=200, against=zero_shot)
    sentiment, topic = report["sets"]
    assert topic["interval"] == [1.0, 1.0]  # every resample of a perfect score is perfect
    low, high = sentiment["interval"]
    assert low <= sentiment["macro_f1"] <= high and low < high
    assert report["against_model"] == zero_shot.model_id
    for row in report["sets"]:
        assert row["difference"] == pytest.approx(row["macro_f1"] - row["against"]["macro_f1"])
        assert row["difference_interval"][0] <= row["difference"] <= row["difference_interval"][1]
        assert row["accuracy_difference"] == pytest.approx(row["accuracy"] - row["against"]["accuracy"])
        low, high = row["accuracy_difference_interval"]
        assert low <= row["accuracy_difference"] <= high
    table = dev_report_module.format_dev_report(report)
    assert "| all | 95% interval | target |" in table
    assert "| toy topic |  | 1.000 |  |  |  | 1.000 |  | 1.000 | 1.000 to 1.000 | >= 0.90: met |" in table
    assert f"against {zero_shot.model_id} on the same rows" in table
    assert run_eval(["--task", "topic", "--data", "x.jsonl", "--against", heads], capsys)[0] == 2


def test_eval_bootstrap_option_adds_the_interval(toy_eval, trained_heads_module, capsys):
    data, label_map = toy_eval
    encoder_path, heads = trained_heads_module
    common = ["--task", "topic", "--data", data, "--label_map", label_map, "--encoder", encoder_path,
              "--heads", heads, "--max_tokens", "32", "--bootstrap", "100"]
    status, out = run_eval(common + ["--json"], capsys)
    assert status == 0 and json.loads(out)["macro_f1_interval"] == [1.0, 1.0]
    assert "macro-F1 95% interval 1.0000 to 1.0000" in run_eval(common, capsys)[1]
