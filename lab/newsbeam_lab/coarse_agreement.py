"""MasakhaNEWS's coarse labels, kept only where they agree with the lab's own
17-subject reading of the same article.

The recipe reads both labels of each few-shot article: the lab's (crime, conflict,
labour, ... as the GUIDE reads them) and the set's own seven coarse ones (attacks
under politics). For 29% of the articles the two disagree, and a head trained on
both learns the coarse answer's pull on exactly the subjects the coarse set lacks
(docs/research/labels-real-news.md, heads-v16). The agreeing references still carry
the coarse closed set's register; the disputed ones are left to the lab's label.

Tried as heads-v17 (2026-12-05): the open-set dev share did not move (0.506 -> 0.510)
and the coarse closed set fell under its floor (0.878 -> 0.847), so the recipe reads
the full masakha_coarse.jsonl; this module records the experiment.

    python -m newsbeam_lab.coarse_agreement     # rewrites lab/labels/coarse/masakha_coarse_agreeing.jsonl
"""
from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Iterable

from newsbeam_lab.shared_labels import LOW_CONFIDENCE

LAB_LABELS = Path(__file__).resolve().parents[1] / "labels"
COARSE = LAB_LABELS / "coarse" / "masakha_coarse.jsonl"
AGREEING = LAB_LABELS / "coarse" / "masakha_coarse_agreeing.jsonl"
TEAM_PATTERN = str(LAB_LABELS / "masakhanews_*.jsonl")


def _rows(path: Path | str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def agreeing_references(coarse: Iterable[dict], team: Iterable[dict]) -> list[dict]:
    """The coarse references whose topic equals the lab's topic of the same (file, id).

    An article the lab left out of training (low confidence) or never read keeps its
    coarse reference: there is no second answer to contradict it."""
    team_topic = {(row["file"], str(row["id"])): row.get("topic") for row in team
                  if row.get("confidence") != LOW_CONFIDENCE}
    kept = []
    for row in coarse:
        ours = team_topic.get((row["file"], str(row["id"])))
        if ours is None or ours == row["topic"]:
            kept.append(row)
    return kept


def main() -> None:
    team = [row for path in sorted(glob.glob(TEAM_PATTERN)) for row in _rows(path)]
    coarse = _rows(COARSE)
    kept = agreeing_references(coarse, team)
    with open(AGREEING, "w", encoding="utf-8") as handle:
        for row in kept:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{AGREEING}: {len(kept)} of {len(coarse)} coarse references agree with the lab's labels")


if __name__ == "__main__":
    main()
