"""A soup of two fine-tuned head sets that exist: their weights averaged, then
the temperatures, int8 peaks and centre measured under the averaged encoder.
On a tiny random BERT saved to tmp_path (no network)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from newsbeam_lab import soup as soups
from newsbeam_lab import training
from newsbeam_lab.finetune import FineTuneSettings
from newsbeam_lab.heads_writer import save_heads

from newsbeam.labelling.heads import load_heads
from newsbeam.labelling.taxonomy import load_taxonomy
from tests.lab.test_finetune import own_bert_encoder
from tests.support.builders import (
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
def two_seeds(tmp_path_factory):
    """The tiny BERT, the toy recipe (training specs, held-out sentiment rows) and two
    fine-tunes of it that differ only in their seed, saved and loaded back as users have them."""
    folder = tmp_path_factory.mktemp("soup")
    tiny_path = save_tiny_bert(folder / "bert")
    topic_file, sentiment_file = write_toy_sets(folder)
    (folder / "map.json").write_text('{"football": "sport", "meteo": "weather"}')
    held_out = write_jsonl(folder / "held_out.jsonl",
                           [{"text": t, "label": "positive"} for t in toy_sentences(HAPPY_WORDS, 15, 61)]
                           + [{"text": t, "label": "negative"} for t in toy_sentences(SAD_WORDS, 15, 62)])
    recipe = {"topic": [f"{topic_file}@{folder / 'map.json'}"], "sentiment": [sentiment_file]}
    loaded = []
    for seed in (0, 1):
        head_set = training.train_heads(
            own_bert_encoder(tiny_path), load_taxonomy(), recipe, layers={"topic": (1, 3), "sentiment": (3,)},
            max_tokens=32, version=f"heads-toy-seed{seed}", temperature_data={"sentiment": [held_out]},
            fine_tuning=FineTuneSettings(from_layer=1, epochs=2, rank=32, batch_size=8, seed=seed))
        loaded.append(load_heads(str(save_heads(head_set, folder / f"seed{seed}"))))
    return tiny_path, recipe, {"sentiment": [held_out]}, loaded, folder


def test_the_soup_is_the_mean_of_the_heads_and_of_the_encoder_changes(two_seeds):
    _, _, _, (first, second), _ = two_seeds
    made = soups.soup([first, second], "heads-toy-soup")
    assert made.version == "heads-toy-soup" and made.int8_peaks is None and made.embedding_centre is None
    assert made.fine_tuning["seeds"] == 2
    assert [part["seed"] for part in made.fine_tuning["soup_of"]] == [0, 1]
    for task, head in made.heads.items():
        one, other = first.heads[task], second.heads[task]
        for mine, a, b in zip(head.weights + head.biases, one.weights + one.biases, other.weights + other.biases):
            assert not np.allclose(a, b)  # the seeds did train apart
            np.testing.assert_allclose(mine, (a + b) / 2, atol=1e-6)
        assert head.temperature == pytest.approx((one.temperature + other.temperature) / 2)
    # at a rank as high as the matrices', the averaged change is exact
    for name in soups.delta_parameters(made.encoder_deltas):
        expected = (soups.full_delta(first.encoder_deltas, name) + soups.full_delta(second.encoder_deltas, name)) / 2
        np.testing.assert_allclose(soups.full_delta(made.encoder_deltas, name).numpy(), expected.numpy(), atol=1e-5)


def test_the_soup_keeps_the_rank_the_fine_tunes_shipped_at(two_seeds):
    _, _, _, (first, second), _ = two_seeds
    low = [dataclasses.replace(head_set, fine_tuning={**head_set.fine_tuning, "rank": 2}) for head_set in (first, second)]
    made = soups.soup(low, "heads-toy-soup")
    name = "encoder.layer.2.output.dense.weight"
    assert made.encoder_deltas[name + soups.UP].shape == (32, 2)
    assert made.encoder_deltas[name + soups.DOWN].shape == (2, 64)


def test_only_fine_tunes_of_one_recipe_make_a_soup(two_seeds):
    _, _, _, (first, second), _ = two_seeds
    with pytest.raises(ValueError, match="at least two"):
        soups.soup([first], "x")
    with pytest.raises(ValueError, match="encoder deltas"):
        soups.soup([first, dataclasses.replace(second, encoder_deltas=None)], "x")
    with pytest.raises(ValueError, match="token budget"):
        soups.soup([first, dataclasses.replace(second, max_tokens=64)], "x")
    other_layers = dataclasses.replace(second.heads["topic"], layers=(3, 1))
    with pytest.raises(ValueError, match="labels, layers or shape"):
        soups.soup([first, dataclasses.replace(second, heads={**second.heads, "topic": other_layers})], "x")


def test_measured_again_the_soup_labels_like_its_fine_tunes(two_seeds, tmp_path):
    from newsbeam.labelling.labeller import load_labeller

    tiny_path, recipe, held_out, (first, second), _ = two_seeds
    folder = save_heads(soups.soup([first, second], "heads-toy-soup"), tmp_path / "soup")
    measured = soups.measure(folder, recipe, held_out, None, encoder=tiny_path)
    assert load_heads(str(folder)).version == "heads-toy-soup"
    sentiment = measured.heads["sentiment"]
    assert sentiment.metadata["temperature_fit"]["rows"] == 30  # fitted under the soup's encoder
    assert sentiment.temperature != pytest.approx((first.heads["sentiment"].temperature
                                                   + second.heads["sentiment"].temperature) / 2)
    assert measured.heads["topic"].temperature == pytest.approx(
        (first.heads["topic"].temperature + second.heads["topic"].temperature) / 2)  # no held-out topic rows
    # every linear layer the fine-tunes calibrated (transformers' copy of the tiny BERT adds a pooler)
    assert set(first.int8_peaks) <= set(measured.int8_peaks) and measured.int8_calibration["texts"] > 0
    assert measured.embedding_centre is not None and np.linalg.norm(measured.embedding_centre) > 0

    labeller = load_labeller(encoder=tiny_path, heads=str(folder), max_tokens=32)
    sport, weather = toy_sentences(SPORT_WORDS, 10, 91), toy_sentences(WEATHER_WORDS, 10, 92)
    assert [label.topic for label in labeller.label_texts(sport + weather)] == ["sport"] * 10 + ["weather"] * 10
    happy, sad = toy_sentences(HAPPY_WORDS, 10, 93), toy_sentences(SAD_WORDS, 10, 94)
    assert [label.sentiment for label in labeller.label_texts(happy + sad)] == ["positive"] * 10 + ["negative"] * 10
    assert labeller.model_id.endswith("heads-toy-soup")  # what the model column will say


def test_the_command_says_in_one_line_what_is_wrong(capsys, monkeypatch, two_seeds, tmp_path):
    _, _, _, _, folder = two_seeds
    monkeypatch.delenv("NEWSBEAM_DATA_ROOT", raising=False)
    args = ["--heads", str(folder / "seed0"), "--heads", str(folder / "seed1"), "--output", str(tmp_path / "out"),
            "--version", "v"]
    assert soups.main(args) == 2
    assert "--data_root" in capsys.readouterr().err
    assert soups.main(args[:2] + ["--heads", str(tmp_path / "missing")] + args[4:] + ["--data_root", "/"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("soup: ") and "\n" not in error and not (tmp_path / "out").exists()
