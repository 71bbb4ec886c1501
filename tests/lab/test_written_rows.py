"""The rows the team wrote, trained or parked: each one
a news item the recipe can read as it is, once, with a subject of the taxonomy."""
from __future__ import annotations

import json

from newsbeam_lab.training_data import LAB_WRITTEN

from newsbeam.labelling.taxonomy import load_taxonomy

SENTIMENTS = {"negative", "neutral", "positive"}


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def written_rows() -> dict[str, list[dict]]:
    files = sorted(LAB_WRITTEN.glob("*.jsonl")) + sorted(LAB_WRITTEN.glob("parked/news_rows_*.jsonl"))
    return {str(path.relative_to(LAB_WRITTEN)): read_jsonl(path) for path in files}


def test_every_written_row_is_a_news_item_with_a_subject_of_the_taxonomy():
    subjects = set(load_taxonomy().topic_ids)
    rows = written_rows()
    assert {"news_rows_a.jsonl", "parked/news_rows_q.jsonl", "parked/news_rows_x.jsonl"} <= set(rows)
    for name, file_rows in rows.items():
        for row in file_rows:
            assert row["label"] in subjects, (name, row["id"])
            assert row.get("sentiment", "neutral") in SENTIMENTS, (name, row["id"])
            assert (row.get("headline") or row.get("text", "")).strip(), (name, row["id"])


def test_no_written_row_is_there_twice():
    every = [row for file_rows in written_rows().values() for row in file_rows]
    ids = [row["id"] for row in every]
    assert len(ids) == len(set(ids))
    # a headline may come back with another lead (four do), a whole row may not
    texts = [" ".join((row.get("headline") or row.get("text", ""), row.get("body") or "")).strip().casefold()
             for row in every]
    assert len(texts) == len(set(texts))


def test_rows_read_twice_keep_only_what_the_blind_second_reader_agreed_on():
    readings = sorted((LAB_WRITTEN / "agreement").glob("*_second_reading.jsonl"))
    assert len(readings) >= 2  # news_rows_x to _z, news_rows_aa to _ac
    second = {row["id"]: row for path in readings for row in read_jsonl(path)}
    read_twice = [row for file_rows in written_rows().values() for row in file_rows if row["id"] in second]
    assert len(read_twice) >= 600
    for row in read_twice:
        assert second[row["id"]]["label"] == row["label"]
        assert "sentiment" not in row or second[row["id"]]["sentiment"] == row["sentiment"]
