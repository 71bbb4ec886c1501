"""Writing a head set: the lab's side of the format that
:mod:`newsbeam.labelling.heads` reads (names and version come from there)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors_bytes

from newsbeam.labelling.adaptation import DELTA_PREFIX
from newsbeam.labelling.heads import (
    EMBEDDING_CENTRE,
    FORMAT_VERSION,
    HEADS_JSON,
    HEADS_WEIGHTS,
    INT8_PEAKS_PREFIX,
    HeadSet,
)


def save_heads(head_set: HeadSet, folder: str | Path) -> Path:
    """Write ``heads.json`` + ``heads.safetensors`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    tasks = {}
    for task, head in head_set.heads.items():
        tensors[f"{task}.mean"] = np.ascontiguousarray(head.mean, dtype=np.float32)
        tensors[f"{task}.scale"] = np.ascontiguousarray(head.scale, dtype=np.float32)
        for index, (weight, bias) in enumerate(zip(head.weights, head.biases)):
            tensors[f"{task}.dense{index}.weight"] = np.ascontiguousarray(weight, dtype=np.float16)
            tensors[f"{task}.dense{index}.bias"] = np.ascontiguousarray(bias, dtype=np.float16)
        tasks[task] = {
            "labels": list(head.labels),
            "layers": list(head.layers),
            "dense_layers": len(head.weights),
            "feature_width": head.feature_width,
            "temperature": head.temperature,
            "metadata": dict(head.metadata),
        }
    for name, peak in (head_set.int8_peaks or {}).items():
        tensors[f"{INT8_PEAKS_PREFIX}{name}"] = np.ascontiguousarray(peak, dtype=np.float16)
    for name, delta in (head_set.encoder_deltas or {}).items():
        tensors[f"{DELTA_PREFIX}{name}"] = np.ascontiguousarray(delta, dtype=np.float16)
    if head_set.embedding_centre is not None:
        tensors[EMBEDDING_CENTRE] = np.ascontiguousarray(head_set.embedding_centre, dtype=np.float32)
    document = {
        "format": FORMAT_VERSION,
        "version": head_set.version,
        "encoder": head_set.encoder_id,
        "max_tokens": head_set.max_tokens,
        "prefix": head_set.prefix,
        "taxonomy_sha256": head_set.taxonomy_digest,
        "tasks": tasks,
        "int8_calibration": dict(head_set.int8_calibration) if head_set.int8_peaks else None,
        "fine_tuning": dict(head_set.fine_tuning) if head_set.encoder_deltas else None,
    }
    if head_set.embedding_centre is not None:
        document[EMBEDDING_CENTRE] = dict(head_set.embedding_centre_source)
    (folder / HEADS_WEIGHTS).write_bytes(save_safetensors_bytes(tensors, metadata={"format": "np"}))
    (folder / HEADS_JSON).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder
