"""``newsbeam train-heads``: fit the topic and sentiment heads on labelled JSONL.

Each line of a training file has ``text`` (or ``headline`` + ``body``),
``label`` and optionally ``lang``. A data source is ``PATTERN[@MAP]``: a glob
of JSONL files and the label map that turns the dataset's labels into newsbeam
ids (a shipped map name such as ``sib200`` or a JSON path); rows whose label
maps to nothing are skipped. Without ``--topic_data``/``--sentiment_data`` the
recipe that built the shipped heads is used, rooted at ``--data_root``.

First every text goes through the frozen encoder once (cached on disk by
content hash, so retraining with other settings is cheap), the mean-pooled
hidden states of the chosen layers are concatenated and standardised, and a
small MLP (one hidden ReLU layer, dropout, AdamW; or with hidden 0 a
multinomial logistic regression by L-BFGS) is fitted per task. Every data source gets the same
total weight, so a large parallel corpus does not drown a small news one.
Then, unless ``--fine_tune_epochs 0``, the encoder's top layers and both
heads are trained together (:mod:`newsbeam_lab.finetune`) and the change to
the encoder ships with the heads as low-rank deltas.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from newsbeam.labelling import DEFAULT_MAX_BATCH_TOKENS, PASSAGE_PREFIX
from newsbeam.labelling.heads import DEFAULT_HEADS_DIR, TASKS, Head, HeadSet
from newsbeam.labelling.taxonomy import Taxonomy, load_taxonomy
from newsbeam_lab import DATA_ROOT_ENV, anchoring, default_data_root
from newsbeam_lab.anchoring import Anchor
from newsbeam_lab.article_windows import DEFAULT_ARTICLE_WINDOWS, DEFAULT_WINDOW_TOKENS, ArticleWindows
from newsbeam_lab.embedding_centre import add_centre
from newsbeam_lab.finetune import PRECISIONS, FineTuneSettings, TaskRows, can_fine_tune, fine_tune
from newsbeam_lab.head_fitting import (
    DEFAULT_SOURCE_POWER,
    balanced_weights,
    fit_head,
    fit_temperature,
    passage_token_ids,
    pooled_features,
    resolve_layers,
)
from newsbeam_lab.heads_writer import save_heads
from newsbeam_lab.training_data import (
    DEFAULT_TEMPERATURE_RECIPE,
    LabelledTexts,
    _portable,
    default_data,
    read_sources,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
DEFAULT_VERSION = "heads-v4"
# What each head reads (hidden-state indices, 0 = embeddings), its weight
# decay, hidden width and epochs, as picked on the dev splits (docs/labels.md).
DEFAULT_LAYERS = {"topic": (6, 8, 10, 12), "sentiment": (6, 8, 10, 12)}
DEFAULT_L2 = {"topic": 0.01, "sentiment": 0.01}
DEFAULT_HIDDEN = {"topic": 128, "sentiment": 128}
DEFAULT_EPOCHS = {"topic": 30, "sentiment": 20}
INT8_CALIBRATION_PER_FILE = 16


def train_heads(encoder, taxonomy: Taxonomy, data: dict[str, Sequence[str]], *,
                layers: Optional[dict[str, Sequence[int]]] = None, l2: Optional[dict[str, float]] = None,
                hidden: Optional[dict[str, int]] = None, epochs: Optional[dict[str, int]] = None,
                max_tokens: int = DEFAULT_MAX_TOKENS, version: str = DEFAULT_VERSION,
                source_power: float = DEFAULT_SOURCE_POWER, source_weights: Optional[dict[str, float]] = None,
                cache_dir: Optional[str | Path] = None,
                fine_tuning: Optional[FineTuneSettings] = FineTuneSettings(),
                temperature_data: Optional[dict[str, Sequence[str]]] = None,
                article_windows: int = DEFAULT_ARTICLE_WINDOWS, window_tokens: int = DEFAULT_WINDOW_TOKENS,
                data_root: Optional[str] = None, anchor: Optional[Anchor] = None) -> HeadSet:
    """Fit one head per task in ``data`` (task -> data source specs) on ``encoder``,
    then fine-tune the encoder with them (``fine_tuning`` None or 0 epochs: not),
    then fit each head's softmax temperature on ``temperature_data`` (task -> held-out
    data source specs; a task without any keeps temperature 1). Training rows
    with a body add up to ``article_windows`` rows of ``window_tokens`` each
    (:class:`ArticleWindows`); held-out rows never do. Labels of shared rows
    (:mod:`newsbeam_lab.shared_labels`) are read from ``data_root``, their dev share left out.
    With ``anchor``, the fine-tune keeps the rows of its sources close to the
    anchor heads' outputs (:mod:`newsbeam_lab.anchoring`).

    Fine-tuning changes ``encoder.model`` in place to the weights the heads expect.
    """
    if anchor is not None and fine_tuning is not None and fine_tuning.epochs > 0:  # before hours of work
        anchor.check(encoder.model_id, {task: taxonomy.ids_for(task) for task, specs in data.items() if specs},
                     fine_tuning.from_layer)
    heads = {}
    training_rows: dict[str, tuple[LabelledTexts, np.ndarray, np.ndarray]] = {}
    calibration: list[str] = []
    windows = ArticleWindows(encoder.tokenizer, article_windows, window_tokens)
    for task, specs in data.items():
        if not specs:
            continue
        labels = taxonomy.ids_for(task)
        rows = read_sources(specs, labels, windows, task=task, data_root=data_root)
        calibration += int8_calibration_texts(rows)
        if not rows.texts:
            raise ValueError(f"no usable {task} training rows in {list(specs)}")
        label_ids = np.array([labels.index(label) for label in rows.labels])
        missing = [label for label in labels if label not in set(rows.labels)]
        if missing:
            LOGGER.warning("%s: no training rows for %s; the head will never predict them", task, missing)
        task_layers = resolve_layers((layers or DEFAULT_LAYERS).get(task, DEFAULT_LAYERS[task]), encoder.num_layers)
        pooled = np.zeros((len(rows.texts), len(task_layers), encoder.hidden_size), dtype=np.float32)
        paths = np.asarray(rows.paths)
        for path in dict.fromkeys(rows.paths):  # one cache entry per file, so adding a file re-embeds only it
            members = np.flatnonzero(paths == path)
            pooled[members] = pooled_features(encoder, [rows.texts[i] for i in members], task_layers,
                                              max_tokens, cache_dir=cache_dir)
        weights = balanced_weights(label_ids, rows.sources, len(labels), source_power,
                                   source_weights_of(task, source_weights))
        task_l2 = (l2 or DEFAULT_L2).get(task, DEFAULT_L2[task])
        head = fit_head(task, labels, task_layers, pooled, label_ids, weights, l2=task_l2,
                        hidden=(hidden or DEFAULT_HIDDEN).get(task, DEFAULT_HIDDEN[task]),
                        epochs=(epochs or DEFAULT_EPOCHS).get(task, DEFAULT_EPOCHS[task]))
        counts = {label: int(n) for label, n in zip(labels, np.bincount(label_ids, minlength=len(labels)))}
        heads[task] = Head(**{**head.__dict__, "metadata": {**head.metadata,
                                                            "sources": [_portable(spec) for spec in specs],
                                                            "label_counts": counts,
                                                            "article_windows": {"per_article": article_windows,
                                                                                "tokens": window_tokens,
                                                                                "rows": rows.windows}}})
        training_rows[task] = (rows, label_ids, weights)
        LOGGER.info("%s head: %d rows (%d article windows), %d skipped, layers %s", task, len(rows.texts),
                    rows.windows, rows.skipped, task_layers)
    if not heads:
        raise ValueError("no training data given for any task")
    deltas = None
    if fine_tuning is not None and fine_tuning.epochs > 0:
        if can_fine_tune(encoder.model):
            tasks = {task: TaskRows(heads[task], passage_token_ids(encoder, rows.texts, max_tokens), label_ids, weights,
                                    anchor.anchored(rows.sources) if anchor is not None else None)
                     for task, (rows, label_ids, weights) in training_rows.items()}
            heads, deltas = fine_tune(encoder.model, tasks, fine_tuning, pad_id=encoder.pad_id,
                                      max_batch_tokens=encoder.max_batch_tokens, cache_dir=cache_dir,
                                      model_key=encoder.model_id, anchor=anchor)  # the token ids carry max_tokens
            if anchor is not None:
                heads = {task: Head(**{**head.__dict__, "metadata": {
                    **head.metadata, "anchor": anchor.describe(int(tasks[task].anchored.sum()))}})
                         for task, head in heads.items()}
        else:
            LOGGER.warning("fine-tuning covers the embedded encoder only; %s stays frozen", encoder.model_id)
    for task, specs in (temperature_data or {}).items():
        if task in heads and specs:
            heads[task] = calibrated(encoder, heads[task],
                                     read_sources(specs, heads[task].labels, task=task, data_root=data_root),
                                     specs, max_tokens)
    from newsbeam.labelling.encoder import CALIBRATION_MAX_TOKENS

    peaks = int8_peaks(encoder, calibration)
    return HeadSet(version=version, encoder_id=encoder.model_id, max_tokens=max_tokens, heads=heads,
                   prefix=PASSAGE_PREFIX, taxonomy_digest=taxonomy.digest, int8_peaks=peaks,
                   int8_calibration={"texts": len(calibration), "per_file": INT8_CALIBRATION_PER_FILE,
                                     "max_tokens": CALIBRATION_MAX_TOKENS},
                   encoder_deltas=deltas, fine_tuning=fine_tuning.describe() if deltas else {})


def calibrated(encoder, head: Head, rows: LabelledTexts, specs: Sequence[str], max_tokens: int) -> Head:
    """``head`` with the softmax temperature that minimises its cross-entropy on ``rows``."""
    if not rows.texts:
        raise ValueError(f"no usable {head.task} temperature rows in {list(specs)}")
    token_ids = passage_token_ids(encoder, rows.texts, max_tokens)
    logits = head.logits(encoder.pooled_layers(token_ids, head.layers))
    label_ids = np.array([head.labels.index(label) for label in rows.labels])
    temperature = fit_temperature(logits, label_ids)
    LOGGER.info("%s head: temperature %.3f from %d held-out rows", head.task, temperature, len(label_ids))
    return Head(**{**head.__dict__, "temperature": temperature,
                   "metadata": {**head.metadata, "temperature_fit": {"rows": len(label_ids),
                                                                     "sources": [_portable(s) for s in specs]}}})


def int8_calibration_texts(rows: LabelledTexts, per_file: int = INT8_CALIBRATION_PER_FILE) -> list[str]:
    """Up to ``per_file`` of ``rows``' texts spread over each training file:
    tweets, sentences and news alike, so every input channel's peak is seen
    (a channel whose peak calibration misses turns into an outlier after smoothing)."""
    texts: list[str] = []
    for path in dict.fromkeys(rows.paths):
        in_file = [text for text, text_path in zip(rows.texts, rows.paths) if text_path == path]
        step = max(1, len(in_file) // per_file)
        texts += in_file[::step][:per_file]
    return texts


def int8_peaks(encoder, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Peak |input| per channel of every linear layer of ``encoder`` over ``texts``."""
    from newsbeam.labelling.encoder import encoder_peaks_pass
    from newsbeam.labelling.int8 import input_peaks

    with torch.inference_mode():
        peaks = input_peaks(encoder.model, lambda: encoder_peaks_pass(encoder, texts))
    return {name: peak.float().numpy() for name, peak in sorted(peaks.items())}


def _task_epochs(value: str) -> tuple[tuple[str, int], ...]:
    """``topic=5,sentiment=3`` -> (("topic", 5), ("sentiment", 3))."""
    pairs = []
    for part in filter(None, (piece.strip() for piece in value.split(","))):
        task, separator, epochs = part.partition("=")
        if not separator or task.strip() not in TASKS or not epochs.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected TASK=EPOCHS with TASK one of {', '.join(TASKS)}, got {part!r}")
        pairs.append((task.strip(), int(epochs)))
    return tuple(pairs)


def source_weights_of(task: str, weights: Optional[dict[str, float]]) -> dict[str, float]:
    """The weights for one task: ``TASK:SOURCE`` keys of that task (they come first, so they
    win over a plain key), then plain ``SOURCE`` keys, which apply to every task; one spec
    such as ``lab/labels/masakhanews_*.jsonl`` feeds both tasks and may need a different
    weight in each."""
    own = {key.split(":", 1)[1]: value for key, value in (weights or {}).items() if key.startswith(f"{task}:")}
    shared = {key: value for key, value in (weights or {}).items() if ":" not in key or key.split(":", 1)[0] not in TASKS}
    return {**own, **{key: value for key, value in shared.items() if key not in own}}


def _source_weights(value: str) -> dict[str, float]:
    """``xlmt=3,lab/written=0.5`` -> {"xlmt": 3.0, "lab/written": 0.5}."""
    weights = {}
    for part in filter(None, (piece.strip() for piece in value.split(","))):
        key, separator, number = part.rpartition("=")
        try:
            factor = float(number)
        except ValueError:
            factor = -1.0
        if not separator or not key.strip() or not factor > 0:
            raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT with a positive weight, got {part!r}")
        weights[key.strip()] = factor
    return weights


def _layer_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers must be comma-separated integers, got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train-heads`` options."""
    parser.add_argument("--topic_data", action="append", default=None, metavar="PATTERN[@MAP]",
                        help="Topic training JSONL (glob), optionally @label_map (shipped name or JSON path). "
                             "Repeatable. Default: the shipped recipe under --data_root.")
    parser.add_argument("--sentiment_data", action="append", default=None, metavar="PATTERN[@MAP]",
                        help="Sentiment training JSONL (glob)[@label_map]. Repeatable.")
    parser.add_argument("--topic_temperature_data", action="append", default=None, metavar="PATTERN[@MAP]",
                        help="Held-out topic rows to fit the softmax temperature on (repeatable). Default: the "
                             "shipped recipe's when --topic_data is the recipe's too, else none (temperature 1).")
    parser.add_argument("--sentiment_temperature_data", action="append", default=None, metavar="PATTERN[@MAP]",
                        help="Held-out sentiment rows for the temperature (repeatable); default as for topics.")
    parser.add_argument("--data_root", default=default_data_root(),
                        help=f"Root of the public datasets the default recipe reads (default: ${DATA_ROOT_ENV}).")
    parser.add_argument("--tasks", default="topic,sentiment", help="Which heads to train (comma-separated).")
    parser.add_argument("--output", default=str(DEFAULT_HEADS_DIR), help="Folder to write heads.json + heads.safetensors.")
    parser.add_argument("--encoder", default=None, help="Encoder (default: embedded multilingual-e5-small).")
    parser.add_argument("--taxonomy", default=None, help="Taxonomy YAML (default: shipped IPTC top level).")
    parser.add_argument("--max_tokens", type=int, default=DEFAULT_MAX_TOKENS, help="Token budget per text.")
    parser.add_argument("--max_batch_tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS, help="Token budget per encoder batch.")
    parser.add_argument("--topic_layers", type=_layer_list, default=DEFAULT_LAYERS["topic"],
                        help="Encoder layers the topic head reads, e.g. 6,8,10,12.")
    parser.add_argument("--sentiment_layers", type=_layer_list, default=DEFAULT_LAYERS["sentiment"])
    parser.add_argument("--topic_l2", type=float, default=DEFAULT_L2["topic"])
    parser.add_argument("--sentiment_l2", type=float, default=DEFAULT_L2["sentiment"])
    parser.add_argument("--topic_hidden", type=int, default=DEFAULT_HIDDEN["topic"],
                        help="Hidden units of the topic MLP (0 = logistic regression).")
    parser.add_argument("--sentiment_hidden", type=int, default=DEFAULT_HIDDEN["sentiment"])
    parser.add_argument("--topic_epochs", type=int, default=DEFAULT_EPOCHS["topic"], help="MLP training epochs.")
    parser.add_argument("--sentiment_epochs", type=int, default=DEFAULT_EPOCHS["sentiment"])
    parser.add_argument("--article_windows", type=int, default=DEFAULT_ARTICLE_WINDOWS,
                        help="Each training row with a body adds up to this many rows: its headline with each later "
                             "stretch of the body (0: read every article from its start only).")
    parser.add_argument("--window_tokens", type=int, default=DEFAULT_WINDOW_TOKENS,
                        help="Tokens of one such row, headline included (match the pipeline's --max_tokens).")
    parser.add_argument("--source_power", type=float, default=DEFAULT_SOURCE_POWER,
                        help="A data source of n rows weighs n**power in total (0: sources equal, 1: rows equal).")
    parser.add_argument("--source_weight", type=_source_weights, default={}, metavar="SOURCE=WEIGHT[,...]",
                        help="Multiply the total weight of each data source whose spec contains SOURCE, e.g. xlmt=3 "
                             "(applied before the labels are balanced); topic:SOURCE=W or sentiment:SOURCE=W "
                             "weighs a source in one task only.")
    defaults = FineTuneSettings()
    parser.add_argument("--fine_tune_epochs", type=int, default=defaults.epochs,
                        help="Epochs training the encoder's top layers with the heads (0: keep the encoder frozen; "
                             "the embedded encoder only).")
    parser.add_argument("--fine_tune_from_layer", type=int, default=defaults.from_layer,
                        help="Layers above this hidden-state index are trained (the heads must read none below).")
    parser.add_argument("--fine_tune_rank", type=int, default=defaults.rank,
                        help="Rank of the shipped encoder weight deltas.")
    parser.add_argument("--fine_tune_seed", type=int, default=defaults.seed,
                        help="Seed of the fine-tune's batch order and dropout.")
    parser.add_argument("--fine_tune_seeds", type=int, default=defaults.seeds,
                        help="Fine-tunes (seeds SEED..SEED+N-1) whose weights and heads are averaged into the one "
                             "shipped encoder and head set; each costs a fine-tune's training time.")
    parser.add_argument("--fine_tune_lr", type=float, default=defaults.learning_rate,
                        help="Learning rate of the encoder layers (the heads take %g)." % defaults.head_learning_rate)
    parser.add_argument("--fine_tune_task_epochs", type=_task_epochs, default=defaults.task_epochs,
                        metavar="TASK=EPOCHS[,...]",
                        help="Epochs for one task's rows instead of --fine_tune_epochs, e.g. topic=5: its rows are "
                             "seen that many times, spread over the run's epochs (the most any task takes); "
                             "--fine_tune_epochs 0 still keeps the encoder frozen.")
    parser.add_argument("--fine_tune_precision", choices=PRECISIONS, default=defaults.precision,
                        help="bfloat16: the fine-tune's matrix products in bfloat16 (weights stay float32); "
                             "several times faster on CPUs with AVX512-BF16 or AMX, measured in docs/research.")
    anchoring.add_arguments(parser)
    parser.add_argument("--version", default=DEFAULT_VERSION, help="Head version recorded in the model column.")
    parser.add_argument("--feature_cache", default=None,
                        help="Folder caching encoder features between runs (default: <model cache>/features).")
    parser.add_argument("--model_cache", default=None, help="Where the embedded model is built.")
    parser.add_argument("--torch_threads", type=int, default=None)


def fine_tune_settings(args: argparse.Namespace) -> FineTuneSettings:
    return FineTuneSettings(epochs=args.fine_tune_epochs, from_layer=args.fine_tune_from_layer,
                            rank=args.fine_tune_rank, learning_rate=args.fine_tune_lr, seed=args.fine_tune_seed,
                            seeds=args.fine_tune_seeds, task_epochs=args.fine_tune_task_epochs,
                            precision=args.fine_tune_precision)


def run(args: argparse.Namespace) -> int:
    """Train the heads and write them; returns a process exit status."""
    from newsbeam.labelling.embedded import default_cache_root
    from newsbeam.labelling.encoder import load_encoder

    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected topic and/or sentiment")
    fine_tuning = fine_tune_settings(args)
    given_data = {"topic": args.topic_data, "sentiment": args.sentiment_data}
    if args.data_root is None and any(given_data[task] is None for task in tasks):
        raise ValueError(f"the default recipe reads public datasets: pass --data_root or set {DATA_ROOT_ENV}")
    root = args.data_root or "/"  # only the tasks given their own data get here without one
    recipe = default_data(root)
    data = {task: given_data[task] if given_data[task] is not None else recipe[task] for task in tasks}
    temperature_recipe = default_data(root, DEFAULT_TEMPERATURE_RECIPE)
    given_temperature_data = {"topic": args.topic_temperature_data, "sentiment": args.sentiment_temperature_data}
    temperature_data = {}
    for task in data:
        if given_temperature_data[task] is not None:
            temperature_data[task] = given_temperature_data[task]
        else:  # the recipe's held-out rows suit the recipe's training data only
            temperature_data[task] = temperature_recipe[task] if data[task] == recipe[task] else []
    taxonomy = load_taxonomy(args.taxonomy)
    encoder = load_encoder(args.encoder, cache_dir=args.model_cache, torch_threads=args.torch_threads)
    encoder.max_batch_tokens = args.max_batch_tokens
    cache_dir = args.feature_cache or (Path(args.model_cache) if args.model_cache else default_cache_root()) / "features"
    head_set = train_heads(
        encoder, taxonomy, data,
        layers={"topic": args.topic_layers, "sentiment": args.sentiment_layers},
        l2={"topic": args.topic_l2, "sentiment": args.sentiment_l2},
        hidden={"topic": args.topic_hidden, "sentiment": args.sentiment_hidden},
        epochs={"topic": args.topic_epochs, "sentiment": args.sentiment_epochs},
        max_tokens=args.max_tokens, version=args.version, source_power=args.source_power,
        source_weights=args.source_weight, cache_dir=cache_dir,
        fine_tuning=fine_tuning, temperature_data=temperature_data, article_windows=args.article_windows,
        window_tokens=args.window_tokens, data_root=args.data_root, anchor=anchoring.anchor_from(args))
    folder = save_heads(head_set, args.output)
    # the centre of the stored article vectors, under the encoder just tuned (newsbeam_lab.embedding_centre)
    head_set = add_centre(folder, data["topic"] if "topic" in data else recipe["topic"], args.data_root,
                          encoder=args.encoder, cache_dir=args.model_cache)
    sizes = {name: (folder / name).stat().st_size for name in ("heads.json", "heads.safetensors")}
    print(json.dumps({"output": str(folder), "version": head_set.version, "encoder": head_set.encoder_id,
                      "tasks": {task: {"labels": len(head.labels), "layers": list(head.layers),
                                       "rows": head.metadata.get("train_rows"), "temperature": head.temperature}
                                for task, head in head_set.heads.items()},
                      "fine_tuning": head_set.fine_tuning or None, "bytes": sizes}, ensure_ascii=False))
    return 0
