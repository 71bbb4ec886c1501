"""MasakhaNEWS's coarse references, kept only where the lab's own reading agrees."""
from __future__ import annotations

import glob

from newsbeam_lab import coarse_agreement
from newsbeam_lab.coarse_agreement import agreeing_references

FILE = "topic/masakhanews/eng/train_fewshot50.jsonl"


def coarse(row_id: str, topic: str) -> dict:
    return {"file": FILE, "id": row_id, "topic": topic}


def test_a_disputed_reference_is_dropped_and_an_agreeing_one_kept():
    team = [{"file": FILE, "id": "1", "topic": "crime_law_justice", "confidence": "high"},
            {"file": FILE, "id": "2", "topic": "politics", "confidence": "medium"}]
    kept = agreeing_references([coarse("1", "politics"), coarse("2", "politics")], team)
    assert kept == [coarse("2", "politics")]


def test_an_article_without_a_trained_lab_label_keeps_its_coarse_reference():
    # low confidence: the lab's label never reaches training, so nothing contradicts the coarse one
    team = [{"file": FILE, "id": "1", "topic": "lifestyle_leisure", "confidence": "low"}]
    kept = agreeing_references([coarse("1", "health"), coarse("9", "sport")], team)
    assert kept == [coarse("1", "health"), coarse("9", "sport")]


def test_the_same_id_in_another_file_is_another_article():
    team = [{"file": "topic/masakhanews/fra/train_fewshot50.jsonl", "id": "1", "topic": "sport"}]
    assert agreeing_references([coarse("1", "politics")], team) == [coarse("1", "politics")]


def test_the_stored_file_is_the_agreement_of_the_stored_labels():
    team = [row for path in sorted(glob.glob(coarse_agreement.TEAM_PATTERN)) for row in coarse_agreement._rows(path)]
    every = coarse_agreement._rows(coarse_agreement.COARSE)
    stored = coarse_agreement._rows(coarse_agreement.AGREEING)
    assert stored == agreeing_references(every, team)
    assert 0 < len(stored) < len(every)
