"""A damaged --state folder (disk fault, hand edit) costs no duplicate rows and no traceback."""
from __future__ import annotations

import json
import logging

from newsbeam.state.store import ID_LINE_RE, load_written_ids, recover_uncommitted
from tests.support.httpserver import RecordedRequest, Response
from tests.support.pipelines import english_items, only_manifest, read_rows, rss, run_cli

FAST = ["--skip_labels"]


def _inputs(tmp_path, count: int):
    folder = tmp_path / "inputs"
    folder.mkdir()
    lines = [json.dumps({"title": f"Harbour story {n}", "url": f"https://files.example.org/{n}",
                         "body": f"The harbour authority reported {n} ships in port today."}) for n in range(count)]
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_ids_file_with_garbage_lines_is_rebuilt_and_nothing_is_written_twice(tmp_path, caplog):
    output, state = tmp_path / "out", tmp_path / "state"
    args = ["--output", str(output), "--state", str(state), "--inputs", str(_inputs(tmp_path, 8)), *FAST]
    assert run_cli(*args, "--run_id", "run-1") == 0
    ids_file = state / "written" / "run-1.ids"
    good = ids_file.read_text().splitlines()
    assert len(good) == 8 and all(ID_LINE_RE.fullmatch(line) for line in good)
    # two lines destroyed: one overwritten with bytes that are not UTF-8, one cut short
    damaged = [b"\xff\xfe\x00garbage", good[1][:10].encode()] + [line.encode() for line in good[2:]]
    ids_file.write_bytes(b"\n".join(damaged) + b"\n")

    with caplog.at_level(logging.WARNING, logger="newsbeam.state.store"):
        assert run_cli(*args, "--run_id", "run-2") == 0
    assert only_manifest(output, "run-2")["counts"]["rows_written"] == 0
    assert len(read_rows(output, "article_id")) == 8
    assert sorted(ids_file.read_text().splitlines()) == sorted(good)  # rebuilt from run-1's Parquet files
    assert any("2 lines that are not article ids" in r.getMessage() and "rebuilt" in r.getMessage()
               for r in caplog.records)


def test_ids_file_whose_data_is_gone_keeps_its_good_lines(tmp_path):
    state, output = tmp_path / "state", tmp_path / "out"
    (state / "written").mkdir(parents=True)
    output.mkdir()
    article, content = "a" * 32, "b" * 32
    (state / "written" / "compact-old.ids").write_text(f"{article} {content}\nnot an id\n{'c' * 32}\n")
    assert recover_uncommitted(str(state), str(output)) == 0
    assert (state / "written" / "compact-old.ids").read_text().splitlines() == [f"{article} {content}", "c" * 32]
    ids, hashes = load_written_ids(str(state))
    assert ids == {article, "c" * 32} and hashes == {content}


def test_unreadable_feeds_json_costs_the_http_caches_once_not_the_run(tmp_path, http_server):
    def feed(request: RecordedRequest) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(body=rss(english_items("cache", 3)), headers={"ETag": '"v1"'})

    http_server.route("/feed.xml", feed)
    output, state = tmp_path / "out", tmp_path / "state"
    args = ["--output", str(output), "--state", str(state), "--feeds", http_server.url("/feed.xml"),
            "--allow_private_addresses", *FAST]
    assert run_cli(*args, "--run_id", "run-1") == 0
    (state / "feeds.json").write_bytes(b'{"truncated": \xff')

    assert run_cli(*args, "--run_id", "run-2") == 0
    assert "if-none-match" not in http_server.requests_to("/feed.xml")[-1].headers  # no cache to use
    counts = only_manifest(output, "run-2")["counts"]
    assert counts["rows_written"] == 0 and counts["already_written"] == 3
    entries = json.loads((state / "feeds.json").read_text())  # written again, whole
    assert [entry["etag"] for entry in entries.values()] == ['"v1"']

    assert run_cli(*args, "--run_id", "run-3") == 0
    assert http_server.requests_to("/feed.xml")[-1].headers.get("if-none-match") == '"v1"'
    assert len(read_rows(output, "article_id")) == 3
