"""The limit: the bare encoder on the labeller's own texts, nothing else.

Same texts (``article_text``: headline + lead), same ``passage:`` prefix and
truncation (``max_tokens``), same pooled layers the heads read; tokenised in
one call and run in length-sorted batches under the token budget
(``Encoder.pooled_layers``). No Beam, no files, no heads: the fastest this
model can label these articles on this machine.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import Sequence


def measure_limit(labeller, texts: Sequence[str], *, repeats: int = 1) -> dict:
    """Tokenise + encode ``texts`` with ``labeller``'s encoder; the best of ``repeats``.

    A warm-up pass on a few texts first, so one-off costs (thread pools, lazy
    kernels) are not charged to the measurement.
    """
    if not texts:
        raise ValueError("measure_limit needs at least one text")
    encoder, layers = labeller.encoder, labeller.layers or (-1,)
    encoder.pooled_layers(labeller.token_ids(list(texts[:2])), layers)
    best = None
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        token_ids = labeller.token_ids(list(texts))
        encoder.pooled_layers(token_ids, layers)
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    lengths = [len(ids) for ids in token_ids]
    return {
        "articles": len(texts),
        "seconds": round(best, 3),
        "articles_per_s": round(len(texts) / best, 3),
        "tokens": sum(lengths),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "max_tokens": labeller.max_tokens,
        "max_batch_tokens": encoder.max_batch_tokens,
        "layers": list(layers),
    }


@contextmanager
def int8_encoder(labeller):
    """The labeller's encoder running a calibrated int8 copy of its model
    (exactly what ``--quantize int8`` loads); the fp32 model is back afterwards."""
    from newsbeam.labelling.encoder import quantize_encoder

    encoder = labeller.encoder
    fp32_model = encoder.model
    encoder.model = copy.deepcopy(fp32_model)
    try:
        quantize_encoder(encoder, "int8", labeller.head_set.int8_peaks if labeller.head_set else None)
        yield encoder.model
    finally:
        encoder.model = fp32_model
        encoder.quantized = False
