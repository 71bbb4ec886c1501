"""The shipped seeds, walked as a registry: every entry must be usable."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from newsbeam.formats import entries_from_file
from newsbeam.formats.feedlist import load_feed_list

SEEDS = Path(__file__).resolve().parents[1] / "newsbeam" / "seeds"
IPTC_TOP_LEVEL = {
    "arts_culture_entertainment_media", "conflict_war_peace", "crime_law_justice", "disaster_accident_emergency",
    "economy_business_finance", "education", "environment", "health", "human_interest", "labour",
    "lifestyle_leisure", "politics", "religion", "science_technology", "society", "sport", "weather",
}


def test_default_feed_list_is_unique_https_feed_urls():
    specs = load_feed_list(str(SEEDS / "feeds.txt"))
    assert len(specs) >= 10
    assert len({spec.url for spec in specs}) == len(specs)
    assert all(urlsplit(spec.url).scheme == "https" and urlsplit(spec.url).hostname for spec in specs)


def test_taxonomy_has_the_17_iptc_subjects_with_descriptions_in_several_languages():
    taxonomy = yaml.safe_load((SEEDS / "taxonomy.yaml").read_text(encoding="utf-8"))
    topics = taxonomy["topics"]
    assert {topic["id"] for topic in topics} == IPTC_TOP_LEVEL and len(topics) == 17
    for topic in topics:
        assert {"en", "fr", "ar"} <= set(topic["descriptions"]), topic["id"]


@pytest.mark.parametrize("sample", sorted(p.name for p in (SEEDS / "samples").iterdir()))
def test_every_sample_file_yields_entries_with_titles(sample):
    path = SEEDS / "samples" / sample
    entries = list(entries_from_file(str(path), path.read_bytes(), fetched_at="2024-01-01T00:00:00+00:00"))
    assert entries and all(entry.title for entry in entries)


def test_seed_article_is_the_arabic_headline_and_body():
    headline, body = (SEEDS / "000_adb80237c80a1eea.txt").read_text(encoding="utf-8").split("\n", 1)
    assert "الكاظمي" in body and headline.strip()


def test_shipped_heads_are_small():
    sizes = [path.stat().st_size for path in (SEEDS / "heads").iterdir()]
    # 0.9 MB of heads and int8 peaks + 2.7 MB of the fine-tune's rank-32 deltas;
    # the tuned layers themselves would be 21 MB
    assert sizes and sum(sizes) < 4 * 1024 * 1024
