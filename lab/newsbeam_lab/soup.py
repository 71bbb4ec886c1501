"""A uniform soup of fine-tuned head sets already trained: one encoder and one
head set whose weights are the average of theirs (Wortsman et al. 2022).

Two fine-tunes of one recipe that differ only in their seed differ by up to
ten points of macro-F1 on a dev share of 182 articles
(docs/research/labels-real-news.md); averaging their weights keeps one
model's inference cost and averages that noise out. ``train-heads
--fine_tune_seeds N`` builds the same thing while it trains, at N times the
training time; this builds it from head sets that exist, so a second seed
trained to measure the spread is not thrown away.

What is averaged: each head's standardisation and dense layers, and the
encoder's weight deltas (each 2-D delta rebuilt from its stored factors,
averaged, then cut back to the sets' rank by truncated SVD, the closest in
Frobenius norm). What is measured again under the averaged encoder, as
``train-heads`` measures it: each head's softmax temperature on the recipe's
held-out rows, the int8 calibration peaks on the recipe's training texts, and
the embedding centre.

    python -m newsbeam_lab.soup --heads A --heads B --output DIR --version NAME [--data_root ../shared/data]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from newsbeam.labelling.adaptation import DOWN, UP, delta_parameters
from newsbeam.labelling.heads import Head, HeadSet, load_heads
from newsbeam_lab.deltas import low_rank_deltas


def average_heads(heads: Sequence[Head]) -> Head:
    """One head whose arrays are the mean of ``heads``' (same task, labels, layers and shapes);
    its temperature is their mean until it is fitted again."""
    first = heads[0]
    for head in heads[1:]:
        if (head.task, head.labels, head.layers) != (first.task, first.labels, first.layers) or \
                [w.shape for w in head.weights] != [w.shape for w in first.weights]:
            raise ValueError(f"{first.task} heads differ in labels, layers or shape; only fine-tunes of one "
                             "recipe can be averaged")

    def mean(arrays) -> np.ndarray:
        return np.mean([np.asarray(array, dtype=np.float32) for array in arrays], axis=0)

    return Head(task=first.task, labels=first.labels, layers=first.layers,
                mean=mean(head.mean for head in heads), scale=mean(head.scale for head in heads),
                weights=tuple(mean(head.weights[i] for head in heads) for i in range(len(first.weights))),
                biases=tuple(mean(head.biases[i] for head in heads) for i in range(len(first.biases))),
                metadata=dict(first.metadata),
                temperature=float(np.mean([head.temperature for head in heads])))


def full_delta(deltas, name: str) -> torch.Tensor:
    """The change to parameter ``name``: whole, or rebuilt from its up @ down factors."""
    if name in deltas:
        return torch.from_numpy(np.asarray(deltas[name], dtype=np.float32))
    return (torch.from_numpy(np.asarray(deltas[name + UP], dtype=np.float32))
            @ torch.from_numpy(np.asarray(deltas[name + DOWN], dtype=np.float32)))


def average_deltas(sets: Sequence[dict], rank: int) -> dict[str, np.ndarray]:
    """The mean of the sets' encoder deltas, 2-D ones as rank-``rank`` factors."""
    names = delta_parameters(sets[0])
    if any(delta_parameters(deltas) != names for deltas in sets[1:]):
        raise ValueError("the head sets' encoder deltas change different parameters")
    averaged = {name: torch.stack([full_delta(deltas, name) for deltas in sets]).mean(dim=0) for name in names}
    zeros = {name: torch.zeros_like(value) for name, value in averaged.items()}
    return low_rank_deltas(zeros, averaged, rank)


def soup(head_sets: Sequence[HeadSet], version: str) -> HeadSet:
    """The uniform soup of ``head_sets`` (fine-tunes of one recipe on one encoder and taxonomy).
    Temperatures are the mean of theirs and the int8 peaks and centre are left out: they belong
    to one encoder, and :func:`measure` sets them under the averaged one."""
    if len(head_sets) < 2:
        raise ValueError("a soup needs at least two head sets")
    first = head_sets[0]
    for head_set in head_sets[1:]:
        if (head_set.encoder_id, head_set.max_tokens, head_set.prefix, head_set.taxonomy_digest,
                sorted(head_set.heads)) != (first.encoder_id, first.max_tokens, first.prefix,
                                            first.taxonomy_digest, sorted(first.heads)):
            raise ValueError(f"{head_set.version} and {first.version} differ in encoder, token budget, taxonomy "
                             "or tasks; only fine-tunes of one recipe can be averaged")
    if any(head_set.encoder_deltas is None for head_set in head_sets):
        raise ValueError("every head set of a soup must carry its encoder deltas (a fine-tune)")
    rank = int(first.fine_tuning.get("rank") or 0)
    if rank < 1:
        raise ValueError(f"{first.version} does not record its deltas' rank")
    heads = {task: average_heads([head_set.heads[task] for head_set in head_sets]) for task in first.heads}
    fine_tuning = {**first.fine_tuning, "seeds": len(head_sets),
                   "soup_of": [{"version": head_set.version, "seed": head_set.fine_tuning.get("seed")}
                               for head_set in head_sets]}
    return HeadSet(version=version, encoder_id=first.encoder_id, max_tokens=first.max_tokens, heads=heads,
                   prefix=first.prefix, taxonomy_digest=first.taxonomy_digest,
                   encoder_deltas=average_deltas([head_set.encoder_deltas for head_set in head_sets], rank),
                   fine_tuning=fine_tuning)


def measure(folder: Path, training: dict[str, Sequence[str]], held_out: dict[str, Sequence[str]],
            data_root: Optional[str], *, encoder: Optional[str] = None, model_cache: Optional[str] = None) -> HeadSet:
    """Fit the temperatures on ``held_out`` (task -> data specs) and measure the int8 peaks and
    the embedding centre on ``training``'s texts, under the encoder of the soup in ``folder``
    (``encoder``: its address, None for the embedded one), and rewrite the soup with them."""
    from newsbeam.labelling.encoder import CALIBRATION_MAX_TOKENS
    from newsbeam.labelling.labeller import load_labeller
    from newsbeam_lab.article_windows import DEFAULT_ARTICLE_WINDOWS, DEFAULT_WINDOW_TOKENS, ArticleWindows
    from newsbeam_lab.embedding_centre import with_centre
    from newsbeam_lab.heads_writer import save_heads
    from newsbeam_lab.training import INT8_CALIBRATION_PER_FILE, calibrated, int8_calibration_texts, int8_peaks
    from newsbeam_lab.training_data import read_sources

    head_set = load_heads(str(folder))
    tuned = load_labeller(encoder=encoder, heads=str(folder), cache_dir=model_cache).encoder
    heads, calibration = {}, []
    for task, head in head_set.heads.items():
        used = head.metadata.get("article_windows", {})  # the windows the fine-tunes read, for the same peaks
        windows = ArticleWindows(tuned.tokenizer, used.get("per_article", DEFAULT_ARTICLE_WINDOWS),
                                 used.get("tokens", DEFAULT_WINDOW_TOKENS))
        calibration += int8_calibration_texts(read_sources(training[task], head.labels, windows, task=task,
                                                           data_root=data_root))
        specs = held_out.get(task) or []
        heads[task] = calibrated(tuned, head, read_sources(specs, head.labels, task=task, data_root=data_root),
                                 specs, head_set.max_tokens) if specs else head
    head_set = dataclasses.replace(head_set, heads=heads, int8_peaks=int8_peaks(tuned, calibration),
                                   int8_calibration={"texts": len(calibration), "per_file": INT8_CALIBRATION_PER_FILE,
                                                     "max_tokens": CALIBRATION_MAX_TOKENS})
    # the centre under the encoder already loaded, on the topic rows as train-heads measures it
    topic_texts = read_sources(training["topic"], head_set.heads["topic"].labels, task="topic",
                               data_root=data_root).texts
    head_set = with_centre(head_set, tuned, topic_texts, training["topic"])
    save_heads(head_set, folder)
    return head_set


def main(argv: Optional[list[str]] = None) -> int:
    from newsbeam_lab import DATA_ROOT_ENV, default_data_root
    from newsbeam_lab.heads_writer import save_heads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", action="append", required=True, help="A head set to average (twice or more).")
    parser.add_argument("--output", required=True, help="Folder to write the soup to.")
    parser.add_argument("--version", required=True, help="Head version recorded in the model column.")
    parser.add_argument("--data_root", default=default_data_root(), help=f"Shared data root (or ${DATA_ROOT_ENV}).")
    parser.add_argument("--model_cache", default=None, help="Where the embedded model is built.")
    args = parser.parse_args(argv)
    if args.data_root is None:
        print(f"soup: the recipe's rows are read from --data_root or ${DATA_ROOT_ENV}", file=sys.stderr)
        return 2
    try:
        head_set = soup([load_heads(folder) for folder in args.heads], args.version)
    except (OSError, ValueError, KeyError) as error:
        print(f"soup: {error}", file=sys.stderr)
        return 2
    from newsbeam_lab.training import DEFAULT_TEMPERATURE_RECIPE
    from newsbeam_lab.training_data import default_data

    folder = save_heads(head_set, args.output)
    head_set = measure(folder, default_data(args.data_root), default_data(args.data_root, DEFAULT_TEMPERATURE_RECIPE),
                       args.data_root, model_cache=args.model_cache)
    print(json.dumps({"output": str(folder), "version": head_set.version, "soup_of": args.heads,
                      "temperatures": {task: head.temperature for task, head in head_set.heads.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
