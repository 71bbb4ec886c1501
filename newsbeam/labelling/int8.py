"""``--quantize int8``: int8 weights for the encoder's linear layers, calibrated.

Plain dynamic quantisation of every ``nn.Linear`` (int8 weights per output
channel, activations per tensor) is fast but loses about 5 sentiment macro-F1
points on e5-small (docs/bench.md): a few input channels of some layers carry
values 10-50x larger than the rest, so one per-tensor activation scale leaves
the other channels a handful of int8 steps. Two measured fixes:

* **Input smoothing** (SmoothQuant, Xiao et al. 2023): for each linear layer,
  per input channel ``s = peak|x| ** alpha / peak|w| ** (1 - alpha)``; the
  weight's columns are multiplied by ``s`` and the input divided by it, which
  leaves the fp32 result unchanged and moves the outliers into the weights,
  where per-channel int8 copes with them.
* **The worst few FFN output projections stay fp32**: their input is the GELU
  output of 1536 channels, the most outlier-heavy activation in BERT; the
  ``keep_fp32`` layers with the largest peak/median ratio are left alone.

Peaks (per channel, the largest |input| seen) are recorded by ``train-heads``
on a sample of its training texts (tweets, sentences and news in 16
languages) and shipped in the heads file, so every worker quantises the same
way without a calibration pass. An encoder whose heads carry no peaks is
calibrated at load time on newsbeam's own written headlines and leads
(``seeds/training``); that set is too narrow to smooth with (a channel whose
peak it misses becomes an outlier after scaling), so then only the fp32
layers are chosen from it and nothing is smoothed (row 2 of the table).

Measured on the dev sets (XLM-T val, SIB-200 dev; e5-small, shipped heads):

| recipe | sentiment F1 change | topic F1 change | agreement S / T | speed-up |
|---|---|---|---|---|
| per-channel int8, every linear layer | -5.8 | -0.7 | 0.79 / 0.92 | 2.2 |
| + 4 FFN outputs fp32 | -1.4 | -0.4 | 0.92 / 0.98 | 1.9 |
| + smoothing, alpha 0.7 | -0.0 | +0.4 | 0.95 / 0.97 | 2.3 |
| + smoothing, alpha 0.8 (shipped peaks) | -0.4 | +0.9 | 0.97 / 0.97 | ~2 |

With 2,048-token batches, on XLM-T val ar/en/fr only (972 tweets) and SIB-200
dev (495 sentences), alpha 0.8, shipped peaks; speed-up on 500 bench articles
(best of two, this 2-core machine is noisy to about ±10%):

| FFN outputs kept fp32 | sentiment F1 change | topic F1 change | speed-up |
|---|---|---|---|
| 4 | -1.6 | +1.3 | 1.9 |
| **6** (default) | -0.8 | +0.6 | 1.8 |
| 8 | -0.8 | +0.4 | 1.6 |
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Callable, Optional

import torch
from torch import nn

from newsbeam.labelling.taxonomy import SEEDS_DIR

CALIBRATION_FILE = SEEDS_DIR / "training" / "topic_newsbeam_written.jsonl"
DEFAULT_CALIBRATION_TEXTS = 96
DEFAULT_ALPHA = 0.8  # picked on the dev sets among 0.5-0.8 (docs/bench.md)
DEFAULT_KEEP_FP32 = 6  # 4 lost 1.6 sentiment points on ar/en/fr; 6 loses 0.8 (table above)
FFN_OUTPUT_SUFFIX = ".output.dense"  # BERT naming; attention.output.dense is the attention projection


class InputScaled(nn.Module):
    """``linear(x * inverse_scale)``: a linear layer whose input is divided per channel."""

    def __init__(self, inverse_scale: torch.Tensor, linear: nn.Module):
        super().__init__()
        self.register_buffer("inverse_scale", inverse_scale)
        self.linear = linear

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs * self.inverse_scale)


def calibration_texts(limit: int = DEFAULT_CALIBRATION_TEXTS) -> list[str]:
    """``limit`` headline + lead texts in 7 languages, the same on every call."""
    from newsbeam.labelling.input_text import article_text

    rows = [json.loads(line) for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(rows) // limit)  # spread over the file: it is grouped by topic
    return [article_text(row.get("headline"), None, row.get("body")) for row in rows[::step]][:limit]


def input_peaks(model: nn.Module, run_calibration: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Per input channel, the largest |value| each ``nn.Linear`` of ``model`` saw
    while ``run_calibration()`` ran forward passes through it."""
    peaks: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            def record(_module, inputs, _output, name=name):
                values = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(dim=0)
                peaks[name] = torch.maximum(peaks[name], values) if name in peaks else values
            hooks.append(module.register_forward_hook(record))
    try:
        run_calibration()
    finally:
        for hook in hooks:
            hook.remove()
    if not peaks:
        raise ValueError("calibration ran no linear layer: nothing to quantise")
    return peaks


def outlier_ratio(peak: torch.Tensor) -> float:
    return float(peak.max() / peak.median().clamp(min=1e-6))


def layers_kept_fp32(peaks: dict[str, torch.Tensor], keep_fp32: int) -> tuple[str, ...]:
    """The ``keep_fp32`` FFN output projections with the most extreme input outliers."""
    ffn_outputs = [name for name in peaks if name.endswith(FFN_OUTPUT_SUFFIX) and "attention" not in name]
    return tuple(sorted(ffn_outputs, key=lambda name: outlier_ratio(peaks[name]), reverse=True)[:keep_fp32])


def smoothed(linear: nn.Linear, peak: torch.Tensor, alpha: float) -> InputScaled:
    weight_peak = linear.weight.detach().abs().amax(dim=0).clamp(min=1e-5)
    scale = peak.clamp(min=1e-5) ** alpha / weight_peak ** (1 - alpha)
    scaled = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        scaled.weight.copy_(linear.weight * scale[None, :])
        if linear.bias is not None:
            scaled.bias.copy_(linear.bias)
    return InputScaled(1.0 / scale, scaled)


def quantize_int8(model: nn.Module, peaks: dict[str, torch.Tensor], *, alpha: Optional[float] = DEFAULT_ALPHA,
                  keep_fp32: int = DEFAULT_KEEP_FP32) -> nn.Module:
    """``model`` with per-channel int8 dynamic linear layers, smoothed with
    ``alpha`` (None: not smoothed), except those :func:`layers_kept_fp32`
    picks. Modifies ``model`` in place and returns it."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    kept = set(layers_kept_fp32(peaks, keep_fp32))
    to_quantise: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not isinstance(child, nn.Linear) or name in kept or name not in peaks:
                continue
            if alpha is None:
                to_quantise.append(name)
            else:
                setattr(parent, child_name, smoothed(child, peaks[name], alpha))
                to_quantise.append(f"{name}.linear")
    with warnings.catch_warnings():
        # torch 2.13 announces that eager quantisation moves to torchao; torch is pinned, and
        # the warning would be repeated in every worker's log
        warnings.filterwarnings("ignore", message=r".*(deprecated|torchao).*")
        quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in to_quantise},
                         dtype=torch.qint8, inplace=True)
    model.int8_kept_fp32 = tuple(sorted(kept))  # for the record (bench, tests)
    return model


def calibrate_and_quantize(model: nn.Module, run_texts: Callable[[Sequence[str]], object], *,
                           texts: Sequence[str] | None = None, alpha: Optional[float] = None,
                           keep_fp32: int = DEFAULT_KEEP_FP32) -> nn.Module:
    """Calibrate on ``texts`` (default: :func:`calibration_texts`) through
    ``run_texts`` (which must run ``model`` forward on them), then
    :func:`quantize_int8` ``model`` in place.

    Not smoothed by default: smoothing needs every channel's true peak, and a
    small set of news headlines misses some (measured with alpha 0.8: topic
    F1 -10.7 points); ranking the FFN outputs by outlier ratio is robust to it."""
    chosen = list(texts) if texts is not None else calibration_texts()
    with torch.inference_mode():
        peaks = input_peaks(model, lambda: run_texts(chosen))
    return quantize_int8(model, peaks, alpha=alpha, keep_fp32=keep_fp32)
