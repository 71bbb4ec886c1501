"""Story grouping on labelled pairs: precision and recall of "same story" by cosine threshold.

``labels/story_pairs.jsonl`` (described in ``labels/STORY_PAIRS.md``) holds
article pairs labelled ``same_story`` true or false, across outlets and
languages. A side is a real feed entry ``{"file", "index"}`` of
../shared/data/feeds/real, read through the pipeline's own parsing and
normalisation as ``real_feed_topics.py`` reads it, or a written row
``{"title", "summary", "lang"}``. Every side is embedded as ``newsbeam run
--embeddings`` stores it (the labeller's mean-pooled vector of headline +
lead with e5's passage prefix, rounded to int8 and back), and a pair is
called the same story when the cosine reaches the threshold: what
``newsbeam.stories`` does for an article and a one-article story. The
threshold with the best F1 is newsbeam.stories.DEFAULT_STORY_THRESHOLD.

"grouped" scores the grouping itself: every distinct side goes through
``assign_stories`` at once (one time, so the window never splits them), and
a pair counts as called the same story when both sides got one story_id. A
story's centroid and the other sides around can pull a pair together or
apart, which the pair's own cosine does not show.

"real_feeds" groups every entry of the 50 real feeds at its own event time and
gives, per threshold, the largest story: the check that chose the default
(an outlet's unrelated city briefs must not chain into one story).

    python bench/story_pairs.py [--pairs FILE] [--heads DIR] [--max_tokens 128] [--json]

Without ../shared/data (for a pair file that names feed entries) it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
from quality import SHARED_DATA

FEEDS_ROOT = SHARED_DATA / "feeds" / "real"
PAIRS_FILE = Path(__file__).resolve().parent / "labels" / "story_pairs.jsonl"
# centred vectors (heads with an embedding centre) join from about 0.5, uncentred ones from about 0.8
THRESHOLDS = tuple(round(0.40 + 0.01 * step, 2) for step in range(56))  # 0.40 .. 0.95
# The manifest's language is wrong for these files (labels/STORY_PAIRS.md, caveats).
LANGUAGE_FIXES = {"rbren__rss-parser/customfields.rss": "en"}


def read_pairs(path: Path = PAIRS_FILE) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def side_key(side: dict) -> tuple:
    if "file" in side:
        return ("feed", side["file"], int(side["index"]))
    return ("row", side.get("title") or "", side.get("summary") or "", side.get("lang") or "und")


def names_feed_entries(pairs: list[dict]) -> bool:
    return any("file" in pair[end] for pair in pairs for end in ("a", "b"))


def feed_entries(feeds_root: Path, name: str) -> list:
    """One real feed's entries as ``newsbeam run`` parses them."""
    from newsbeam.formats.feeds import parse_feed

    # fetched_at is recorded on each entry, never read by the labeller
    return parse_feed((feeds_root / name).read_bytes(), source=name, fetched_at="2026-01-01T00:00:00Z").entries


def read_sides(pairs: list[dict], feeds_root: Path = FEEDS_ROOT) -> dict[tuple, tuple[str, str]]:
    """Each distinct side: (the text the labeller reads, its language)."""
    from newsbeam.labelling.input_text import article_text

    keys = sorted({side_key(pair[end]) for pair in pairs for end in ("a", "b")})
    sides: dict[tuple, tuple[str, str]] = {}
    by_file: dict[str, list[int]] = defaultdict(list)
    for key in keys:
        if key[0] == "feed":
            by_file[key[1]].append(key[2])
        else:
            sides[key] = (article_text(key[1], key[2], None), key[3])
    if by_file:
        from newsbeam_lab.feed_entries import read_entry

        for name, indexes in sorted(by_file.items()):
            for index in indexes:
                entry = read_entry(str(feeds_root), name, index)
                sides[("feed", name, index)] = (entry["text"], LANGUAGE_FIXES.get(name, entry["lang"]))
    return sides


def stored_vectors(labeller, texts: list[str]) -> np.ndarray:
    """The unit vectors ``newsbeam run --embeddings`` stores for these texts (int8 and back)."""
    from newsbeam.embeddings import dequantise, normalise, quantise
    from newsbeam.labelling import PASSAGE_PREFIX

    return normalise(dequantise(*quantise(labeller.embed(texts, prefix=PASSAGE_PREFIX))))


def scores_at(same: np.ndarray, cosines: np.ndarray, threshold: float,
              predicted: Optional[np.ndarray] = None) -> dict:
    predicted = cosines >= threshold if predicted is None else predicted
    true_positive = int(np.sum(predicted & same))
    false_positive = int(np.sum(predicted & ~same))
    false_negative = int(np.sum(~predicted & same))
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 1.0
    recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "false_positives": false_positive, "false_negatives": false_negative}


def grouped_same(keys: list[tuple], vectors: np.ndarray, pairs: list[dict], threshold: float) -> np.ndarray:
    """Per pair: did ``assign_stories`` put both sides in one story (all sides at one time)?"""
    from newsbeam.records import Article
    from newsbeam.stories import assign_stories

    articles = [Article(article_id=f"side{number:05d}", url=None, source="pairs", source_title=None,
                        title=None, summary=None, body=None, authors=(), tags=(), published_at=None,
                        fetched_at="2026-01-01T00:00:00+00:00", content_hash=f"side{number:05d}")
                for number in range(len(vectors))]
    assigned, _ = assign_stories(with_vectors(articles, vectors), threshold=threshold)
    story_of = {key: article.story_id for key, article in zip(keys, assigned)}
    return np.array([story_of[side_key(p["a"])] == story_of[side_key(p["b"])] for p in pairs])


def with_vectors(articles: list, vectors: np.ndarray) -> list:
    """The articles carrying ``vectors`` as ``newsbeam run --embeddings`` stores them."""
    import dataclasses

    from newsbeam.embeddings import to_record

    return [dataclasses.replace(article, embedding=embedding, embedding_scale=scale)
            for article, (embedding, scale) in zip(articles, map(to_record, vectors))]


def real_feed_articles(feeds_root: Path = FEEDS_ROOT) -> list:
    """Every entry of the real feeds as ``newsbeam run`` normalises it (entries with no text left out)."""
    from newsbeam_lab.feed_entries import feed_languages

    from newsbeam.normalise import normalise_entry

    articles = []
    for name in sorted(feed_languages(str(feeds_root))):
        for entry in feed_entries(feeds_root, name):
            try:
                articles.append(normalise_entry(entry))
            except ValueError:
                continue
    return articles


def story_sizes(articles: list, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict]:
    """Per threshold, the stories ``assign_stories`` makes of all ``articles`` at their
    own event times: the pairs above say how often two articles are rightly joined;
    this says whether an outlet's unrelated briefs chain into one giant story."""
    from newsbeam.stories import assign_stories

    table = []
    for threshold in thresholds:
        assigned, _ = assign_stories(articles, threshold=threshold)
        sizes = Counter(article.story_id for article in assigned)
        grouped = [size for size in sizes.values() if size > 1]
        table.append({"threshold": threshold, "largest": max(sizes.values(), default=0),
                      "stories_of_2_or_more": len(grouped), "articles_in_them": sum(grouped)})
    return table


def best_of(table: list[dict]) -> dict:
    """The row with the best F1 (ties: the higher threshold, fewer false joins)."""
    return max(table, key=lambda row: (row["f1"], row["threshold"]))


def score_pairs(pairs: list[dict], cosines: np.ndarray, languages: list[tuple[str, str]],
                thresholds: tuple[float, ...] = THRESHOLDS, grouped: Optional[dict[float, np.ndarray]] = None) -> dict:
    """P/R/F1 by threshold over all pairs and cross-lingual ones; ``grouped``: per threshold,
    whether the grouping put each pair in one story (see :func:`grouped_same`)."""
    same = np.array([bool(pair["same_story"]) for pair in pairs])
    cross = np.array([a != b for a, b in languages])
    overall = [scores_at(same, cosines, t) for t in thresholds]
    together = [scores_at(same, cosines, t, grouped[t]) for t in thresholds] if grouped else []
    cross_lingual = [scores_at(same[cross], cosines[cross], t) for t in thresholds]
    best = best_of(overall)
    wrong = [{"cosine": round(float(cosine), 4), "same_story": pair["same_story"], "kind": pair["kind"],
              "languages": "-".join(langs), "note": pair.get("note", "")}
             for pair, cosine, langs in zip(pairs, cosines, languages)
             if (cosine >= best["threshold"]) != bool(pair["same_story"])]
    by_kind = Counter(pair["kind"] for pair in pairs)
    wrong_by_kind = Counter(row["kind"] for row in wrong)
    cosine_by_kind = {kind: [float(c) for c, p in zip(cosines, pairs) if p["kind"] == kind] for kind in by_kind}
    return {
        "pairs": len(pairs), "positives": int(same.sum()), "cross_lingual_pairs": int(cross.sum()),
        "best": best, "best_cross_lingual": best_of(cross_lingual),
        "cross_lingual_at_best": next(row for row in cross_lingual if row["threshold"] == best["threshold"]),
        "thresholds": overall, "cross_lingual": cross_lingual, "grouped": together,
        "best_grouped": best_of(together) if together else None,
        "kinds": {kind: {"pairs": count, "wrong_at_best": wrong_by_kind.get(kind, 0),
                         "cosine_median": round(float(np.median(cosine_by_kind[kind])), 4),
                         "cosine_min": round(min(cosine_by_kind[kind]), 4),
                         "cosine_max": round(max(cosine_by_kind[kind]), 4)}
                  for kind, count in sorted(by_kind.items())},
        "wrong_at_best": sorted(wrong, key=lambda row: -row["cosine"]),
    }


def format_report(report: dict) -> str:
    lines = [f"{report['pairs']} pairs ({report['positives']} same story), "
             f"{report['cross_lingual_pairs']} across languages", "",
             "threshold   P all   R all  F1 all |  P x-ling  R x-ling  F1 x-ling |  P grouped  R grouped  F1 grouped"]
    grouped = report["grouped"] or [None] * len(report["thresholds"])
    for row, cross, group in zip(report["thresholds"], report["cross_lingual"], grouped):
        line = (f"   {row['threshold']:.2f}    {row['precision']:.3f}   {row['recall']:.3f}   {row['f1']:.3f} |"
                f"     {cross['precision']:.3f}     {cross['recall']:.3f}      {cross['f1']:.3f} |")
        if group:
            line += f"      {group['precision']:.3f}      {group['recall']:.3f}       {group['f1']:.3f}"
        lines.append(line)
    best, cross = report["best"], report["cross_lingual_at_best"]
    lines += ["", f"best F1: threshold {best['threshold']:.2f}: P {best['precision']:.3f} R {best['recall']:.3f} "
                  f"F1 {best['f1']:.3f}; across languages P {cross['precision']:.3f} R {cross['recall']:.3f} "
                  f"F1 {cross['f1']:.3f} (best there: {report['best_cross_lingual']['threshold']:.2f})"]
    if report["best_grouped"]:
        group = report["best_grouped"]
        lines.append(f"best F1 grouped: threshold {group['threshold']:.2f}: P {group['precision']:.3f} "
                     f"R {group['recall']:.3f} F1 {group['f1']:.3f}")
    lines += ["",
              "kind                          pairs  wrong  cosine min / median / max"]
    for kind, row in report["kinds"].items():
        lines.append(f"{kind:<29} {row['pairs']:>5}  {row['wrong_at_best']:>5}  "
                     f"{row['cosine_min']:.3f} / {row['cosine_median']:.3f} / {row['cosine_max']:.3f}")
    if report.get("real_feeds"):
        lines += ["", f"all {report['real_feeds']['articles']} entries of the real feeds grouped at their own times:",
                  "threshold  largest story  stories of 2+  articles in them"]
        lines += [f"   {row['threshold']:.2f}   {row['largest']:>12}  {row['stories_of_2_or_more']:>13}  "
                  f"{row['articles_in_them']:>16}" for row in report["real_feeds"]["stories"]]
    lines += ["", f"wrong at {best['threshold']:.2f} ({len(report['wrong_at_best'])}):"]
    for row in report["wrong_at_best"]:
        verdict = "missed" if row["same_story"] else "false join"
        lines.append(f"  {row['cosine']:.3f}  {verdict:<10}  {row['kind']:<27} {row['languages']:<6} {row['note']}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS_FILE, help="Labelled pairs (JSON lines).")
    parser.add_argument("--max_tokens", type=int, default=128, help="Token budget per article (as newsbeam run).")
    parser.add_argument("--heads", default=None, help="Heads folder (default: the shipped heads).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    args = parser.parse_args(argv)
    if not args.pairs.is_file():
        print(f"skipped: {args.pairs} is absent")
        return 0
    pairs = read_pairs(args.pairs)
    if names_feed_entries(pairs) and not FEEDS_ROOT.is_dir():
        print(f"skipped: {FEEDS_ROOT} is absent (the feeds live in the team's shared data, not in a clone)")
        return 0

    from newsbeam.labelling.labeller import load_labeller
    from newsbeam.transforms.labelling import labelling_text

    sides = read_sides(pairs)
    keys = sorted(sides)
    labeller = load_labeller(heads=args.heads, embeddings=True, max_tokens=args.max_tokens)
    vectors = dict(zip(keys, stored_vectors(labeller, [sides[key][0] for key in keys])))
    cosines = np.array([float(vectors[side_key(p["a"])] @ vectors[side_key(p["b"])]) for p in pairs])
    languages = [(sides[side_key(p["a"])][1], sides[side_key(p["b"])][1]) for p in pairs]
    matrix = np.stack([vectors[key] for key in keys])
    grouped = {t: grouped_same(keys, matrix, pairs, t) for t in THRESHOLDS}
    report = score_pairs(pairs, cosines, languages, grouped=grouped)
    feed_articles = real_feed_articles()
    feed_vectors = stored_vectors(labeller, [labelling_text(article) for article in feed_articles])
    report["real_feeds"] = {"articles": len(feed_articles),
                            "stories": story_sizes(with_vectors(feed_articles, feed_vectors))}
    report["model"] = labeller.model_id
    report["max_tokens"] = args.max_tokens
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
