"""Small trained classifiers ("heads") on top of the encoder (frozen, or fine-tuned with them).

A head reads the mean-pooled hidden states of a few encoder layers (one
forward pass yields all of them), concatenates them, standardises each
feature, and applies one or more dense layers (ReLU between them) to get
per-label logits. Several heads share one encoder pass: the labeller asks the
encoder for the union of the layers its heads read.

On disk a head set is two files in one folder: ``heads.json`` (version,
encoder id, token budget, and per task its labels, layers and shapes) and
``heads.safetensors`` (``<task>.mean``/``<task>.scale`` in float32, dense
weights in float16, ``int8_peaks.<layer>`` in float16: the int8
calibration of the encoder they were trained on, and ``encoder_delta.*`` in
float16 where ``train-heads`` fine-tuned the encoder: the low-rank change to
its weights that the heads expect, :mod:`newsbeam.labelling.adaptation`), and
``embedding_centre`` in float32 where the lab measured one: the mean unit vector
of the training texts under this (fine-tuned) encoder, subtracted from every
stored article vector before it is normalised. Nothing is unpickled. The folder
may be local or remote (gs://...).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from safetensors.numpy import load as load_safetensors_bytes

from newsbeam.labelling.adaptation import DELTA_PREFIX
from newsbeam.labelling.taxonomy import SEEDS_DIR, read_bytes

LOGGER = logging.getLogger(__name__)

HEADS_JSON = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
DEFAULT_HEADS_DIR = SEEDS_DIR / "heads"
FORMAT_VERSION = 1
TASKS = ("topic", "sentiment")
INT8_PEAKS_PREFIX = "int8_peaks."
EMBEDDING_CENTRE = "embedding_centre"


@dataclass(frozen=True, eq=False)
class Head:
    """A standardise-then-dense classifier over concatenated pooled layers."""

    task: str
    labels: tuple[str, ...]
    layers: tuple[int, ...]  # encoder hidden-state indices (0 = embeddings)
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,)
    weights: tuple[np.ndarray, ...]  # (features, hidden) ... (hidden, labels)
    biases: tuple[np.ndarray, ...]
    metadata: Mapping[str, object] = field(default_factory=dict)  # how it was trained, dev scores
    # softmax temperature fitted on held-out rows, so scores read as probabilities; argmax unchanged
    temperature: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"head {self.task!r}: temperature must be positive, got {self.temperature}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError(f"head {self.task!r} needs matching, non-empty weights and biases")
        width = self.mean.shape[0]
        if self.scale.shape != (width,) or self.weights[0].shape[0] != width:
            raise ValueError(f"head {self.task!r}: feature width {width} does not match its weights "
                             f"{self.weights[0].shape} / scale {self.scale.shape}")
        if self.weights[-1].shape[1] != len(self.labels):
            raise ValueError(f"head {self.task!r}: {self.weights[-1].shape[1]} outputs for {len(self.labels)} labels")

    @property
    def feature_width(self) -> int:
        return int(self.mean.shape[0])

    def features(self, pooled: np.ndarray, pooled_layers: tuple[int, ...]) -> np.ndarray:
        """This head's standardised input from ``pooled`` (N, len(pooled_layers), hidden)."""
        try:
            picks = [pooled_layers.index(layer) for layer in self.layers]
        except ValueError:
            raise ValueError(f"head {self.task!r} reads layers {self.layers}, "
                             f"encoder pass gave {pooled_layers}") from None
        flat = pooled[:, picks, :].reshape(pooled.shape[0], -1).astype(np.float32)
        if flat.shape[1] != self.feature_width:
            raise ValueError(f"head {self.task!r} expects {self.feature_width} features, got {flat.shape[1]} "
                             "(different encoder hidden size?)")
        return (flat - self.mean) / self.scale

    def logits(self, pooled: np.ndarray, pooled_layers: Optional[tuple[int, ...]] = None) -> np.ndarray:
        values = self.features(pooled, self.layers if pooled_layers is None else pooled_layers)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            values = values @ weight.astype(np.float32) + bias.astype(np.float32)
            if index < last:
                values = np.maximum(values, 0.0)
        return values

    def probabilities(self, pooled: np.ndarray, pooled_layers: Optional[tuple[int, ...]] = None) -> np.ndarray:
        return softmax(self.logits(pooled, pooled_layers) / self.temperature)


@dataclass(frozen=True)
class HeadSet:
    """The heads trained together on one encoder."""

    version: str  # e.g. "heads-v1"; goes into the ``model`` column
    encoder_id: str
    max_tokens: int
    heads: Mapping[str, Head]
    prefix: str = "passage: "
    taxonomy_digest: Optional[str] = None
    # per linear layer of the encoder, the peak |input| per channel on a sample
    # of the training texts: what --quantize int8 calibrates with (newsbeam.labelling.int8)
    int8_peaks: Optional[Mapping[str, np.ndarray]] = None
    int8_calibration: Mapping[str, object] = field(default_factory=dict)
    # the change to the encoder's weights the heads were trained with (fine-tuning), or None
    encoder_deltas: Optional[Mapping[str, np.ndarray]] = None
    fine_tuning: Mapping[str, object] = field(default_factory=dict)
    # The mean of the training texts' unit vectors, or None. Every article of one outlet, and news
    # itself, shares a direction that lifts all cosines; without it the stories' threshold has to be
    # so high that it misses most articles about one event in two languages (docs/research/stories.md).
    embedding_centre: Optional[np.ndarray] = None
    embedding_centre_source: Mapping[str, object] = field(default_factory=dict)

    @property
    def layers(self) -> tuple[int, ...]:
        """Every layer some head reads, sorted: what one encoder pass must pool."""
        return tuple(sorted({layer for head in self.heads.values() for layer in head.layers}))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponents = np.exp(shifted)
    return exponents / exponents.sum(axis=-1, keepdims=True)


def load_heads(folder: Optional[str] = None) -> HeadSet:
    """The head set in ``folder`` (local or gs://...), else the shipped heads."""
    base = str(DEFAULT_HEADS_DIR) if folder is None else str(folder).rstrip("/")
    document = json.loads(read_bytes(f"{base}/{HEADS_JSON}").decode("utf-8"))
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"{base}/{HEADS_JSON}: unsupported heads format {document.get('format')!r}; "
                         f"expected {FORMAT_VERSION}")
    tensors = load_safetensors_bytes(read_bytes(f"{base}/{HEADS_WEIGHTS}"))
    heads = {}
    for task, spec in document["tasks"].items():
        count = int(spec["dense_layers"])
        heads[task] = Head(
            task=task,
            labels=tuple(spec["labels"]),
            layers=tuple(int(layer) for layer in spec["layers"]),
            mean=tensors[f"{task}.mean"].astype(np.float32),
            scale=tensors[f"{task}.scale"].astype(np.float32),
            weights=tuple(tensors[f"{task}.dense{i}.weight"].astype(np.float32) for i in range(count)),
            biases=tuple(tensors[f"{task}.dense{i}.bias"].astype(np.float32) for i in range(count)),
            metadata=spec.get("metadata", {}),
            temperature=float(spec.get("temperature", 1.0)),
        )
    return HeadSet(
        version=document["version"],
        encoder_id=document["encoder"],
        max_tokens=int(document["max_tokens"]),
        heads=heads,
        prefix=document.get("prefix", "passage: "),
        taxonomy_digest=document.get("taxonomy_sha256"),
        int8_peaks=_float32_with_prefix(tensors, INT8_PEAKS_PREFIX),
        int8_calibration=document.get("int8_calibration") or {},
        encoder_deltas=_float32_with_prefix(tensors, DELTA_PREFIX),
        fine_tuning=document.get("fine_tuning") or {},
        embedding_centre=(tensors[EMBEDDING_CENTRE].astype(np.float32) if EMBEDDING_CENTRE in tensors else None),
        embedding_centre_source=document.get(EMBEDDING_CENTRE) or {},
    )


def _float32_with_prefix(tensors: Mapping[str, np.ndarray], prefix: str) -> Optional[dict[str, np.ndarray]]:
    """The tensors named ``prefix``..., by the rest of their name, as float32; None if there are none."""
    return {name[len(prefix):]: tensor.astype(np.float32) for name, tensor in tensors.items()
            if name.startswith(prefix)} or None
