"""The anchor of a fine-tune (learning without forgetting): the earlier heads'
soft outputs on the anchored rows, and a fine-tune that keeps to them. On a
tiny random BERT saved to tmp_path (no network)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from newsbeam_lab import anchoring, head_fitting, training
from newsbeam_lab.anchoring import Anchor, distillation_losses
from newsbeam_lab.finetune import FineTuneSettings, TaskRows, fine_tune, frozen_states, soft_targets

from newsbeam.labelling.adaptation import apply_weight_deltas
from newsbeam.labelling.heads import HeadSet, softmax
from newsbeam.labelling.taxonomy import load_taxonomy
from tests.lab.test_finetune import own_bert_encoder, parameters
from tests.support.builders import SPORT_WORDS, WEATHER_WORDS, save_tiny_bert, toy_sentences

LAYERS = (1, 3)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-anchor"))


def sport_weather(per_label: int, seed: int, flipped: bool = False):
    """Toy sport and weather sentences with their topic ids (``flipped``: each under the other's label)."""
    labels = load_taxonomy().topic_ids
    texts = toy_sentences(SPORT_WORDS, per_label, seed) + toy_sentences(WEATHER_WORDS, per_label, seed + 1)
    first, second = ("weather", "sport") if flipped else ("sport", "weather")
    return texts, [labels.index(first)] * per_label + [labels.index(second)] * per_label


def tuned(tiny_path: str, texts, targets, *, anchor=None, anchored=None, epochs=4):
    """A fine-tune of the tiny encoder on ``texts`` from a probe fitted on the same labels:
    (encoder, heads, deltas)."""
    encoder = own_bert_encoder(tiny_path)
    pooled = encoder.pooled_layers(encoder.tokenize(["passage: " + t for t in texts], 32), LAYERS)
    probe = head_fitting.fit_head("topic", load_taxonomy().topic_ids, LAYERS, pooled, np.asarray(targets),
                                  np.ones(len(texts)), l2=0.01, hidden=8, epochs=3)
    rows = {"topic": TaskRows(probe, encoder.tokenize(["passage: " + t for t in texts], 32), np.asarray(targets),
                              np.ones(len(texts)), anchored)}
    settings = FineTuneSettings(from_layer=1, epochs=epochs, learning_rate=1e-3, head_learning_rate=3e-3,
                                batch_size=8, rank=64)
    heads, deltas = fine_tune(encoder.model, rows, settings, pad_id=encoder.pad_id, anchor=anchor)
    return encoder, heads, deltas


@pytest.fixture(scope="module")
def teacher(tiny_path) -> HeadSet:
    """Heads fine-tuned on correctly labelled sport and weather sentences."""
    encoder, heads, deltas = tuned(tiny_path, *sport_weather(24, 1))
    return HeadSet(version="heads-teacher", encoder_id=encoder.model_id, max_tokens=32, heads=heads,
                   encoder_deltas=deltas)


def predicted_topics(encoder, head, texts) -> list[str]:
    pooled = encoder.pooled_layers(encoder.tokenize(["passage: " + t for t in texts], 32), head.layers)
    return [head.labels[index] for index in head.logits(pooled).argmax(axis=1)]


def test_soft_targets_are_the_anchor_heads_outputs_through_their_own_encoder(tiny_path, teacher):
    """What the anchor says of a row equals what a labeller loading the anchor
    heads (their deltas applied to the encoder) scores it, softened by T; the
    model being fine-tuned is left as it was; rows not anchored get zeros."""
    texts, _ = sport_weather(6, 40)
    encoder = own_bert_encoder(tiny_path)
    before = parameters(encoder.model)
    token_ids = encoder.tokenize(["passage: " + t for t in texts], 32)
    states = frozen_states(encoder.model, token_ids, 1, encoder.pad_id, 4096)
    anchored = np.array([True, False] * 6)
    anchor = Anchor(heads=teacher, temperature=3.0)
    targets = soft_targets(encoder.model, anchor, "topic", states, anchored, from_layer=1)

    assert all(torch.equal(before[name], value) for name, value in parameters(encoder.model).items())
    served = own_bert_encoder(tiny_path)
    apply_weight_deltas(served.model, teacher.encoder_deltas)
    head = teacher.heads["topic"]
    expected = softmax(head.logits(served.pooled_layers(token_ids, head.layers)) / 3.0)
    np.testing.assert_allclose(targets[anchored], expected[anchored], atol=1e-3)  # float16 states
    assert (targets[~anchored] == 0).all()
    np.testing.assert_allclose(targets[anchored].sum(axis=1), 1.0, atol=1e-5)


def test_distillation_loss_is_temperature_scaled_kl_on_anchored_rows_only():
    teacher_logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, -2.0, 0.0]])
    targets = torch.softmax(teacher_logits / 2.0, dim=-1)
    anchored = torch.tensor([True, True, False])
    assert distillation_losses(teacher_logits, targets, anchored, 2.0).tolist() == pytest.approx([0, 0, 0], abs=1e-6)

    student = torch.tensor([[0.0, 2.0, 0.0], [0.5, 0.5, 0.0], [9.0, -9.0, 0.0]])
    losses = distillation_losses(student, targets, anchored, 2.0)
    p, q = targets[0], torch.softmax(student[0] / 2.0, dim=-1)
    assert losses[0].item() == pytest.approx(4.0 * float((p * (p / q).log()).sum()), rel=1e-5)
    assert losses[0] > 0 and losses[1].item() == pytest.approx(0, abs=1e-6) and losses[2] == 0


def test_an_anchored_fine_tune_keeps_to_the_anchor_where_other_rows_pull_away(tiny_path, teacher):
    """Closed-set rows (sport and weather, labelled right, anchored) next to rows of
    another convention (sport sentences labelled weather, not anchored), as the
    news rows pull the tweets: without an anchor half the unseen sport sentences
    drift to weather; anchored, the fine-tune labels them as the anchor does."""
    labels = load_taxonomy().topic_ids
    closed, closed_labels = sport_weather(12, 11)
    texts = closed + toy_sentences(SPORT_WORDS, 36, 30)
    targets = closed_labels + [labels.index("weather")] * 36
    anchored = np.array([True] * len(closed) + [False] * 36)
    held_out = toy_sentences(SPORT_WORDS, 20, 70) + toy_sentences(WEATHER_WORDS, 20, 71)
    truth = ["sport"] * 20 + ["weather"] * 20

    def agreement(**anchoring) -> float:
        encoder, heads, _ = tuned(tiny_path, texts, targets, epochs=6, **anchoring)
        return float(np.mean([p == t for p, t in zip(predicted_topics(encoder, heads["topic"], held_out), truth)]))

    teacher_encoder = own_bert_encoder(tiny_path)
    apply_weight_deltas(teacher_encoder.model, teacher.encoder_deltas)
    assert predicted_topics(teacher_encoder, teacher.heads["topic"], held_out) == truth
    free = agreement()
    kept = agreement(anchor=Anchor(heads=teacher, weight=8.0), anchored=anchored)
    assert free <= 0.6 and kept >= 0.75, (free, kept)


def test_an_anchor_that_cannot_be_compared_is_refused_before_training(teacher):
    labels = {"topic": load_taxonomy().topic_ids}
    Anchor(heads=teacher).check(teacher.encoder_id, labels, from_layer=1)  # the anchor that fits
    with pytest.raises(ValueError, match="trained on"):
        Anchor(heads=teacher).check("another/encoder", labels, from_layer=1)
    with pytest.raises(ValueError, match="no sentiment head"):
        Anchor(heads=teacher).check(teacher.encoder_id, {"sentiment": ("negative", "neutral", "positive")}, 1)
    with pytest.raises(ValueError, match="reads layer 1"):
        Anchor(heads=teacher).check(teacher.encoder_id, labels, from_layer=2)
    low = HeadSet(version="heads-low", encoder_id=teacher.encoder_id, max_tokens=32, heads=teacher.heads,
                  encoder_deltas={"encoder.layer.0.output.dense.bias": np.zeros(32, np.float32)})
    with pytest.raises(ValueError, match="encoder.layer.0.output.dense.bias, below the trained layers"):
        Anchor(heads=low).check(teacher.encoder_id, labels, from_layer=1)
    for bad in ({"weight": 0.0}, {"temperature": -1.0}, {"sources": ()}):
        with pytest.raises(ValueError, match="anchor"):
            Anchor(heads=teacher, **bad)


def test_anchor_flags_reach_the_anchor_and_anchor_the_rows_of_their_sources(tmp_path, teacher):
    from newsbeam_lab.heads_writer import save_heads

    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    assert anchoring.anchor_from(parser.parse_args([])) is None
    folder = save_heads(teacher, tmp_path / "teacher")
    anchor = anchoring.anchor_from(parser.parse_args(
        ["--anchor_heads", str(folder), "--anchor_sources", "xlmt, sib200", "--anchor_weight", "0.5",
         "--anchor_temperature", "3"]))
    assert (anchor.heads.version, anchor.sources, anchor.weight, anchor.temperature) == \
        ("heads-teacher", ("xlmt", "sib200"), 0.5, 3.0)
    sources = ["/d/sentiment/xlmt/arabic/train.jsonl@xlmt", "/lab/written/news_rows_a.jsonl",
               "/d/topic/sib200/*/train.jsonl@sib200"]
    assert anchor.anchored(sources).tolist() == [True, False, True]
    for bad in (["--anchor_weight", "0"], ["--anchor_temperature", "x"], ["--anchor_sources", " , "]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_train_heads_anchors_the_rows_of_the_named_sources_and_records_it(tmp_path, tiny_path, teacher):
    from tests.support.builders import write_jsonl

    closed = write_jsonl(tmp_path / "closed_set.jsonl",
                         [{"text": t, "label": "sport"} for t in toy_sentences(SPORT_WORDS, 10, 80)]
                         + [{"text": t, "label": "weather"} for t in toy_sentences(WEATHER_WORDS, 10, 81)])
    news = write_jsonl(tmp_path / "news.jsonl",
                       [{"text": t, "label": "weather"} for t in toy_sentences(SPORT_WORDS, 6, 82)])
    settings = FineTuneSettings(from_layer=1, epochs=1, rank=4, batch_size=8)
    head_set = training.train_heads(own_bert_encoder(tiny_path), load_taxonomy(), {"topic": [closed, news]},
                                    layers={"topic": LAYERS}, max_tokens=32, fine_tuning=settings,
                                    anchor=Anchor(heads=teacher, sources=("closed_set",), weight=2.0))
    assert head_set.heads["topic"].metadata["anchor"] == {"heads": "heads-teacher", "sources": ["closed_set"],
                                                          "weight": 2.0, "temperature": 2.0, "rows": 20}

    elsewhere = Anchor(heads=HeadSet(version="heads-other", encoder_id="another/encoder", max_tokens=32,
                                     heads=teacher.heads, encoder_deltas=teacher.encoder_deltas))
    with pytest.raises(ValueError, match="trained on another/encoder"):
        training.train_heads(own_bert_encoder(tiny_path), load_taxonomy(), {"topic": [str(tmp_path / "none-*.jsonl")]},
                             layers={"topic": LAYERS}, max_tokens=32, fine_tuning=settings, anchor=elsewhere)
