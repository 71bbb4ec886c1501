"""Choose the feed evidence weight (``newsbeam run --feed_evidence_weight``) on labelled real news.

Feeds say which desk an article comes from: a ``<category>`` tag, a URL
section such as ``/sport/`` (:mod:`newsbeam.labelling.feed_evidence`). The
labeller multiplies the probability of the subject so named by a weight and
renormalises (:func:`newsbeam.labelling.labeller.weigh_by_evidence`). The
weight is chosen here, on the train share of the lab's labels of the ANT
Arabic articles whose URL names a section (Al Arabiya's and CNN Arabic's
desks), never on the dev sets that then measure it::

    python -m newsbeam_lab.evidence_fit --data_root ../shared/data [--heads DIR] [--json]

Fit it with heads that were not trained on those articles (the shipped
heads before a retrain that reads them): heads trained on them are more sure
of them than of news they never saw, which would pull the weight down.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import numpy as np

from newsbeam.exit_codes import EXIT_CONFIG
from newsbeam_lab import default_data_root, shared_labels
from newsbeam_lab.scoring import f1_scores
from newsbeam_lab.training_data import LAB_LABELS, LabelledTexts, read_sources

WEIGHTS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0)
ANT_LABELS = str(LAB_LABELS / "ant_v21_*.jsonl")


def rows_with_evidence(labeller, data_root: str, specs: Sequence[str] = (ANT_LABELS,),
                       split: str = shared_labels.TRAIN) -> LabelledTexts:
    """The labelled rows of ``split`` whose feed tags or URL name a subject."""
    rows = read_sources(specs, labeller.taxonomy.ids_for("topic"), task="topic", data_root=data_root, split=split)
    kept = LabelledTexts()
    for index, subjects in enumerate(rows.evidence):
        if subjects:
            kept.append(rows.texts[index], rows.labels[index], rows.languages[index], rows.sources[index],
                        rows.paths[index], subjects)
    return kept


def weight_scores(labeller, rows: LabelledTexts, weights: Sequence[float] = WEIGHTS) -> list[dict]:
    """Macro-F1 and accuracy of the topic labels on ``rows`` at each weight (one encoder pass)."""
    from newsbeam.labelling.labeller import weigh_by_evidence

    label_ids, probabilities = labeller.task_probabilities("topic", labeller.token_ids(rows.texts))
    evidence_agrees = float(np.mean([label in subjects for label, subjects in zip(rows.labels, rows.evidence)]))
    scores = []
    for weight in weights:
        weighted = weigh_by_evidence(label_ids, probabilities, rows.evidence, weight)
        predicted = [label_ids[i] for i in np.argmax(weighted, axis=1)]
        accuracy = float(np.mean([gold == label for gold, label in zip(rows.labels, predicted)]))
        scores.append({"weight": weight, "macro_f1": f1_scores(rows.labels, predicted)["macro_f1"],
                       "accuracy": accuracy, "evidence_agrees": evidence_agrees})
    return scores


def best_weight(scores: Sequence[dict]) -> float:
    """The weight of the best macro-F1; of equals, the smallest (the least trust in the tags)."""
    top = max(score["macro_f1"] for score in scores)
    return min(score["weight"] for score in scores if score["macro_f1"] >= top - 1e-9)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default=default_data_root())
    parser.add_argument("--heads", default=None, help="Heads folder (default: the shipped heads).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data_root:
        print("evidence_fit: give --data_root (the shared data the ANT labels refer to)", file=sys.stderr)
        return EXIT_CONFIG
    from newsbeam.labelling.labeller import load_labeller

    labeller = load_labeller(heads=args.heads, feed_evidence_weight=1.0)
    rows = rows_with_evidence(labeller, args.data_root)
    scores = weight_scores(labeller, rows)
    result = {"model": labeller.model_id, "rows": len(rows.texts), "scores": scores, "best": best_weight(scores)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']}: {result['rows']} train rows whose feed names a subject "
              f"(the named subject is the label for {scores[0]['evidence_agrees']:.0%})")
        for score in scores:
            print(f"  weight {score['weight']:>5g}: macro-F1 {score['macro_f1']:.3f}  accuracy {score['accuracy']:.3f}")
        print(f"best: {result['best']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
