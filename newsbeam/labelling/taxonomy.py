"""The label sets: topic taxonomy (IPTC Media Topic top level by default) and
sentiment, read from one YAML file shipped in ``seeds/``.

A taxonomy file lists ``topics`` (each an ``id`` plus ``descriptions`` keyed by
language) and optionally ``sentiment`` in the same shape; a user file given with
``--taxonomy`` replaces the shipped one. Paths may be local or any filesystem
Beam knows (``gs://...``).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import yaml

LOGGER = logging.getLogger(__name__)

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
DEFAULT_TAXONOMY_FILE = "taxonomy.yaml"
DEFAULT_SENTIMENT_IDS = ("negative", "neutral", "positive")
DEFAULT_DESCRIPTION_LANGUAGE = "en"


@dataclass(frozen=True)
class Label:
    """One label: its id (what lands in the output column) and descriptions by language."""

    id: str
    descriptions: Mapping[str, str] = field(default_factory=dict)

    def description_texts(self) -> tuple[str, ...]:
        """Every description (one per language), or the id made readable when there is none."""
        if self.descriptions:
            return tuple(self.descriptions.values())
        return (self.id.replace("_", " "),)


@dataclass(frozen=True)
class Taxonomy:
    """Topic and sentiment label sets, in file order."""

    name: str
    topics: tuple[Label, ...]
    sentiments: tuple[Label, ...]
    digest: str  # sha256 of the file bytes, recorded with trained heads

    @property
    def topic_ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.topics)

    @property
    def sentiment_ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.sentiments)

    def ids_for(self, task: str) -> tuple[str, ...]:
        if task == "topic":
            return self.topic_ids
        if task == "sentiment":
            return self.sentiment_ids
        raise ValueError(f"unknown task {task!r}; expected 'topic' or 'sentiment'")

    def labels_for(self, task: str) -> tuple[Label, ...]:
        if task == "topic":
            return self.topics
        if task == "sentiment":
            return self.sentiments
        raise ValueError(f"unknown task {task!r}; expected 'topic' or 'sentiment'")


def read_bytes(path: str) -> bytes:
    """The bytes of a local file or of any URL Beam's FileSystems can open (gs://, s3://)."""
    scheme, separator, _ = path.partition("://")
    if separator and scheme.lower() != "file":
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    with open(path.removeprefix("file://"), "rb") as handle:
        return handle.read()


def read_seed_bytes(name: str) -> bytes:
    """A file shipped in ``newsbeam/seeds`` (``name`` may contain sub-folders)."""
    return (SEEDS_DIR / name).read_bytes()


def _parse_labels(entries, where: str) -> tuple[Label, ...]:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where} must be a non-empty list of labels, got {entries!r}")
    labels = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"].strip():
            raise ValueError(f"each entry of {where} needs a string 'id', got {entry!r}")
        descriptions = entry.get("descriptions") or {}
        if not isinstance(descriptions, dict):
            raise ValueError(f"descriptions of {entry['id']!r} must map language -> text, got {descriptions!r}")
        labels.append(Label(id=entry["id"].strip(), descriptions={str(k): str(v) for k, v in descriptions.items()}))
    ids = [label.id for label in labels]
    duplicates = sorted({label_id for label_id in ids if ids.count(label_id) > 1})
    if duplicates:
        raise ValueError(f"{where} repeats ids {duplicates}")
    return tuple(labels)


def parse_taxonomy(data: bytes, source: str = "<bytes>") -> Taxonomy:
    """A :class:`Taxonomy` from YAML (or JSON) bytes; ``source`` names it in errors."""
    document = yaml.safe_load(data.decode("utf-8"))
    if not isinstance(document, dict) or "topics" not in document:
        raise ValueError(f"taxonomy {source} must be a mapping with a 'topics' list")
    topics = _parse_labels(document["topics"], f"{source}: topics")
    sentiment_entries = document.get("sentiment") or list(DEFAULT_SENTIMENT_IDS)
    sentiments = _parse_labels(sentiment_entries, f"{source}: sentiment")
    return Taxonomy(
        name=str(document.get("name") or source),
        topics=topics,
        sentiments=sentiments,
        digest=hashlib.sha256(data).hexdigest(),
    )


def load_taxonomy(path: Optional[str] = None) -> Taxonomy:
    """The taxonomy at ``path`` (local or gs://), else the shipped IPTC top level."""
    if path is None:
        return parse_taxonomy(read_seed_bytes(DEFAULT_TAXONOMY_FILE), DEFAULT_TAXONOMY_FILE)
    return parse_taxonomy(read_bytes(path), path)


def load_label_map(name_or_path: str) -> dict[str, str]:
    """A dataset label -> newsbeam id mapping: a JSON file path, or the name of a
    map shipped in ``seeds/label_maps`` (``sib200``, ``masakhanews``, ``xlmt``)."""
    if "/" not in name_or_path and "\\" not in name_or_path and not name_or_path.endswith(".json"):
        try:
            data = read_seed_bytes(f"label_maps/{name_or_path}.json")
        except FileNotFoundError:
            raise ValueError(f"no shipped label map named {name_or_path!r}") from None
    else:
        data = read_bytes(name_or_path)
    mapping = json.loads(data.decode("utf-8"))
    if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in mapping.items()):
        raise ValueError(f"label map {name_or_path} must be a JSON object of label -> id (or null)")
    return {key: value for key, value in mapping.items() if value}
