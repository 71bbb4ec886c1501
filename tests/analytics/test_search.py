"""``newsbeam search``: articles by meaning, scored by DuckDB over real embeddings of the embedded model."""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from newsbeam.analytics import search
from newsbeam.embeddings import from_record, to_record
from newsbeam.labelling import PASSAGE_PREFIX
from newsbeam.labelling.input_text import article_text
from newsbeam.pipeline.cli import main
from newsbeam.schema import FILE_SCHEMA
from tests.support.builders import make_article
from tests.support.datasets import write_articles

SEED = Path(__file__).resolve().parents[2] / "newsbeam" / "seeds" / "000_adb80237c80a1eea.txt"
QUERY = "Iraqi prime minister and the fight against ISIS"
COLUMNS = ["score", "title", "language", "published_at", "url", "source", "topic", "story_id"]
V1_SCHEMA = FILE_SCHEMA.remove(FILE_SCHEMA.get_field_index("story_id")) \
    .remove(FILE_SCHEMA.get_field_index("embedding_scale")).remove(FILE_SCHEMA.get_field_index("embedding"))
NO_EMBEDDINGS = "has no article embeddings: run newsbeam run --embeddings"

# (language, topic, published day or None for fetched_at, title, body); written for these tests
UNRELATED = [
    ("en", "sport", "2024-05-01", "Liverpool beat Chelsea 3-1 to go top of the league",
     "Two goals in the second half gave the home side a deserved win in front of a full stadium."),
    ("en", "weather", "2024-05-04", "Heavy snow and gales expected across Scotland this weekend",
     "Forecasters warn of drifting snow on high roads and winds of up to 70 mph on the coast."),
    ("fr", "economy_business_finance", "2024-05-02", "La Banque centrale européenne maintient ses taux",
     "Le conseil des gouverneurs a laissé ses taux directeurs inchangés face à une inflation qui ralentit."),
    ("fr", "sport", "2024-05-04", "Le Tour de France s'achève sur les Champs-Élysées",
     "Le maillot jaune a franchi la ligne d'arrivée entouré de ses coéquipiers après trois semaines de course."),
    ("es", "weather", None, "Ola de calor: hasta 44 grados en Andalucía",
     "La Agencia Estatal de Meteorología activa el aviso rojo por temperaturas extremas en Córdoba y Sevilla."),
    ("es", "economy_business_finance", "2024-05-03", "El paro baja en España por tercer mes consecutivo",
     "La afiliación a la Seguridad Social sumó 200.000 trabajadores, impulsada por la hostelería."),
    ("de", "sport", "2024-05-01", "Bayern München gewinnt das Pokalfinale gegen Leipzig",
     "Vor 74.000 Zuschauern in Berlin entschied ein Elfmeter in der Nachspielzeit das Finale."),
    ("de", "economy_business_finance", "2024-05-04", "Inflation in Deutschland sinkt auf 2,2 Prozent",
     "Günstigere Energie drückte die Teuerung im April; Lebensmittel blieben dagegen teuer."),
]


@pytest.fixture(scope="module")
def labeller():
    from newsbeam.labelling.labeller import load_labeller

    return load_labeller()


def _seed_article():
    headline, body = SEED.read_text(encoding="utf-8").split("\n", 1)
    return ("ar", "politics", "2024-05-03", headline.strip(), body.strip())


def _articles(labeller, specs, *, model=None, first=0):
    """Articles of ``specs`` carrying their passage embeddings, labelled by ``model`` (default: the labeller's)."""
    texts = [article_text(title, None, body) for _, _, _, title, body in specs]
    vectors = labeller.embed(texts, prefix=PASSAGE_PREFIX)
    articles = []
    for number, ((lang, topic, day, title, body), vector) in enumerate(zip(specs, vectors), start=first):
        embedding, scale = to_record(vector)
        published = None if day is None else f"{day}T09:00:00+00:00"
        articles.append(make_article(number, lang=lang, published=published).replace(
            title=title, body=body, topic=topic, model=model or labeller.model_id, embedding=embedding,
            embedding_scale=scale, story_id=f"story-{number}"))
    return articles


@pytest.fixture(scope="module")
def corpus(labeller):
    return _articles(labeller, [_seed_article()] + UNRELATED)


@pytest.fixture(scope="module")
def data(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("search") / "articles"
    write_articles(root, corpus[:5], "20240503T060000Z-a1b2c3")
    write_articles(root, corpus[5:], "20240504T060000Z-d4e5f6")
    return root


@pytest.fixture
def shared_model(labeller, monkeypatch):
    """search.run loads the module's labeller instead of a fresh copy (seconds each); records the calls."""
    import newsbeam.labelling.labeller as labeller_module

    calls = []

    def load(**kwargs):
        calls.append(kwargs)
        return labeller

    monkeypatch.setattr(labeller_module, "load_labeller", load)
    return calls


@pytest.fixture
def no_model(monkeypatch):
    """For the cheap checks: loading the model at all fails the test."""
    import newsbeam.labelling.labeller as labeller_module

    def load(**kwargs):
        raise AssertionError("the model was loaded before a cheap check failed")

    monkeypatch.setattr(labeller_module, "load_labeller", load)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    status = search.run(parser.parse_args(list(argv)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _json_rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_arabic_seed_is_the_top_hit_for_an_english_query(data, corpus, labeller, capsys):
    status = main(["search", QUERY, "--data", str(data), "--format", "json"])  # the real load, via the CLI
    out, err = capsys.readouterr()

    assert status == 0, err
    rows = _json_rows(out)
    assert len(rows) == len(corpus)  # k=10 > 9 articles
    assert rows[0]["title"] == corpus[0].title and rows[0]["language"] == "ar"
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    # the score is the cosine of the query and the stored (int8) article vector
    query = labeller.embed([QUERY])[0]
    expected = float(query @ from_record(corpus[0].embedding, corpus[0].embedding_scale))
    assert rows[0]["score"] == pytest.approx(expected, abs=2e-4)
    assert rows[0]["score"] > rows[1]["score"] + 0.02


def test_json_and_csv_carry_the_columns_and_k_limits_rows(data, corpus, shared_model, capsys):
    status, out, err = _run(capsys, QUERY, "--data", str(data), "--format", "json", "--k", "3")
    assert status == 0, err
    rows = _json_rows(out)
    assert len(rows) == 3 and all(list(row) == COLUMNS for row in rows)
    assert all(row["score"] == round(row["score"], 4) for row in rows)
    seed = rows[0]
    assert seed["story_id"] == "story-0" and seed["topic"] == "politics" and seed["url"] == corpus[0].url
    assert seed["published_at"].startswith("2024-05-03T09:00:00")

    status, out, err = _run(capsys, QUERY, "--data", str(data), "--format", "csv", "--k", "2")
    assert status == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == 2 and list(table[0]) == COLUMNS
    assert table[0]["title"] == corpus[0].title and float(table[0]["score"]) == seed["score"]
    assert shared_model == [{"heads": None, "cache_dir": None, "quantize": None}] * 2


def test_table_output(data, corpus, shared_model, capsys):
    status, out, err = _run(capsys, QUERY, "--data", str(data), "--k", "1", "--model_cache", "/tmp/cache")
    assert status == 0, err
    assert "score" in out and "story_id" in out and "story-0" in out
    assert shared_model == [{"heads": None, "cache_dir": "/tmp/cache", "quantize": None}]


def test_lang_filter(data, shared_model, capsys):
    status, out, err = _run(capsys, QUERY, "--data", str(data), "--format", "json", "--lang", "fr")
    assert status == 0, err
    rows = _json_rows(out)
    assert len(rows) == 2 and {row["language"] for row in rows} == {"fr"}


def test_since_filters_published_else_fetched(data, corpus, shared_model, capsys):
    status, out, err = _run(capsys, QUERY, "--data", str(data), "--format", "json", "--since", "2024-05-03")
    assert status == 0, err
    # make_article fetches on 2024-05-02: the undated Spanish article is before the cut
    expected = {a.title for a in corpus if a.published_at and a.published_at >= "2024-05-03"}
    assert {row["title"] for row in _json_rows(out)} == expected and len(expected) == 5

    status, out, err = _run(capsys, QUERY, "--data", str(data), "--format", "json", "--since", "2024-05-02")
    assert status == 0, err
    assert "Ola de calor: hasta 44 grados en Andalucía" in {row["title"] for row in _json_rows(out)}


def test_mixed_v1_and_v2_files_search_the_v2_rows(tmp_path, corpus, shared_model, capsys):
    root = tmp_path / "articles"
    write_articles(root, corpus[1:5], "20240401T000000Z-old001", schema=V1_SCHEMA)  # no embedding columns
    write_articles(root, corpus[5:], "20240503T060000Z-new001")
    write_articles(root, corpus[:1], "20240503T060000Z-new002")

    status, out, err = _run(capsys, QUERY, "--data", str(root), "--format", "json")
    assert status == 0, err
    rows = _json_rows(out)
    assert [row["title"] for row in rows][0] == corpus[0].title
    assert {row["title"] for row in rows} == {a.title for a in corpus[:1] + corpus[5:]}


def test_rows_of_another_model_are_skipped_with_a_note(tmp_path, corpus, labeller, shared_model, capsys):
    root = tmp_path / "articles"
    write_articles(root, corpus[:3], "20240503T060000Z-new001")
    write_articles(root, [a.replace(model="other/encoder+heads-v9") for a in corpus[3:]], "20240503T060000Z-old001")

    status, out, err = _run(capsys, QUERY, "--data", str(root), "--format", "json")
    assert status == 0
    assert {row["title"] for row in _json_rows(out)} == {a.title for a in corpus[:3]}
    assert "skipping 6 articles embedded by 'other/encoder+heads-v9'" in err


def _assert_one_line(status: int, err: str, message: str) -> None:
    assert status == 2
    assert message in err and "Traceback" not in err
    assert err.strip().count("\n") == 0 and err.startswith("newsbeam search: ")


@pytest.mark.parametrize("argv, message", [
    (["   "], "the search text is empty"),
    ([QUERY, "--k", "0"], "--k must be at least 1, got 0"),
    ([QUERY, "--since", "2024-13-01"], "--since must be a date YYYY-MM-DD, got '2024-13-01'"),
    ([QUERY, "--since", "yesterday"], "--since must be a date YYYY-MM-DD, got 'yesterday'"),
], ids=["empty-text", "k-zero", "bad-month", "not-a-date"])
def test_bad_requests_fail_fast_in_one_line(argv, message, data, no_model, capsys):
    status, _, err = _run(capsys, *argv, "--data", str(data))
    _assert_one_line(status, err, message)


def test_missing_dataset_folder(tmp_path, no_model, capsys):
    status = main(["search", QUERY, "--data", str(tmp_path / "nowhere")])
    _assert_one_line(status, capsys.readouterr().err, f"no dataset folder at {tmp_path / 'nowhere'}")


def test_dataset_of_v1_files_only_has_no_embeddings(tmp_path, corpus, no_model, capsys):
    write_articles(tmp_path, corpus, "20240401T000000Z-old001", schema=V1_SCHEMA)  # the view lacks the column
    status, _, err = _run(capsys, QUERY, "--data", str(tmp_path))
    _assert_one_line(status, err, f"{tmp_path} {NO_EMBEDDINGS}")


@pytest.mark.parametrize("empty", [True, False], ids=["empty-folder", "no-embedded-row"])
def test_dataset_without_embedded_rows(empty, tmp_path, corpus, no_model, capsys):
    if not empty:
        write_articles(tmp_path, [a.replace(embedding=None, embedding_scale=None) for a in corpus], "run-1")
    status, _, err = _run(capsys, QUERY, "--data", str(tmp_path))
    _assert_one_line(status, err, f"{tmp_path} {NO_EMBEDDINGS}")


def test_dataset_of_another_model(tmp_path, corpus, labeller, shared_model, capsys):
    write_articles(tmp_path, [a.replace(model="other/encoder+heads-v9") for a in corpus], "run-1")
    status, _, err = _run(capsys, QUERY, "--data", str(tmp_path))
    _assert_one_line(status, err, f"the articles in {tmp_path} were embedded by 'other/encoder+heads-v9', "
                                  f"the search text by {labeller.model_id!r}")


def test_nearest_scores_every_row_like_numpy(data, corpus):
    """The SQL alone (what bench/search_bench.py times): the stored cosine, best first."""
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    from newsbeam.analytics.dataset import connect

    rows = search.nearest(connect(data), vector, 4).fetchall()
    stored = {a.title: float(vector @ from_record(a.embedding, a.embedding_scale)) for a in corpus}
    best = sorted(stored, key=stored.get, reverse=True)[:4]
    assert [row[1] for row in rows] == best
    assert [row[0] for row in rows] == pytest.approx([stored[title] for title in best], abs=1e-4)
