"""Compare language detectors on SIB-200 dev (parallel text, 14 languages, 4 scripts).

Usage: python bench/compare_language_detectors.py   (needs ../shared/data and lingua installed)
Prints a markdown table: accuracy per language and overall, and total time.
"""
from __future__ import annotations

import collections
import json
import time
from pathlib import Path

SIB200 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "topic" / "sib200"
EXPECTED = {"arb_Arab": "ar", "arz_Arab": "ar", "ary_Arab": "ar", "eng_Latn": "en", "fra_Latn": "fr",
            "deu_Latn": "de", "spa_Latn": "es", "rus_Cyrl": "ru", "zho_Hans": "zh", "tur_Latn": "tr",
            "pes_Arab": "fa", "urd_Arab": "ur", "hau_Latn": "ha", "swh_Latn": "sw"}


def load_rows() -> list[tuple[str, str]]:
    rows = []
    for folder in sorted(SIB200.iterdir()):
        for line in (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines():
            rows.append((folder.name, json.loads(line)["text"]))
    return rows


def py3langid_detector():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return lambda text: identifier.classify(text)[0]


def lingua_detector():
    from lingua import LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().build()

    def detect(text: str) -> str:
        language = detector.detect_language_of(text)
        return language.iso_code_639_1.name.lower() if language else "und"

    return detect


def main() -> None:
    rows = load_rows()
    results = {}
    for name, factory in (("py3langid", py3langid_detector), ("lingua", lingua_detector)):
        detect = factory()
        started = time.perf_counter()
        hits = collections.defaultdict(list)
        for folder, text in rows:
            hits[folder].append(detect(text) == EXPECTED[folder])
        results[name] = (hits, time.perf_counter() - started)
    names = list(results)
    print("| SIB-200 dev | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for folder, code in EXPECTED.items():
        cells = [f"{sum(results[n][0][folder]) / len(results[n][0][folder]):.3f}" for n in names]
        print(f"| {folder} ({code}) | " + " | ".join(cells) + " |")
    overall = [f"**{sum(sum(v) for v in results[n][0].values()) / len(rows):.3f}**" for n in names]
    print("| overall | " + " | ".join(overall) + " |")
    print("| time for 1,386 sentences | " + " | ".join(f"{results[n][1]:.1f} s" for n in names) + " |")


if __name__ == "__main__":
    main()
