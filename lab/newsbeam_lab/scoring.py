"""Scoring labels against gold rows: per-label F1, macro-F1 and its bootstrap
interval, per-language reports, and predicting a labeller's rows. Used by
``newsbeam eval`` (:mod:`newsbeam_lab.evaluate`) and the dev report."""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

from newsbeam.labelling.taxonomy import load_label_map
from newsbeam_lab import shared_labels
from newsbeam_lab.training_data import LabelledTexts, expand_pattern, read_labelled_jsonl

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
    _check_bootstrap(samples, level, gold, predicted, *([] if against is None else [against]))
    labels = sorted(set(gold) | set(predicted) | set(against or ()))
    code = {label: index for index, label in enumerate(labels)}

    def codes(values: Sequence[str]) -> np.ndarray:
        return np.array([code[label] for label in values])

    gold_codes, predicted_codes = codes(gold), codes(predicted)
    against_codes = codes(against) if against is not None else None

    def resampled(picks: np.ndarray) -> np.ndarray:
        scores = _resampled_macro_f1(gold_codes[picks], predicted_codes[picks], len(labels))
        if against_codes is not None:
            scores -= _resampled_macro_f1(gold_codes[picks], against_codes[picks], len(labels))
        return scores

    return _percentile_interval(resampled, len(gold), samples, level, seed)


def bootstrap_accuracy_difference(gold: Sequence[str], predicted: Sequence[str], against: Sequence[str], *,
                                  samples: int = DEFAULT_BOOTSTRAP, level: float = 0.95,
                                  seed: int = 0) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``accuracy(predicted) - accuracy(against)``.

    The second reading of a comparison next to :func:`bootstrap_macro_f1`'s:
    macro-F1 averages every subject alike, so on a dev share where some
    subjects have two or three rows, a couple of articles swing it by a tenth
    (heads-v22 on the MasakhaNEWS share); accuracy counts each article once."""
    _check_bootstrap(samples, level, gold, predicted, against)
    gold_array = np.asarray(gold, dtype=object)
    # +1 where only this model is right, -1 where only the other is: the rows both get right
    # or wrong cancel in every resample, which is what pairs the comparison
    gain = ((np.asarray(predicted, dtype=object) == gold_array).astype(np.float64)
            - (np.asarray(against, dtype=object) == gold_array))
    return _percentile_interval(lambda picks: gain[picks].mean(axis=1), len(gold), samples, level, seed)


def _check_bootstrap(samples: int, level: float, gold: Sequence[str], *predictions: Sequence[str]) -> None:
    if samples < 1 or not 0 < level < 1:
        raise ValueError(f"need samples >= 1 and 0 < level < 1, got {samples}, {level}")
    if not len(gold) or any(len(values) != len(gold) for values in predictions):
        raise ValueError("gold and predictions must be non-empty and of the same length")


def _percentile_interval(resampled: Callable[[np.ndarray], np.ndarray], rows: int, samples: int, level: float,
                         seed: int) -> tuple[float, float]:
    """Percentile interval of ``resampled``'s per-resample scores, given (resamples, rows) row picks."""
    rng = np.random.default_rng(seed)
    # resamples in blocks of about 4M rows, so a large set does not need samples x rows of memory at once
    block = max(1, min(samples, 4_000_000 // rows))
    scores = [resampled(rng.integers(0, rows, size=(min(block, samples - start), rows)))
              for start in range(0, samples, block)]
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


def read_eval_rows(patterns: Sequence[str], label_map: Optional[str], task_labels: Sequence[str], *,
                   task: Optional[str] = None, data_root: Optional[str] = None,
                   split: str = shared_labels.DEV, confidence: Optional[str] = None) -> LabelledTexts:
    """Rows of every file matching ``patterns``, labels mapped; unusable rows counted in ``skipped``.
    References to shared rows count only when they are in ``split``: the dev split, which training
    never reads, or a part of it (``feed_entries.UNSEEN``); with ``confidence``, only rows labelled
    with it."""
    mapping = load_label_map(label_map) if label_map else None
    rows = LabelledTexts()
    for pattern in patterns:
        for path in expand_pattern(pattern):
            rows.extend(read_labelled_jsonl(path, mapping, task_labels, source=path, task=task, data_root=data_root,
                                            split=split, confidence=confidence))
    return rows


def predict_rows(labeller, task: str, rows: LabelledTexts, restrict: bool = False) -> tuple[list[str], float, int]:
    """The label ``labeller`` predicts for each row, the seconds it took and the tokens it read."""
    started = time.perf_counter()
    token_ids = labeller.token_ids(rows.texts)
    evidence = rows.evidence if any(rows.evidence) else None
    label_ids, probabilities = labeller.task_probabilities(task, token_ids, evidence)
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


