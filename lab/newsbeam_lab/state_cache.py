"""The frozen layers' output of a fine-tune, cached on disk between runs.

A fine-tune first runs every training text through the layers below
``from_layer`` once (:func:`newsbeam_lab.finetune.frozen_states`): on two CPU
cores about 15 minutes for the shipped recipe, the same every time the same
texts meet the same encoder. Runs that change only the fine-tune's settings
(learning rate, weights, precision, seeds) read them back in seconds. The file
is keyed by the encoder, the layer and every text's token ids, so any change
to the rows computes them afresh; it holds the states float16, as the
fine-tune keeps them, so a warm and a cold run train on identical inputs.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

LOGGER = logging.getLogger(__name__)


def state_cache_file(cache_dir: str | Path, key: str, layer: int, token_ids: Sequence[Sequence[int]]) -> Path:
    digest = hashlib.sha256(f"{key}\x00{layer}\x00{len(token_ids)}\x00".encode("utf-8"))
    for ids in token_ids:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"\xff" * 8)  # a separator no id can be
    return Path(cache_dir) / f"states-{digest.hexdigest()[:24]}.npy"


def cached_states(compute: Callable[[], list[torch.Tensor]], token_ids: Sequence[Sequence[int]], *,
                  cache_dir: Optional[str | Path], key: str, layer: int) -> list[torch.Tensor]:
    """``compute()``'s per-text states (each (tokens, hidden) float16), read from
    ``cache_dir`` when an earlier run stored them for exactly these inputs."""
    if cache_dir is None:
        return compute()
    path = state_cache_file(cache_dir, key, layer, token_ids)
    lengths = [len(ids) for ids in token_ids]
    if path.is_file():
        stacked = np.load(path)
        if stacked.shape[0] == sum(lengths):
            LOGGER.info("fine-tune: frozen states of %d texts read from %s", len(lengths), path)
            return list(torch.from_numpy(stacked).split(lengths))
    states = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp.npy")
    width = states[0].shape[1] if states else 0
    # written state by state into a memory-mapped file: the states of the recipe are
    # about 2 GB a task, and a concatenated copy would double the run's peak memory
    stacked = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16, shape=(sum(lengths), width))
    offset = 0
    for state in states:
        stacked[offset:offset + state.shape[0]] = state.numpy()
        offset += state.shape[0]
    stacked.flush()
    del stacked
    os.replace(temporary, path)  # a killed run leaves no half file under the real name
    return states
