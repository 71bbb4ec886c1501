"""The dataset layout: part names and run keys, which files belong to which
run, the article glob, partition paths that stay inside the root, and
atomic text writes."""
from __future__ import annotations

import datetime as dt
import glob
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsbeam.layout import (
    COMPACT_STAGING_PREFIX,
    HIVE_DEFAULT_PARTITION,
    PART_NAME_RE,
    RUN_ID_RE,
    SUPPORTED_PARTITION_KEYS,
    articles_glob,
    check_run_id,
    committed_files,
    data_files,
    errors_partition,
    new_run_id,
    part_name,
    partition_path,
    partition_values,
    run_key_of,
    sanitise_partition_value,
    write_text_atomically,
)
from tests.support.builders import make_article

RUN = "20240601T120000Z-a1b2c3"
OTHER = "20240602T120000Z-d4e5f6"
COMPACT = f"{COMPACT_STAGING_PREFIX}20240603T000000Z-c0ffee"

run_ids = st.from_regex(RUN_ID_RE, fullmatch=True)
window_tags = st.builds(lambda start, pane: f"-w{start}p{pane}",
                        st.integers(-10**10, 10**11), st.integers(0, 10**4))
partitions = st.text(max_size=60)
numbers = st.integers(0, 10**6)  # past 9999: the 10,000th file has five digits


# ---- part names and run keys --------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(run_id=run_ids, partition=partitions, number=numbers)
@example(run_id="a-0123abcd-0001", partition="dt=2024-05-01", number=0)  # looks like a hash and a number
@example(run_id="x", partition="", number=9999)
@example(run_id="nightly-w1p2", partition="dt=2024-05-01", number=0)  # ends like a window tag
@example(run_id="a-h0123abcd", partition="dt=2024-05-01", number=10_000)  # ends like the hash segment
def test_plain_run_ids_round_trip(run_id, partition, number):
    name = part_name(run_id, partition, number)
    assert PART_NAME_RE.match(name) and "/" not in name
    assert run_key_of(name) == run_id


@settings(max_examples=200, deadline=None)
@given(run_id=run_ids, partition=partitions, number=numbers, window_tag=window_tags)
@example(run_id="x-w1p2", partition="dt=2024-05-01", number=3, window_tag="-w-5p0")
def test_windowed_run_ids_round_trip(run_id, partition, number, window_tag):
    name = part_name(run_id, partition, number, window_tag)
    assert window_tag in name and PART_NAME_RE.match(name)
    assert run_key_of(name) == run_id


@settings(max_examples=100, deadline=None)
@given(compact_id=run_ids, partition=partitions, number=numbers)
def test_compact_run_keys_round_trip(compact_id, partition, number):
    key = f"{COMPACT_STAGING_PREFIX}{compact_id}"
    assert run_key_of(part_name(key, partition, number)) == key


# Names as versions before the "-h<hash>" marker wrote them: their run keys must not change.
LEGACY_NAMES = {
    f"part-{RUN}-3f2a91bc-0000.parquet": RUN,
    f"part-{RUN}-w1717200000p1-3f2a91bc-0007.parquet": RUN,
    f"part-{RUN}-w-5p0-3f2a91bc-0001.parquet": RUN,
    f"part-{COMPACT}-3f2a91bc-0002.parquet": COMPACT,
    "part-nightly-w1p2-3f2a91bc-0000.parquet": "nightly",  # ambiguous in that form; read as it always was
    f"part-{RUN}-3f2a91bc-10000.parquet": RUN,  # the 10,000th file, unreadable before
    "part-20240501T100000Z-big001-0.parquet": "part-20240501T100000Z-big001-0",  # no part name: its own key
}


@pytest.mark.parametrize("name", sorted(LEGACY_NAMES))
def test_names_written_by_earlier_versions_keep_their_run_keys(name):
    assert run_key_of(name) == LEGACY_NAMES[name]


def test_part_names_differ_by_partition_and_number_and_window():
    names = {part_name(RUN, partition, number, tag)
             for partition in ("dt=2024-05-01/lang=en", "dt=2024-05-01/lang=ar")
             for number in (0, 1) for tag in ("", "-w1717200000p0")}
    assert len(names) == 8


def test_a_new_run_id_is_a_valid_run_key():
    run_id = new_run_id(dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=dt.UTC))
    assert run_id.startswith("20240601T120000Z-") and RUN_ID_RE.match(run_id)
    assert run_key_of(part_name(run_id, "dt=2024-06-01", 0)) == run_id


def test_a_plain_run_id_that_ends_like_a_window_tag_round_trips():
    assert RUN_ID_RE.match("nightly-w1p2")
    assert run_key_of(part_name("nightly-w1p2", "dt=2024-05-01", 0)) == "nightly-w1p2"


@pytest.mark.parametrize("run_id", ["", "../up", "a/b", ".hidden", "-flag", "a*", "a b", "x" * 101])
def test_a_run_id_that_cannot_name_a_file_is_refused(run_id):
    with pytest.raises(ValueError, match="run id"):
        check_run_id(run_id)


def test_a_run_id_with_a_trailing_newline_is_refused():
    with pytest.raises(ValueError, match="run id"):
        check_run_id("nightly\n")


def test_the_ten_thousandth_file_of_a_partition_keeps_its_run_key():
    assert run_key_of(part_name(RUN, "dt=2024-05-01", 10_000)) == RUN


# ---- which files belong to which run ----------------------------------------------------------

def touch(root: Path, relative: str) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def make_layout(root: Path, run: str = RUN, other: str = OTHER) -> dict[str, list[str]]:
    """Empty files where a dataset has them: names and places are what is listed."""
    en, ar = "dt=2024-05-01/lang=en", "dt=2024-05-02/lang=ar"
    files = {
        "run": [touch(root, f"{en}/{part_name(run, en, 0)}"), touch(root, f"{en}/{part_name(run, en, 1)}"),
                touch(root, f"{ar}/{part_name(run, ar, 0)}")],
        "run_windowed": [touch(root, f"{en}/{part_name(run, en, 0, '-w1717200000p1')}")],
        "other": [touch(root, f"{en}/{part_name(other, en, 0)}")],
        "compacted": [touch(root, f"{ar}/{part_name(COMPACT, ar, 0)}")],
        "errors": [touch(root, f"{errors_partition(run)}/{part_name(run, errors_partition(run), 0)}"),
                   touch(root, f"{errors_partition(other)}/{part_name(other, errors_partition(other), 0)}")],
        "tmp": [touch(root, f"_tmp/{run}/0123abcd.parquet.inprogress"),
                touch(root, f"_tmp/{COMPACT}/{en}/{part_name(run, en, 0)}")],  # a compaction's staged copy
        "runs": [touch(root, f"_runs/{run}.json")],
    }
    return files


def test_committed_files_are_one_runs_article_files_only(tmp_path):
    files = make_layout(tmp_path)
    assert committed_files(str(tmp_path), RUN) == sorted(files["run"] + files["run_windowed"])
    assert committed_files(str(tmp_path), OTHER) == files["other"]
    assert committed_files(str(tmp_path), "20240101T000000Z-000000") == []


def test_data_files_are_every_article_file_and_nothing_under_tmp_errors_or_runs(tmp_path):
    files = make_layout(tmp_path)
    expected = files["run"] + files["run_windowed"] + files["other"] + files["compacted"]
    assert data_files(str(tmp_path)) == sorted(expected)


def test_committed_files_of_a_run_exclude_a_run_whose_id_extends_it(tmp_path):
    files = make_layout(tmp_path, run="daily", other="daily-2")
    assert committed_files(str(tmp_path), "daily") == sorted(files["run"] + files["run_windowed"])


def test_an_output_inside_a_folder_named_tmp_still_lists_its_files(tmp_path):
    root = tmp_path / "_tmp" / "news"
    files = make_layout(root)
    assert committed_files(str(root), RUN) == sorted(files["run"] + files["run_windowed"])
    assert data_files(str(root)) == sorted(files["run"] + files["run_windowed"] + files["other"] + files["compacted"])


@pytest.mark.parametrize("keys", [("dt", "lang"), ("dt",), ("lang",), ("year", "month", "source_host")])
def test_articles_glob_matches_article_files_never_runs_or_errors(tmp_path, keys):
    article = make_article(1, lang="ar")
    partition = partition_path(partition_values(article, keys))
    articles = [touch(tmp_path, f"{partition}/{part_name(RUN, partition, n)}") for n in range(2)]
    touch(tmp_path, f"{partition}/{part_name(OTHER, partition, 0)}")
    others = [touch(tmp_path, f"_runs/{RUN}.json"),
              touch(tmp_path, f"{errors_partition(RUN)}/{part_name(RUN, errors_partition(RUN), 0)}"),
              touch(tmp_path, f"_errors/{partition}/{part_name(RUN, partition, 0)}"),
              touch(tmp_path, f"_tmp/{COMPACT}/{partition}/{part_name(COMPACT, partition, 0)}")]
    matched = set(glob.glob(articles_glob(tmp_path, keys)))
    assert set(articles) <= matched and len(matched) == 3
    assert matched.isdisjoint(others)


# ---- partition values and paths ------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.tuples(st.sampled_from(SUPPORTED_PARTITION_KEYS), st.text()), min_size=1, max_size=5))
@example(values=[("dt", ".."), ("lang", "../../etc")])
@example(values=[("dt", "/"), ("source_host", "a/../../b"), ("lang", "\\..\\x")])
def test_partition_paths_never_leave_the_root(tmp_path_factory, values):
    root = tmp_path_factory.getbasetemp().resolve() / "root"
    path = partition_path((key, sanitise_partition_value(value)) for key, value in values)
    resolved = (root / path).resolve()
    assert resolved.is_relative_to(root)
    assert len(resolved.relative_to(root).parts) == len(values)
    assert [part.split("=", 1)[0] for part in path.split("/")] == [key for key, _ in values]


@settings(max_examples=150, deadline=None)
@given(language=st.text(), source=st.text(), published=st.one_of(st.none(), st.text()))
@example(language="../..", source="https://../../x", published="../../../etc/passwd")
def test_an_articles_partition_folder_is_inside_the_root_whatever_its_fields(tmp_path_factory, language, source,
                                                                            published):
    root = tmp_path_factory.getbasetemp().resolve() / "root"
    article = make_article(1).replace(language=language, source=source, published_at=published)
    values = partition_values(article, SUPPORTED_PARTITION_KEYS)
    resolved = (root / partition_path(values)).resolve()
    assert resolved.is_relative_to(root) and len(resolved.relative_to(root).parts) == len(SUPPORTED_PARTITION_KEYS)


def test_an_article_without_a_published_date_lands_on_its_fetch_date():
    values = dict(partition_values(make_article(1, published=None), ("dt", "month", "year")))
    assert values == {"dt": "2024-05-02", "month": "2024-05", "year": "2024"}  # fetched_at of make_article


def test_an_article_without_any_date_lands_in_the_hive_default_partition():
    article = make_article(1, published=None).replace(fetched_at="")
    values = dict(partition_values(article, ("dt", "month", "year", "lang")))
    assert values == {"dt": HIVE_DEFAULT_PARTITION, "month": HIVE_DEFAULT_PARTITION,
                      "year": HIVE_DEFAULT_PARTITION, "lang": "en"}


def test_a_published_value_that_is_not_a_date_gets_no_dt_folder():
    values = dict(partition_values(make_article(1, published="sometime in May"), ("dt",)))
    assert values == {"dt": HIVE_DEFAULT_PARTITION}


@pytest.mark.parametrize("language", ["EN", "en-US", "english", "zh_Hant", "", None, "e", "x1"])
def test_a_weird_language_lands_in_und(language):
    values = dict(partition_values(make_article(1).replace(language=language), ("lang",)))
    assert values == {"lang": "und"}


@pytest.mark.parametrize("language", ["en", "ar", "yue"])
def test_a_language_code_is_its_own_folder(language):
    assert dict(partition_values(make_article(1, lang=language), ("lang",))) == {"lang": language}


def test_source_host_is_the_feeds_host_or_local_for_files():
    feed = make_article(1).replace(source="https://News.Example.org:8443/rss?x=1")
    file = make_article(2).replace(source="/data/in/articles.jsonl")
    assert partition_values(feed, ("source_host",)) == (("source_host", "news.example.org"),)
    assert partition_values(file, ("source_host",)) == (("source_host", "local"),)


# ---- atomic text writes ----------------------------------------------------------------------------

def test_write_text_atomically_writes_creates_folders_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "state" / "written" / "run.ids"
    write_text_atomically(str(target), "a1 h1\nä2 h2\n")
    assert target.read_text(encoding="utf-8") == "a1 h1\nä2 h2\n"
    write_text_atomically(str(target), "replaced\n")
    assert target.read_text(encoding="utf-8") == "replaced\n"
    assert [p.name for p in target.parent.iterdir()] == ["run.ids"]


def test_replacing_a_local_file_never_removes_it_first(tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    target = tmp_path / "feeds.json"
    target.write_text("old", encoding="utf-8")
    deleted: list[str] = []
    real_delete = FileSystems.delete

    def recording_delete(paths):
        deleted.extend(paths)
        return real_delete(paths)

    monkeypatch.setattr(FileSystems, "delete", recording_delete)
    write_text_atomically(str(target), "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert str(target) not in deleted
