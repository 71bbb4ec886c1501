"""Fine-tuning the encoder with the heads, and the low-rank weight deltas that
ship with them: on a tiny random BERT saved to tmp_path (no network)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from newsbeam_lab import finetune, head_fitting, training
from newsbeam_lab.deltas import low_rank_deltas
from newsbeam_lab.finetune import (
    FineTuneSettings,
    RowStream,
    TaskRows,
    batch_count,
    fine_tune,
    rows_per_epoch,
    upper_features,
    warmup_then_linear_decay,
)
from newsbeam_lab.heads_writer import save_heads

from newsbeam.labelling.adaptation import DOWN, UP, apply_weight_deltas
from newsbeam.labelling.bert import load_bert
from newsbeam.labelling.heads import load_heads
from newsbeam.labelling.taxonomy import load_taxonomy
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
def tiny_path(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-ft"))


def own_bert_encoder(path: str):
    """The tiny checkpoint as newsbeam's own BERT (the class fine-tuning trains), with its tokenizer."""
    from newsbeam.labelling.encoder import load_encoder

    encoder = load_encoder(path)
    encoder.model = load_bert(path)
    return encoder


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def test_low_rank_deltas_are_exact_at_the_true_rank_and_best_below_it():
    generator = torch.Generator().manual_seed(0)
    original = {"w": torch.randn(12, 8, generator=generator), "b": torch.randn(12, generator=generator)}
    change = torch.randn(12, 2, generator=generator) @ torch.randn(2, 8, generator=generator)
    tuned = {"w": original["w"] + change, "b": original["b"] + 0.5}

    exact = low_rank_deltas(original, tuned, rank=2)
    assert exact["w" + UP].shape == (12, 2) and exact["w" + DOWN].shape == (2, 8)
    np.testing.assert_allclose(exact["w" + UP] @ exact["w" + DOWN], change.numpy(), atol=1e-5)
    np.testing.assert_allclose(exact["b"], np.full(12, 0.5), atol=1e-6)

    rank_one = low_rank_deltas(original, tuned, rank=1)
    singular = torch.linalg.svdvals(change)
    error = np.linalg.norm(rank_one["w" + UP] @ rank_one["w" + DOWN] - change.numpy())
    assert error == pytest.approx(float(singular[1]), rel=1e-4)  # Eckart-Young: the best rank-1 fit


def test_apply_weight_deltas_adds_to_the_named_parameters_and_refuses_misfits(tiny_path):
    model = load_bert(tiny_path)
    before = parameters(model)
    name = "encoder.layer.2.intermediate.dense.weight"
    up, down = np.ones((64, 1), np.float32), np.full((1, 32), 0.25, np.float32)
    apply_weight_deltas(model, {name + UP: up, name + DOWN: down, "encoder.layer.2.output.LayerNorm.bias":
                                np.full(32, -1.0, np.float32)})
    after = parameters(model)
    np.testing.assert_allclose((after[name] - before[name]).numpy(), np.full((64, 32), 0.25), atol=1e-6)
    np.testing.assert_allclose((after["encoder.layer.2.output.LayerNorm.bias"]
                                - before["encoder.layer.2.output.LayerNorm.bias"]).numpy(), -1.0, atol=1e-6)
    unchanged = [key for key in before if key not in (name, "encoder.layer.2.output.LayerNorm.bias")]
    assert all(torch.equal(before[key], after[key]) for key in unchanged)

    with pytest.raises(ValueError, match="does not have"):
        apply_weight_deltas(model, {"encoder.layer.9.output.dense.bias": np.zeros(32, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        apply_weight_deltas(model, {name + UP: up[:10], name + DOWN: down})


@pytest.mark.parametrize("bad", [{"rank": 0}, {"epochs": -1}, {"batch_size": 0}, {"learning_rate": 0.0},
                                 {"seeds": 0}, {"task_epochs": (("topic", 0),)}, {"precision": "float16"}])
def test_bad_fine_tuning_settings_fail_before_any_training(bad):
    with pytest.raises(ValueError, match="fine-tuning"):
        FineTuneSettings(**bad)


def test_train_heads_fine_tune_options_reach_the_settings():
    import argparse

    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    assert training.fine_tune_settings(parser.parse_args([])) == FineTuneSettings()
    chosen = training.fine_tune_settings(parser.parse_args(
        ["--fine_tune_seed", "3", "--fine_tune_seeds", "2", "--fine_tune_lr", "1e-4", "--fine_tune_rank", "16",
         "--fine_tune_epochs", "5", "--fine_tune_from_layer", "4"]))
    assert chosen == FineTuneSettings(seed=3, seeds=2, learning_rate=1e-4, rank=16, epochs=5, from_layer=4)
    assert training.fine_tune_settings(parser.parse_args(["--fine_tune_precision", "bfloat16"])).precision == "bfloat16"
    per_task = training.fine_tune_settings(parser.parse_args(["--fine_tune_task_epochs", "topic=5, sentiment=2"]))
    assert per_task.task_epochs == (("topic", 5), ("sentiment", 2))
    assert (per_task.epochs_of("topic"), per_task.epochs_of("sentiment"), per_task.total_epochs(["sentiment"])) == (5, 2, 2)
    assert per_task.describe()["task_epochs"] == {"topic": 5, "sentiment": 2}
    for bad in ("topic", "topics=5", "topic=five"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--fine_tune_task_epochs", bad])


def test_a_task_with_fewer_epochs_sees_each_row_that_many_times_spread_over_the_run():
    import random

    assert rows_per_epoch(70, 3, 3) == [70, 70, 70]
    shares = rows_per_epoch(70, 3, 5)
    assert sum(shares) == 210 and max(shares) - min(shares) <= 1
    stream, shuffler = RowStream(70), random.Random(0)
    epochs = [stream.take(share, shuffler) for share in shares]
    seen = np.bincount(np.concatenate(epochs), minlength=70)
    assert (seen == 3).all()
    assert [len(epoch) for epoch in epochs] == shares
    whole = RowStream(70)  # a task at the run's own epochs gets one fresh permutation per epoch
    assert all(sorted(whole.take(70, shuffler)) == list(range(70)) for _ in range(3))


@pytest.mark.parametrize("rows", [0, 1, 31, 32, 33, 1600, 1601, 5000])
def test_batch_count_is_what_an_epoch_of_batches_holds(rows):
    import random

    states = {"topic": [torch.zeros(1 + index % 7, 4) for index in range(rows)]}
    batches = finetune._batches({"topic": list(range(rows))}, states, 32, random.Random(0))
    assert batch_count(rows, 32) == len(batches)
    assert sorted(index for _, batch in batches for index in batch) == list(range(rows))


def test_learning_rate_rises_over_the_warmup_then_falls_to_zero():
    factor = warmup_then_linear_decay(100, 0.1)
    assert [factor(step) for step in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == 0.0


def toy_task_rows(encoder, heads_by_task, texts_by_task, labels_by_task):
    return {task: TaskRows(heads_by_task[task], encoder.tokenize(["passage: " + text for text in texts], 32),
                           np.asarray(labels_by_task[task]), np.ones(len(texts)))
            for task, texts in texts_by_task.items()}


def weighted_loss(model, network_heads, rows: TaskRows, from_layer: int) -> float:
    from newsbeam_lab.finetune import HeadNetwork, frozen_states

    states = frozen_states(model, rows.token_ids, from_layer, pad_id=0, max_batch_tokens=4096)
    with torch.inference_mode():
        logits = HeadNetwork(network_heads).eval()(upper_features(model, states, from_layer, network_heads.layers))
        return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(rows.label_ids)).item())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_fine_tune_trains_only_the_top_layers_and_leaves_exactly_the_shipped_deltas(tiny_path, precision):
    encoder = own_bert_encoder(tiny_path)
    model = encoder.model
    before = parameters(model)
    taxonomy = load_taxonomy()
    texts = toy_sentences(SPORT_WORDS, 24, 1) + toy_sentences(WEATHER_WORDS, 24, 2)
    labels = taxonomy.topic_ids
    targets = [labels.index("sport")] * 24 + [labels.index("weather")] * 24
    pooled = encoder.pooled_layers(encoder.tokenize(["passage: " + t for t in texts], 32), (1, 2, 3))
    probe = head_fitting.fit_head("topic", labels, (1, 2, 3), pooled, np.asarray(targets), np.ones(48),
                              l2=0.01, hidden=16, epochs=5)
    rows = toy_task_rows(encoder, {"topic": probe}, {"topic": texts}, {"topic": targets})
    loss_before = weighted_loss(model, probe, rows["topic"], 1)

    settings = FineTuneSettings(from_layer=1, epochs=4, learning_rate=1e-3, head_learning_rate=1e-3,
                                batch_size=8, rank=3, precision=precision)
    heads, deltas = fine_tune(model, rows, settings, pad_id=encoder.pad_id)

    after = parameters(model)
    frozen = [name for name in before if not name.startswith(("encoder.layer.1.", "encoder.layer.2."))]
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    trained = [name for name in before if name not in frozen]
    assert all(not torch.equal(before[name], after[name]) for name in trained)
    for name in trained:  # the model holds base + the shipped deltas, nothing more
        change = (after[name] - before[name]).numpy()
        if change.ndim == 2:
            assert deltas[name + UP].shape[1] == 3 and np.linalg.matrix_rank(change, tol=1e-5) <= 3
            np.testing.assert_allclose(change, deltas[name + UP] @ deltas[name + DOWN], atol=1e-5)
        else:
            np.testing.assert_allclose(change, deltas[name], atol=1e-6)
    assert heads["topic"].metadata["fine_tuned"]["rank"] == 3
    assert heads["topic"].metadata["fine_tuned"]["precision"] == precision
    assert all(value.dtype == np.float32 for value in deltas.values())  # shipped weights stay float32
    assert weighted_loss(model, heads["topic"], rows["topic"], 1) < loss_before


def sport_and_weather_probe(tiny_path: str, per_label: int, seeds: tuple[int, int]):
    """Toy sport and weather sentences, their topic ids, and a head fitted on the frozen tiny encoder."""
    labels = load_taxonomy().topic_ids
    texts = toy_sentences(SPORT_WORDS, per_label, seeds[0]) + toy_sentences(WEATHER_WORDS, per_label, seeds[1])
    targets = [labels.index("sport")] * per_label + [labels.index("weather")] * per_label
    encoder = own_bert_encoder(tiny_path)
    pooled = encoder.pooled_layers(encoder.tokenize(["passage: " + t for t in texts], 32), (1, 3))
    probe = head_fitting.fit_head("topic", labels, (1, 3), pooled, np.asarray(targets), np.ones(len(texts)),
                                  l2=0.01, hidden=8, epochs=3)
    return texts, targets, probe


def test_fine_tunes_of_several_seeds_are_averaged_into_one_encoder_and_one_head(tiny_path):
    """seeds=2 gives the mean of the seed-0 and seed-1 fine-tunes' weights and
    heads (at a rank high enough to be exact), those two differ, and one seed
    run twice gives the same fine-tune."""
    texts, targets, probe = sport_and_weather_probe(tiny_path, 16, seeds=(3, 4))

    def run(seed: int, seeds: int):
        encoder = own_bert_encoder(tiny_path)
        rows = toy_task_rows(encoder, {"topic": probe}, {"topic": texts}, {"topic": targets})
        settings = FineTuneSettings(from_layer=1, epochs=2, learning_rate=1e-3, head_learning_rate=1e-3,
                                    batch_size=8, rank=64, seed=seed, seeds=seeds)
        heads, _ = fine_tune(encoder.model, rows, settings, pad_id=encoder.pad_id)
        return parameters(encoder.model), heads["topic"]

    (first, first_head), (second, second_head) = run(0, 1), run(1, 1)
    again, again_head = run(0, 1)  # a seed repeats bit for bit: a retrain differs only where its inputs do
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert all(np.array_equal(one, other) for one, other in zip(first_head.weights, again_head.weights))
    soup, soup_head = run(0, 2)
    trained = [name for name in first if name.startswith(("encoder.layer.1.", "encoder.layer.2."))]
    assert all(not torch.allclose(first[name], second[name]) for name in trained)
    for name in first:
        np.testing.assert_allclose(soup[name].numpy(), ((first[name] + second[name]) / 2).numpy(), atol=1e-5)
    for mine, one, other in zip(soup_head.weights, first_head.weights, second_head.weights):
        assert not np.allclose(one, other)
        np.testing.assert_allclose(mine, (one + other) / 2, atol=1e-6)
    assert soup_head.metadata["fine_tuned"]["seeds"] == 2


def test_a_warm_state_cache_skips_the_frozen_layers_and_trains_the_same(tiny_path, tmp_path, monkeypatch):
    texts, targets, probe = sport_and_weather_probe(tiny_path, 12, seeds=(5, 6))
    frozen_runs = []
    real_frozen_states = finetune.frozen_states
    monkeypatch.setattr(finetune, "frozen_states", lambda *args: frozen_runs.append(1) or real_frozen_states(*args))
    cache = tmp_path / "cache"

    def run(sentences):
        encoder = own_bert_encoder(tiny_path)
        rows = toy_task_rows(encoder, {"topic": probe}, {"topic": sentences}, {"topic": targets})
        settings = FineTuneSettings(from_layer=1, epochs=1, learning_rate=1e-3, head_learning_rate=1e-3,
                                    batch_size=8, rank=64)
        heads, deltas = fine_tune(encoder.model, rows, settings, pad_id=encoder.pad_id, cache_dir=cache,
                                  model_key="tiny")
        return heads["topic"], deltas

    (cold_head, cold), (warm_head, warm) = run(texts), run(texts)
    assert len(frozen_runs) == 1 and len(list(cache.glob("states-*.npy"))) == 1
    assert all(np.array_equal(cold[name], warm[name]) for name in cold)
    assert all(np.array_equal(one, other) for one, other in zip(cold_head.weights, warm_head.weights))
    run(texts[:-1] + ["an entirely different sentence about rain"])  # other rows: computed afresh
    assert len(frozen_runs) == 2 and len(list(cache.glob("states-*.npy"))) == 2


def test_task_epochs_give_each_task_its_own_passes_in_one_run(tiny_path, monkeypatch):
    """topic=3 with sentiment at epochs=1: three epochs run; every topic row is
    trained on three times, every sentiment row once, spread over all three."""
    taxonomy = load_taxonomy()
    encoder = own_bert_encoder(tiny_path)
    texts = {"topic": toy_sentences(SPORT_WORDS, 12, 5) + toy_sentences(WEATHER_WORDS, 12, 6),
             "sentiment": toy_sentences(HAPPY_WORDS, 15, 7) + toy_sentences(SAD_WORDS, 15, 8)}
    targets = {"topic": [taxonomy.topic_ids.index("sport")] * 12 + [taxonomy.topic_ids.index("weather")] * 12,
               "sentiment": [2] * 15 + [0] * 15}
    probes = {}
    for task, labels in (("topic", taxonomy.topic_ids), ("sentiment", taxonomy.sentiment_ids)):
        pooled = encoder.pooled_layers(encoder.tokenize(["passage: " + t for t in texts[task]], 32), (1, 3))
        probes[task] = head_fitting.fit_head(task, labels, (1, 3), pooled, np.asarray(targets[task]),
                                         np.ones(len(texts[task])), l2=0.01, hidden=8, epochs=3)
    rows = toy_task_rows(encoder, probes, texts, targets)
    epochs_seen = []
    original = finetune._batches

    def recording(drawn, states, batch_size, shuffler):
        batches = original(drawn, states, batch_size, shuffler)
        epochs_seen.append(batches)
        return batches

    monkeypatch.setattr(finetune, "_batches", recording)
    settings = FineTuneSettings(from_layer=1, epochs=1, task_epochs=(("topic", 3),), learning_rate=1e-3,
                                head_learning_rate=1e-3, batch_size=8, rank=4)
    heads, _ = fine_tune(encoder.model, rows, settings, pad_id=encoder.pad_id)
    assert len(epochs_seen) == 3
    for task, passes in (("topic", 3), ("sentiment", 1)):
        seen = np.bincount([index for epoch in epochs_seen for name, batch in epoch if name == task
                            for index in batch], minlength=len(texts[task]))
        assert (seen == passes).all(), (task, seen)
        assert all(any(name == task for name, _ in epoch) for epoch in epochs_seen)  # spread, not bunched
    assert heads["topic"].metadata["fine_tuned"]["task_epochs"] == {"topic": 3}


def test_fine_tune_refuses_heads_reading_below_the_trained_layers(tiny_path):
    encoder = own_bert_encoder(tiny_path)
    texts = toy_sentences(SPORT_WORDS, 4, 1)
    pooled = encoder.pooled_layers(encoder.tokenize(texts, 32), (0, 3))
    probe = head_fitting.fit_head("topic", ("sport", "weather"), (0, 3), pooled, np.zeros(4, int), np.ones(4))
    rows = toy_task_rows(encoder, {"topic": probe}, {"topic": texts}, {"topic": [0] * 4})
    with pytest.raises(ValueError, match="reads layer 0"):
        fine_tune(encoder.model, rows, FineTuneSettings(from_layer=1, epochs=1))


def test_fine_tuned_heads_round_trip_and_the_labeller_applies_their_deltas(tiny_path, tmp_path):
    """train_heads on newsbeam's BERT; the saved heads carry the deltas; a
    labeller loading that checkpoint (through transformers, the same
    parameter names) ends up with the same weights and labels the toy sets."""
    from newsbeam.labelling.labeller import load_labeller

    topic_file, sentiment_file = write_toy_sets(tmp_path)
    (tmp_path / "map.json").write_text('{"football": "sport", "meteo": "weather"}')
    encoder = own_bert_encoder(tiny_path)
    held_out = write_jsonl(tmp_path / "held_out.jsonl",
                           [{"text": t, "label": "positive"} for t in toy_sentences(HAPPY_WORDS, 15, 61)]
                           + [{"text": t, "label": "negative"} for t in toy_sentences(SAD_WORDS, 15, 62)])
    head_set = training.train_heads(
        encoder, load_taxonomy(), {"topic": [f"{topic_file}@{tmp_path / 'map.json'}"], "sentiment": [sentiment_file]},
        layers={"topic": (1, 3), "sentiment": (3,)}, max_tokens=32, version="heads-toy-ft",
        fine_tuning=FineTuneSettings(from_layer=1, epochs=2, rank=4, batch_size=8),
        temperature_data={"sentiment": [held_out]})
    assert head_set.fine_tuning["rank"] == 4 and head_set.encoder_deltas
    assert head_set.heads["topic"].temperature == 1.0  # no held-out topic rows given
    sentiment = head_set.heads["sentiment"]
    assert sentiment.temperature != 1.0 and sentiment.metadata["temperature_fit"]["rows"] == 30
    folder = save_heads(head_set, tmp_path / "heads")
    loaded = load_heads(str(folder))
    assert loaded.fine_tuning == head_set.fine_tuning
    assert set(loaded.encoder_deltas) == set(head_set.encoder_deltas)
    assert loaded.heads["sentiment"].temperature == pytest.approx(sentiment.temperature)

    labeller = load_labeller(encoder=tiny_path, heads=str(folder), max_tokens=32)
    served = dict(labeller.encoder.model.named_parameters())
    for name, value in encoder.model.named_parameters():  # float16 on disk: close, not bit-equal
        np.testing.assert_allclose(served[name].detach().numpy(), value.detach().numpy(), atol=2e-3)
    sport, weather = toy_sentences(SPORT_WORDS, 10, 91), toy_sentences(WEATHER_WORDS, 10, 92)
    assert [label.topic for label in labeller.label_texts(sport + weather)] == ["sport"] * 10 + ["weather"] * 10
    happy, sad = toy_sentences(HAPPY_WORDS, 10, 93), toy_sentences(SAD_WORDS, 10, 94)
    assert [label.sentiment for label in labeller.label_texts(happy + sad)] == ["positive"] * 10 + ["negative"] * 10

    # another encoder's heads: the deltas are not applied
    plain = load_labeller(encoder=tiny_path, max_tokens=32)
    untouched = dict(load_bert(tiny_path).named_parameters())
    name = "encoder.layer.2.output.dense.weight"
    assert torch.equal(dict(plain.encoder.model.named_parameters())[name].detach(), untouched[name].detach())


def test_train_heads_keeps_a_transformers_encoder_frozen(tmp_path, tiny_path, caplog):
    from newsbeam.labelling.encoder import load_encoder

    topic_file, sentiment_file = write_toy_sets(tmp_path)
    encoder = load_encoder(tiny_path)
    before = parameters(encoder.model)
    with caplog.at_level("WARNING"):
        head_set = training.train_heads(encoder, load_taxonomy(), {"sentiment": [sentiment_file]},
                                        layers={"sentiment": (3,)}, max_tokens=32)
    assert head_set.encoder_deltas is None and "stays frozen" in caplog.text
    assert all(torch.equal(before[name], value) for name, value in parameters(encoder.model).items())
