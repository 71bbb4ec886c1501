"""The embedded tokenizer against the reference multilingual-e5-small tokenizer.

Expected ids come from the reference ``tokenizer.json`` (XLM-R's SentencePiece
charsmap, Unigram model and template) and were pinned once; the reference is
not a dependency. For the shared data we pin ids only, keyed by file, line and
the text's sha1, and read the text itself from ../shared/data.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, normalizers

from newsbeam.labelling.embedded import find_quantized_file, read_quantized_e5
from newsbeam.labelling.tokenizer import (
    build_double_array,
    build_precompiled_charsmap,
    build_unigram_tokenizer,
    normalization_rules,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EXPECTED_IDS_FIXTURE = Path(__file__).parents[1] / "fixtures" / "tokenizer_expected_ids.json.gz"

# Own sentences, one or more per script, with the reference tokenizer's ids.
HANDWRITTEN_CASES = {
    'latin_english': (
        'Rain delayed the final, but the crowd stayed until midnight.',
        [0, 82507, 8, 5259, 297, 70, 2704, 4, 1284, 70, 131126, 24765, 297, 24189, 4122, 54350, 5, 2],
    ),
    'latin_accents_decomposed': (
        'Le café de la gare ferme à minuit.',
        [0, 636, 26216, 8, 21, 78329, 74701, 253, 15802, 217, 5, 2],
    ),
    'arabic': (
        'افتتحت المكتبة العامة فرعاً جديداً في وسط المدينة.',
        [0, 878, 226136, 368, 100696, 250, 26517, 98498, 258, 703, 22139, 258, 703, 240, 54610, 53826, 5, 2],
    ),
    'arabic_presentation_forms': (
        'ﻻ ﷲ ﺑﺴﻢ',
        [0, 1327, 1423, 189659, 2],
    ),
    'cyrillic': (
        'В Новосибирске открылся новый мост через Обь.',
        [0, 417, 199538, 103, 124697, 989, 63889, 43848, 5785, 5188, 1041, 5, 2],
    ),
    'han_simplified': (
        '今年的春节联欢晚会吸引了数亿观众。',
        [0, 6, 124285, 142641, 16356, 75699, 13936, 1147, 134227, 4723, 20798, 63908, 30, 2],
    ),
    'devanagari': (
        'किसानों ने नई सिंचाई योजना का स्वागत किया।',
        [0, 147403, 1142, 30124, 82469, 1356, 9729, 15955, 641, 51624, 4029, 125, 2],
    ),
    'japanese': (
        '新しい駅は来月から営業を始めます。',
        [0, 6, 38851, 28230, 342, 1589, 630, 1309, 51992, 168463, 5574, 30, 2],
    ),
    'hangul': (
        '부산 국제 영화제가 오늘 개막했습니다.',
        [0, 65590, 48250, 29549, 168517, 42742, 224544, 29143, 5, 2],
    ),
    'greek': (
        'Το λιμάνι του Πειραιά έκλεισε λόγω των ισχυρών ανέμων.',
        [0, 2654, 195278, 385, 191830, 13790, 157516, 5810, 38161, 985, 69377, 2173, 4051, 45319, 5002, 5, 2],
    ),
    'hebrew': (
        'הרכבת החדשה לירושלים יוצאת כל חצי שעה.',
        [0, 209882, 122544, 657, 224208, 76963, 609, 2376, 125979, 97816, 5, 2],
    ),
    'thai': (
        'กรุงเทพฯ มีฝนตกหนักตลอดทั้งคืน',
        [0, 6, 88677, 5451, 83480, 31266, 44385, 38934, 9231, 23517, 2],
    ),
    'bengali': (
        'ঢাকায় নতুন মেট্রো লাইন চালু হয়েছে।',
        [0, 211510, 26557, 19150, 5780, 174451, 6, 131678, 176842, 13171, 125, 2],
    ),
    'tamil': (
        'சென்னையில் புத்தகக் கண்காட்சி தொடங்கியது.',
        [0, 171977, 106035, 1962, 71779, 2650, 93764, 125392, 52890, 5, 2],
    ),
    'georgian': (
        'თბილისში ახალი პარკი გაიხსნა.',
        [0, 91043, 13422, 197229, 237309, 5, 2],
    ),
    'armenian': (
        'Երևանում բացվեց նոր թանգարան։',
        [0, 82380, 31720, 19645, 10118, 6, 141158, 1458, 2],
    ),
    'ethiopic': (
        'አዲስ አበባ ውስጥ አዲስ ሆስፒታል ተከፈተ።',
        [0, 21038, 19202, 5405, 21038, 237552, 2981, 240843, 2532, 2],
    ),
    'emoji': (
        'Goal!!! ⚽️🔥 What a night 🎉👏🏽',
        [0, 2016, 289, 1564, 6, 244514, 15755, 222326, 4865, 10, 17431, 6, 243816, 243404, 245164, 2],
    ),
    'whitespace_and_width': (
        '  ＴＯＫＹＯ\xa0\xa0２０２５\tresults\u200b  ①  ',
        [0, 6, 72071, 32256, 76924, 50339, 106, 6, 2],
    ),
    'mixed_scripts': (
        'Apple (آبل) и Samsung 三星 report Q3 — +12%',
        [0, 4129, 15, 7293, 7815, 16, 35, 8744, 6, 124961, 13416, 2396, 363, 292, 57157, 12807, 2],
    ),
}


@pytest.fixture(scope="module")
def quantized_model():
    return read_quantized_e5(find_quantized_file())


@pytest.fixture(scope="module")
def tokenizer(quantized_model) -> Tokenizer:
    return build_unigram_tokenizer(quantized_model.pieces, quantized_model.scores, quantized_model.replacements)


def test_vocabulary_matches_xlm_r_layout(quantized_model):
    assert len(quantized_model.pieces) == 250_002
    assert quantized_model.pieces[:4] == ("<s>", "<pad>", "</s>", "<unk>")
    assert quantized_model.pieces[-1] == "<mask>"
    assert len(quantized_model.replacements) == 4_837


@pytest.mark.parametrize("case", sorted(HANDWRITTEN_CASES))
def test_handwritten_sentences_match_reference_ids(tokenizer, case):
    text, expected_ids = HANDWRITTEN_CASES[case]
    assert tokenizer.encode(text).ids == expected_ids


def test_handwritten_sentences_cover_ten_scripts_without_unknowns(tokenizer):
    assert len(HANDWRITTEN_CASES) >= 10
    for text, _ in HANDWRITTEN_CASES.values():
        assert 3 not in tokenizer.encode(text).ids, text


def test_special_tokens_and_template(tokenizer):
    assert [tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 250_001]
    encoding = tokenizer.encode("x", "y")
    assert encoding.ids[0] == 0 and encoding.ids[-1] == 2
    assert encoding.ids.count(2) == 3  # <s> A </s></s> B </s>
    assert tokenizer.encode("").ids == [0, 2]


def test_normaliser_rewrites_per_codepoint_and_composes_accents(tokenizer):
    normalizer = tokenizer.normalizer
    assert normalizer.normalize_str("ＡＢＣ①") == "ABC1"
    assert normalizer.normalize_str("x\u00a0\u200b\u3000\ty") == "x y"  # spaces unified, runs collapsed
    assert normalizer.normalize_str("\x01a\x7fb") == "ab"  # control characters dropped
    assert normalizer.normalize_str("e\u0301") == "\u00e9"


def test_precompiled_charsmap_from_a_small_rule_set():
    rules = {"\uff21": "A", "\u00ad": "", "e\u0301": "\u00e9", "\ufb01": "fi", "\u2126": "\u03a9"}
    normalizer = normalizers.Precompiled(build_precompiled_charsmap(rules))
    assert normalizer.normalize_str("\uff21b\u00adce\u0301\ufb01\u2126") == "Abc\u00e9fi\u03a9"
    assert normalizer.normalize_str("untouched \u00fc") == "untouched \u00fc"


def test_double_array_rejects_nul_keys():
    with pytest.raises(ValueError, match="NUL"):
        build_double_array({b"a\0": 0})


def test_normalization_rules_keep_the_file_map_and_add_compositions(quantized_model):
    rules = normalization_rules(quantized_model.replacements)
    assert rules["\uff21"] == "A"
    assert rules["a\u0300"] == "\u00e0"
    assert all(rules[chr(cp)] == out for cp, out in quantized_model.replacements.items())


def test_sib200_dev_and_hindi_ids_identical_to_reference(tokenizer):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    with gzip.open(EXPECTED_IDS_FIXTURE, "rt", encoding="utf-8") as handle:
        entries = json.load(handle)["entries"]
    by_file: dict[str, dict[int, tuple[str, list[int]]]] = {}
    for relative, line_number, text_sha1, ids in entries:
        by_file.setdefault(relative, {})[line_number] = (text_sha1, ids)
    assert len(entries) >= 1_000 and len(by_file) >= 15

    checked, mismatches = 0, []
    for relative, expected in sorted(by_file.items()):
        path = SHARED_DATA / relative
        if not path.is_file():
            pytest.skip(f"{path} is absent")
        lines = path.read_text(encoding="utf-8").splitlines()
        texts = [json.loads(lines[n - 1])["text"] for n in sorted(expected)]
        for line_number, text, encoding in zip(sorted(expected), texts, tokenizer.encode_batch(texts)):
            text_sha1, ids = expected[line_number]
            assert hashlib.sha1(text.encode("utf-8")).hexdigest() == text_sha1, f"{relative}:{line_number} changed"
            checked += 1
            if encoding.ids != ids:
                mismatches.append(f"{relative}:{line_number}")
    assert checked == len(entries)
    assert mismatches == []
