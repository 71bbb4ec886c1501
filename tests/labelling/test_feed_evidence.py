"""subject_evidence: feed tags and URL section paths name subjects, in many
languages; words that name no single subject, article slugs and the host do not."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from newsbeam.labelling import feed_evidence
from newsbeam.labelling.feed_evidence import EVIDENCE_SUBJECTS, subject_evidence

TAXONOMY = Path(feed_evidence.__file__).resolve().parents[1] / "seeds" / "taxonomy.yaml"

ECONOMY = "economy_business_finance"
ARTS = "arts_culture_entertainment_media"
CRIME = "crime_law_justice"

# (language, category word, subject)
WORDS = [
    ("en", "Sport", "sport"), ("en", "Business", ECONOMY), ("en", "Politics", "politics"),
    ("en", "Courts", CRIME), ("en", "Weather", "weather"), ("en", "Health", "health"),
    ("en", "Technology", "science_technology"), ("en", "Entertainment", ARTS), ("en", "Climate", "environment"),
    ("en", "Education", "education"), ("en", "Faith", "religion"), ("en", "Travel", "lifestyle_leisure"),
    ("en", "Jobs", "labour"), ("en", "Society", "society"), ("en", "Defence", "conflict_war_peace"),
    ("en", "Disasters", "disaster_accident_emergency"), ("en", "Cricket", "sport"), ("en", "Markets", ECONOMY),
    ("fr", "Économie", ECONOMY), ("fr", "Politique", "politics"), ("fr", "Faits divers", CRIME),
    ("fr", "Santé", "health"), ("fr", "Météo", "weather"), ("fr", "Planète", "environment"),
    ("fr", "Catastrophes", "disaster_accident_emergency"), ("fr", "Emploi", "labour"), ("fr", "Société", "society"),
    ("fr", "Voyages", "lifestyle_leisure"),
    ("es", "Deportes", "sport"), ("es", "Economía", ECONOMY), ("es", "Tribunales", CRIME), ("es", "Salud", "health"),
    ("es", "Ciencia", "science_technology"), ("es", "Educación", "education"), ("es", "Trabajo", "labour"),
    ("es", "Medio ambiente", "environment"), ("es", "Sociedad", "society"), ("es", "Gastronomía", "lifestyle_leisure"),
    ("pt", "Esportes", "sport"), ("pt", "Futebol", "sport"), ("pt", "Justiça", CRIME), ("pt", "Saúde", "health"),
    ("pt", "Educação", "education"), ("pt", "Previsão do tempo", "weather"), ("pt", "Religião", "religion"),
    ("it", "Calcio", "sport"), ("it", "Economia", ECONOMY), ("it", "Politica", "politics"),
    ("it", "Cronaca nera", CRIME), ("it", "Spettacoli", ARTS), ("it", "Lavoro", "labour"), ("it", "Meteo", "weather"),
    ("de", "Fußball", "sport"), ("de", "Wirtschaft", ECONOMY), ("de", "Politik", "politics"), ("de", "Justiz", CRIME),
    ("de", "Gesundheit", "health"), ("de", "Wissenschaft", "science_technology"), ("de", "Kultur", ARTS),
    ("de", "Umwelt", "environment"), ("de", "Bildung", "education"), ("de", "Gesellschaft", "society"),
    ("de", "Wetter", "weather"), ("de", "Börse", ECONOMY),
    ("nl", "Voetbal", "sport"), ("nl", "Economie", ECONOMY), ("nl", "Politiek", "politics"), ("nl", "Misdaad", CRIME),
    ("nl", "Gezondheid", "health"), ("nl", "Onderwijs", "education"), ("nl", "Weer", "weather"),
    ("ar", "رياضة", "sport"), ("ar", "الرياضة", "sport"), ("ar", "اقتصاد", ECONOMY), ("ar", "الاقتصاد", ECONOMY),
    ("ar", "سياسة", "politics"), ("ar", "صحة", "health"), ("ar", "الصحة", "health"), ("ar", "ثقافة", ARTS),
    ("ar", "البيئة", "environment"), ("ar", "الطقس", "weather"), ("ar", "كرة القدم", "sport"),
    ("ar", "التعليم", "education"), ("ar", "المجتمع", "society"), ("ar", "تكنولوجيا", "science_technology"),
    ("ar-latin", "sport", "sport"), ("ar-latin", "economy", ECONOMY), ("ar-latin", "culture-and-art", ARTS),
    ("ar-latin", "aswaq", ECONOMY),
    ("ru", "Спорт", "sport"), ("ru", "Экономика", ECONOMY), ("ru", "Политика", "politics"), ("ru", "Криминал", CRIME),
    ("ru", "Здоровье", "health"), ("ru", "Наука", "science_technology"), ("ru", "Культура", ARTS),
    ("ru", "Общество", "society"), ("ru", "Погода", "weather"), ("ru", "Образование", "education"),
    ("tr", "Spor", "sport"), ("tr", "Ekonomi", ECONOMY), ("tr", "Siyaset", "politics"), ("tr", "Asayiş", CRIME),
    ("tr", "Sağlık", "health"), ("tr", "Eğitim", "education"), ("tr", "Kültür-Sanat", ARTS),
    ("tr", "Hava Durumu", "weather"), ("tr", "Teknoloji", "science_technology"),
    ("id", "Olahraga", "sport"), ("id", "Ekonomi", ECONOMY), ("id", "Politik", "politics"), ("id", "Hukum", CRIME),
    ("id", "Kesehatan", "health"), ("id", "Pendidikan", "education"), ("id", "Hiburan", ARTS),
    ("id", "Gaya Hidup", "lifestyle_leisure"), ("id", "Cuaca", "weather"),
    ("id", "Bencana", "disaster_accident_emergency"),
    ("sw", "Michezo", "sport"), ("sw", "Biashara", ECONOMY), ("sw", "Siasa", "politics"), ("sw", "Afya", "health"),
    ("sw", "Elimu", "education"), ("sw", "Burudani", ARTS), ("sw", "Mazingira", "environment"),
    ("sw", "Hali ya hewa", "weather"),
    ("ha", "Wasanni", "sport"), ("ha", "Tattalin arziki", ECONOMY), ("ha", "Siyasa", "politics"),
    ("ha", "Lafiya", "health"), ("ha", "Ilimi", "education"), ("ha", "Kimiyya", "science_technology"),
    ("hi", "खेल", "sport"), ("hi", "क्रिकेट", "sport"), ("hi", "कारोबार", ECONOMY), ("hi", "राजनीति", "politics"),
    ("hi", "अपराध", CRIME), ("hi", "स्वास्थ्य", "health"), ("hi", "मनोरंजन", ARTS), ("hi", "मौसम", "weather"),
    ("hi", "शिक्षा", "education"), ("hi", "धर्म", "religion"),
    ("hi-latin", "khel", "sport"), ("hi-latin", "vyapar", ECONOMY), ("hi-latin", "manoranjan", ARTS),
    ("hi-latin", "rajniti", "politics"), ("hi-latin", "naukri", "labour"), ("hi-latin", "mausam", "weather"),
]


@pytest.mark.parametrize("language, word, subject", WORDS, ids=[f"{lang}-{word}" for lang, word, _ in WORDS])
def test_section_words_of_each_language_name_their_subject(language, word, subject):
    assert subject_evidence([word], None) == (subject,)


@pytest.mark.parametrize("word", [
    "World", "News", "International", "National", "Local", "Opinion", "Video", "Middle East", "Top Stories",
    "Tamil Nadu", "Chennai", "Monde", "Actualités", "Mundo", "Welt", "Binnenland", "Dünya", "Nasional", "Kimataifa",
    "العالم", "Мир", "देश", "middle-east", "arab-and-world",
    "tiempo", "sucesos", "cronaca", "Sanaa", "Magazin", "Essen", "TV", "Panorama",  # ambiguous or place names
])
def test_words_that_name_no_single_subject_are_not_evidence(word):
    assert subject_evidence([word], None) == ()


def test_accents_and_case_do_not_matter():
    for spelling in ("économie", "ECONOMIE", "Économie", "economie", "ÉCONOMIE"):
        assert subject_evidence([spelling], None) == (ECONOMY,)
    assert subject_evidence(["FUSSBALL"], None) == subject_evidence(["fußball"], None) == ("sport",)
    assert subject_evidence(["SAGLIK"], None) == subject_evidence(["sağlık"], None) == ("health",)
    assert subject_evidence(["MÉTÉO"], None) == ("weather",)


def test_multi_word_tags_match_as_a_whole_and_by_words():
    assert subject_evidence(["Rugby Union"], None) == ("sport",)
    assert subject_evidence(["rugby_union"], None) == ("sport",)
    assert subject_evidence(["culture-and-art"], None) == (ARTS,)
    assert subject_evidence(["Real Estate"], None) == (ECONOMY,)
    assert subject_evidence(["Faits+divers"], None) == (CRIME,)
    # the longest run wins: trade unions are labour, not also trade (economy)
    assert subject_evidence(["Trade Unions"], None) == ("labour",)
    assert subject_evidence(["шоу-бизнес"], None) == (ARTS,)
    assert subject_evidence(["Arts & Culture"], None) == (ARTS,)
    assert subject_evidence(["Sport / Football"], None) == ("sport",)
    assert subject_evidence(["Health and Science"], None) == ("health", "science_technology")


def test_words_match_whole_never_inside_a_word():
    assert subject_evidence(["Sportsmanship", "Warsaw", "Artisans", "Lawrence"], None) == ()


def test_lemonde_economy_article_url_is_economy_only():
    url = "https://www.lemonde.fr/economie/article/2024/01/02/les-prix-montent_123.html"
    assert subject_evidence((), url) == (ECONOMY,)


def test_bbc_world_middle_east_url_is_not_evidence():
    assert subject_evidence((), "https://www.bbc.com/news/world-middle-east-123") == ()


def test_alarabiya_sport_url_with_an_arabic_slug_is_sport():
    slug = quote("صلاح-يفوز-بجائزة-الأفضل")  # an article slug, percent-encoded as in the feed
    assert subject_evidence((), f"https://www.alarabiya.net/ar/sport/2018/04/11/{slug}") == ("sport",)
    assert subject_evidence((), "https://www.alarabiya.net/ar/culture-and-art/2018/04/11/x") == (ARTS,)
    assert subject_evidence((), "https://www.alarabiya.net/ar/arab-and-world/2018/04/11/x") == ()


def test_percent_encoded_arabic_section_is_read():
    assert subject_evidence((), "https://example.com/%D8%A7%D9%84%D8%B1%D9%8A%D8%A7%D8%B6%D8%A9/") == ("sport",)


def test_article_slugs_ids_and_file_names_are_not_sections():
    # a last segment of 4+ hyphenated words is the article's slug
    assert subject_evidence((), "https://example.com/world/police-arrest-man-after-match") == ()
    # ...but a short last segment is a section
    assert subject_evidence((), "https://example.com/sport") == ("sport",)
    assert subject_evidence((), "https://example.com/rugby-union/") == ("sport",)
    # segments with digits, over 40 characters, or a file name
    assert subject_evidence((), "https://example.com/sport2024/business-123/x") == ()
    assert subject_evidence((), "https://example.com/" + "health" * 8 + "/x") == ()
    assert subject_evidence((), "https://example.com/news/health.html") == ()
    # the slug before index.html is still a slug; the section before it still counts
    url = "https://edition.cnn.com/2024/01/02/politics/police-arrest-man-in-court/index.html"
    assert subject_evidence((), url) == ("politics",)


def test_query_and_fragment_are_not_sections():
    assert subject_evidence((), "https://example.com/news/x?section=sport#health") == ()


def test_the_host_is_never_evidence_subdomains_included():
    # a subdomain can name a desk, but hosts are also brands; only the path is read
    assert subject_evidence((), "https://sport.example.com/") == ()
    assert subject_evidence((), "https://sport.example.com/2024/01/02/team-wins-the-final") == ()
    assert subject_evidence((), "sport.example.com") == ()
    assert subject_evidence((), "https://www.economist.com/") == ()
    assert subject_evidence((), "sport.example.com/health/") == ("health",)


def test_nothing_gives_an_empty_tuple():
    assert subject_evidence((), None) == ()
    assert subject_evidence([], "") == ()
    assert subject_evidence(["", "  "], None) == ()


def test_order_is_tags_first_then_url_and_ids_are_distinct():
    got = subject_evidence(["Politik", "Sport", "politics"], "https://example.com/economy/sport/x")
    assert got == ("politics", "sport", ECONOMY)
    assert subject_evidence(["Deportes", "Fútbol", "Football"], "https://example.com/sport/") == ("sport",)


def test_every_id_is_a_subject_of_the_taxonomy():
    taxonomy = yaml.safe_load(TAXONOMY.read_text(encoding="utf-8"))
    subject_ids = {topic["id"] for topic in taxonomy["topics"]}
    assert len(subject_ids) == 17
    assert set(feed_evidence.SECTION_WORDS) <= subject_ids
    assert set(feed_evidence.TABLE.values()) <= subject_ids
    assert EVIDENCE_SUBJECTS == frozenset(feed_evidence.TABLE.values())


def test_every_table_entry_maps_to_its_own_subject():
    for subject, lines in feed_evidence.SECTION_WORDS.items():
        for entry in " ".join(lines).split():
            assert subject_evidence([entry], None) == (subject,), entry
