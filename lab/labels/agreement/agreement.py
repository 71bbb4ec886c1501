"""Agreement of a blind second reading with the stored labels (docs/research/labels-real-news.md).

Usage: python lab/labels/agreement/agreement.py  -> JSON: raw agreement, Cohen's kappa,
the agreement where both readers were sure, the commonest disagreements, per-label F1
of one reader against the other.
"""
import collections
import glob
import json
from pathlib import Path

LABELS = Path(__file__).resolve().parents[1]


def read(pattern: str) -> dict:
    rows = {}
    for path in sorted(glob.glob(str(LABELS / pattern))):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


def kappa(pairs: list) -> tuple[float, float]:
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = collections.Counter(a for a, _ in pairs), collections.Counter(b for _, b in pairs)
    expected = sum(first[k] * second[k] for k in set(first) | set(second)) / n / n
    return observed, (observed - expected) / (1 - expected)


def report(first: dict, second: dict) -> dict:
    out = {"rows": len(second)}
    for task in ("topic", "sentiment"):
        pairs = [(first[i][task], row[task]) for i, row in second.items()]
        sure = [(first[i][task], row[task]) for i, row in second.items()
                if first[i]["confidence"] == row["confidence"] == "high"]
        observed, k = kappa(pairs)
        per_label = {}
        for label in sorted({a for a, _ in pairs} | {b for _, b in pairs}):
            both = sum(a == b == label for a, b in pairs)
            total = sum(a == label for a, _ in pairs) + sum(b == label for _, b in pairs)
            per_label[label] = round(2 * both / total, 3)
        disagreements = collections.Counter((a, b) for a, b in pairs if a != b)
        out[task] = {"agreement": round(observed, 3), "kappa": round(k, 3), "both_sure": len(sure),
                     "agreement_both_sure": round(kappa(sure)[0], 3) if sure else None,
                     "first_then_second": [f"{a} -> {b}: {n}" for (a, b), n in disagreements.most_common(10)],
                     "per_label_f1": per_label}
    return out


if __name__ == "__main__":
    print(json.dumps(report(read("ant_v21_*.jsonl"), read("agreement/ant_v21_second_reader.jsonl")), indent=1))
