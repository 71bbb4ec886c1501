"""Article embeddings as the dataset stores them (``newsbeam run --embeddings``).

The vector is the encoder's mean-pooled last layer, L2-normalised: the same
encoder pass that feeds the label heads, so keeping it costs no second pass.
It is stored as 384 int8 values and one float32 scale per row (388 bytes
before compression, a quarter of float32): ``vector ≈ scale * values``, and the
cosine of two stored vectors is ``scale_a * scale_b * dot(values_a, values_b)``
(rounding moves a cosine by well under 0.01).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

EMBEDDING_DIMS = 384  # multilingual-e5-small's hidden size
INT8_LIMIT = 127


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float vectors -> (N, D) int8 values and (N,) float32 scales, per row."""
    vectors = np.asarray(vectors, dtype=np.float32)
    peaks = np.abs(vectors).max(axis=-1)
    scales = (peaks / INT8_LIMIT).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[..., None]
    values = np.clip(np.rint(vectors / safe), -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
    return values, scales


def dequantise(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 vectors that :func:`quantise` stored."""
    return np.asarray(values, dtype=np.float32) * np.asarray(scales, dtype=np.float32)[..., None]


def to_record(vector: Optional[np.ndarray]) -> tuple[Optional[bytes], Optional[float]]:
    """One unit vector as an Article's (``embedding`` bytes, ``embedding_scale``)."""
    if vector is None:
        return None, None
    values, scales = quantise(np.asarray(vector, dtype=np.float32)[None, :])
    return values[0].tobytes(), float(scales[0])


def from_record(embedding: Optional[bytes], scale: Optional[float]) -> Optional[np.ndarray]:
    """The float32 vector an Article's embedding fields hold (None when it has none)."""
    if embedding is None or scale is None:
        return None
    return dequantise(np.frombuffer(embedding, dtype=np.int8)[None, :], np.array([scale]))[0]
