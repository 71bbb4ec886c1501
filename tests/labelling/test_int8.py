"""--quantize int8: smoothing, the layers kept in fp32, calibration peaks
shipped with the heads, and label agreement with fp32 on the real model."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from newsbeam_lab.heads_writer import save_heads  # noqa: E402

from newsbeam.labelling.bert import BertConfig, BertModel  # noqa: E402
from newsbeam.labelling.heads import HeadSet, load_heads  # noqa: E402
from newsbeam.labelling.int8 import (  # noqa: E402
    DEFAULT_KEEP_FP32,
    InputScaled,
    calibration_texts,
    input_peaks,
    layers_kept_fp32,
    quantize_int8,
    smoothed,
)

TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32, pad_token_id=0)


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    model = BertModel(TINY)
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.5)
    with torch.no_grad():  # one loud input channel, as BERT's FFN outputs have
        model.encoder.layer[1].intermediate.dense.bias[7] = 40.0
    return model.eval()


def test_smoothing_leaves_the_fp32_result_unchanged():
    torch.manual_seed(1)
    linear = nn.Linear(16, 8)
    inputs = torch.randn(5, 16) * torch.linspace(0.1, 30, 16)
    peak = inputs.abs().amax(dim=0)
    wrapped = smoothed(linear, peak, alpha=0.7)
    assert isinstance(wrapped, InputScaled)
    assert torch.allclose(wrapped(inputs), linear(inputs), atol=1e-4)
    # the outlier moved into the weight: the scaled input's channels are far more even
    scaled = (inputs * wrapped.inverse_scale).abs().amax(dim=0)
    assert scaled.max() / scaled.min() < peak.max() / peak.min() / 5


def test_the_ffn_output_projections_with_the_worst_outliers_stay_fp32():
    even, loud, louder = torch.ones(8), torch.ones(8), torch.ones(8)
    loud[0], louder[0] = 50.0, 90.0
    peaks = {"encoder.layer.0.output.dense": loud, "encoder.layer.1.output.dense": even,
             "encoder.layer.2.output.dense": louder, "encoder.layer.0.attention.output.dense": louder * 9,
             "encoder.layer.0.intermediate.dense": louder * 9}
    assert layers_kept_fp32(peaks, 2) == ("encoder.layer.2.output.dense", "encoder.layer.0.output.dense")
    assert layers_kept_fp32(peaks, 0) == ()


def run_tiny(model: BertModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids, torch.ones_like(ids), output_hidden_states=True).hidden_states[-1]


def test_quantized_tiny_bert_stays_close_to_fp32():
    model = tiny_bert()
    ids = torch.randint(1, 50, (6, 12))
    peaks = input_peaks(model, lambda: run_tiny(model, ids))
    assert len(peaks) == 3 * 6 and peaks["encoder.layer.1.output.dense"].shape == (64,)
    quantised = quantize_int8(copy.deepcopy(model), peaks, keep_fp32=1)
    layer = quantised.encoder.layer
    assert quantised.int8_kept_fp32 == ("encoder.layer.1.output.dense",)
    assert type(layer[1].output.dense) is nn.Linear  # kept
    for module in (layer[0].output.dense, layer[2].attention.self.query, layer[1].intermediate.dense):
        assert isinstance(module, InputScaled) and "quantized" in type(module.linear).__module__
    fp32, int8 = run_tiny(model, ids), run_tiny(quantised, ids)
    cosine = nn.functional.cosine_similarity(fp32.flatten(1), int8.flatten(1))
    assert cosine.min() > 0.99
    assert not torch.equal(fp32, int8)  # really quantised


def test_alpha_outside_zero_one_is_refused():
    model = tiny_bert()
    peaks = input_peaks(model, lambda: run_tiny(model, torch.ones(1, 4, dtype=torch.long)))
    with pytest.raises(ValueError, match="alpha"):
        quantize_int8(model, peaks, alpha=1.5)


def test_calibration_texts_cover_the_written_languages():
    texts = calibration_texts()
    assert len(texts) == 96 and len(set(texts)) == 96
    assert any("\u0600" <= ch <= "\u06ff" for text in texts for ch in text)  # Arabic
    assert any("\u4e00" <= ch <= "\u9fff" for text in texts for ch in text)  # Chinese
    assert calibration_texts() == texts


def test_peaks_round_trip_with_the_heads(tmp_path):
    shipped = load_heads()
    peaks = {"encoder.layer.0.query": np.array([0.5, 70.25, 1e-3], dtype=np.float32)}
    save_heads(HeadSet(shipped.version, shipped.encoder_id, shipped.max_tokens, shipped.heads,
                       int8_peaks=peaks, int8_calibration={"texts": 3}), tmp_path)
    loaded = load_heads(str(tmp_path))
    assert loaded.int8_calibration == {"texts": 3}
    assert np.allclose(loaded.int8_peaks["encoder.layer.0.query"], peaks["encoder.layer.0.query"], rtol=1e-3)
    save_heads(HeadSet("v", "enc", 64, {"topic": shipped.heads["topic"]}), tmp_path / "plain")
    assert load_heads(str(tmp_path / "plain")).int8_peaks is None


def test_shipped_heads_carry_peaks_for_every_linear_layer_of_the_embedded_encoder():
    from newsbeam.labelling.encoder import load_encoder

    head_set = load_heads()
    names = {name for name, module in load_encoder().model.named_modules() if isinstance(module, nn.Linear)}
    assert set(head_set.int8_peaks) == names and len(names) == 12 * 6
    assert head_set.int8_calibration["texts"] > 400
    assert all(np.isfinite(peak).all() and (peak >= 0).all() for peak in head_set.int8_peaks.values())


def test_int8_labels_agree_with_fp32_on_the_real_model():
    from newsbeam.labelling.labeller import load_labeller
    from newsbeam.labelling.taxonomy import SEEDS_DIR

    rows = [json.loads(line) for line in
            (SEEDS_DIR / "training" / "topic_newsbeam_written.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [f"{row['headline']} {row['body']}" for row in rows[1::3]]
    fp32 = load_labeller().label_texts(texts)
    int8_labeller = load_labeller(quantize="int8")
    assert "+int8+" in int8_labeller.model_id
    assert len(int8_labeller.encoder.model.int8_kept_fp32) == DEFAULT_KEEP_FP32
    int8 = int8_labeller.label_texts(texts)
    topic = np.mean([a.topic == b.topic for a, b in zip(fp32, int8)])
    sentiment = np.mean([a.sentiment == b.sentiment for a, b in zip(fp32, int8)])
    assert topic >= 0.9 and sentiment >= 0.85, (topic, sentiment)
