"""Security hygiene: what newsbeam loads, unpickles, and prints.

Models load from safetensors only with remote code off (checked in the source
and by loading a pickle-only checkpoint); nothing unpickles bytes; secrets
given on the command line or inside feed URLs stay out of logs, the run
manifest, the dead-letter rows and the dataset.
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from newsbeam.pipeline.cli import public_options
from newsbeam.pipeline.options import NewsOptions
from tests.support.httpserver import Response
from tests.support.pipelines import english_items, rss, run_cli

PACKAGE = Path(__file__).resolve().parents[2] / "newsbeam"
# Calls that turn bytes into arbitrary objects (pickle under the hood).
UNPICKLING_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("torch", "load"),
                    ("joblib", "load"), ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
                    ("cloudpickle", "loads"), ("pandas", "read_pickle"), ("pd", "read_pickle")}
TOKENIZER_CLASSES = ("AutoTokenizer", "BertTokenizer", "BertTokenizerFast", "PreTrainedTokenizerFast")


def package_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        calls.extend((f"{path.relative_to(PACKAGE.parent)}", node.lineno, node)
                     for node in ast.walk(tree) if isinstance(node, ast.Call))
    return calls


def keyword(call: ast.Call, name: str):
    for item in call.keywords:
        if item.arg == name:
            return item.value
    return None


def dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


# --- model loading ------------------------------------------------------------------

def test_every_model_from_pretrained__safetensors_only_and_no_remote_code():
    """Each model's from_pretrained passes use_safetensors=True; no call anywhere sets trust_remote_code
    to anything but the literal False. (Tokenizers read JSON/vocab files, never pickles.)"""
    loads = [(where, line, call) for where, line, call in package_calls()
             if isinstance(call.func, ast.Attribute) and call.func.attr == "from_pretrained"]
    assert len(loads) >= 4, "expected the encoder and classifier loaders"
    problems = []
    for where, line, call in loads:
        owner = dotted_name(call.func.value)
        remote = keyword(call, "trust_remote_code")
        if remote is not None and not (isinstance(remote, ast.Constant) and remote.value is False):
            problems.append(f"{where}:{line} {owner}.from_pretrained trust_remote_code={ast.unparse(remote)}")
        if owner.endswith(TOKENIZER_CLASSES):
            continue
        safetensors = keyword(call, "use_safetensors")
        if not (isinstance(safetensors, ast.Constant) and safetensors.value is True):
            problems.append(f"{where}:{line} {owner}.from_pretrained without use_safetensors=True")
    for where, line, call in package_calls():
        remote = keyword(call, "trust_remote_code")
        if remote is not None and not (isinstance(remote, ast.Constant) and remote.value is False):
            problems.append(f"{where}:{line} trust_remote_code={ast.unparse(remote)}")
    assert problems == []


def test_nothing_in_the_package_unpickles():
    """No pickle/torch/joblib/dill load, no pandas.read_pickle, no numpy load with allow_pickle=True."""
    found = []
    for where, line, call in package_calls():
        name = dotted_name(call.func)
        parts = tuple(name.rsplit(".", 1)) if "." in name else ("", name)
        if parts in UNPICKLING_CALLS:
            found.append(f"{where}:{line} {name}")
        allow = keyword(call, "allow_pickle")
        if name.endswith("load") and allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
            found.append(f"{where}:{line} {name}(allow_pickle=...)")
    assert found == []


def tiny_bert_folder(folder: Path, *, safe: bool) -> Path:
    """A 2-layer, 32-wide random BERT with a 10-word vocabulary, saved as safetensors or as a pickle.

    transformers 5 always writes safetensors, so the pickle is written the way old checkpoints were:
    torch.save of the state dict as pytorch_model.bin.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(vocab_size=10, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config)
    if safe:
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True)
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "ship", "port", "news", "day"]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    return folder


def test_pickle_only_checkpoint__refused_by_load_encoder_without_unpickling(tmp_path, monkeypatch):
    """A folder with only pytorch_model.bin (a pickle) is refused, and torch.load is never called;
    the same weights as model.safetensors load (so the refusal is about the format)."""
    import torch

    from newsbeam.labelling.encoder import load_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pickled = tiny_bert_folder(tmp_path / "pickled", safe=False)
    assert (pickled / "pytorch_model.bin").exists() and not list(pickled.glob("*.safetensors"))
    safe = tiny_bert_folder(tmp_path / "safe", safe=True)
    unpickled: list[str] = []
    real_torch_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(str(a[:1])) or real_torch_load(*a, **k))

    with pytest.raises(OSError, match="safetensors"):
        load_encoder(str(pickled))

    assert unpickled == []
    encoder = load_encoder(str(safe))
    assert encoder.hidden_size == 32 and encoder.num_layers == 2
    assert unpickled == []


# --- secrets ---------------------------------------------------------------------------

class _SecretBearingOptions(PipelineOptions):
    """Stand-ins for the secret-bearing flags a deployment may add (newsbeam has none today)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--hf_token")
        parser.add_argument("--proxy_password")
        parser.add_argument("--service_api_key")


def test_public_options__drop_options_named_like_secrets():
    """Options whose names say token/password/key/secret never reach the manifest; the rest do."""
    options = PipelineOptions(["--output", "/data/news", "--hf_token", "hf_SECRET_TOKEN_1",
                               "--proxy_password", "SECRET_PASSWORD_2", "--service_api_key", "SECRET_KEY_3"])

    public = public_options(options)

    assert public.get("output") == options.view_as(NewsOptions).output == "/data/news"
    assert not any(secret in repr(public) for secret in ("hf_SECRET_TOKEN_1", "SECRET_PASSWORD_2", "SECRET_KEY_3"))


FEED_SECRETS = ("s3cr3t-pass-word", "abc123tokenvalue", "KEY-9f8e7d6c")


def test_credentials_in_feed_urls__not_in_logs_manifest_errors_or_rows(tmp_path, http_server, capsys, caplog):
    """user:password@ and ?token=/&api_key= in two feed URLs (one fails, one works): the secret values
    appear in no log record, no printed line, not in _runs/*.json, _errors or the data files."""
    http_server.route("/private.xml", Response(body=rss(english_items("private", 2))))
    http_server.route("/gone.xml", Response(status=404))
    user_pass, token, api_key = FEED_SECRETS
    working = http_server.url(f"/private.xml?token={token}&api_key={api_key}").replace(
        "http://", f"http://reader:{user_pass}@")
    failing = http_server.url(f"/gone.xml?token={token}").replace("http://", f"http://reader:{user_pass}@")
    output = tmp_path / "out"
    caplog.set_level(logging.DEBUG)

    code = run_cli("--output", str(output), "--feeds", working, failing, "--allow_private_addresses",
                   "--skip_labels")

    assert code == 0
    captured = capsys.readouterr()
    places = {
        "stdout/stderr": captured.out + captured.err,
        "log records": "\n".join(record.getMessage() for record in caplog.records),
        "manifest": "\n".join(path.read_text(encoding="utf-8") for path in (output / "_runs").glob("*.json")),
        "_errors": repr([pq.read_table(p).to_pylist() for p in (output / "_errors").rglob("*.parquet")]),
        "data files": repr([pq.read_table(p).to_pylist() for p in output.glob("*=*/**/*.parquet")]),
    }
    leaks = {place: [secret for secret in FEED_SECRETS if secret in text] for place, text in places.items()}
    assert {place: found for place, found in leaks.items() if found} == {}
