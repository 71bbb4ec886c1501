"""Keep the closed sets where an earlier head set had them while a fine-tune learns news.

Every candidate trained on real news since heads-v4 lost one or two points on
some closed set (the XLM-T tweets, MasakhaNEWS's coarse labels) and which one
moved from run to run (docs/research/labels-real-news.md): the news rows pull
the encoder and the heads away from what the closed sets reward, and no source
weight held all of them at once. "Learning without forgetting" (Li & Hoiem
2016) answers that with distillation: on the rows of the closed sets, the
fine-tune is also trained to give the earlier heads' soft outputs (their
probabilities at a raised temperature, Hinton et al. 2015), so what it already
did well there is kept, while the news rows teach it the rest.

The anchor is a saved head set on the same encoder whose deltas change only
layers the fine-tune trains (the states below them are shared): its outputs are
computed once, before training, on the cached frozen states.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from newsbeam.flags import POSITIVE
from newsbeam.labelling.adaptation import delta_parameters
from newsbeam.labelling.heads import HeadSet

DEFAULT_ANCHOR_SOURCES = ("xlmt", "sib200", "masakha_coarse")
DEFAULT_ANCHOR_WEIGHT = 1.0
DEFAULT_ANCHOR_TEMPERATURE = 2.0
LAYER_OF_PARAMETER = re.compile(r"^encoder\.layer\.(\d+)\.")


@dataclass(frozen=True)
class Anchor:
    """The head set to stay close to, on which rows, and how hard."""

    heads: HeadSet
    sources: tuple[str, ...] = DEFAULT_ANCHOR_SOURCES  # a row is anchored when its source spec contains one
    weight: float = DEFAULT_ANCHOR_WEIGHT  # of the distillation term next to the label's cross-entropy
    temperature: float = DEFAULT_ANCHOR_TEMPERATURE  # both sides' logits are divided by it

    def __post_init__(self):
        if not (self.weight > 0 and self.temperature > 0):
            raise ValueError(f"anchor weight and temperature must be positive, got {self.weight}, {self.temperature}")
        if not self.sources:
            raise ValueError("an anchor needs at least one source to anchor")

    def anchored(self, sources: Sequence[str]) -> np.ndarray:
        """Which rows (by their source spec) are anchored."""
        return np.array([any(key in source for key in self.sources) for source in sources], dtype=bool)

    def describe(self, rows: int) -> dict:
        return {"heads": self.heads.version, "sources": list(self.sources), "weight": self.weight,
                "temperature": self.temperature, "rows": rows}

    def check(self, encoder_id: str, labels: Mapping[str, Sequence[str]], from_layer: int) -> None:
        """Refuse, before any training, an anchor whose outputs could not be compared."""
        if self.heads.encoder_id != encoder_id:
            raise ValueError(f"the anchor heads {self.heads.version} were trained on {self.heads.encoder_id}, "
                             f"not {encoder_id}")
        for task, task_labels in labels.items():
            head = self.heads.heads.get(task)
            if head is None or tuple(head.labels) != tuple(task_labels):
                raise ValueError(f"the anchor heads {self.heads.version} have no {task} head with the same labels")
            if min(head.layers) < from_layer:
                raise ValueError(f"the anchor's {task} head reads layer {min(head.layers)}, below the first "
                                 f"trained layer's input {from_layer}")
        below = sorted({name for name in delta_parameters(self.heads.encoder_deltas or {})
                        if not (match := LAYER_OF_PARAMETER.match(name)) or int(match.group(1)) < from_layer})
        if below:
            raise ValueError(f"the anchor heads {self.heads.version} change {below[0]}, below the trained layers; "
                             "their frozen states would differ")


def distillation_losses(logits: torch.Tensor, targets: torch.Tensor, anchored: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """Per row, T² · KL(targets || softmax(logits / T)) where anchored, else 0.

    T² keeps the term's gradients the size of the cross-entropy's whatever T
    (Hinton et al. 2015)."""
    log_student = torch.log_softmax(logits.float() / temperature, dim=-1)
    log_targets = torch.log(targets.clamp_min(1e-12))
    divergence = (targets * (log_targets - log_student)).sum(dim=-1) * temperature ** 2
    return torch.where(anchored, divergence, torch.zeros_like(divergence))


def _sources(value: str) -> tuple[str, ...]:
    sources = tuple(part.strip() for part in value.split(",") if part.strip())
    if not sources:
        raise argparse.ArgumentTypeError("expected one or more source names, comma-separated")
    return sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train-heads`` options of the anchor."""
    parser.add_argument("--anchor_heads", default=None, metavar="DIR",
                        help="Distil this head set's outputs on the anchored rows while fine-tuning (learning "
                             "without forgetting), e.g. the shipped heads, so the closed sets keep their scores.")
    parser.add_argument("--anchor_sources", type=_sources, default=DEFAULT_ANCHOR_SOURCES, metavar="NAME[,...]",
                        help="Rows whose source spec contains one of these are anchored (default: %(default)s).")
    parser.add_argument("--anchor_weight", type=POSITIVE, default=DEFAULT_ANCHOR_WEIGHT,
                        help="Weight of the distillation term next to the cross-entropy (default: %(default)s).")
    parser.add_argument("--anchor_temperature", type=POSITIVE, default=DEFAULT_ANCHOR_TEMPERATURE,
                        help="Softmax temperature of the distilled outputs (default: %(default)s).")


def anchor_from(args: argparse.Namespace) -> Optional[Anchor]:
    from newsbeam.labelling.heads import load_heads

    if args.anchor_heads is None:
        return None
    return Anchor(heads=load_heads(args.anchor_heads), sources=args.anchor_sources, weight=args.anchor_weight,
                  temperature=args.anchor_temperature)
