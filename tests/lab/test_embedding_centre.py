"""The sample the embedding centre is measured on: distinct texts, seeded, capped."""
from __future__ import annotations

from newsbeam_lab.embedding_centre import centre_texts, main


def test_the_sample_is_distinct_non_empty_seeded_and_capped():
    texts = [f"article {n % 700}" for n in range(1400)] + ["", "   "]
    sample = centre_texts(texts, count=500)
    assert len(sample) == len(set(sample)) == 500 and all(text.startswith("article ") for text in sample)
    assert centre_texts(list(reversed(texts)), count=500) == sample  # the order rows are read in does not matter
    assert centre_texts(texts, count=500, seed=1) != sample
    assert len(centre_texts(texts)) == 700  # fewer texts than the cap: all of them


def test_the_command_without_data_says_what_it_needs(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("NEWSBEAM_DATA_ROOT", raising=False)
    assert main(["--heads", str(tmp_path)]) == 2
    assert "needs --data_root" in capsys.readouterr().err
