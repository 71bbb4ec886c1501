"""The test suite's builders: articles, and a tiny random BERT with toy
labelled sets for the labelling and lab tests (no network, no shared data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from newsbeam.records import Article


def make_article(n: int, *, lang: str = "en", published: str | None = "2024-05-01T10:00:00+00:00") -> Article:
    return Article(
        article_id=f"id{n:06d}", url=f"https://ex.com/{n}", source="https://ex.com/rss", source_title="Ex",
        title=f"Title {n}", summary=None, body=f"Body {n}", authors=("A",), tags=("t",),
        published_at=published, fetched_at="2024-05-02T00:00:00+00:00", content_hash=f"h{n}",
        language=lang, language_score=0.9,
    )


# ---- a tiny model and toy labelled sets -----------------------------------------

SPORT_WORDS = ["match", "goal", "team", "league", "coach", "striker", "cup", "stadium"]
WEATHER_WORDS = ["rain", "storm", "snow", "forecast", "wind", "sunny", "cloud", "frost"]
HAPPY_WORDS = ["great", "wonderful", "love", "win", "joy", "excellent"]
SAD_WORDS = ["awful", "terrible", "hate", "loss", "grief", "disaster"]
FILLER = ["the", "a", "today", "news", "report", "says"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "passage", "query", ":"]


def save_tiny_bert(folder: Path, max_positions: int = 64) -> str:
    """A random 3-layer BERT with a word-level tokenizer over the toy vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = SPECIAL + FILLER + SPORT_WORDS + WEATHER_WORDS + HAPPY_WORDS + SAD_WORDS
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=max_positions)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=3,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=max_positions), add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def toy_sentences(words: list[str], count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(FILLER, 2).tolist() + rng.choice(words, 4).tolist()) for _ in range(count)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_toy_sets(folder: Path, seed: int = 0) -> tuple[str, str]:
    """A topic set (dataset labels 'football'/'meteo', mapped by a JSON map) and a sentiment set."""
    topic_rows = [{"text": t, "label": "football", "lang": "en"} for t in toy_sentences(SPORT_WORDS, 40, seed)]
    topic_rows += [{"text": t, "label": "meteo", "lang": "fr"} for t in toy_sentences(WEATHER_WORDS, 40, seed + 1)]
    topic_rows.append({"text": "the news", "label": "gossip", "lang": "en"})  # maps to nothing: skipped
    sentiment_rows = [{"text": t, "label": "positive", "lang": "en"} for t in toy_sentences(HAPPY_WORDS, 40, seed)]
    sentiment_rows += [{"text": t, "label": "negative", "lang": "en"} for t in toy_sentences(SAD_WORDS, 40, seed + 1)]
    return (write_jsonl(folder / "topic.jsonl", topic_rows), write_jsonl(folder / "sentiment.jsonl", sentiment_rows))


def with_embedding(article: Article, vector) -> Article:
    """The article carrying ``vector`` as its stored embedding (int8 + scale, as ``--embeddings`` writes it)."""
    from newsbeam.embeddings import normalise, to_record

    embedding, scale = to_record(normalise(np.asarray(vector, dtype=np.float32)))
    return article.replace(embedding=embedding, embedding_scale=scale)
