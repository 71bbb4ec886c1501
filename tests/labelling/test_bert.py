"""newsbeam's plain-torch BERT and tokenizer wrapper against transformers,
which they replace on the embedded model's startup path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from newsbeam.labelling.bert import BertConfig, load_bert  # noqa: E402
from newsbeam.labelling.embedded import ensure_embedded_model  # noqa: E402
from newsbeam.labelling.tokenizer import FastTokenizer  # noqa: E402
from tests.labelling.test_tokenizer import HANDWRITTEN_CASES  # noqa: E402

SIB_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "topic" / "sib200"
MIXED_TEXTS = [
    "passage: The central bank kept interest rates unchanged.",
    "passage: أعلنت الحكومة عن خطة جديدة لدعم المزارعين في المناطق الريفية.",
    "passage: 台风登陆后，当地学校停课一天。",
    "passage: Сборная России по хоккею вышла в полуфинал.",
    "passage: " + "Le musée rouvre ses portes après deux ans de travaux. " * 30,
    "passage:   spaces\u00a0and\u200bzero width\tand tabs  ",
]


def tiny_config_dict() -> dict:
    return {"model_type": "bert", "vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 3,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 1}


def hidden_states_of_both(folder: Path, input_ids: torch.Tensor, mask: torch.Tensor):
    from transformers import BertModel

    reference = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    ours = load_bert(folder)
    with torch.inference_mode():
        expected = reference(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
        actual = ours(input_ids, mask, output_hidden_states=True).hidden_states
    return expected, actual


def test_random_bert_matches_transformers_layer_by_layer(tmp_path):
    from transformers import BertConfig as HFConfig
    from transformers import BertModel

    torch.manual_seed(0)
    BertModel(HFConfig(**tiny_config_dict()), add_pooling_layer=False).save_pretrained(tmp_path)
    input_ids = torch.randint(3, 120, (4, 17))
    mask = torch.ones_like(input_ids)
    mask[1, 9:] = 0
    mask[3, 2:] = 0
    expected, actual = hidden_states_of_both(tmp_path, input_ids, mask)
    assert len(actual) == len(expected) == 4
    for layer, (want, got) in enumerate(zip(expected, actual)):
        valid = mask.bool()
        assert torch.allclose(got[valid], want[valid], atol=1e-5), f"layer {layer} differs"


def test_layer_by_layer_pooling_equals_pooling_every_hidden_state(tmp_path):
    """The encoder's pooled layers come from mean_pooled_layers, which keeps one
    hidden state alive at a time; it must give what pooling all of them gives."""
    from transformers import BertConfig as HFConfig
    from transformers import BertModel

    torch.manual_seed(1)
    BertModel(HFConfig(**tiny_config_dict()), add_pooling_layer=False).save_pretrained(tmp_path)
    model = load_bert(tmp_path)
    input_ids = torch.randint(3, 120, (3, 11))
    mask = torch.ones_like(input_ids)
    mask[0, 4:] = 0
    mask[2, 7:] = 0
    with torch.inference_mode():
        states = model(input_ids, mask, output_hidden_states=True).hidden_states
        weights = mask.unsqueeze(-1).float()
        for layers in [(0,), (1, 3), (-1,), (2, -1, 0)]:
            expected = torch.stack([(states[layer] * weights).sum(1) / weights.sum(1) for layer in layers], dim=1)
            actual = model.mean_pooled_layers(input_ids, mask, layers)
            assert actual.shape == (3, len(layers), 32)
            assert torch.equal(actual, expected), f"layers {layers} differ"


def test_embedded_model_matches_transformers_on_real_text():
    folder = ensure_embedded_model()
    tokenizer = FastTokenizer.from_folder(folder)
    ids = tokenizer(MIXED_TEXTS, truncation=True, max_length=128)["input_ids"]
    longest = max(map(len, ids))
    input_ids = torch.full((len(ids), longest), tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for row, row_ids in enumerate(ids):
        input_ids[row, :len(row_ids)] = torch.tensor(row_ids)
        mask[row, :len(row_ids)] = 1
    expected, actual = hidden_states_of_both(folder, input_ids, mask)
    valid = mask.bool()
    for layer in (0, 6, 12):
        assert torch.allclose(actual[layer][valid], expected[layer][valid], atol=1e-4), f"layer {layer} differs"


def test_fast_tokenizer_gives_the_ids_of_transformers_autotokenizer():
    from transformers import AutoTokenizer

    folder = ensure_embedded_model()
    ours = FastTokenizer.from_folder(folder)
    reference = AutoTokenizer.from_pretrained(folder)
    texts = list(MIXED_TEXTS) + [text for text, _ in HANDWRITTEN_CASES.values()]
    for path in sorted(SIB_DEV.glob("*/dev.jsonl")):  # 280 more where ../shared/data is present
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()[:20]]
    assert len(texts) >= 16
    for max_length in (16, 128, 512):
        want = reference(texts, truncation=True, max_length=max_length)["input_ids"]
        assert ours(texts, truncation=True, max_length=max_length)["input_ids"] == want
    full = ours(texts, truncation=False)["input_ids"]
    assert max(map(len, full)) > 128  # untruncated really is untruncated
    assert ours.batch_decode(full[:5]) == reference.batch_decode(full[:5], skip_special_tokens=True)
    assert (ours.pad_token_id, ours.unk_token_id, ours.model_max_length) == (
        reference.pad_token_id, reference.unk_token_id, reference.model_max_length)


def test_fast_tokenizer_gives_the_pinned_reference_ids():
    ours = FastTokenizer.from_folder(ensure_embedded_model())
    texts = [text for text, _ in HANDWRITTEN_CASES.values()]
    assert ours(texts, truncation=False)["input_ids"] == [ids for _, ids in HANDWRITTEN_CASES.values()]


def test_embedded_encoder_loads_without_importing_transformers():
    code = ("import sys; from newsbeam.labelling.encoder import load_encoder; e = load_encoder(); "
            "e.embed(['x']); print('transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_config_refuses_what_this_bert_does_not_compute(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**tiny_config_dict(), "position_embedding_type": "relative_key"}))
    with pytest.raises(ValueError, match="absolute positions"):
        BertConfig.from_json_file(path)
    path.write_text(json.dumps({**tiny_config_dict(), "num_attention_heads": 5}))
    with pytest.raises(ValueError, match="multiple"):
        BertConfig.from_json_file(path)


def test_checkpoint_that_does_not_fit_is_refused(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(tiny_config_dict()))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(120, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing"):
        load_bert(tmp_path)
