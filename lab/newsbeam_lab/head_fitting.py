"""Fitting a head: features from the encoder's layers (cached on disk by
content hash), source- and label-balanced weights, an MLP or a logistic
regression per task, and its softmax temperature."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from newsbeam.labelling import PASSAGE_PREFIX
from newsbeam.labelling.heads import Head
from newsbeam.labelling.input_text import model_text

LOGGER = logging.getLogger(__name__)

DEFAULT_SOURCE_POWER = 0.0
MIN_MLP_STEPS = 300


def resolve_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Hidden-state indices made non-negative (-1 = last layer = ``num_layers``)."""
    resolved = []
    for layer in layers:
        index = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_layers:
            raise ValueError(f"layer {layer} out of range for an encoder with {num_layers} layers")
        resolved.append(index)
    return tuple(sorted(set(resolved)))


def passage_token_ids(encoder, texts: Sequence[str], max_tokens: int,
                      prefix: str = PASSAGE_PREFIX) -> list[list[int]]:
    """Token ids of ``prefix + text`` per text, as the heads read them (e5's passage
    prefix; stray escapes decoded by :func:`model_text`, as the labeller does)."""
    return encoder.tokenize([prefix + model_text(text) for text in texts], max_tokens)


def pooled_features(encoder, texts: Sequence[str], layers: tuple[int, ...], max_tokens: int,
                    prefix: str = PASSAGE_PREFIX, cache_dir: Optional[str | Path] = None) -> np.ndarray:
    """(N, len(layers), hidden) mean-pooled states for ``prefix + text``, cached by content hash.

    The cache keeps every layer of the encoder (float16), so one embedding run
    serves any later choice of layers. The features are float16-rounded with
    or without a cache, hit or miss, so a retrain fits the same heads whether
    or not the cache was warm.
    """
    all_layers = tuple(range(encoder.num_layers + 1))
    # keyed by the text the encoder reads, so a change in model_text re-embeds
    # exactly the rows it changes
    texts = [model_text(text) for text in texts]
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha256()
        for part in (encoder.model_id, str(max_tokens), prefix, *texts):
            digest.update(part.encode("utf-8") + b"\x00")
        cache_file = Path(cache_dir) / f"features-{digest.hexdigest()[:24]}.npy"
        if cache_file.is_file():
            cached = np.load(cache_file)
            if cached.shape[:2] == (len(texts), len(all_layers)):
                return cached[:, list(layers), :].astype(np.float32)
    started = time.perf_counter()
    token_ids = passage_token_ids(encoder, texts, max_tokens, prefix)
    # rounded as the cache stores them: heads fitted on a cold cache's float32
    # features and on a warm one's float16 differ, the one known difference
    # between two runs of one seed that read SIB-200 1.6 points apart (docs/research/labels.md)
    pooled = encoder.pooled_layers(token_ids, all_layers if cache_file else layers).astype(np.float16)
    LOGGER.info("embedded %d texts (%d tokens) in %.1fs", len(texts), sum(map(len, token_ids)),
                time.perf_counter() - started)
    if cache_file is None:
        return pooled.astype(np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(temporary, pooled)
    os.replace(temporary, cache_file)
    return pooled[:, list(layers), :].astype(np.float32)


def balanced_weights(label_ids: np.ndarray, sources: Sequence[str], num_labels: int,
                     source_power: float = DEFAULT_SOURCE_POWER,
                     source_weights: Optional[Mapping[str, float]] = None) -> np.ndarray:
    """Per-row weights, mean 1: a data source of n rows weighs n**source_power
    in total (0: all sources equal, 1: every row equal), times the factor of
    the first ``source_weights`` key its spec contains (e.g. ``{"xlmt": 3}``),
    then the weights are rescaled so every label present weighs the same."""
    weights = np.ones(len(label_ids), dtype=np.float64)
    source_array = np.asarray(sources)
    names = sorted(set(sources))
    for name in names:
        member = source_array == name
        factor = next((value for key, value in (source_weights or {}).items() if key in name), 1.0)
        weights[member] = factor * float(member.sum()) ** source_power / member.sum()
    label_mass = np.bincount(label_ids, weights=weights, minlength=num_labels)
    present = label_mass > 0
    weights *= (label_mass.sum() / present.sum()) / label_mass[label_ids]
    return weights * (len(weights) / weights.sum())


def fit_head(task: str, labels: Sequence[str], layers: tuple[int, ...], pooled: np.ndarray,
             label_ids: np.ndarray, sample_weights: np.ndarray, *, l2: float = 0.1, hidden: int = 0,
             epochs: int = 40, seed: int = 0, max_iter: int = 300) -> Head:
    """Standardise the concatenated layers and fit a softmax classifier.

    ``hidden == 0`` fits multinomial logistic regression by L-BFGS on the full
    batch (loss = weighted mean cross-entropy + ``l2``/2 * |W|^2); otherwise a
    one-hidden-layer ReLU MLP with dropout by AdamW (weight decay ``l2``).
    """
    torch.manual_seed(seed)
    features = pooled.reshape(pooled.shape[0], -1).astype(np.float32)
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    inputs = torch.from_numpy((features - mean) / scale)
    targets = torch.from_numpy(np.asarray(label_ids, dtype=np.int64))
    weights = torch.from_numpy((sample_weights / sample_weights.sum()).astype(np.float32))
    num_labels = len(labels)
    if hidden <= 0:
        weight = torch.zeros(inputs.shape[1], num_labels, requires_grad=True)
        bias = torch.zeros(num_labels, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure():
            optimiser.zero_grad()
            losses = torch.nn.functional.cross_entropy(inputs @ weight + bias, targets, reduction="none")
            loss = (losses * weights).sum() + 0.5 * l2 * (weight * weight).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        dense = ((weight.detach().numpy(), bias.detach().numpy()),)
    else:
        dense = _fit_mlp(inputs, targets, weights, num_labels, hidden, l2, epochs, seed)
    return Head(task=task, labels=tuple(labels), layers=layers, mean=mean, scale=scale,
                weights=tuple(w for w, _ in dense), biases=tuple(b for _, b in dense),
                metadata={"kind": "linear" if hidden <= 0 else "mlp", "l2": l2, "hidden": hidden,
                          "train_rows": int(len(label_ids))})


def _fit_mlp(inputs, targets, weights, num_labels, hidden, weight_decay, epochs, seed, batch_size=256):
    generator = torch.Generator().manual_seed(seed)
    network = torch.nn.Sequential(
        torch.nn.Dropout(0.2), torch.nn.Linear(inputs.shape[1], hidden), torch.nn.ReLU(),
        torch.nn.Dropout(0.3), torch.nn.Linear(hidden, num_labels))
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=weight_decay)
    batches = (len(targets) + batch_size - 1) // batch_size
    epochs = max(epochs, -(-MIN_MLP_STEPS // batches))  # small sets still get enough updates
    steps = epochs * batches
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps)
    row_weights = weights * len(targets)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), batch_size):
            batch = order[start:start + batch_size]
            losses = torch.nn.functional.cross_entropy(network(inputs[batch]), targets[batch], reduction="none")
            loss = (losses * row_weights[batch]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    first, second = network[1], network[4]
    return ((first.weight.detach().numpy().T.copy(), first.bias.detach().numpy()),
            (second.weight.detach().numpy().T.copy(), second.bias.detach().numpy()))


def fit_temperature(logits: np.ndarray, label_ids: np.ndarray) -> float:
    """The T > 0 minimising the mean cross-entropy of softmax(logits / T) (Guo et al. 2017)."""
    values = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    targets = torch.from_numpy(np.asarray(label_ids, dtype=np.int64))
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(values / log_temperature.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_temperature.detach().exp())


