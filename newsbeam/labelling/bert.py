"""BERT's encoder in plain torch, for the embedded model.

The arithmetic and parameter names are those of ``transformers``' BertModel
(absolute positions, post-LayerNorm, exact GELU, no pooler), so the converted
e5-small checkpoint loads as is, and a test holds the two to the same hidden
states. Why not BertModel itself: importing transformers and building its
model is about 2 s of every worker's startup, and this module needs only
torch. Encoders named by ``--encoder`` still load through transformers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional

from newsbeam.labelling.q4 import Q4Embedding

# Next to model.safetensors, the embedded model's vocabulary table in Q4_0 blocks
# (newsbeam.labelling.q4); where present it replaces the float32 table.
Q4_WORDS_FILE = "word_embeddings.q4_0.safetensors"
FLOAT_WORDS, Q4_WORDS = "embeddings.word_embeddings.weight", "embeddings.word_embeddings.blocks"


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` this encoder reads."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    pad_token_id: int = 0
    model_type: str = "bert"
    position_embedding_type: str = "absolute"

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {field.name for field in fields(cls)}
        config = cls(**{key: value for key, value in document.items() if key in known})
        if config.hidden_act != "gelu" or config.position_embedding_type != "absolute":
            raise ValueError(f"{path}: only absolute positions and exact GELU are supported, got "
                             f"{config.position_embedding_type!r} / {config.hidden_act!r}")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"{path}: hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
        return config


def _uninitialised_embedding(rows: int, width: int) -> nn.Embedding:
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig, q4_words: bool = False):
        super().__init__()
        # uninitialised: the checkpoint always overwrites them, and randomly
        # initialising the 250k x 384 vocabulary costs most of a second
        self.word_embeddings = (Q4Embedding(config.vocab_size, config.hidden_size) if q4_words
                                else _uninitialised_embedding(config.vocab_size, config.hidden_size))
        self.position_embeddings = _uninitialised_embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = _uninitialised_embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # every text is one segment: token type 0 throughout
        summed = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
                  + self.token_type_embeddings.weight[0])
        return self.dropout(self.LayerNorm(summed))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape

        def split(projection: nn.Module) -> torch.Tensor:
            return projection(hidden).view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        context = functional.scaled_dot_product_attention(split(self.query), split(self.key), split(self.value),
                                                          attn_mask=attend)
        return context.transpose(1, 2).reshape(batch, length, width)


class BertResidualOutput(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm: BERT's ``attention.output``
    (from the hidden width) and ``output`` (from the FFN width)."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(inputs)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, attend), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return functional.gelu(self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, attend)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertModel(nn.Module):
    """Embeddings + encoder layers; ``forward`` mirrors transformers' output fields."""

    def __init__(self, config: BertConfig, q4_words: bool = False):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config, q4_words)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False) -> SimpleNamespace:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = []
        for hidden in self.iter_hidden_states(input_ids, attention_mask, self.config.num_hidden_layers):
            if output_hidden_states:
                states.append(hidden)
        return SimpleNamespace(last_hidden_state=hidden,
                               hidden_states=tuple(states) if output_hidden_states else None)

    def iter_hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, last_layer: int):
        """The embedding output, then each layer's output up to ``last_layer``, one at a time."""
        # (batch, 1, 1, keys): True where a query may attend, the same for every head and query
        attend = attention_mask[:, None, None, :].bool()
        hidden = self.embeddings(input_ids)
        yield hidden
        for layer in self.encoder.layer[:last_layer]:
            hidden = layer(hidden, attend)
            yield hidden

    def mean_pooled_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           layers: Sequence[int]) -> torch.Tensor:
        """Attention-masked means of the hidden states ``layers`` (indices as in
        ``hidden_states``: 0 the embeddings, -1 the last), shape (batch, len(layers), hidden).

        The same values as pooling ``forward(..., output_hidden_states=True)``,
        but each state is pooled as it is made and dropped: a batch holds one
        hidden state, not all thirteen (at 8,192 tokens, 12 MB instead of 160).
        """
        count = self.config.num_hidden_layers + 1
        wanted = [layer % count for layer in layers]
        pooled = {index: masked_mean(state, attention_mask)
                  for index, state in enumerate(self.iter_hidden_states(input_ids, attention_mask, max(wanted)))
                  if index in wanted}
        return torch.stack([pooled[index] for index in wanted], dim=1)


def masked_mean(state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, length, hidden) -> (batch, hidden): the mean over the tokens the mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(state.dtype)
    return (state * mask).sum(dim=1) / mask.sum(dim=1)


def load_bert(folder: str | Path) -> BertModel:
    """The BERT in ``folder`` (``config.json`` + ``model.safetensors``), float32, eval mode;
    with the vocabulary table of :data:`Q4_WORDS_FILE` instead, where the folder has one.

    The checkpoint's tensors are assigned into the module rather than copied.
    (Building on torch's meta device would skip all initialisation, but its
    first use imports torch's decomposition tables: slower than what it saves.)
    """
    folder = Path(folder)
    config = BertConfig.from_json_file(folder / "config.json")
    q4_words = (folder / Q4_WORDS_FILE).is_file()
    model = BertModel(config, q4_words)
    # e5 mean-pools; a pooler is never used
    state = _tensors(folder / "model.safetensors",
                     lambda name: not name.startswith("pooler.") and not (q4_words and name == FLOAT_WORDS))
    if q4_words:
        state.update(_tensors(folder / Q4_WORDS_FILE, lambda name: True))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not fit BERT {config}: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.float().eval()


def _tensors(path: Path, wanted) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file whose names ``wanted`` accepts; the
    others are never read."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as checkpoint:
        return {name: checkpoint.get_tensor(name) for name in checkpoint.keys() if wanted(name)}
