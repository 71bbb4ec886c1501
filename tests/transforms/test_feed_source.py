"""ReadFeeds / FetchFeedFn on a real Beam runner against the loopback server,
and resolve_feed_specs, which ReadFeeds calls while the graph is built."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from newsbeam.fetch.http import FetchPolicy
from newsbeam.formats.feedlist import resolve_feed_specs
from newsbeam.metrics import NAMESPACE
from newsbeam.records import DeadLetter, FeedSpec, RawEntry
from newsbeam.state.store import FEEDS_FILE, PENDING_DIR, commit_state, feed_state_key
from newsbeam.transforms.feed_source import DEAD_LETTER, FEED_STATUS, ReadFeeds
from tests.support.httpserver import RecordedRequest, Response
from tests.support.pipelines import english_items, rss

# Loopback is private; no retries so the 500 feed fails at once.
POLICY = FetchPolicy(allow_private_addresses=True, max_retries=0, total_timeout=10.0)
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Welcome</p></body></html>"


def _save(pcoll, path: Path, label: str):
    """Write a PCollection's elements to ``path`` (pickled list) once the run is done."""
    return (pcoll
            | f"Gather{label}" >> beam.combiners.ToList()
            | f"Save{label}" >> beam.Map(lambda items, p=str(path): Path(p).write_bytes(pickle.dumps(items))))


def run_read_feeds(feeds: list[str], folder: Path, *, state: str | None = None, run_id: str = "") -> dict:
    """Run ReadFeeds alone; returns its three outputs as lists and the newsbeam counters."""
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    outputs = pipeline | ReadFeeds(feeds, POLICY, state=state, run_id=run_id)
    for name in ("entries", DEAD_LETTER, FEED_STATUS):
        _save(outputs[name], folder / f"{name}.pickle", name)
    result = pipeline.run()
    result.wait_until_finish()
    collected = {name: pickle.loads((folder / f"{name}.pickle").read_bytes())
                 for name in ("entries", DEAD_LETTER, FEED_STATUS)}
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    collected["counters"] = {c.key.metric.name: c.committed for c in counters}
    return collected


@pytest.fixture
def four_feeds(http_server):
    urls = {
        "alpha": http_server.route("/alpha.xml", Response(body=rss(english_items("alpha", 3)))),
        "beta": http_server.route("/beta.xml", Response(body=rss(english_items("beta", 2)))),
        "broken": http_server.route("/broken.xml", Response(status=500, body=b"oops")),
        "page": http_server.route("/page.xml", Response(body=HTML_PAGE, headers={"Content-Type": "text/html"})),
    }
    return urls


def test_good_feeds_give_their_entries_and_each_bad_feed_one_dead_letter(tmp_path, four_feeds):
    out = run_read_feeds(list(four_feeds.values()), tmp_path / "run")

    entries: list[RawEntry] = out["entries"]
    assert sorted(e.title for e in entries) == sorted(
        [f"alpha story {n}" for n in range(3)] + [f"beta story {n}" for n in range(2)])
    by_title = {e.title: e for e in entries}
    assert by_title["alpha story 0"].source == four_feeds["alpha"]
    assert by_title["beta story 1"].source == four_feeds["beta"]
    assert by_title["alpha story 0"].source_title == "Fixture feed"

    letters: list[DeadLetter] = out[DEAD_LETTER]
    assert sorted(letter.source for letter in letters) == sorted([four_feeds["broken"], four_feeds["page"]])
    by_source = {letter.source: letter for letter in letters}
    broken, page = by_source[four_feeds["broken"]], by_source[four_feeds["page"]]
    assert broken.stage == "fetch" and "500" in broken.reason
    assert page.stage == "parse_feed" and "html" in page.reason.lower()

    statuses = {s["url"]: s for s in out[FEED_STATUS]}
    assert set(statuses) == set(four_feeds.values())
    assert statuses[four_feeds["alpha"]]["ok"] is True and statuses[four_feeds["alpha"]]["entries"] == 3
    assert statuses[four_feeds["beta"]]["ok"] is True and statuses[four_feeds["beta"]]["entries"] == 2
    assert statuses[four_feeds["broken"]]["ok"] is False and "500" in statuses[four_feeds["broken"]]["reason"]
    assert statuses[four_feeds["page"]]["ok"] is False and "html" in statuses[four_feeds["page"]]["reason"]

    counters = out["counters"]
    assert (counters["feeds_ok"], counters["feeds_failed"], counters["entries_read"]) == (2, 2, 5)
    assert counters.get("feeds_not_modified", 0) == 0


def test_a_named_feed_from_a_feed_list_names_its_entries(tmp_path, http_server):
    url = http_server.route("/named.xml", Response(body=rss(english_items("named", 2))))
    feed_list = tmp_path / "feeds.yaml"
    feed_list.write_text(f"feeds:\n  - url: {url}\n    name: The Named Gazette\n", encoding="utf-8")

    out = run_read_feeds([str(feed_list)], tmp_path / "run")

    assert sorted((e.title, e.source_title) for e in out["entries"]) == [
        ("named story 0", "The Named Gazette"), ("named story 1", "The Named Gazette")]


def etag_feed(body: bytes, etag: str):
    def handle(request: RecordedRequest) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return Response(body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"})

    return handle


def test_with_state_a_304_on_the_second_pass_yields_nothing_and_counts_not_modified(tmp_path, http_server):
    url = http_server.route("/cond.xml", etag_feed(rss(english_items("cond", 3)), '"v7"'))
    state, output = tmp_path / "state", tmp_path / "out"

    first = run_read_feeds([url], tmp_path / "first", state=str(state), run_id="run-1")
    assert len(first["entries"]) == 3
    [pending] = json.loads((state / PENDING_DIR / "run-1" / "feeds.json").read_text())
    assert pending["key"] == feed_state_key(url) and pending["url"] == url
    assert pending["ok"] is True and pending["etag"] == '"v7"'
    assert pending["not_modified"] is False and pending["entries"] == 3
    # The run's data is committed (nothing to write here): its feed statuses become the state.
    commit_state(str(state), str(output), "run-1")
    assert json.loads((state / FEEDS_FILE).read_text())[feed_state_key(url)]["etag"] == '"v7"'

    second = run_read_feeds([url], tmp_path / "second", state=str(state), run_id="run-2")

    assert http_server.requests_to("/cond.xml")[-1].headers.get("if-none-match") == '"v7"'
    assert second["entries"] == [] and second[DEAD_LETTER] == []
    [status] = second[FEED_STATUS]
    assert status["ok"] is True and status["not_modified"] is True and status["status"] == 304
    assert second["counters"]["feeds_not_modified"] == 1
    assert second["counters"].get("entries_read", 0) == 0 and second["counters"].get("feeds_failed", 0) == 0
    [pending] = json.loads((state / PENDING_DIR / "run-2" / "feeds.json").read_text())
    assert pending["not_modified"] is True and pending["status"] == 304


def test_without_state_the_fetch_is_unconditional(tmp_path, http_server):
    url = http_server.route("/plain.xml", Response(body=rss(english_items("plain", 1))))
    out = run_read_feeds([url], tmp_path / "run")
    assert [e.title for e in out["entries"]] == ["plain story 0"]
    assert "if-none-match" not in http_server.requests_to("/plain.xml")[-1].headers


# ---- resolve_feed_specs ----------------------------------------------------------------

def test_first_occurrence_of_a_url_wins_across_files_and_urls(tmp_path):
    yaml_list = tmp_path / "first.yaml"
    yaml_list.write_text("feeds:\n"
                         "  - url: https://a.example/rss\n    name: From YAML\n    language: fr\n"
                         "  - https://b.example/rss\n", encoding="utf-8")
    text_list = tmp_path / "second.txt"
    text_list.write_text("https://b.example/rss\nhttps://c.example/rss\nhttps://a.example/rss\n", encoding="utf-8")

    specs = resolve_feed_specs(["https://c.example/rss", str(yaml_list), str(text_list), "https://a.example/rss"])

    assert specs == [
        FeedSpec("https://c.example/rss"),
        FeedSpec("https://a.example/rss", name="From YAML", language="fr"),
        FeedSpec("https://b.example/rss"),
    ]


def test_a_url_given_first_wins_over_the_named_entry_of_a_later_list(tmp_path):
    yaml_list = tmp_path / "feeds.yaml"
    yaml_list.write_text("feeds:\n  - url: https://a.example/rss\n    name: Named later\n", encoding="utf-8")
    assert resolve_feed_specs(["https://a.example/rss", str(yaml_list)]) == [FeedSpec("https://a.example/rss")]


def test_an_empty_feed_list_is_a_value_error_naming_the_input(tmp_path):
    with pytest.raises(ValueError, match="--feeds"):
        resolve_feed_specs([])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt"):
        resolve_feed_specs([str(empty)])


def test_read_feeds_resolves_its_list_when_the_graph_is_built(tmp_path):
    """A bad list fails before anything runs, naming the file."""
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(ValueError, match="nowhere.txt"):
        ReadFeeds([str(missing)], POLICY)
