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
from typing import Optional

from newsbeam.exit_codes import EXIT_CONFIG, EXIT_FAILED
from newsbeam.labelling import (
    DEFAULT_FEED_EVIDENCE_WEIGHT,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_TOKENS,
    QUANTIZE_CHOICES,
)
from newsbeam_lab import DATA_ROOT_ENV, default_data_root
from newsbeam_lab.scoring import (
    DEFAULT_BOOTSTRAP,
    TASKS,
    evaluate_labeller,
    format_report,
    read_eval_rows,
)
from newsbeam_lab.training_data import expand_pattern

LOGGER = logging.getLogger(__name__)


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
    parser.add_argument("--max_tokens", type=int, default=DEFAULT_MAX_TOKENS, help="Token budget per text (as newsbeam run).")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="int8: score the int8 encoder newsbeam run --quantize int8 uses, so its loss is measured "
                             "on every set (with --against, both labellers use it).")
    parser.add_argument("--max_batch_tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS, help="Token budget per encoder batch.")
    parser.add_argument("--feed_evidence_weight", type=float, default=DEFAULT_FEED_EVIDENCE_WEIGHT,
                        help="How much the subject a row's feed tags or URL section name weighs (as newsbeam run; "
                             "1 ignores it). Rows without tags or URL are unaffected.")
    parser.add_argument("--against_feed_evidence_weight", type=float, default=None,
                        help="The --against labeller's weight (default: --feed_evidence_weight): --heads X "
                             "--against X with two weights measures the evidence itself.")
    parser.add_argument("--torch_threads", type=int, default=None)
    parser.add_argument("--model_cache", default=None, help="Where the embedded model is built.")


def _load_labeller(args: argparse.Namespace, heads: Optional[str], feed_evidence_weight: Optional[float] = None,
                   **classifiers):
    """A labeller with ``heads`` and the encoder, taxonomy and budgets ``args`` give."""
    from newsbeam.labelling.labeller import load_labeller

    weight = args.feed_evidence_weight if feed_evidence_weight is None else feed_evidence_weight
    return load_labeller(encoder=args.encoder, heads=heads, taxonomy=args.taxonomy, max_tokens=args.max_tokens,
                         max_batch_tokens=args.max_batch_tokens, torch_threads=args.torch_threads,
                         cache_dir=args.model_cache, quantize=None if args.quantize == "none" else args.quantize,
                         feed_evidence_weight=weight, **classifiers)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report; returns a process exit status (1 when no row or split was usable, 2 for
    a bad combination of options)."""
    if (args.task or args.data) if args.dev_report else not (args.task and args.data):
        print("newsbeam eval: give either --dev_report or both --task and --data", file=sys.stderr)
        return EXIT_CONFIG
    if (args.against and not args.dev_report) or args.bootstrap < 0:
        print("newsbeam eval: --against goes with --dev_report, and --bootstrap is a count >= 0", file=sys.stderr)
        return EXIT_CONFIG
    weights = (args.feed_evidence_weight, args.against_feed_evidence_weight)
    if any(weight is not None and not weight >= 1 for weight in weights):
        print("newsbeam eval: a feed evidence weight is a number >= 1 (1 ignores the evidence)", file=sys.stderr)
        return EXIT_CONFIG
    if args.dev_report:
        from newsbeam_lab.dev_report import check_splits

        if not args.data_root:
            print(f"newsbeam eval: --dev_report needs --data_root (or ${DATA_ROOT_ENV})", file=sys.stderr)
            return EXIT_CONFIG
        try:  # before the model loads, so a wrong --data_root fails at once
            check_splits(args.data_root)
        except FileNotFoundError as error:
            print(f"newsbeam eval: {error}", file=sys.stderr)
            return EXIT_FAILED
    else:
        try:  # before the model loads, so a mistyped --data fails at once
            for pattern in args.data:
                expand_pattern(pattern)
        except FileNotFoundError as error:
            print(f"newsbeam eval: {error}", file=sys.stderr)
            return EXIT_CONFIG
    labeller = _load_labeller(args, args.heads, topic_model=args.topic_model, sentiment_model=args.sentiment_model,
                              label_map=args.model_label_map)
    if args.dev_report:
        from newsbeam_lab.dev_report import dev_report, format_dev_report

        against = (_load_labeller(args, args.against, args.against_feed_evidence_weight)
                   if args.against else None)
        report = dev_report(labeller, args.data_root, bootstrap=args.bootstrap, against=against)
        if against is not None:  # two retrains of one recipe share a model id; the folder tells them apart
            report["against_heads"] = args.against
        print(json.dumps(report, ensure_ascii=False) if args.json else format_dev_report(report))
        return 0
    rows = read_eval_rows(args.data, args.label_map, labeller.taxonomy.ids_for(args.task), task=args.task,
                          data_root=args.data_root)
    if not rows.texts:
        print(f"newsbeam eval: no usable rows in {' '.join(args.data)} ({rows.skipped} skipped: a row needs text and "
              f"a {args.task} label among the taxonomy's, or one --label_map maps onto it)", file=sys.stderr)
        return EXIT_CONFIG
    report = evaluate_labeller(labeller, args.task, rows, restrict=args.restrict, bootstrap=args.bootstrap)
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 0
