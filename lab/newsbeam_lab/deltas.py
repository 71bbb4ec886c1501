"""Cutting a fine-tune's weight change into the low-rank deltas that ship
with a head set (applied at load time by :mod:`newsbeam.labelling.adaptation`)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from newsbeam.labelling.adaptation import DOWN, UP


def low_rank_deltas(original: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                    rank: int) -> dict[str, np.ndarray]:
    """``tuned - original`` per parameter: 2-D ones as rank-``rank`` factors
    (truncated SVD, the closest in Frobenius norm), 1-D ones whole; float32."""
    if rank < 1:
        raise ValueError(f"rank must be positive, got {rank}")
    deltas: dict[str, np.ndarray] = {}
    for name, tuned_value in tuned.items():
        delta = tuned_value.detach().float() - original[name].detach().float()
        if delta.dim() == 2:
            left, singular, right = torch.linalg.svd(delta, full_matrices=False)
            kept = min(rank, singular.shape[0])
            deltas[name + UP] = (left[:, :kept] * singular[:kept]).numpy()
            deltas[name + DOWN] = right[:kept].numpy()
        else:
            deltas[name] = delta.numpy()
    return deltas
