"""Labels of shared data stored as (file, id, labels): read back with the shared
text, split into train and a dev share that training never sees."""
from __future__ import annotations

import collections
import functools
import glob
import json
from pathlib import Path

import pytest
from newsbeam_lab import shared_labels, training_data

from newsbeam.labelling.taxonomy import load_taxonomy

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SHARED_FILE = "topic/desk_corpus/train.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def shared_root(tmp_path) -> Path:
    """A shared data root with one desk-labelled corpus, as ANT v2.1 is laid out."""
    rows = [{"id": f"desk/{n}", "headline": f"Headline {n}", "body": f"Body of article {n}.", "lang": "ar",
             "label": "middleEast", "text": f"Headline {n}\n\nBody of article {n}."} for n in range(200)]
    write_jsonl(tmp_path / "data" / SHARED_FILE, rows)
    return tmp_path / "data"


def reference(n: int, topic: str = "crime_law_justice", sentiment: str = "negative", confidence: str = "high") -> dict:
    return {"file": SHARED_FILE, "id": f"desk/{n}", "topic": topic, "sentiment": sentiment, "confidence": confidence}


def test_the_dev_share_is_fixed_by_where_a_row_lives_and_about_fifteen_percent():
    splits = [shared_labels.split_of("topic/x/train.jsonl", f"row-{n}") for n in range(10_000)]
    share = splits.count(shared_labels.DEV) / len(splits)
    assert 0.13 < share < 0.17
    assert splits == [shared_labels.split_of("topic/x/train.jsonl", f"row-{n}") for n in range(10_000)]


def test_references_read_the_shared_text_with_our_labels_and_never_the_dev_share(tmp_path, shared_root):
    labels = write_jsonl(tmp_path / "labels.jsonl", [reference(n) for n in range(200)])
    topic_ids = load_taxonomy().topic_ids
    train = training_data.read_labelled_jsonl(labels, None, topic_ids, task="topic", data_root=str(shared_root))
    dev = training_data.read_labelled_jsonl(labels, None, topic_ids, task="topic", data_root=str(shared_root),
                                            split=shared_labels.DEV)
    assert len(train.texts) + len(dev.texts) == 200 and dev.texts and train.texts
    assert not set(train.texts) & set(dev.texts)  # a dev row never trains
    assert set(train.labels) == {"crime_law_justice"}  # ours, not the desk's "middleEast"
    assert train.texts[0].startswith("Headline ") and "Body of article" in train.texts[0]
    assert set(train.languages) == {"ar"}
    expected_dev = {f"Headline {n}" for n in range(200)
                    if shared_labels.split_of(SHARED_FILE, f"desk/{n}") == shared_labels.DEV}
    assert {text.split("\n")[0] for text in dev.texts} == expected_dev


def test_each_task_reads_its_own_label_and_low_confidence_rows_stay_out(tmp_path, shared_root):
    train_ids = [n for n in range(200) if shared_labels.split_of(SHARED_FILE, f"desk/{n}") == shared_labels.TRAIN]
    rows = [reference(train_ids[0], "sport", "positive"), reference(train_ids[1], "weather", "neutral", "low")]
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    taxonomy = load_taxonomy()
    topics = training_data.read_labelled_jsonl(labels, None, taxonomy.topic_ids, task="topic",
                                               data_root=str(shared_root))
    sentiments = training_data.read_labelled_jsonl(labels, None, taxonomy.sentiment_ids, task="sentiment",
                                                   data_root=str(shared_root))
    assert topics.labels == ["sport"] and sentiments.labels == ["positive"]
    assert topics.skipped == 1 and sentiments.skipped == 1


def test_a_confidence_keeps_only_the_dev_rows_labelled_with_it(tmp_path, shared_root):
    dev_ids = [n for n in range(200) if shared_labels.split_of(SHARED_FILE, f"desk/{n}") == shared_labels.DEV]
    rows = [reference(n, confidence="high" if i % 2 else "medium") for i, n in enumerate(dev_ids)]
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    read = functools.partial(training_data.read_labelled_jsonl, labels, None, load_taxonomy().topic_ids,
                             task="topic", data_root=str(shared_root), split=shared_labels.DEV)
    clear, every = read(confidence=shared_labels.HIGH_CONFIDENCE), read()
    expected = {f"Headline {n}" for i, n in enumerate(dev_ids) if i % 2}
    assert {text.split("\n")[0] for text in clear.texts} == expected and len(every.texts) == len(dev_ids)
    assert clear.skipped == len(dev_ids) - len(expected)


def test_written_rows_carry_a_topic_in_label_and_a_sentiment_of_their_own(tmp_path):
    path = write_jsonl(tmp_path / "written.jsonl", [
        {"headline": "Storm warning for the coast", "body": "Gales of 100 km/h are expected tonight.",
         "label": "weather", "sentiment": "negative", "lang": "en"}])
    taxonomy = load_taxonomy()
    assert training_data.read_labelled_jsonl(path, None, taxonomy.topic_ids, task="topic").labels == ["weather"]
    assert training_data.read_labelled_jsonl(path, None, taxonomy.sentiment_ids,
                                             task="sentiment").labels == ["negative"]


def test_a_written_row_without_a_sentiment_teaches_its_topic_only(tmp_path):
    # rows whose sentiment two readers disputed keep their topic and lose the sentiment key
    path = write_jsonl(tmp_path / "written.jsonl", [
        {"headline": "Fossil eggs show pterosaurs nested in colonies", "body": "", "label": "science_technology",
         "lang": "en"},
        {"headline": "Floods cut off three villages", "body": "Rescuers reached them by boat.",
         "label": "disaster_accident_emergency", "sentiment": "negative", "lang": "en"}])
    taxonomy = load_taxonomy()
    topics = training_data.read_labelled_jsonl(path, None, taxonomy.topic_ids, task="topic")
    sentiments = training_data.read_labelled_jsonl(path, None, taxonomy.sentiment_ids, task="sentiment")
    assert topics.labels == ["science_technology", "disaster_accident_emergency"]
    assert topics.texts[0] == "Fossil eggs show pterosaurs nested in colonies"
    assert sentiments.labels == ["negative"] and sentiments.skipped == 1


def test_a_reference_without_its_shared_data_is_a_clear_error(tmp_path, shared_root):
    labels = write_jsonl(tmp_path / "labels.jsonl", [reference(n) for n in range(20)])
    topic_ids = load_taxonomy().topic_ids
    with pytest.raises(ValueError, match="need --data_root"):
        training_data.read_labelled_jsonl(labels, None, topic_ids, task="topic", data_root=None)
    missing = write_jsonl(tmp_path / "missing.jsonl", [dict(reference(0), id="desk/nowhere") for _ in range(20)])
    with pytest.raises(ValueError, match="no row with id 'desk/nowhere'"):
        training_data.read_sources([missing], topic_ids, task="topic", data_root=str(shared_root),
                                   split=shared_labels.split_of(SHARED_FILE, "desk/nowhere"))


@pytest.mark.skipif(not (SHARED_DATA / "topic" / "ant_v21").is_dir(), reason="needs ../shared/data (the team's data)")
def test_the_recipe_has_150_news_rows_per_subject_in_six_languages_with_arabic_english_and_french():
    taxonomy = load_taxonomy()
    recipe = training_data.default_data(str(SHARED_DATA))
    rows = training_data.read_sources(recipe["topic"], taxonomy.topic_ids, task="topic", data_root=str(SHARED_DATA))
    news_sources = {spec for spec in recipe["topic"] if "sib200" not in spec}  # SIB-200 is sentences, not news
    per_subject = collections.Counter()
    languages = collections.defaultdict(set)
    for label, language, source in zip(rows.labels, rows.languages, rows.sources):
        if source in news_sources:
            per_subject[label] += 1
            languages[label].add(language)
    short = {subject: per_subject[subject] for subject in taxonomy.topic_ids if per_subject[subject] < 150}
    narrow = {subject: sorted(languages[subject]) for subject in taxonomy.topic_ids
              if len(languages[subject]) < 6 or not {"ar", "en", "fr"} <= languages[subject]}
    assert short == {} and narrow == {}
    sentiments = training_data.read_sources(recipe["sentiment"], taxonomy.sentiment_ids, task="sentiment",
                                            data_root=str(SHARED_DATA))
    news_sentiment = [label for label, source in zip(sentiments.labels, sentiments.sources) if "xlmt" not in source]
    assert min(collections.Counter(news_sentiment).values()) >= 500  # news sentiment next to the tweets


def test_every_label_file_of_the_lab_feeds_both_tasks_of_the_recipe():
    # The recipe reads the lab's sentiment labels per family (ANT, MasakhaNEWS) so each
    # can be weighted on its own; a new family of labels must not fall out of sentiment.
    for task in ("topic", "sentiment"):
        patterns = [pattern for recipe_task, pattern, _ in training_data.DEFAULT_RECIPE
                    if recipe_task == task and pattern.startswith(str(training_data.LAB_LABELS))]
        # lab/labels/coarse/ holds topic-only labels (a set's own coarse classes), read by topic alone
        read = {path for pattern in patterns for path in glob.glob(pattern)
                if Path(path).parent == training_data.LAB_LABELS}
        assert read == set(glob.glob(str(training_data.LAB_LABELS / "*.jsonl"))), task
        assert read


@pytest.mark.skipif(not (SHARED_DATA / "topic" / "masakhanews").is_dir(), reason="needs ../shared/data")
def test_the_coarse_masakhanews_labels_are_the_sets_own_and_keep_the_dev_share_out():
    from newsbeam.labelling.taxonomy import load_label_map

    path = str(training_data.LAB_LABELS / "coarse" / "masakha_coarse.jsonl")
    references = [json.loads(line) for line in open(path, encoding="utf-8")]
    rows = training_data.read_labelled_jsonl(path, task="topic", data_root=str(SHARED_DATA))
    train = [r for r in references if shared_labels.split_of(r["file"], r["id"]) == shared_labels.TRAIN]
    assert len(rows.texts) == len(train) < len(references)  # the lab's MasakhaNEWS dev share is not read
    coarse = load_label_map("masakhanews")
    shared = {}
    for name in {r["file"] for r in references}:
        shared.update({(name, row["id"]): row for row in map(json.loads, open(SHARED_DATA / name, encoding="utf-8"))})
    assert all(coarse[shared[(r["file"], r["id"])]["label"]] == r["topic"] for r in references)
    assert training_data.read_labelled_jsonl(path, task="sentiment", data_root=str(SHARED_DATA)).texts == []


def test_the_second_readers_labels_are_of_stored_training_rows_and_never_trained_on():
    """lab/labels/agreement/ measures the labels (a blind second reading); training on it
    would count the same articles twice under two readers' labels."""
    folder = training_data.LAB_LABELS / "agreement"
    second = [json.loads(line) for path in folder.glob("*.jsonl") for line in path.open(encoding="utf-8")]
    first = {json.loads(line)["id"] for path in training_data.LAB_LABELS.glob("ant_v21_*.jsonl")
             for line in path.open(encoding="utf-8")}
    taxonomy = load_taxonomy()
    assert len(second) == 360 and {row["id"] for row in second} <= first
    assert all(row["topic"] in taxonomy.topic_ids and row["sentiment"] in taxonomy.sentiment_ids for row in second)
    assert all(shared_labels.split_of(row["file"], row["id"]) == shared_labels.TRAIN for row in second)
    read = {path for _, pattern, _ in training_data.DEFAULT_RECIPE for path in glob.glob(pattern)}
    assert not any(Path(path).parent == folder for path in read)


@pytest.fixture
def parallel_root(tmp_path) -> Path:
    """A parallel corpus laid out as SIB-200: the same sentences (by index_id) in one file per language."""
    sentences = {"en": ["The navy blockaded the port.", "Police arrested the mayor.", "The sea is blue."],
                 "fr": ["La marine a bloqué le port.", "La police a arrêté le maire.", "La mer est bleue."]}
    for code, texts in (("eng_Latn", sentences["en"]), ("fra_Latn", sentences["fr"])):
        write_jsonl(tmp_path / "data" / "topic" / "parallel" / code / "train.jsonl",
                    [{"text": text, "label": "politics", "lang": code[:2], "index_id": 100 + n}
                     for n, text in enumerate(texts)])
    return tmp_path / "data"


def parallel_reference(index_id: int, topic: str, confidence: str = "high") -> dict:
    return {"files": "topic/parallel/*/train.jsonl", "index_id": index_id, "topic": topic, "confidence": confidence}


def test_a_parallel_reference_labels_its_sentence_in_every_language_and_trains_only(tmp_path, parallel_root):
    labels = write_jsonl(tmp_path / "parallel.jsonl", [
        parallel_reference(100, "conflict_war_peace"), parallel_reference(101, "crime_law_justice", "medium"),
        parallel_reference(102, "environment", "low")])
    read = functools.partial(training_data.read_labelled_jsonl, labels, None, load_taxonomy().topic_ids,
                             task="topic", data_root=str(parallel_root))
    train = read()
    assert sorted(zip(train.languages, train.labels, train.texts)) == [
        ("en", "conflict_war_peace", "The navy blockaded the port."),
        ("en", "crime_law_justice", "Police arrested the mayor."),
        ("fr", "conflict_war_peace", "La marine a bloqué le port."),
        ("fr", "crime_law_justice", "La police a arrêté le maire.")]  # ours, not the corpus's "politics"
    assert train.skipped == 1  # the low-confidence sentence, in no language
    # the same sentence trains in the other languages, so no share of it is dev
    assert read(split=shared_labels.DEV).texts == []
    assert read(confidence=shared_labels.HIGH_CONFIDENCE).labels == ["conflict_war_peace"] * 2


def test_a_parallel_reference_to_a_missing_sentence_or_corpus_is_a_clear_error(tmp_path, parallel_root):
    topic_ids = load_taxonomy().topic_ids
    missing = write_jsonl(tmp_path / "missing.jsonl", [parallel_reference(999, "sport")])
    with pytest.raises(ValueError, match="no row with index_id '999'"):
        training_data.read_labelled_jsonl(missing, None, topic_ids, task="topic", data_root=str(parallel_root))
    with pytest.raises(FileNotFoundError, match="no shared files match topic/parallel"):
        training_data.read_labelled_jsonl(missing, None, topic_ids, task="topic", data_root=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="need --data_root"):
        training_data.read_labelled_jsonl(missing, None, topic_ids, task="topic", data_root=None)


SIB_SUBJECTS = training_data.LAB_LABELS / "parallel" / "sib200_subjects.jsonl"


@pytest.mark.skipif(not (SHARED_DATA / "topic" / "sib200").is_dir(), reason="needs ../shared/data")
def test_every_sib200_training_sentence_has_one_subject_of_ours_and_a_blind_second_reading_agrees():
    taxonomy = load_taxonomy()
    ours = [json.loads(line) for line in SIB_SUBJECTS.open(encoding="utf-8")]
    sentences = [json.loads(line)["index_id"]
                 for line in (SHARED_DATA / "topic/sib200/eng_Latn/train.jsonl").open(encoding="utf-8")]
    assert [row["index_id"] for row in ours] == sentences  # each once, in the corpus's order
    assert all(row["topic"] in taxonomy.topic_ids and row["confidence"] in ("high", "medium", "low") for row in ours)
    # a blind second reader of every sentence (lab/labels/README.md)
    second = [json.loads(line) for line in
              (training_data.LAB_LABELS / "agreement" / "parallel" / "sib200_subjects.jsonl").open(encoding="utf-8")]
    first = {row["index_id"]: row["topic"] for row in ours}
    agreed = sum(first[row["index_id"]] == row["topic"] for row in second)
    assert [row["index_id"] for row in second] == sentences and agreed / len(second) >= 0.9


def test_a_row_of_a_public_held_out_split_is_dev_whatever_its_hash(tmp_path):
    held_out = "topic/benchmark/eng/dev.jsonl"
    write_jsonl(tmp_path / "data" / held_out, [{"id": f"eng-dev-{n}", "text": f"Article {n}", "lang": "en",
                                                "label": "sports"} for n in range(60)])
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"file": held_out, "id": f"eng-dev-{n}", "topic": "sport",
                                                      "sentiment": "positive", "confidence": "high"}
                                                     for n in range(60)])
    read = functools.partial(training_data.read_labelled_jsonl, labels, None, load_taxonomy().topic_ids,
                             task="topic", data_root=str(tmp_path / "data"))
    assert read().texts == []  # training reads none of them
    assert read(split=shared_labels.DEV).texts == [f"Article {n}" for n in range(60)]
    # a training file's rows still split by hash
    assert {shared_labels.split_of("topic/benchmark/eng/train.jsonl", f"r{n}") for n in range(100)} == {
        shared_labels.TRAIN, shared_labels.DEV}


@pytest.mark.skipif(not (SHARED_DATA / "topic" / "masakhanews").is_dir(), reason="needs ../shared/data")
def test_masakhanews_dev_split_is_read_whole_into_the_subjects_and_never_trained_on():
    from newsbeam_lab.dev_report import MASAKHANEWS_DEV_SPLIT

    HELD_OUT = training_data.HELD_OUT_LABELS
    assert MASAKHANEWS_DEV_SPLIT == (str(HELD_OUT / "masakhanews_dev.jsonl"),)  # the file the dev report scores
    taxonomy = load_taxonomy()
    ours = [json.loads(line) for line in (HELD_OUT / "masakhanews_dev.jsonl").open(encoding="utf-8")]
    shared = [(f"topic/masakhanews/{code}/dev.jsonl", json.loads(line)["id"]) for code in ("eng", "fra", "hau", "swa")
              for line in (SHARED_DATA / "topic" / "masakhanews" / code / "dev.jsonl").open(encoding="utf-8")]
    assert [(row["file"], row["id"]) for row in ours] == shared  # every article once, in the split's order
    assert all(row["topic"] in taxonomy.topic_ids and row["sentiment"] in taxonomy.sentiment_ids
               and row["confidence"] in ("high", "medium", "low") for row in ours)
    assert all(shared_labels.split_of(row["file"], row["id"]) == shared_labels.DEV for row in ours)
    read = {path for _, pattern, _ in training_data.DEFAULT_RECIPE for path in glob.glob(pattern)}
    assert not any(Path(path).parent == HELD_OUT for path in read)
    # a blind second reader of a sample of 60 articles per language (lab/labels/README.md)
    second = [json.loads(line) for line in
              (training_data.LAB_LABELS / "agreement" / "heldout" / "masakhanews_dev.jsonl").open(encoding="utf-8")]
    first = {(row["file"], row["id"]): row["topic"] for row in ours}
    agreed = sum(first[(row["file"], row["id"])] == row["topic"] for row in second)
    assert len(second) == 240 and agreed / len(second) >= 0.75
