"""What a user writes without newsbeam: one loop, one article at a time.

Read the feed files with feedparser and the JSONL with json; per article,
detect the language, run the encoder once for the topic head and again for the
sentiment head, each time padded to the model's maximum (512 tokens, batch of
one); collect rows; ``pandas.DataFrame.to_parquet(partition_cols=...)``.
Same encoder, same heads, same ``passage:`` prefix as newsbeam.
"""
from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Iterator

TAG = re.compile(r"<[^>]+>")
MODEL_MAXIMUM = 512
PARTITION_COLUMNS = ["dt", "lang"]


def strip_tags(markup: str) -> str:
    return html.unescape(TAG.sub("\n", markup or "")).strip()


def read_articles(folder: str | Path) -> Iterator[dict]:
    """Every article in ``folder``'s feed and JSONL files, as plain dicts."""
    import feedparser

    for path in sorted(Path(folder).iterdir()):
        if path.suffix in (".rss", ".atom", ".xml"):
            for entry in feedparser.parse(path.read_bytes()).entries:
                content = entry.get("content", [{}])[0].get("value") or entry.get("summary", "")
                yield {"url": entry.get("link"), "title": entry.get("title", ""), "body": strip_tags(content),
                       "published": entry.get("published") or entry.get("updated")}
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                yield {"url": record["url"], "title": record["title"], "body": record["body"],
                       "published": record["published"]}


class NaiveLabeller:
    """The encoder and heads used the obvious way: one padded pass per head."""

    def __init__(self, model_folder: str | Path, head_set):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
        self.model = AutoModel.from_pretrained(str(model_folder), use_safetensors=True).eval()
        self.head_set = head_set

    def _pooled(self, text: str, layers: tuple[int, ...]):
        torch = self.torch
        encoded = self.tokenizer(text, padding="max_length", truncation=True, max_length=MODEL_MAXIMUM,
                                 return_tensors="pt")
        with torch.no_grad():
            output = self.model(**encoded, output_hidden_states=True)
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = [(output.hidden_states[layer] * mask).sum(dim=1) / mask.sum(dim=1) for layer in layers]
        return torch.stack(pooled, dim=1).numpy()

    def label(self, text: str) -> dict:
        row = {}
        for task in ("topic", "sentiment"):
            head = self.head_set.heads[task]
            probabilities = head.probabilities(self._pooled(self.head_set.prefix + text, head.layers), head.layers)[0]
            best = int(probabilities.argmax())
            row[task], row[f"{task}_score"] = head.labels[best], float(probabilities[best])
        return row


def naive_run(input_folder: str | Path, output_folder: str | Path, labeller: NaiveLabeller) -> dict:
    """Label every article in ``input_folder`` the naive way and write Parquet.

    The model is loaded before the clock starts (newsbeam's figure includes its
    own start-up, so this favours the naive loop).
    """
    import pandas
    import py3langid
    from dateutil import parser as dates

    started = time.perf_counter()
    rows = []
    for article in read_articles(input_folder):
        text = f"{article['title']}\n{article['body']}"
        row = {"url": article["url"], "title": article["title"], "body": article["body"],
               "lang": py3langid.classify(text)[0],
               "dt": dates.parse(article["published"]).strftime("%Y-%m-%d") if article["published"] else "unknown"}
        row.update(labeller.label(text))
        rows.append(row)
    pandas.DataFrame(rows).to_parquet(str(output_folder), partition_cols=PARTITION_COLUMNS)
    elapsed = time.perf_counter() - started
    return {"articles": len(rows), "seconds": round(elapsed, 3),
            "articles_per_s": round(len(rows) / elapsed, 4) if rows else None, "rows": rows}
