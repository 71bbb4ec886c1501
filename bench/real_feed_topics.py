"""Open-set topic and news-sentiment quality on real news: hand-labelled items of ../shared/data/feeds/real.

The public topic sets score closed-set classification over their own few
labels (SIB-200 has seven, MasakhaNEWS six), so they cannot say how often a
real article about a trial, a flood or a strike lands on crime_law_justice,
disaster_accident_emergency or labour. ``labels/real_feed_topics.jsonl`` holds
newsbeam's own labels for 1,014 entries of those feeds: one of the 17
subjects each, with ``high`` or ``medium`` confidence, addressed by feed file
and entry index, so no text of the feeds is copied here. Each entry goes
through the pipeline's own feed parsing and normalisation, and the labeller
reads what ``newsbeam run`` would (headline, then the lead), over all 17
subjects. ``labels/real_feed_sentiment.jsonl`` gives the same entries a news
sentiment (negative: deaths, crime, losses; positive: wins, launches,
recoveries; neutral: factual or mixed), read the same way (``--task sentiment``).

Half of the labelled entries, by feed, are training rows of the heads from
heads-v21 on (``newsbeam_lab.feed_entries``); the other half is the dev set and
the default here (``--split dev``).

    python bench/real_feed_topics.py [--task topic|sentiment] [--split dev|unseen|train|all] [--heads DIR]
                                     [--confidence high] [--json]

Without ../shared/data it says so and exits 0 (a user's fresh clone).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from newsbeam_lab.feed_entries import DEV, FEEDS_DIR, SENTIMENT_LABELS, SPLITS, TOPIC_LABELS
from quality import SHARED_DATA

FEEDS_ROOT = SHARED_DATA / FEEDS_DIR
CONFIDENCES = ("high", "medium")
SENTIMENT_CONFIDENCES = ("high", "medium", "low")  # low: mostly not news (podcast blurbs, tables of contents)


def read_labels(path: Path = TOPIC_LABELS, confidence: Optional[str] = None) -> list[dict]:
    """The labelled entries, optionally only those of one confidence."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if confidence is None or row["confidence"] == confidence]


def read_sentiment_labels(path: Path = SENTIMENT_LABELS, confidence: Optional[str] = None) -> list[dict]:
    """The entries' news sentiment, as rows shaped like the topic labels (``label`` = the sentiment)."""
    return [dict(row, label=row["sentiment"]) for row in read_labels(path, confidence)]


def read_items(labels: list[dict], feeds_root: Path = FEEDS_ROOT, split: str = "all"):
    """The labelled entries of ``split`` (``feed_entries.SPLITS``) as the labeller sees them: a
    ``LabelledTexts`` whose texts are headline + lead after the pipeline's parsing and
    normalisation (``newsbeam_lab.feed_entries``)."""
    from newsbeam_lab.feed_entries import in_split, read_entry
    from newsbeam_lab.training_data import LabelledTexts, row_evidence

    items = LabelledTexts()
    for row in sorted((row for row in labels if in_split(row, split)), key=lambda row: row["file"]):
        entry = read_entry(str(feeds_root), row["file"], row["index"])
        items.append(entry["text"], row["label"], entry["lang"], source=row["file"],
                     path=f"{row['file']}#{row['index']}", evidence=row_evidence(entry))
    return items


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("topic", "sentiment"), default="topic")
    parser.add_argument("--heads", default=None, help="Heads folder to score (default: the shipped heads).")
    parser.add_argument("--confidence", choices=SENTIMENT_CONFIDENCES, default=None,
                        help="Only the entries labelled with this confidence (default: all).")
    parser.add_argument("--split", choices=SPLITS, default=DEV,
                        help="dev (default): the half training never reads; unseen: the dev half less the feeds "
                             "split entry by entry (feeds none of whose entries train); train: the half the lab "
                             "trains on (heads-v21 on); all: every labelled entry, as the figures up to heads-v20.")
    parser.add_argument("--max_tokens", type=int, default=128, help="Token budget per article (as newsbeam run).")
    parser.add_argument("--feed_evidence_weight", type=float, default=None,
                        help="Weight of the subject an entry's tags or URL section name (default: as newsbeam run; "
                             "1 ignores it).")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="Add macro-F1's 95%% interval.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    args = parser.parse_args(argv)
    if not FEEDS_ROOT.is_dir():
        print(f"skipped: {FEEDS_ROOT} is absent (the feeds live in the team's shared data, not in a clone)")
        return 0

    from newsbeam_lab.scoring import evaluate_labeller, format_report

    from newsbeam.labelling.labeller import load_labeller

    labels = (read_sentiment_labels if args.task == "sentiment" else read_labels)(confidence=args.confidence)
    items = read_items(labels, split=args.split)
    weight = {} if args.feed_evidence_weight is None else {"feed_evidence_weight": args.feed_evidence_weight}
    labeller = load_labeller(heads=args.heads, max_tokens=args.max_tokens, **weight)
    report = evaluate_labeller(labeller, args.task, items, bootstrap=args.bootstrap)
    report["feed_evidence_weight"] = labeller.feed_evidence_weight
    report["with_evidence"] = sum(1 for subjects in items.evidence if subjects)
    report["confidence"] = args.confidence or "all"
    report["split"] = args.split
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
