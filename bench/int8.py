"""int8 weights for the encoder, and ``newsbeam run`` with them.

Dynamic quantisation (``torch.ao.quantization.quantize_dynamic``): every
``nn.Linear`` gets int8 weights, per output channel (``per_channel_dynamic_qconfig``),
and its activations are quantised per batch at run time. Embeddings and
LayerNorms stay float32.

``python bench/int8.py run --inputs ... --output ...`` is ``newsbeam run`` with
the encoder quantised as it loads (newsbeam itself has no such flag yet).
"""
from __future__ import annotations

import sys


def quantize_int8(model):
    """A copy of ``model`` with int8 per-channel dynamic-quantised Linear layers."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8).eval()


def quantize_encoder(encoder):
    """Swap ``encoder``'s model for its int8 copy, in place; returns the encoder."""
    encoder.model = quantize_int8(encoder.model)  # model_id unchanged: the heads stay valid
    return encoder


def install_int8_loader() -> None:
    """Make newsbeam's ``load_encoder`` return int8 encoders in this process."""
    import newsbeam.model.encoder as encoder_module

    original = encoder_module.load_encoder

    def load_int8_encoder(*args, **kwargs):
        return quantize_encoder(original(*args, **kwargs))

    encoder_module.load_encoder = load_int8_encoder


def main(argv: list[str]) -> int:
    install_int8_loader()
    from newsbeam.pipeline.cli import main as newsbeam_main

    return newsbeam_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
