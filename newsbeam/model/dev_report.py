"""``newsbeam eval --dev_report``: the quality table of the README in one command.

Macro-F1 per language on the public dev/val splits the project reports
(XLM-T val for sentiment; SIB-200 dev and MasakhaNEWS dev, closed-set, for
topics), next to the targets of issue #3. It is how two head sets are
compared: run it once with each ``--heads``. The splits are the ones
``../shared/data`` holds; the training recipe never reads them (see
``training.DEFAULT_RECIPE``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from newsbeam.model.evaluate import evaluate_labeller, read_eval_rows

COLUMNS = ("ar", "en", "fr", "de", "es", "zh", "ru")


@dataclass(frozen=True)
class DevSet:
    """One row of the table: a task scored on files under the data root."""

    name: str
    task: str
    files: tuple[str, ...]  # relative to the data root
    label_map: Optional[str]
    restrict: bool
    target: float
    target_languages: tuple[str, ...] = ()  # each must reach ``target``; empty: the whole set must

    def target_text(self) -> str:
        where = f" in each of {', '.join(self.target_languages)}" if self.target_languages else ""
        return f">= {self.target:.2f}{where}"


DEV_SETS = (
    DevSet("XLM-T val, sentiment", "sentiment",
           tuple(f"sentiment/xlmt/{name}/val.jsonl" for name in ("arabic", "english", "french", "german", "spanish")),
           "xlmt", False, 0.70, ("ar", "en", "fr")),
    DevSet("SIB-200 dev, topic (restricted)", "topic",
           tuple(f"topic/sib200/{code}/dev.jsonl" for code in ("arb_Arab", "eng_Latn", "fra_Latn", "zho_Hans", "rus_Cyrl")),
           "sib200", True, 0.88),
    DevSet("MasakhaNEWS dev, topic (restricted)", "topic",
           tuple(f"topic/masakhanews/{code}/dev.jsonl" for code in ("eng", "fra")), "masakhanews", True, 0.90),
)


def check_splits(data_root: str, sets: Sequence[DevSet] = DEV_SETS) -> None:
    """Raise FileNotFoundError naming every split missing under ``data_root``."""
    missing = [os.path.join(data_root, path) for dev_set in sets for path in dev_set.files
               if not os.path.isfile(os.path.join(data_root, path))]
    if missing:
        raise FileNotFoundError(f"dev splits missing under {data_root} (pass --data_root): {', '.join(missing)}")


def dev_report(labeller, data_root: str, sets: Sequence[DevSet] = DEV_SETS) -> dict:
    """``{"model", "max_tokens", "sets": [{name, macro_f1, per_language, target, met}, ...]}``.

    Raises FileNotFoundError naming every missing file before scoring any."""
    check_splits(data_root, sets)
    scored = []
    for dev_set in sets:
        rows = read_eval_rows([os.path.join(data_root, path) for path in dev_set.files], dev_set.label_map,
                              labeller.taxonomy.ids_for(dev_set.task))
        report = evaluate_labeller(labeller, dev_set.task, rows, restrict=dev_set.restrict)
        per_language = {language: scores["macro_f1"] for language, scores in report["per_language"].items()}
        judged = ([per_language.get(language, 0.0) for language in dev_set.target_languages]
                  or [report["macro_f1"]])
        scored.append({"name": dev_set.name, "task": dev_set.task, "n": report["n"], "macro_f1": report["macro_f1"],
                       "per_language": per_language, "target": dev_set.target_text(),
                       "met": all(score >= dev_set.target for score in judged)})
    return {"model": labeller.model_id, "max_tokens": labeller.max_tokens, "sets": scored}


def format_dev_report(report: dict) -> str:
    """The report as the README's markdown table, one column per language."""
    extra = sorted({language for row in report["sets"] for language in row["per_language"]} - set(COLUMNS))
    columns = list(COLUMNS) + extra
    lines = [f"model {report['model']}, max_tokens {report['max_tokens']}", "",
             "| set | " + " | ".join(columns) + " | all | target |",
             "|---|" + "---|" * (len(columns) + 2)]
    for row in report["sets"]:
        cells = [f"{row['per_language'][language]:.3f}" if language in row["per_language"] else ""
                 for language in columns]
        verdict = "met" if row["met"] else "not met"
        lines.append(f"| {row['name']} | " + " | ".join(cells)
                     + f" | {row['macro_f1']:.3f} | {row['target']}: {verdict} |")
    return "\n".join(lines)
