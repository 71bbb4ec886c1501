"""model_text: escapes that reached the text undecoded are decoded before
tokenising, the same way in training, evaluation and the pipeline."""
from __future__ import annotations

import numpy as np
import pytest
from newsbeam_lab import head_fitting

from newsbeam.labelling.input_text import model_text
from tests.support.builders import save_tiny_bert

ESCAPED_TWEET = r"Brilliant\u002c I\u2019m at the #cufidc session \ud83d\ude02 &amp;amp; more"


def test_literal_unicode_escapes_and_html_references_are_decoded():
    assert model_text(ESCAPED_TWEET) == "Brilliant, I\u2019m at the #cufidc session \U0001F602 & more"
    assert model_text("&#1575;&#x644; &lt;b&gt; &eacute;t&eacute;") == "\u0627\u0644 <b> \u00e9t\u00e9"


@pytest.mark.parametrize("text", [
    "AT&T and R&D posted gains",                  # a bare ampersand is not a reference
    "https://example.org/?a=1&para=2&copy=3",     # legacy references without ';' stay as written
    r"C:\users\news and \u12 are not escapes",     # backslashes that are not \uXXXX
    "&unknownentity; stays",
    "\u0627\u0644\u0639\u0631\u0627\u0642 \u2014 plain text",
])
def test_text_without_escapes_is_returned_unchanged(text):
    assert model_text(text) == text


def test_decoding_twice_changes_nothing_and_a_lone_surrogate_becomes_a_replacement_character():
    once = model_text(r"one \ud83d alone, &amp;lt;tag&amp;gt;")
    assert once == "one \ufffd alone, <tag>"
    assert model_text(once) == once
    once.encode("utf-8")  # nothing unencodable is left for the Parquet writer or the tokenizer


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from newsbeam.labelling.encoder import load_encoder

    return load_encoder(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def test_training_and_the_labeller_read_the_same_decoded_tokens(tiny_encoder):
    from newsbeam.labelling.labeller import Labeller
    from newsbeam.labelling.taxonomy import load_taxonomy

    escaped, decoded = "great win &amp; joy", "great win & joy"
    training_ids = head_fitting.passage_token_ids(tiny_encoder, [escaped, decoded], 32)
    assert training_ids[0] == training_ids[1]
    labeller = Labeller(tiny_encoder, load_taxonomy(None), max_tokens=32)
    assert labeller.token_ids([escaped]) == [training_ids[1]]


def test_feature_cache_is_keyed_by_the_text_the_encoder_reads(tiny_encoder, tmp_path):
    escaped = head_fitting.pooled_features(tiny_encoder, ["great win &amp; joy"], (1,), 32, cache_dir=tmp_path)
    decoded = head_fitting.pooled_features(tiny_encoder, ["great win & joy"], (1,), 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("features-*.npy"))) == 1  # one entry serves both spellings
    np.testing.assert_allclose(escaped, decoded, atol=1e-2)
    assert escaped.shape == (1, 1, tiny_encoder.hidden_size)
