"""The lab's labels of shared data, stored as references: ``file`` + ``id`` name
a row of the public data under the data root, ``topic`` / ``sentiment`` /
``confidence`` are ours. The text is read from the data root at training time
and never copied into the project (lab/labels/README.md).

A fixed share of the referenced rows is the real-news dev set: chosen by a
hash of (file, id), so it never changes when files are added or re-read, and
training never sees it (:func:`split_of`). A row of a public set's own held-out
split (its ``dev``/``val``/``test`` file) is dev whatever its hash: labels of
such rows measure, they never train.

A parallel corpus (SIB-200: the same Flores sentences in many languages) is
labelled once per sentence: a *parallel reference* names the files by a glob
and the sentence by its ``index_id``, and stands for that sentence in every
file (:func:`resolve_parallel`). Such labels train only: a dev share would
leak, since the same sentence trains in the other languages; the corpus's own
dev split is its held-out set.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from functools import lru_cache
from typing import Optional

DEV_PERCENT = 15
TRAIN, DEV = "train", "dev"
HIGH_CONFIDENCE = "high"  # the reader was sure: a clear subject
LOW_CONFIDENCE = "low"  # unclear or not news: kept out of training and of the dev set
HELD_OUT_FILES = ("dev.jsonl", "val.jsonl", "test.jsonl")  # a public set's own held-out splits
SHARED_KEYS = ("text", "headline", "body", "lang", "url", "tags")  # what a reference takes from the shared row


def is_reference(row: dict) -> bool:
    return "file" in row and "id" in row and not (row.get("text") or row.get("headline") or row.get("body"))


def split_of(file: str, row_id: str) -> str:
    """``dev`` for DEV_PERCENT % of the rows, by a hash of where the row lives, and for
    every row of a held-out split: training on a benchmark's dev split would empty it
    as a measure of the benchmark."""
    if os.path.basename(file) in HELD_OUT_FILES:
        return DEV
    digest = hashlib.sha256(f"{file}\n{row_id}".encode("utf-8")).digest()
    return DEV if int.from_bytes(digest[:4], "big") % 100 < DEV_PERCENT else TRAIN


def is_parallel_reference(row: dict) -> bool:
    return "files" in row and "index_id" in row and not row.get("text")


@lru_cache(maxsize=32)
def _rows_by_id(path: str, key: str = "id") -> dict[str, dict]:
    rows = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                rows[str(row[key])] = row
    return rows


def resolve(reference: dict, data_root: Optional[str]) -> dict:
    """The shared row a reference names, with the reference's labels on it."""
    if not data_root:
        raise ValueError(f"labels of shared data ({reference['file']}) need --data_root")
    path = os.path.join(data_root, reference["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the shared file a label refers to is missing (check --data_root)")
    shared = _rows_by_id(path).get(str(reference["id"]))
    if shared is None:
        raise ValueError(f"{reference['file']} has no row with id {reference['id']!r}")
    row = {key: shared[key] for key in SHARED_KEYS if key in shared}
    # the shared row's own label (for ANT a newsroom desk) is not copied: ours are
    row.update({key: value for key, value in reference.items() if key not in ("file", "id")})
    return row


def resolve_parallel(reference: dict, data_root: Optional[str]) -> list[dict]:
    """The sentence a parallel reference names, from every file its ``files`` glob matches, labelled."""
    if not data_root:
        raise ValueError(f"labels of shared data ({reference['files']}) need --data_root")
    paths = sorted(glob.glob(os.path.join(data_root, reference["files"])))
    if not paths:
        raise FileNotFoundError(f"no shared files match {reference['files']} under {data_root} (check --data_root)")
    labels = {key: value for key, value in reference.items() if key not in ("files", "index_id")}
    rows = []
    for path in paths:
        shared = _rows_by_id(path, "index_id").get(str(reference["index_id"]))
        if shared is None:
            raise ValueError(f"{path} has no row with index_id {str(reference['index_id'])!r}")
        rows.append({**{key: shared[key] for key in SHARED_KEYS if key in shared}, **labels})
    return rows
