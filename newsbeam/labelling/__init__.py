"""Sentence encoders: the embedded multilingual-e5-small default and any
``transformers`` encoder by hub id or path.

``Encoder``/``load_encoder`` are imported lazily so that importing this package
(e.g. while building a pipeline graph) does not pull in torch.
"""
from newsbeam.labelling.embedded import EMBEDDED_MODEL_ID, ensure_embedded_model

__all__ = ["DEFAULT_MAX_BATCH_TOKENS", "EMBEDDED_MODEL_ID", "Encoder", "ensure_embedded_model", "load_encoder"]

# Padded tokens per encoder forward pass. Measured with e5-small on 2 CPU cores
# (articles of ~126 tokens): 2,048 runs about 15% faster than 8,192, whose
# activations no longer fit in cache, and holds a quarter of the memory.
DEFAULT_MAX_BATCH_TOKENS = 2048


def __getattr__(name: str):
    if name in ("Encoder", "load_encoder"):
        from newsbeam.labelling import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
