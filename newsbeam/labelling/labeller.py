"""Topic and sentiment labels for article texts.

The default path is one encoder pass per article: the text (headline + lead,
``passage: `` prefix, truncated to ``max_tokens``) is mean-pooled at the few
layers the trained heads read, and both heads score that one pooled stack.

Two fallbacks, per task:

* zero-shot, when the taxonomy's labels are not the labels a head was trained
  on (a user ``--taxonomy``), or the encoder is not the one the heads were
  trained on: each label's descriptions are embedded with the e5 ``query: ``
  prefix and averaged; the article's last-layer embedding is compared by
  cosine similarity and a softmax at temperature 0.02 turns those into scores.
* a Hugging Face text-classification checkpoint (``topic_model`` /
  ``sentiment_model``), whose labels are mapped onto newsbeam ids by
  ``label_map``; it reads the text decoded back from the encoder's tokens.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from newsbeam.embeddings import normalise
from newsbeam.labelling import (
    DEFAULT_FEED_EVIDENCE_WEIGHT,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_TOKENS,
    PASSAGE_PREFIX,
    QUERY_PREFIX,
)
from newsbeam.labelling.heads import Head, HeadSet, load_heads, softmax
from newsbeam.labelling.input_text import article_text, model_text  # noqa: F401 (article_text: the labeller's input)
from newsbeam.labelling.taxonomy import Taxonomy, load_taxonomy, read_bytes

LOGGER = logging.getLogger(__name__)

ZERO_SHOT_TEMPERATURE = 0.02
TOP_TOPICS = 3


@dataclass(frozen=True)
class Labels:
    """The label columns for one article (``None`` where the text was empty)."""

    topic: Optional[str]
    topic_score: Optional[float]
    topic_scores: tuple[tuple[str, float], ...]
    sentiment: Optional[str]
    sentiment_score: Optional[float]
    # unit vector of the last layer when the labeller keeps embeddings; not part of equality (an array)
    embedding: Optional[np.ndarray] = field(default=None, compare=False)


EMPTY_LABELS = Labels(None, None, (), None, None)


def check_feed_evidence_weight(weight: float) -> None:
    if not weight >= 1.0:
        raise ValueError(f"feed_evidence_weight must be at least 1 (1 ignores the evidence), got {weight}")


def weigh_by_evidence(label_ids: Sequence[str], probabilities: np.ndarray,
                      evidence: Optional[Sequence[Sequence[str]]], weight: float) -> np.ndarray:
    """Topic probabilities with the subjects each row's feed names (``evidence[row]``:
    subject ids, :func:`newsbeam.labelling.feed_evidence.subject_evidence`)
    multiplied by ``weight`` and the row renormalised: a prior from the feed's own
    section, which the text alone may not show. Rows without evidence are unchanged."""
    if evidence is None or weight == 1.0:
        return probabilities
    if len(evidence) != len(probabilities):
        raise ValueError(f"{len(evidence)} evidence rows for {len(probabilities)} texts")
    column = {label: index for index, label in enumerate(label_ids)}
    weighted = probabilities
    for row, subjects in enumerate(evidence):
        columns = [column[subject] for subject in subjects or () if subject in column]
        if columns:
            if weighted is probabilities:
                weighted = probabilities.astype(np.float64, copy=True)
            weighted[row, columns] *= weight
            weighted[row] /= weighted[row].sum()
    return weighted


class ZeroShotScorer:
    """Cosine similarity between an article and each label's description embedding."""

    def __init__(self, encoder, labels: Sequence, temperature: float = ZERO_SHOT_TEMPERATURE):
        self.label_ids = tuple(label.id for label in labels)
        self.temperature = temperature
        texts, owners = [], []
        for index, label in enumerate(labels):
            for text in label.description_texts():
                texts.append(text)
                owners.append(index)
        vectors = encoder.embed(texts, max_tokens=128, prefix=QUERY_PREFIX)
        prototypes = np.zeros((len(self.label_ids), vectors.shape[1]), dtype=np.float32)
        np.add.at(prototypes, np.asarray(owners), vectors)
        self.prototypes = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)

    def probabilities(self, last_layer: np.ndarray) -> np.ndarray:
        vectors = last_layer / np.maximum(np.linalg.norm(last_layer, axis=1, keepdims=True), 1e-12)
        return softmax((vectors @ self.prototypes.T) / self.temperature)


class TextClassifier:
    """A Hugging Face sequence classifier whose labels map onto newsbeam ids."""

    def __init__(self, name_or_path: str, label_ids: Sequence[str], label_map: Optional[Mapping[str, str]] = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, cache_dir: Optional[str] = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from newsbeam.labelling.encoder import copy_remote_folder, is_remote_path

        source = str(copy_remote_folder(name_or_path, cache_dir)) if is_remote_path(name_or_path) else name_or_path
        self.name = name_or_path
        self.model = AutoModelForSequenceClassification.from_pretrained(
            source, use_safetensors=True, trust_remote_code=False, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        self.max_tokens = max_tokens
        self.label_ids = tuple(label_ids)
        by_lower = {label.lower(): label for label in self.label_ids}
        columns, targets = [], []
        for index, model_label in sorted(self.model.config.id2label.items()):
            target = label_map.get(model_label) if label_map is not None else by_lower.get(str(model_label).lower())
            if target is None:
                continue
            if target not in self.label_ids:
                raise ValueError(f"label map sends {model_label!r} to {target!r}, not one of {list(self.label_ids)}")
            columns.append(int(index))
            targets.append(self.label_ids.index(target))
        if not columns:
            raise ValueError(f"none of {name_or_path}'s labels {list(self.model.config.id2label.values())} "
                             f"map onto {list(self.label_ids)}; pass --label_map")
        self.columns = np.asarray(columns)
        self.targets = np.asarray(targets)

    def probabilities(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """(N, len(label_ids)): the model's softmax, summed per newsbeam id, renormalised
        over the mapped labels."""
        import torch

        result = np.zeros((len(texts), len(self.label_ids)), dtype=np.float32)
        limit = min(self.max_tokens, getattr(self.tokenizer, "model_max_length", self.max_tokens) or self.max_tokens)
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            encoded = self.tokenizer(batch, truncation=True, max_length=limit, padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**encoded).logits.float().numpy()
            model_probabilities = softmax(logits)[:, self.columns]
            for column, target in enumerate(self.targets):
                result[start:start + len(batch), target] += model_probabilities[:, column]
        return result / np.maximum(result.sum(axis=1, keepdims=True), 1e-12)


class Labeller:
    """Labels article texts; thread-safe for concurrent ``label_*`` calls."""

    def __init__(self, encoder, taxonomy: Taxonomy, *, heads: Optional[HeadSet] = None,
                 topic_classifier: Optional[TextClassifier] = None,
                 sentiment_classifier: Optional[TextClassifier] = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, prefix: str = PASSAGE_PREFIX,
                 feed_evidence_weight: float = DEFAULT_FEED_EVIDENCE_WEIGHT, embeddings: bool = False):
        check_feed_evidence_weight(feed_evidence_weight)
        self.encoder = encoder
        self.feed_evidence_weight = feed_evidence_weight
        self.embeddings = embeddings
        self.taxonomy = taxonomy
        self.max_tokens = max_tokens
        self.prefix = prefix
        self.classifiers = {"topic": topic_classifier, "sentiment": sentiment_classifier}
        self.heads: dict[str, Head] = {}
        self.head_set = heads
        self.zero_shot: dict[str, ZeroShotScorer] = {}
        heads_usable = heads is not None and heads.encoder_id == encoder.model_id
        if heads is not None and not heads_usable:
            LOGGER.warning("heads %s were trained on %s, not %s: using zero-shot labels",
                           heads.version, heads.encoder_id, encoder.model_id)
        for task in ("topic", "sentiment"):
            if self.classifiers[task] is not None:
                continue
            head = heads.heads.get(task) if heads_usable else None
            if head is not None and set(head.labels) == set(taxonomy.ids_for(task)):
                self.heads[task] = head
            else:
                if head is not None:
                    LOGGER.warning("%s head labels %s differ from the taxonomy's; using zero-shot",
                                   task, list(head.labels))
                self.zero_shot[task] = ZeroShotScorer(encoder, taxonomy.labels_for(task))
        needed = {layer for head in self.heads.values() for layer in head.layers}
        if self.zero_shot or embeddings:
            needed.add(encoder.num_layers)
        self.layers = tuple(sorted(needed))
        self.model_id = self._describe(heads if heads_usable else None)
        # stored vectors and search texts alike are centred on the heads' training mean (HeadSet)
        self.embedding_centre = heads.embedding_centre if heads_usable else None

    def _article_vectors(self, unit_vectors: np.ndarray) -> np.ndarray:
        """Unit vectors as stored and searched: centred when the heads carry a centre, renormalised."""
        if self.embedding_centre is None:
            return unit_vectors
        return normalise(unit_vectors - self.embedding_centre)

    def _describe(self, heads: Optional[HeadSet]) -> str:
        parts = [self.encoder.model_id]
        if getattr(self.encoder, "quantized", False):
            parts.append("int8")
        if self.heads and heads is not None:
            parts.append(heads.version)
        for task in ("topic", "sentiment"):
            if task in self.zero_shot:
                parts.append(f"zeroshot-{task}")
            if self.classifiers[task] is not None:
                parts.append(f"{task}:{self.classifiers[task].name}")
        return "+".join(parts)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Encoder token ids of ``prefix + text``, truncated to ``max_tokens``; the
        text as :func:`model_text` gives it, like the rows the heads were trained on."""
        return self.encoder.tokenize([self.prefix + model_text(text or "") for text in texts], self.max_tokens)

    def _texts_from_ids(self, token_ids: Sequence[Sequence[int]]) -> list[str]:
        texts = self.encoder.tokenizer.batch_decode([list(ids) for ids in token_ids], skip_special_tokens=True)
        # decoders may space the prefix out ("passage : ..."), so match it loosely
        prefix = re.compile(r"^\s*" + r"\s*".join(map(re.escape, self.prefix.strip())) + r"\s*")
        return [prefix.sub("", text, count=1) for text in texts]

    def label_token_ids(self, token_ids: list[list[int]],
                        evidence: Optional[Sequence[Sequence[str]]] = None) -> list[Labels]:
        """Labels for tokenised texts: one encoder pass feeds every head.
        ``evidence``, per text, the subjects its feed names (:func:`weigh_by_evidence`)."""
        if not token_ids:
            return []
        probabilities: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        vectors = None
        if self.layers:
            pooled = self.encoder.pooled_layers(token_ids, self.layers)
            if self.embeddings:
                vectors = self._article_vectors(normalise(pooled[:, self.layers.index(self.encoder.num_layers), :]))
            for task, head in self.heads.items():
                probabilities[task] = (head.labels, head.probabilities(pooled, self.layers))
            for task, scorer in self.zero_shot.items():
                last = pooled[:, self.layers.index(self.encoder.num_layers), :]
                probabilities[task] = (scorer.label_ids, scorer.probabilities(last))
        if any(self.classifiers.values()):
            texts = self._texts_from_ids(token_ids)
            for task, classifier in self.classifiers.items():
                if classifier is not None:
                    probabilities[task] = (classifier.label_ids, classifier.probabilities(texts))
        topic_labels, topic_probabilities = probabilities["topic"]
        topic_probabilities = weigh_by_evidence(topic_labels, topic_probabilities, evidence, self.feed_evidence_weight)
        sentiment_labels, sentiment_probabilities = probabilities["sentiment"]
        results = []
        for row in range(len(token_ids)):
            order = np.argsort(-topic_probabilities[row])[:TOP_TOPICS]
            # labels a classifier cannot produce score exactly 0: leave them out of the top 3
            top = tuple((topic_labels[i], float(topic_probabilities[row, i])) for i in order
                        if topic_probabilities[row, i] > 0 or i == order[0])
            best_sentiment = int(np.argmax(sentiment_probabilities[row]))
            results.append(Labels(
                topic=top[0][0], topic_score=top[0][1], topic_scores=top,
                sentiment=sentiment_labels[best_sentiment],
                sentiment_score=float(sentiment_probabilities[row, best_sentiment]),
                embedding=None if vectors is None else vectors[row]))
        return results

    def label_texts(self, texts: list[str]) -> list[Labels]:
        """Labels for raw texts; empty texts get empty labels."""
        present = [index for index, text in enumerate(texts) if text and text.strip()]
        labelled = self.label_token_ids(self.token_ids([texts[i] for i in present]))
        results = [EMPTY_LABELS] * len(texts)
        for index, labels in zip(present, labelled):
            results[index] = labels
        return results

    def embed(self, texts: list[str], prefix: str = QUERY_PREFIX) -> np.ndarray:
        """(N, hidden) unit vectors of ``texts`` as the articles' embeddings are made
        (mean-pooled last layer, normalised, centred as the heads say), with e5's ``query: ``
        prefix by default."""
        return self._article_vectors(self.encoder.embed([model_text(text or "") for text in texts],
                                                        self.max_tokens, prefix))

    def task_probabilities(self, task: str, token_ids: list[list[int]],
                           evidence: Optional[Sequence[Sequence[str]]] = None) -> tuple[tuple[str, ...], np.ndarray]:
        """All label ids and their (N, labels) scores for one task (used by ``newsbeam eval``);
        topic scores weighed by ``evidence`` as :meth:`label_token_ids` does."""
        label_ids, probabilities = self._raw_task_probabilities(task, token_ids)
        if task == "topic":
            probabilities = weigh_by_evidence(label_ids, probabilities, evidence, self.feed_evidence_weight)
        return label_ids, probabilities

    def _raw_task_probabilities(self, task: str, token_ids: list[list[int]]) -> tuple[tuple[str, ...], np.ndarray]:
        if self.classifiers.get(task) is not None:
            classifier = self.classifiers[task]
            return classifier.label_ids, classifier.probabilities(self._texts_from_ids(token_ids))
        pooled = self.encoder.pooled_layers(token_ids, self.layers)
        if task in self.heads:
            head = self.heads[task]
            return head.labels, head.probabilities(pooled, self.layers)
        scorer = self.zero_shot[task]
        return scorer.label_ids, scorer.probabilities(pooled[:, self.layers.index(self.encoder.num_layers), :])


def _read_label_maps(label_map: Optional[str]) -> dict[str, Optional[dict[str, str]]]:
    """``{"topic": {...}, "sentiment": {...}}`` or one flat map used for both tasks."""
    if label_map is None:
        return {"topic": None, "sentiment": None}
    document = json.loads(read_bytes(label_map).decode("utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"label map {label_map} must be a JSON object")
    if set(document) <= {"topic", "sentiment"} and all(isinstance(v, dict) for v in document.values()):
        return {"topic": document.get("topic"), "sentiment": document.get("sentiment")}
    return {"topic": document, "sentiment": document}


def load_labeller(*, encoder: Optional[str] = None, heads: Optional[str] = None, taxonomy: Optional[str] = None,
                  topic_model: Optional[str] = None, sentiment_model: Optional[str] = None,
                  label_map: Optional[str] = None, max_tokens: int = DEFAULT_MAX_TOKENS, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                  torch_threads: Optional[int] = None, cache_dir: Optional[str] = None,
                  quantize: Optional[str] = None,
                  feed_evidence_weight: float = DEFAULT_FEED_EVIDENCE_WEIGHT, embeddings: bool = False) -> Labeller:
    """Build a :class:`Labeller` from addresses (local paths, gs://, hub ids).

    ``encoder`` None is the embedded multilingual-e5-small; ``heads`` None the
    shipped heads; ``taxonomy`` None the shipped IPTC top level. A topic or
    sentiment model replaces that task's head; ``label_map`` maps its labels.
    """
    from newsbeam.labelling import EMBEDDED_MODEL_ID
    from newsbeam.labelling.encoder import load_encoder

    if max_tokens < 8:
        raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
    check_feed_evidence_weight(feed_evidence_weight)  # before the model loads
    head_set = load_heads(heads)
    # the heads' int8 calibration and weight deltas describe the encoder they were trained on only
    own_encoder = head_set.encoder_id == (encoder or EMBEDDED_MODEL_ID)
    loaded_encoder = load_encoder(encoder, cache_dir=cache_dir, torch_threads=torch_threads, quantize=quantize,
                                  int8_peaks=head_set.int8_peaks if own_encoder else None,
                                  weight_deltas=head_set.encoder_deltas if own_encoder else None)
    loaded_encoder.max_batch_tokens = max_batch_tokens
    loaded_taxonomy = load_taxonomy(taxonomy)
    if heads is not None and head_set.encoder_id != loaded_encoder.model_id:
        raise ValueError(f"heads {heads} were trained on encoder {head_set.encoder_id!r}, "
                         f"not {loaded_encoder.model_id!r}; retrain them with newsbeam train-heads")
    maps = _read_label_maps(label_map)
    classifiers = {}
    for task, name in (("topic", topic_model), ("sentiment", sentiment_model)):
        if name is not None:
            classifiers[task] = TextClassifier(name, loaded_taxonomy.ids_for(task), maps[task],
                                               max_tokens=max_tokens, cache_dir=cache_dir)
    return Labeller(loaded_encoder, loaded_taxonomy, heads=head_set,
                    topic_classifier=classifiers.get("topic"), sentiment_classifier=classifiers.get("sentiment"),
                    max_tokens=max_tokens, prefix=head_set.prefix, feed_evidence_weight=feed_evidence_weight,
                    embeddings=embeddings)
