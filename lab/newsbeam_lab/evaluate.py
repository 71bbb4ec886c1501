"""``newsbeam eval``: score the labeller on a labelled JSONL set.

Rows carry ``text`` (or ``headline`` + ``body``), ``label`` and ``lang``.
``--label_map`` turns the dataset's labels into newsbeam ids (a JSON path or
a shipped map name: ``sib200``, ``masakhanews``, ``xlmt``); rows whose label
maps to nothing are skipped and counted. Without a map, labels must already
be ids of the task.

``--restrict`` makes it closed-set classification over the dataset's own
label set: each row's prediction is the best-scoring label among the mapped
gold labels that occur for that row's language (MasakhaNEWS French, for
example, has no entertainment class, so it is never predicted there).

Macro-F1 averages per-label F1 over every label that occurs as gold or as a
prediction (scikit-learn's default), so predicting a label the data never
uses costs score.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from newsbeam_lab import DATA_ROOT_ENV, default_data_root
from newsbeam.labelling import DEFAULT_MAX_BATCH_TOKENS
from newsbeam.labelling.taxonomy import load_label_map
from newsbeam_lab.training import LabelledTexts, expand_pattern, read_labelled_jsonl

LOGGER = logging.getLogger(__name__)

TASKS = ("topic", "sentiment")
DEFAULT_BOOTSTRAP = 1000


def f1_scores(gold: Sequence[str], predicted: Sequence[str], labels: Optional[Sequence[str]] = None) -> dict:
    """Per-label precision/recall/F1/support and their macro average.

    ``labels`` defaults to every label occurring in ``gold`` or ``predicted``.
    """
    gold_array, predicted_array = np.asarray(gold, dtype=object), np.asarray(predicted, dtype=object)
    labels = sorted(set(gold) | set(predicted)) if labels is None else list(labels)
    per_label = {}
    for label in labels:
        true_positive = int(np.sum((gold_array == label) & (predicted_array == label)))
        predicted_count = int(np.sum(predicted_array == label))
        support = int(np.sum(gold_array == label))
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * true_positive / (predicted_count + support) if predicted_count + support else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    macro = float(np.mean([scores["f1"] for scores in per_label.values()])) if per_label else 0.0
    return {"per_label": per_label, "macro_f1": macro}


def bootstrap_macro_f1(gold: Sequence[str], predicted: Sequence[str], *, against: Optional[Sequence[str]] = None,
                       samples: int = DEFAULT_BOOTSTRAP, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 over resamples of the rows.

    With ``against`` (another model's predictions for the same rows) it is the
    interval of ``macro-F1(predicted) - macro-F1(against)``, both scored on the
    same resample each time (a paired bootstrap): the row-to-row luck both
    models share cancels, so a difference smaller than the single intervals'
    width can still be told from zero. Each macro-F1 is :func:`f1_scores`'s:
    over the labels present in that resample as gold or prediction.
    """
    if samples < 1 or not 0 < level < 1:
        raise ValueError(f"need samples >= 1 and 0 < level < 1, got {samples}, {level}")
    if not len(gold) or len(gold) != len(predicted) or (against is not None and len(against) != len(gold)):
        raise ValueError("gold and predictions must be non-empty and of the same length")
    labels = sorted(set(gold) | set(predicted) | set(against or ()))
    code = {label: index for index, label in enumerate(labels)}

    def codes(values: Sequence[str]) -> np.ndarray:
        return np.array([code[label] for label in values])

    gold_codes, predicted_codes = codes(gold), codes(predicted)
    against_codes = codes(against) if against is not None else None
    rng = np.random.default_rng(seed)
    # resamples in blocks of about 4M rows, so a large set does not need samples x rows of memory at once
    block = max(1, min(samples, 4_000_000 // len(gold)))
    scores = []
    for start in range(0, samples, block):
        picks = rng.integers(0, len(gold), size=(min(block, samples - start), len(gold)))
        block_scores = _resampled_macro_f1(gold_codes[picks], predicted_codes[picks], len(labels))
        if against_codes is not None:
            block_scores -= _resampled_macro_f1(gold_codes[picks], against_codes[picks], len(labels))
        scores.append(block_scores)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.concatenate(scores), [tail, 100 - tail])
    return float(low), float(high)


def _resampled_macro_f1(gold: np.ndarray, predicted: np.ndarray, num_labels: int) -> np.ndarray:
    """Macro-F1 of each row of (resamples, rows) label codes, as :func:`f1_scores` computes it."""
    width = num_labels + 1  # one more bucket per resample: "no label", for rows that are not a hit
    offsets = np.arange(gold.shape[0])[:, None] * width

    def per_label(values: np.ndarray) -> np.ndarray:
        counts = np.bincount((offsets + values).ravel(), minlength=gold.shape[0] * width)
        return counts.reshape(gold.shape[0], width)[:, :-1]

    support, predicted_count = per_label(gold), per_label(predicted)
    true_positive = per_label(np.where(gold == predicted, gold, num_labels))
    present = (support + predicted_count) > 0
    f1 = np.where(present, 2 * true_positive / np.maximum(support + predicted_count, 1), 0.0)
    return f1.sum(axis=1) / present.sum(axis=1)


def classification_report(gold: Sequence[str], predicted: Sequence[str], languages: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class scores, per-language scores and the confusion matrix."""
    if not (len(gold) == len(predicted) == len(languages)):
        raise ValueError(f"gold, predicted and languages differ in length: "
                         f"{len(gold)}, {len(predicted)}, {len(languages)}")
    gold_array, predicted_array = np.asarray(gold, dtype=object), np.asarray(predicted, dtype=object)
    overall = f1_scores(gold, predicted)
    by_language: dict[str, list[int]] = defaultdict(list)
    for index, language in enumerate(languages):
        by_language[language].append(index)
    per_language = {}
    for language in sorted(by_language):
        rows = by_language[language]
        language_gold = [gold[i] for i in rows]
        language_predicted = [predicted[i] for i in rows]
        per_language[language] = {
            "n": len(rows),
            "accuracy": float(np.mean(gold_array[rows] == predicted_array[rows])),
            "macro_f1": f1_scores(language_gold, language_predicted)["macro_f1"],
        }
    labels = sorted(set(gold) | set(predicted))
    position = {label: index for index, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for gold_label, predicted_label in zip(gold, predicted):
        matrix[position[gold_label], position[predicted_label]] += 1
    return {
        "n": len(gold),
        "accuracy": float(np.mean(gold_array == predicted_array)) if len(gold) else 0.0,
        "macro_f1": overall["macro_f1"],
        "per_class": overall["per_label"],
        "per_language": per_language,
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    }


def allowed_labels_by_language(gold: Sequence[str], languages: Sequence[str]) -> dict[str, set[str]]:
    """The closed label set of each language: the gold labels it has."""
    allowed: dict[str, set[str]] = defaultdict(set)
    for label, language in zip(gold, languages):
        allowed[language].add(label)
    return dict(allowed)


def choose_labels(label_ids: Sequence[str], probabilities: np.ndarray, languages: Sequence[str],
                  allowed: Optional[dict[str, set[str]]] = None) -> list[str]:
    """Best label per row, optionally only among ``allowed[language]``."""
    if allowed is None:
        return [label_ids[i] for i in np.argmax(probabilities, axis=1)]
    choices = []
    for row, language in enumerate(languages):
        mask = np.array([label in allowed[language] for label in label_ids])
        scores = np.where(mask, probabilities[row], -np.inf)
        choices.append(label_ids[int(np.argmax(scores))])
    return choices


def read_eval_rows(patterns: Sequence[str], label_map: Optional[str], task_labels: Sequence[str]) -> LabelledTexts:
    """Rows of every file matching ``patterns``, labels mapped; unusable rows counted in ``skipped``."""
    mapping = load_label_map(label_map) if label_map else None
    rows = LabelledTexts()
    for pattern in patterns:
        for path in expand_pattern(pattern):
            rows.extend(read_labelled_jsonl(path, mapping, task_labels, source=path))
    return rows


def predict_rows(labeller, task: str, rows: LabelledTexts, restrict: bool = False) -> tuple[list[str], float, int]:
    """The label ``labeller`` predicts for each row, the seconds it took and the tokens it read."""
    started = time.perf_counter()
    token_ids = labeller.token_ids(rows.texts)
    label_ids, probabilities = labeller.task_probabilities(task, token_ids)
    seconds = time.perf_counter() - started
    allowed = allowed_labels_by_language(rows.labels, rows.languages) if restrict else None
    predicted = choose_labels(label_ids, probabilities, rows.languages, allowed)
    return predicted, seconds, int(sum(len(ids) for ids in token_ids))


def evaluate_labeller(labeller, task: str, rows: LabelledTexts, restrict: bool = False,
                      bootstrap: int = 0) -> dict:
    """The classification report of ``labeller`` on ``rows``, with timing; with
    ``bootstrap`` resamples, also the 95% interval of macro-F1."""
    predicted, seconds, tokens = predict_rows(labeller, task, rows, restrict)
    report = classification_report(rows.labels, predicted, rows.languages)
    report.update({
        "task": task,
        "skipped": rows.skipped,
        "restricted": restrict,
        "model": labeller.model_id,
        "seconds": round(seconds, 2),
        "texts_per_second": round(len(rows.texts) / seconds, 1) if seconds > 0 else None,
        "tokens": tokens,
    })
    if bootstrap:
        report["macro_f1_interval"] = list(bootstrap_macro_f1(rows.labels, predicted, samples=bootstrap))
    return report


def format_report(report: dict) -> str:
    """The report as aligned plain text."""
    lines = [
        f"task {report['task']}  model {report['model']}  restricted {report['restricted']}",
        f"n {report['n']}  skipped {report['skipped']}  accuracy {report['accuracy']:.4f}  "
        f"macro-F1 {report['macro_f1']:.4f}  ({report['seconds']}s, {report['texts_per_second']} texts/s)",
        "",
        f"{'label':<36}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    if "macro_f1_interval" in report:
        low, high = report["macro_f1_interval"]
        lines.insert(2, f"macro-F1 95% interval {low:.4f} to {high:.4f} (bootstrap over rows)")
    for label, scores in report["per_class"].items():
        lines.append(f"{label:<36}{scores['precision']:>10.4f}{scores['recall']:>10.4f}"
                     f"{scores['f1']:>10.4f}{scores['support']:>9d}")
    lines += ["", f"{'language':<12}{'n':>7}{'accuracy':>10}{'macro-F1':>10}"]
    for language, scores in report["per_language"].items():
        lines.append(f"{language:<12}{scores['n']:>7d}{scores['accuracy']:>10.4f}{scores['macro_f1']:>10.4f}")
    labels = report["confusion"]["labels"]
    short = [label[:8] for label in labels]
    lines += ["", "confusion (rows gold, columns predicted)", " " * 36 + "".join(f"{name:>9}" for name in short)]
    for label, counts in zip(labels, report["confusion"]["matrix"]):
        lines.append(f"{label:<36}" + "".join(f"{count:>9d}" for count in counts))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eval`` options."""
    parser.add_argument("--task", choices=TASKS, help="Which labels to score (with --data).")
    parser.add_argument("--data", nargs="+", metavar="FILE.jsonl",
                        help="Labelled JSONL file(s) or glob(s): text|headline+body, label, lang.")
    parser.add_argument("--dev_report", action="store_true",
                        help="Instead of --task/--data: the README's quality table, macro-F1 per language on the "
                             "XLM-T val, SIB-200 dev and MasakhaNEWS dev splits under --data_root, with the targets.")
    parser.add_argument("--data_root", default=default_data_root(),
                        help=f"Where --dev_report finds the public splits (default: ${DATA_ROOT_ENV}).")
    parser.add_argument("--label_map", default=None,
                        help="Dataset label -> newsbeam id map: JSON path or shipped name (sib200, masakhanews, xlmt).")
    parser.add_argument("--restrict", action="store_true",
                        help="Closed-set: predict only among the mapped gold labels of each row's language.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="Also give macro-F1's 95%% interval from N resamples of the rows (1000 is plenty): "
                             "dev sets of a few hundred rows move by 2-3 points on the luck of the draw.")
    parser.add_argument("--against", default=None, metavar="HEADS",
                        help="With --dev_report: also score this other heads folder on the same rows and give the "
                             "difference with its paired-bootstrap 95%% interval (--bootstrap resamples, else "
                             f"{DEFAULT_BOOTSTRAP}). How to tell a retrain's gain from noise.")
    parser.add_argument("--encoder", default=None, help="Encoder (default: embedded multilingual-e5-small).")
    parser.add_argument("--heads", default=None, help="Trained heads folder (default: shipped heads).")
    parser.add_argument("--taxonomy", default=None, help="Topic taxonomy YAML (default: IPTC top level).")
    parser.add_argument("--topic_model", default=None, help="Text-classification checkpoint for topics.")
    parser.add_argument("--sentiment_model", default=None, help="Text-classification checkpoint for sentiment.")
    parser.add_argument("--model_label_map", default=None,
                        help="JSON mapping the checkpoint's labels onto newsbeam ids (with --*_model).")
    parser.add_argument("--max_tokens", type=int, default=128, help="Token budget per text (as newsbeam run).")
    parser.add_argument("--max_batch_tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS, help="Token budget per encoder batch.")
    parser.add_argument("--torch_threads", type=int, default=None)
    parser.add_argument("--model_cache", default=None, help="Where the embedded model is built.")


def _load_labeller(args: argparse.Namespace, heads: Optional[str], **classifiers):
    """A labeller with ``heads`` and the encoder, taxonomy and budgets ``args`` give."""
    from newsbeam.labelling.labeller import load_labeller

    return load_labeller(encoder=args.encoder, heads=heads, taxonomy=args.taxonomy, max_tokens=args.max_tokens,
                         max_batch_tokens=args.max_batch_tokens, torch_threads=args.torch_threads,
                         cache_dir=args.model_cache, **classifiers)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report; returns a process exit status (1 when no row or split was usable, 2 for
    a bad combination of options)."""
    if (args.task or args.data) if args.dev_report else not (args.task and args.data):
        print("newsbeam eval: give either --dev_report or both --task and --data", file=sys.stderr)
        return 2
    if (args.against and not args.dev_report) or args.bootstrap < 0:
        print("newsbeam eval: --against goes with --dev_report, and --bootstrap is a count >= 0", file=sys.stderr)
        return 2
    if args.dev_report:
        from newsbeam_lab.dev_report import check_splits

        if not args.data_root:
            print(f"newsbeam eval: --dev_report needs --data_root (or ${DATA_ROOT_ENV})", file=sys.stderr)
            return 2
        try:  # before the model loads, so a wrong --data_root fails at once
            check_splits(args.data_root)
        except FileNotFoundError as error:
            print(f"newsbeam eval: {error}", file=sys.stderr)
            return 1
    labeller = _load_labeller(args, args.heads, topic_model=args.topic_model, sentiment_model=args.sentiment_model,
                              label_map=args.model_label_map)
    if args.dev_report:
        from newsbeam_lab.dev_report import dev_report, format_dev_report

        against = _load_labeller(args, args.against) if args.against else None
        report = dev_report(labeller, args.data_root, bootstrap=args.bootstrap, against=against)
        if against is not None:  # two retrains of one recipe share a model id; the folder tells them apart
            report["against_heads"] = args.against
        print(json.dumps(report, ensure_ascii=False) if args.json else format_dev_report(report))
        return 0
    rows = read_eval_rows(args.data, args.label_map, labeller.taxonomy.ids_for(args.task))
    if not rows.texts:
        print(f"no usable rows in {args.data} ({rows.skipped} skipped)", file=sys.stderr)
        return 1
    report = evaluate_labeller(labeller, args.task, rows, restrict=args.restrict, bootstrap=args.bootstrap)
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 0
