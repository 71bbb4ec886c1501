"""Fine-tune the encoder's top layers together with the heads (``train-heads``).

The recipe is "linear probe, then fine-tune" (LP-FT, Kumar et al. 2022): the
heads are first fitted on the frozen encoder's features, then the encoder
layers above ``from_layer`` and the heads are trained jointly, every task's
batches interleaved, so one encoder still serves both heads. Starting from
fitted heads keeps the first steps from tearing up the pretrained features.

The layers below ``from_layer`` stay frozen, so their output is computed once
per text and kept (float16): each step runs only the trainable layers, which
makes a few epochs fit two CPU cores (docs/labels.md: about 8 minutes an
epoch for 26k texts with six trainable layers).

Only newsbeam's own BERT (the embedded model) is fine-tuned: it exposes its
layers as plain modules called ``layer(hidden, attend)``.
"""
from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from newsbeam.labelling.adaptation import apply_weight_deltas
from newsbeam.labelling.bert import BertModel, masked_mean
from newsbeam.labelling.encoder import length_sorted_batches, padded_batch
from newsbeam.labelling.heads import Head
from newsbeam_lab.anchoring import Anchor, distillation_losses
from newsbeam_lab.deltas import low_rank_deltas
from newsbeam_lab.state_cache import cached_states

LOGGER = logging.getLogger(__name__)

# rows of a chunk are sorted by length before being cut into batches, so
# batches pad little yet still come in random order
LENGTH_SORT_CHUNK_BATCHES = 50


PRECISIONS = ("float32", "bfloat16")


def autocast(precision: str):
    """The context the encoder runs in: bfloat16 matrix products, or plain float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


@dataclass(frozen=True)
class FineTuneSettings:
    """How ``train-heads`` fine-tunes; the defaults built the shipped heads."""

    from_layer: int = 6  # hidden-state index: the layers above it are trained
    epochs: int = 3
    learning_rate: float = 5e-5
    head_learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    batch_size: int = 32
    rank: int = 32  # of each shipped weight delta (newsbeam.labelling.adaptation)
    seed: int = 0
    seeds: int = 1  # fine-tunes run from the same start, seeds seed.., and averaged (a "model soup")
    # (task, epochs) pairs overriding ``epochs`` for a task: its rows are seen that many
    # times, spread evenly over the run's epochs (the most any task has), so one task can
    # take more passes than another that over-fits sooner (epochs 0 still means no fine-tune)
    task_epochs: tuple[tuple[str, int], ...] = ()
    # "bfloat16": the encoder's matrix products in bfloat16 (torch.autocast), weights and
    # optimiser state kept in float32; several times faster on CPUs with AVX512-BF16 or AMX
    precision: str = "float32"

    def __post_init__(self):
        # checked before any training: a bad rank found after 20 minutes of it wastes them
        if self.epochs < 0 or self.from_layer < 0:
            raise ValueError(f"fine-tuning epochs and from_layer must be >= 0, got {self.epochs}, {self.from_layer}")
        if any(epochs < 1 for _, epochs in self.task_epochs):
            raise ValueError(f"a task's fine-tuning epochs must be >= 1, got {dict(self.task_epochs)}")
        if self.rank < 1 or self.batch_size < 1 or self.seeds < 1:
            raise ValueError(f"fine-tuning rank, batch size and seeds must be >= 1, got {self.rank}, "
                             f"{self.batch_size}, {self.seeds}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"fine-tuning precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (self.learning_rate > 0 and self.head_learning_rate > 0):
            raise ValueError(f"fine-tuning learning rates must be positive, got {self.learning_rate}, "
                             f"{self.head_learning_rate}")

    def describe(self) -> dict:
        return {**self.__dict__, "task_epochs": dict(self.task_epochs)}

    def epochs_of(self, task: str) -> int:
        return dict(self.task_epochs).get(task, self.epochs)

    def total_epochs(self, tasks) -> int:
        """Epochs the run lasts: the most that any of ``tasks`` takes."""
        return max((self.epochs_of(task) for task in tasks), default=self.epochs)


@dataclass
class TaskRows:
    """One task's training rows, tokenised, with the head fitted on frozen features."""

    head: Head
    token_ids: Sequence[Sequence[int]]
    label_ids: np.ndarray
    weights: np.ndarray
    anchored: Optional[np.ndarray] = None  # rows distilled toward the anchor's outputs (newsbeam_lab.anchoring)


def can_fine_tune(model) -> bool:
    return isinstance(model, BertModel)


def fine_tune(model: BertModel, tasks: Mapping[str, TaskRows], settings: FineTuneSettings,
              pad_id: int = 1, max_batch_tokens: int = 8192, cache_dir: Optional[str | Path] = None,
              model_key: str = "", anchor: Optional[Anchor] = None) -> tuple[dict[str, Head], dict[str, np.ndarray]]:
    """Train ``model``'s layers above ``settings.from_layer`` and the heads.

    With ``settings.seeds`` > 1, that many fine-tunes start from the same
    weights and heads, differ only in batch order and dropout, and their
    weights are averaged: a uniform "model soup" (Wortsman et al. 2022), one
    encoder and one set of heads at the cost of one fine-tune's inference.

    With ``cache_dir``, the frozen layers' output is kept there between runs
    (:mod:`newsbeam_lab.state_cache`, keyed by ``model_key`` and the token ids).

    With ``anchor``, each task's ``anchored`` rows are also trained toward the
    anchor heads' soft outputs (:mod:`newsbeam_lab.anchoring`).

    Returns the tuned heads and the encoder's weight deltas at
    ``settings.rank``; ``model`` is left with exactly those deltas applied,
    as a labeller loading the heads will have it.
    """
    num_layers = model.config.num_hidden_layers
    if not 0 <= settings.from_layer < num_layers:
        raise ValueError(f"from_layer must be in 0..{num_layers - 1}, got {settings.from_layer}")
    for task, rows in tasks.items():
        if min(rows.head.layers) < settings.from_layer:
            raise ValueError(f"the {task} head reads layer {min(rows.head.layers)}, below the first "
                             f"trained layer's input {settings.from_layer}")
    started = time.perf_counter()
    # float32 whatever the precision: these states are what the pipeline's own lower layers compute
    states = {task: cached_states(lambda rows=rows: frozen_states(model, rows.token_ids, settings.from_layer, pad_id,
                                                                  max_batch_tokens),
                                  rows.token_ids, cache_dir=cache_dir, key=model_key, layer=settings.from_layer)
              for task, rows in tasks.items()}
    LOGGER.info("fine-tune: frozen layers run once in %.0fs", time.perf_counter() - started)
    targets = {}
    if anchor is not None:
        for task, rows in tasks.items():
            anchored = rows.anchored if rows.anchored is not None else np.zeros(len(rows.label_ids), dtype=bool)
            targets[task] = soft_targets(model, anchor, task, states[task], anchored, settings.from_layer)
            LOGGER.info("fine-tune: %s anchored to %s on %d rows (%.0fs)", task, anchor.heads.version,
                        int(anchored.sum()), time.perf_counter() - started)

    names = {name for name, _ in model.named_parameters()
             if any(name.startswith(f"encoder.layer.{index}.") for index in range(settings.from_layer, num_layers))}
    parameters = dict(model.named_parameters())
    original = {name: parameters[name].detach().clone() for name in names}
    tuned_runs, network_runs = [], []
    for seed in range(settings.seed, settings.seed + settings.seeds):
        for name in names:  # every run starts from the embedded weights, in tensors of its own
            parameters[name].data = original[name].clone()
        networks = _train_once(model, tasks, states, settings, seed, started, anchor, targets)
        tuned_runs.append({name: parameters[name].detach().clone() for name in names})
        network_runs.append(networks)
    tuned = {name: torch.stack([run[name] for run in tuned_runs]).mean(dim=0) for name in names}
    networks = network_runs[0]
    with torch.no_grad():
        for name, parameter in networks.named_parameters():
            parameter.copy_(torch.stack([dict(run.named_parameters())[name] for run in network_runs]).mean(dim=0))

    deltas = low_rank_deltas(original, tuned, settings.rank)
    for name, value in original.items():
        parameters[name].data = value
    apply_weight_deltas(model, deltas)
    heads = {task: networks[task].to_head(rows.head, settings) for task, rows in tasks.items()}
    return heads, deltas


def _train_once(model: BertModel, tasks: Mapping[str, TaskRows], states: Mapping[str, list],
                settings: FineTuneSettings, seed: int, started: float, anchor: Optional[Anchor] = None,
                targets: Optional[Mapping[str, np.ndarray]] = None) -> torch.nn.ModuleDict:
    """One fine-tune from ``model``'s current weights and the tasks' heads; trains
    ``model`` in place and returns the trained head networks. ``targets``: per
    task, the anchor's soft outputs for its anchored rows."""
    num_layers = model.config.num_hidden_layers
    torch.manual_seed(seed)
    shuffler = random.Random(seed)
    trained = [model.encoder.layer[index] for index in range(settings.from_layer, num_layers)]
    networks = torch.nn.ModuleDict({task: HeadNetwork(rows.head) for task, rows in tasks.items()})
    encoder_parameters = [parameter for layer in trained for parameter in layer.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in encoder_parameters:
        parameter.requires_grad_(True)
    optimiser = torch.optim.AdamW([
        {"params": encoder_parameters, "lr": settings.learning_rate, "weight_decay": settings.weight_decay},
        {"params": list(networks.parameters()), "lr": settings.head_learning_rate,
         "weight_decay": settings.weight_decay}])
    total_epochs = settings.total_epochs(tasks)
    visits = {task: rows_per_epoch(len(rows.label_ids), settings.epochs_of(task), total_epochs)
              for task, rows in tasks.items()}
    total_steps = sum(batch_count(count, settings.batch_size) for counts in visits.values() for count in counts)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_then_linear_decay(total_steps,
                                                                                     settings.warmup_fraction))
    streams = {task: RowStream(len(rows.label_ids)) for task, rows in tasks.items()}

    model.train()
    networks.train()
    try:
        for epoch in range(1, total_epochs + 1):
            total, count = 0.0, 0
            drawn = {task: streams[task].take(visits[task][epoch - 1], shuffler) for task in tasks}
            for task, batch in _batches(drawn, states, settings.batch_size, shuffler):
                rows = tasks[task]
                with autocast(settings.precision):
                    features = upper_features(model, [states[task][i] for i in batch], settings.from_layer,
                                              rows.head.layers)
                    logits = networks[task](features)
                losses = torch.nn.functional.cross_entropy(
                    logits.float(), torch.as_tensor(rows.label_ids[batch], dtype=torch.long), reduction="none")
                if anchor is not None and rows.anchored is not None and rows.anchored[batch].any():
                    losses = losses + anchor.weight * distillation_losses(
                        logits, torch.from_numpy(targets[task][batch]), torch.from_numpy(rows.anchored[batch]),
                        anchor.temperature)
                loss = (losses * torch.as_tensor(rows.weights[batch], dtype=torch.float32)).mean()
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(encoder_parameters, 1.0)
                optimiser.step()
                schedule.step()
                total, count = total + loss.item(), count + 1
            LOGGER.info("fine-tune seed %d, epoch %d/%d: mean loss %.4f (%.0fs)", seed, epoch, total_epochs,
                        total / max(count, 1), time.perf_counter() - started)
    finally:
        model.eval()
        networks.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    return networks


def soft_targets(model: torch.nn.Module, anchor: Anchor, task: str, states: Sequence[torch.Tensor],
                 anchored: np.ndarray, from_layer: int, batch_size: int = 64) -> np.ndarray:
    """The anchor's probabilities at ``anchor.temperature`` for the anchored rows
    (rows, labels); zeros for the others. ``model`` is left untouched."""
    head = anchor.heads.heads[task]
    targets = np.zeros((len(states), len(head.labels)), dtype=np.float32)
    rows = np.flatnonzero(anchored)
    if not len(rows):
        return targets
    teacher = copy.deepcopy(model)
    apply_weight_deltas(teacher, anchor.heads.encoder_deltas or {})
    network = HeadNetwork(head).eval()
    teacher.eval()
    order = sorted(rows, key=lambda index: states[index].shape[0])  # similar lengths pad little
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            logits = network(upper_features(teacher, [states[index] for index in batch], from_layer, head.layers))
            targets[batch] = torch.softmax(logits.float() / anchor.temperature, dim=-1).numpy()
    return targets


def warmup_then_linear_decay(total_steps: int, warmup_fraction: float):
    """The learning-rate factor per step: a linear rise over the warm-up, then a linear fall to 0."""
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def frozen_states(model: BertModel, token_ids: Sequence[Sequence[int]], layer: int, pad_id: int,
                  max_batch_tokens: int) -> list[torch.Tensor]:
    """Each text's hidden state after ``layer`` (0 = embeddings), unpadded, float16."""
    states: list[torch.Tensor] = [torch.empty(0)] * len(token_ids)
    with torch.inference_mode():
        for batch in length_sorted_batches(token_ids, max_batch_tokens):
            input_ids, mask = padded_batch([token_ids[index] for index in batch], pad_id)
            hidden = None
            for hidden in model.iter_hidden_states(input_ids, mask, layer):
                pass
            for row, index in enumerate(batch):
                states[index] = hidden[row, :len(token_ids[index])].to(torch.float16).clone()
    return states


def upper_features(model: BertModel, states: Sequence[torch.Tensor], from_layer: int,
                   layers: Sequence[int]) -> torch.Tensor:
    """Run the layers above ``from_layer`` on ``states`` and concatenate the
    masked means of ``layers``: the features a head reads, (batch, len(layers) * hidden)."""
    longest = max(state.shape[0] for state in states)
    hidden = torch.zeros(len(states), longest, states[0].shape[1])
    mask = torch.zeros(len(states), longest, dtype=torch.long)
    for row, state in enumerate(states):
        hidden[row, :state.shape[0]] = state.float()
        mask[row, :state.shape[0]] = 1
    attend = mask[:, None, None, :].bool()
    pooled = {from_layer: masked_mean(hidden, mask)} if from_layer in layers else {}
    for index in range(from_layer + 1, max(layers) + 1):
        hidden = model.encoder.layer[index - 1](hidden, attend)
        if index in layers:
            pooled[index] = masked_mean(hidden, mask)
    return torch.cat([pooled[index] for index in layers], dim=1)


class HeadNetwork(torch.nn.Module):
    """A :class:`Head` as a trainable module: fixed standardisation, its dense
    layers with ReLU between, dropout as ``train-heads`` fits MLPs."""

    def __init__(self, head: Head):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(head.mean, dtype=np.float32)))
        self.register_buffer("scale", torch.from_numpy(np.asarray(head.scale, dtype=np.float32)))
        self.dense = torch.nn.ModuleList()
        for weight, bias in zip(head.weights, head.biases):
            linear = torch.nn.Linear(*weight.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32).T))
                linear.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
            self.dense.append(linear)
        self.input_dropout = torch.nn.Dropout(0.2)
        self.hidden_dropout = torch.nn.Dropout(0.3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.input_dropout((features - self.mean) / self.scale)
        for index, linear in enumerate(self.dense):
            if index:
                hidden = self.hidden_dropout(torch.relu(hidden))
            hidden = linear(hidden)
        return hidden

    def to_head(self, head: Head, settings: FineTuneSettings) -> Head:
        return Head(**{**head.__dict__,
                       "weights": tuple(linear.weight.detach().numpy().T.copy() for linear in self.dense),
                       "biases": tuple(linear.bias.detach().numpy().copy() for linear in self.dense),
                       "metadata": {**head.metadata, "fine_tuned": settings.describe()}})


def rows_per_epoch(rows: int, epochs: int, total_epochs: int) -> list[int]:
    """How many of a task's row visits fall in each of ``total_epochs`` epochs
    when each of ``rows`` rows is seen ``epochs`` times: spread evenly."""
    visits = rows * epochs
    bounds = [round(epoch * visits / total_epochs) for epoch in range(total_epochs + 1)]
    return [end - start for start, end in zip(bounds, bounds[1:])]


def batch_count(rows: int, batch_size: int) -> int:
    """Batches :func:`_batches` cuts ``rows`` rows of one task into (per length-sorted chunk)."""
    chunk_rows = batch_size * LENGTH_SORT_CHUNK_BATCHES
    full, rest = divmod(rows, chunk_rows)
    return full * LENGTH_SORT_CHUNK_BATCHES + -(-rest // batch_size)


class RowStream:
    """A task's row indices in random order, pass after pass (each pass a new
    permutation), taken an epoch's share at a time: every row is seen once per
    pass, whatever the shares."""

    def __init__(self, rows: int):
        self.rows = rows
        self.pending: list[int] = []

    def take(self, count: int, shuffler: random.Random) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if not self.pending:
                self.pending = list(range(self.rows))
                shuffler.shuffle(self.pending)
            share = self.pending[:count - len(taken)]
            taken += share
            self.pending = self.pending[len(share):]
        return taken


def _batches(drawn: Mapping[str, list[int]], states: Mapping[str, list], batch_size: int,
             shuffler: random.Random) -> list[tuple[str, list[int]]]:
    """One epoch's single-task batches of similar lengths, tasks interleaved: ``drawn`` gives
    each task's rows for the epoch, in random order."""
    batches = []
    for task, order in drawn.items():
        chunk_rows = batch_size * LENGTH_SORT_CHUNK_BATCHES
        for start in range(0, len(order), chunk_rows):
            chunk = sorted(order[start:start + chunk_rows], key=lambda i: states[task][i].shape[0])
            batches += [(task, chunk[at:at + batch_size]) for at in range(0, len(chunk), batch_size)]
    shuffler.shuffle(batches)
    return batches
