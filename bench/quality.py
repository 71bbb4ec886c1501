"""Label quality on the shared dev/val sets, to compare fp32 with int8.

XLM-T val (Arabic, English, French) for sentiment; SIB-200 dev (the corpus's
five languages) for topics, mapped onto newsbeam ids by the shipped label
maps. Absent when ../shared/data is absent (a user's fresh clone).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SENTIMENT_SETS = {lang: f"sentiment/xlmt/{name}/val.jsonl"
                  for lang, name in (("ar", "arabic"), ("en", "english"), ("fr", "french"))}
TOPIC_SETS = {lang: f"topic/sib200/{code}/dev.jsonl"
              for lang, code in (("ar", "arb_Arab"), ("en", "eng_Latn"), ("fr", "fra_Latn"),
                                 ("ru", "rus_Cyrl"), ("zh", "zho_Hans"))}


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over the gold classes (a prediction outside them is a miss)."""
    classes = sorted(set(gold))
    scores = []
    for label in classes:
        true_positive = sum(1 for g, p in zip(gold, predicted) if g == label and p == label)
        false_positive = sum(1 for g, p in zip(gold, predicted) if g != label and p == label)
        false_negative = sum(1 for g, p in zip(gold, predicted) if g == label and p != label)
        denominator = 2 * true_positive + false_positive + false_negative
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def load_dev_sets(data_root: Path = SHARED_DATA, per_set: Optional[int] = None) -> Optional[dict]:
    """``{"sentiment": (texts, gold), "topic": (texts, gold)}``, or None without the data."""
    from newsbeam_lab.training_data import read_labelled_jsonl

    from newsbeam.labelling.taxonomy import load_label_map

    if not data_root.is_dir():
        return None
    sets = {}
    for task, files, map_name in (("sentiment", SENTIMENT_SETS, "xlmt"), ("topic", TOPIC_SETS, "sib200")):
        label_map = load_label_map(map_name)
        texts, gold = [], []
        for relative in files.values():
            rows = read_labelled_jsonl(str(data_root / relative), label_map)
            texts += rows.texts[:per_set]
            gold += rows.labels[:per_set]
        sets[task] = (texts, gold)
    return sets


def dev_predictions(labeller, dev_sets: dict) -> dict[str, list[str]]:
    """Each task's predicted labels for its dev texts (one encoder pass per text)."""
    result = {}
    for task, (texts, _) in dev_sets.items():
        labels = labeller.label_token_ids(labeller.token_ids(list(texts)))
        result[task] = [getattr(label, task) for label in labels]
    return result


def compare_predictions(dev_sets: dict, fp32: dict[str, list[str]], int8: dict[str, list[str]]) -> dict:
    """Macro-F1 of both per task, the change in points, and how often they agree."""
    result = {}
    for task, (texts, gold) in dev_sets.items():
        fp32_f1, int8_f1 = macro_f1(gold, fp32[task]), macro_f1(gold, int8[task])
        result[task] = {
            "texts": len(texts),
            "fp32_macro_f1": round(fp32_f1, 4),
            "int8_macro_f1": round(int8_f1, 4),
            "delta_points": round(100 * (int8_f1 - fp32_f1), 2),
            "agreement": round(sum(a == b for a, b in zip(fp32[task], int8[task])) / len(texts), 4)
            if texts else None,
        }
    return result
