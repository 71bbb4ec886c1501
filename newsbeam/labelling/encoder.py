"""Sentence embeddings from a Hugging Face encoder: the embedded default or any
``transformers`` model given by hub id, local folder or remote (gs://...) folder.

One :class:`Encoder` is meant to be shared by every thread of a worker: the
model only runs forward passes under ``torch.inference_mode()``, and the one
piece of mutable state, the tokenizer's truncation setting, sits behind a lock.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from newsbeam.labelling import DEFAULT_MAX_BATCH_TOKENS, EMBEDDED_MODEL_ID, PASSAGE_PREFIX, QUANTIZE_CHOICES
from newsbeam.labelling.bert import masked_mean
from newsbeam.labelling.embedded import default_cache_root, ensure_embedded_model
from newsbeam.labelling.memory import keep_freed_memory_mapped, page_in_weights

LOGGER = logging.getLogger(__name__)

# tokenizers without a real limit report model_max_length as a huge sentinel
_UNSET_MODEL_MAX_LENGTH = 1_000_000
# RoBERTa-style models number positions from pad_token_id + 1
_OFFSET_POSITION_MODELS = frozenset({"roberta", "xlm-roberta", "camembert"})


# The most characters one token stands for in XLM-R's vocabulary (its longest
# pieces). Beyond ``max_tokens`` times this, text is never read, yet tokenising
# it cost time and memory: measured on 256 articles cut at 6,000 characters,
# 0.21 s and 80 MB, against 0.08 s at 2,048. Where a vocabulary's tokens run
# longer, a head falls short of the budget and is tokenised again whole.
CHARS_PER_TOKEN_BOUND = 16


def cut_at_space(text: str, max_chars: int) -> str:
    """``text`` cut at its last space within ``max_chars``; whole if it has none there."""
    if len(text) <= max_chars:
        return text
    space = text.rfind(" ", 0, max_chars + 1)
    return text[:space] if space > 0 else text


def length_sorted_batches(token_ids: Sequence[Sequence[int]], max_batch_tokens: int) -> list[list[int]]:
    """Row indices of ``token_ids`` in batches of similar lengths, each at most
    ``max_batch_tokens`` once padded to its longest row (a longer row alone)."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # sorted ascending, so this text sets the batch's padded length
        if current and (len(current) + 1) * len(token_ids[index]) > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def padded_batch(batch_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (rows, longest row), long."""
    longest = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch_ids), longest), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        input_ids[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


class Encoder:
    """A transformer encoder and its tokenizer, for mean-pooled embeddings."""

    def __init__(self, model, tokenizer, model_id: str, *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_batch_tokens = max_batch_tokens
        config = model.config
        self.hidden_size: int = config.hidden_size
        self.num_layers: int = config.num_hidden_layers
        self.max_tokens_limit: int = _max_input_tokens(config, tokenizer)
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.unk_id: Optional[int] = tokenizer.unk_token_id
        self._tokenizer_lock = threading.Lock()

    def tokenize(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Token ids with special tokens, at most ``max_tokens`` per text (the
        closing special token is kept when truncating)."""
        if max_tokens < 2:
            raise ValueError(f"max_tokens must leave room for the special tokens, got {max_tokens}")
        if not texts:
            return []
        limit = min(max_tokens, self.max_tokens_limit)
        texts = list(texts)
        heads = [cut_at_space(text, limit * CHARS_PER_TOKEN_BOUND) for text in texts]
        token_ids = self._truncated_ids(heads, limit)
        # A head that filled the budget gave the full text's tokens: it ends at a
        # space, and tokenizers split words there. One that did not (characters
        # that make no token) is tokenised again whole.
        short = [row for row, (head, ids) in enumerate(zip(heads, token_ids))
                 if len(ids) < limit and len(head) < len(texts[row])]
        for row, ids in zip(short, self._truncated_ids([texts[row] for row in short], limit)):
            token_ids[row] = ids
        return token_ids

    def _truncated_ids(self, texts: list[str], limit: int) -> list[list[int]]:
        if not texts:
            return []
        with self._tokenizer_lock:  # the fast tokenizer mutates its truncation state per call
            encoded = self.tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)
        return [list(ids) for ids in encoded["input_ids"]]

    def count_unknown(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` are the unknown token."""
        if self.unk_id is None:
            return 0
        return sum(1 for token_id in ids if token_id == self.unk_id)

    def pooled_layers(self, token_ids: Sequence[Sequence[int]], layers: tuple[int, ...] = (-1,)) -> np.ndarray:
        """Attention-masked mean of the hidden states of ``layers``, shape
        (N, len(layers), hidden), float32, in input order.

        Layer indices address ``hidden_states`` as transformers returns it:
        0 is the embedding output, ``num_layers`` (or -1) the last layer.
        Texts run in length-sorted batches of at most ``max_batch_tokens``
        padded tokens, each padded only to its own longest text.
        """
        if not layers:
            raise ValueError("layers must name at least one layer")
        for layer in layers:
            if not -(self.num_layers + 1) <= layer <= self.num_layers:
                raise ValueError(f"layer {layer} out of range for {self.num_layers} layers (+ embeddings)")
        for position, ids in enumerate(token_ids):
            if not ids:
                raise ValueError(f"token_ids[{position}] is empty; tokenize() always adds special tokens")
        pooled = np.zeros((len(token_ids), len(layers), self.hidden_size), dtype=np.float32)
        for batch in length_sorted_batches(token_ids, self.max_batch_tokens):
            pooled[batch] = self._pool_batch([token_ids[i] for i in batch], layers)
        return pooled

    def embed(self, texts: Sequence[str], max_tokens: int = 512, prefix: str = PASSAGE_PREFIX) -> np.ndarray:
        """L2-normalised last-layer mean pooling of ``prefix + text``, shape (N, hidden)."""
        if not texts:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        ids = self.tokenize([prefix + text for text in texts], max_tokens)
        vectors = self.pooled_layers(ids, (-1,))[:, 0, :]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def _pool_batch(self, batch_ids: list[Sequence[int]], layers: tuple[int, ...]) -> np.ndarray:
        input_ids, attention_mask = padded_batch(batch_ids, self.pad_id)
        only_last = all(layer in (-1, self.num_layers) for layer in layers)
        with torch.inference_mode():
            if hasattr(self.model, "mean_pooled_layers"):  # newsbeam's own BERT pools layer by layer
                return self.model.mean_pooled_layers(input_ids, attention_mask, layers).float().numpy()
            output = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                output_hidden_states=not only_last)
            states = [output.last_hidden_state] * len(layers) if only_last else [
                output.hidden_states[layer] for layer in layers]
            pooled = torch.stack([masked_mean(state, attention_mask) for state in states], dim=1)
        return pooled.float().numpy()


def _max_input_tokens(config, tokenizer) -> int:
    limit = getattr(config, "max_position_embeddings", None) or _UNSET_MODEL_MAX_LENGTH
    if getattr(config, "model_type", "") in _OFFSET_POSITION_MODELS:
        limit -= (getattr(config, "pad_token_id", 1) or 0) + 1
    model_max_length = getattr(tokenizer, "model_max_length", None)
    if model_max_length and model_max_length < _UNSET_MODEL_MAX_LENGTH:
        limit = min(limit, model_max_length)
    return limit


def is_remote_path(name_or_path: str) -> bool:
    """True for a URL-style path (gs://, s3://, ...) that needs Beam's FileSystems."""
    scheme, separator, _ = name_or_path.partition("://")
    return bool(separator) and scheme.lower() != "file" and scheme.isidentifier()


def copy_remote_folder(url: str, cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """Copy every file under ``url`` to a local folder named after the URL, once.

    Like the embedded model, the copy goes to a temporary sibling first and is
    renamed into place, so concurrent loaders never read a partial folder.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = root / "remote" / hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]
    if folder.is_dir():
        return folder
    prefix = url.rstrip("/") + "/"
    matches = FileSystems.match([prefix + "**"])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no files under {url!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for metadata in matches:
            relative = metadata.path[len(prefix):]
            if not relative or relative.startswith("/") or ".." in Path(relative).parts:
                raise ValueError(f"unexpected file {metadata.path!r} under {url!r}")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                    open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.is_dir():  # not lost to a concurrent copy: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOGGER.info("copied model %s to %s", url, folder)
    return folder


def load_encoder(name_or_path: Optional[str] = None, *, cache_dir: Optional[str | os.PathLike] = None,
                 torch_threads: Optional[int] = None, quantize: Optional[str] = None,
                 int8_peaks: Optional[Mapping[str, np.ndarray]] = None,
                 weight_deltas: Optional[Mapping[str, np.ndarray]] = None) -> Encoder:
    """Load an :class:`Encoder`.

    ``None`` gives the embedded multilingual-e5-small (converted on first use
    into ``cache_dir``); otherwise a hub id, a local folder, or a remote folder
    (``gs://bucket/model/``) which is first copied to the local cache. Only
    safetensors weights and no remote code are ever loaded. ``weight_deltas``
    (a fine-tuned head set's, :mod:`newsbeam.labelling.adaptation`) are added to
    the weights before anything else. ``torch_threads``
    sets torch's intra-op thread count, which is process-wide. ``quantize``
    and ``int8_peaks``: see :func:`quantize_encoder`. Loading also sets glibc
    to keep freed memory mapped, process-wide too
    (:func:`newsbeam.labelling.memory.keep_freed_memory_mapped`), and pages in
    all the weights, so memory does not grow with the vocabulary a run meets
    (:func:`newsbeam.labelling.memory.page_in_weights`).
    """
    if torch_threads is not None:
        if torch_threads < 1:
            raise ValueError(f"torch_threads must be positive, got {torch_threads}")
        torch.set_num_threads(torch_threads)
    keep_freed_memory_mapped()  # the encoder reuses its activation memory; see newsbeam.labelling.memory
    if name_or_path is None:
        from newsbeam.labelling.bert import load_bert
        from newsbeam.labelling.tokenizer import FastTokenizer

        # without transformers: it would add ~2 s to every worker's startup (docs/bench.md)
        folder = ensure_embedded_model(cache_dir)
        model = _adapted(load_bert(folder), weight_deltas)
        return _resident(quantize_encoder(Encoder(model, FastTokenizer.from_folder(folder), EMBEDDED_MODEL_ID),
                                          quantize, int8_peaks))

    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per worker process is noise in a pipeline log

    if is_remote_path(name_or_path):
        source = str(copy_remote_folder(name_or_path, cache_dir))
    else:
        source = name_or_path.removeprefix("file://")
    model = _adapted(AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=False,
                                               dtype=torch.float32), weight_deltas)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    return _resident(quantize_encoder(Encoder(model, tokenizer, name_or_path), quantize, int8_peaks))


def _adapted(model, weight_deltas: Optional[Mapping[str, np.ndarray]]):
    if weight_deltas:
        from newsbeam.labelling.adaptation import apply_weight_deltas

        apply_weight_deltas(model, weight_deltas)
    return model


def _resident(encoder: "Encoder") -> "Encoder":
    page_in_weights(encoder.model)
    return encoder


def _marked(encoder: "Encoder", quantize: Optional[str]) -> "Encoder":
    encoder.quantized = quantize == "int8"  # the labeller names it in the `model` column
    return encoder


CALIBRATION_MAX_TOKENS = 128


def quantize_encoder(encoder: "Encoder", quantize: Optional[str],
                     int8_peaks: Optional[Mapping[str, np.ndarray]] = None) -> "Encoder":
    """``encoder`` with its model's linear layers in int8 (in place), or as is.

    int8 is smoothed and per-channel (:mod:`newsbeam.labelling.int8`), calibrated
    with ``int8_peaks`` (recorded by ``train-heads`` on the training texts)
    or, without them, on newsbeam's own written headlines at load time. It is
    an option, not the default: see the benchmark in the README.
    """
    if quantize in (None, "none"):
        return _marked(encoder, quantize)
    if quantize != "int8":
        raise ValueError(f"unknown quantize mode {quantize!r}; expected one of {QUANTIZE_CHOICES}")
    from newsbeam.labelling.int8 import calibrate_and_quantize, quantize_int8

    if int8_peaks:
        quantize_int8(encoder.model, {name: torch.from_numpy(np.asarray(peak, dtype=np.float32))
                                      for name, peak in int8_peaks.items()})
    else:
        calibrate_and_quantize(encoder.model, lambda texts: encoder_peaks_pass(encoder, texts))
    return _marked(encoder, quantize)


def encoder_peaks_pass(encoder: "Encoder", texts: Sequence[str]) -> None:
    """One forward pass over ``texts`` as the labeller reads them (for int8 calibration hooks)."""
    encoder.pooled_layers(encoder.tokenize([PASSAGE_PREFIX + text for text in texts], CALIBRATION_MAX_TOKENS))
