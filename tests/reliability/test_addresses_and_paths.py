"""Where newsbeam may connect, and where it may write, end to end through the CLI.

Addresses: feed URLs on loopback, link-local (cloud metadata), private ranges,
or reached by a redirect to one, are refused by default with the reason
``blocked_address`` before any socket opens; the failure is in the manifest
and the run goes on (exit 0) or, if nothing could be read, exits 3.
Non-HTTP feed URLs are a configuration error (exit 2).

Paths: values that come from the data (source, language) only ever become
one sanitised path segment; every file the run writes resolves to a path
inside the output folder.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.support.httpserver import Response
from tests.support.pipelines import assert_accounting, english_items, only_manifest, read_rows, rss, run_cli

FAST = ["--skip_labels"]
PUBLIC_STAND_IN = "93.184.216.34"  # a global address; connections to it are routed to the loopback server
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
PRIVATE_URL = "http://10.0.0.1/internal/feed.xml"


@pytest.fixture
def connections(monkeypatch) -> list[str]:
    """Every address newsbeam's fetcher opens a socket to (in order); PUBLIC_STAND_IN goes to loopback."""
    import urllib3.util.connection

    opened: list[str] = []
    real_create_connection = urllib3.util.connection.create_connection

    def recording_create_connection(address, *args, **kwargs):
        host, port = address
        opened.append(host)
        if host == PUBLIC_STAND_IN:
            return real_create_connection(("127.0.0.1", port), *args, **kwargs)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", recording_create_connection)
    return opened


@pytest.fixture
def public_names(monkeypatch) -> None:
    """``*.public.example`` resolves to a public address, as a real feed host would."""
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".public.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_STAND_IN, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)


def failures_by_source(manifest: dict) -> dict[str, str]:
    return {failure["source"]: failure["reason"] for failure in manifest["failures"]}


# --- addresses ----------------------------------------------------------------

def test_loopback_link_local_and_private_feeds_by_default__blocked_and_exit_3(tmp_path, http_server, connections):
    """Without --allow_private_addresses: 127.0.0.1, ::1, 169.254.169.254, 10.0.0.1 all fail
    'blocked_address', no socket is opened, nothing was read, so the run exits 3."""
    loopback = http_server.route("/good.xml", Response(body=rss(english_items("loop", 2))))
    feed_list = tmp_path / "feeds.txt"
    feed_list.write_text("\n".join([loopback, f"http://[::1]:{http_server.port}/good.xml",
                                    METADATA_URL, PRIVATE_URL]) + "\n", encoding="utf-8")
    output = tmp_path / "out"

    code = run_cli("--output", str(output), "--feeds", str(feed_list), *FAST)

    assert code == 3
    manifest = only_manifest(output)
    failed = failures_by_source(manifest)
    assert set(failed) == {loopback, f"http://[::1]:{http_server.port}/good.xml", METADATA_URL, PRIVATE_URL}
    assert all(reason.startswith("blocked_address") for reason in failed.values()), failed
    assert manifest["counts"]["feeds_failed"] == 4 and manifest["counts"]["rows_written"] == 0
    assert connections == [] and http_server.requests == []
    assert_accounting(manifest)


def test_redirect_to_metadata_or_private_address__blocked_before_connecting_and_run_goes_on(
        tmp_path, http_server, connections, public_names):
    """Public-looking feeds that redirect to 169.254.169.254 and 10.0.0.1 fail 'blocked_address' at
    that hop, without a socket to either address; a third, good feed is written and the run exits 0."""
    http_server.route("/to-metadata.xml", Response(302, headers={"Location": METADATA_URL}))
    http_server.route("/to-private.xml", Response(301, headers={"Location": PRIVATE_URL}))
    http_server.route("/good.xml", Response(body=rss(english_items("public", 3))))
    port = http_server.port
    to_metadata = f"http://feeds.public.example:{port}/to-metadata.xml"
    to_private = f"http://news.public.example:{port}/to-private.xml"
    good = f"http://www.public.example:{port}/good.xml"
    output = tmp_path / "out"

    code = run_cli("--output", str(output), "--feeds", to_metadata, to_private, good, *FAST)

    assert code == 0
    manifest = only_manifest(output)
    failed = failures_by_source(manifest)
    assert set(failed) == {to_metadata, to_private}
    assert failed[to_metadata].startswith("blocked_address") and "169.254.169.254" in failed[to_metadata]
    assert failed[to_private].startswith("blocked_address") and "10.0.0.1" in failed[to_private]
    assert "169.254.169.254" not in connections and "10.0.0.1" not in connections
    assert set(connections) == {PUBLIC_STAND_IN}
    assert sorted(r.path for r in http_server.requests) == ["/good.xml", "/to-metadata.xml", "/to-private.xml"]
    assert manifest["counts"]["rows_written"] == 3 == len(read_rows(output, "article_id"))
    assert_accounting(manifest)


def test_file_url_as_feed__configuration_error_exit_2(tmp_path, capsys):
    """--feeds file:///etc/passwd is neither a feed URL nor a readable feed list: exit 2, nothing read."""
    output = tmp_path / "out"

    assert run_cli("--output", str(output), "--feeds", "file:///etc/passwd", *FAST) == 2

    assert "file:///etc/passwd" in capsys.readouterr().err
    assert not output.exists()


def test_file_url_inside_a_feed_list__configuration_error_naming_the_line(tmp_path, capsys):
    """A feed list is often third-party (OPML exports): a file:// entry fails the list at once, exit 2."""
    feed_list = tmp_path / "feeds.txt"
    feed_list.write_text("https://news.example.org/rss.xml\nfile:///etc/passwd\n", encoding="utf-8")
    output = tmp_path / "out"

    assert run_cli("--output", str(output), "--feeds", str(feed_list), *FAST) == 2

    error = capsys.readouterr().err
    assert "line 2" in error and "not an http(s) URL" in error
    assert not output.exists()


# --- paths --------------------------------------------------------------------

HOSTILE_RECORDS = [
    ({"language": "../../x", "source": "../../../etc"}, "local"),
    ({"language": "..", "source": "http://../../../etc/passwd"}, "%2E%2E"),
    ({"lang": "en/../../../x", "source": "file:///../../../etc/cron.d/x"}, "local"),
    ({"language": "/etc", "source": "http://.hidden/feed"}, "%2Ehidden"),
    ({"language": "..\\..\\x", "source": "..\\..\\..\\windows\\system32"}, "local"),
]


def all_paths(folder: Path) -> set[Path]:
    return {path.resolve() for path in folder.rglob("*")}


def test_source_and_language_values_that_climb__every_file_stays_under_output(tmp_path):
    """'../../x' languages and '../../../etc' sources with --partition_keys dt,lang,source_host:
    each value becomes one safe segment, every written file resolves inside the output, nothing
    is created outside it, and all rows are readable."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    lines = []
    for number, (fields, _host) in enumerate(HOSTILE_RECORDS):
        lines.append(json.dumps({"title": f"Harbour report number {number}", "url": f"https://paths.example.org/{number}",
                                 "body": f"The harbour authority counted {number + 10} ships in port today.", **fields}))
    (inputs / "hostile.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "a" / "b" / "out"  # '../../../etc' from here would be tmp_path/etc
    before = all_paths(tmp_path)

    code = run_cli("--output", str(output), "--inputs", str(inputs), "--partition_keys", "dt,lang,source_host", *FAST)

    assert code == 0
    root = output.resolve()
    created = all_paths(tmp_path) - before
    outside = sorted(str(path) for path in created if path != root and not path.is_relative_to(root))
    assert outside == [tmp_path.joinpath("a").resolve().as_posix(), tmp_path.joinpath("a", "b").resolve().as_posix()]
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()
    data_files = list(output.rglob("*.parquet"))
    assert data_files and all(path.resolve().is_relative_to(root) for path in data_files)
    hosts = {path.relative_to(output).parts[2] for path in output.glob("dt=*/lang=*/source_host=*")}
    assert hosts == {f"source_host={host}" for _fields, host in HOSTILE_RECORDS}
    languages = {path.name for path in output.glob("dt=*/lang=*")}
    assert languages == {"lang=en"}
    rows = read_rows(output, "source")
    assert sorted(row["source"] for row in rows) == sorted(fields["source"] for fields, _ in HOSTILE_RECORDS)
    assert_accounting(only_manifest(output))


def test_run_id_with_path_separators__refused_as_configuration_error(tmp_path, capsys):
    """A run id is a file-name part: '../../evil' must be refused (exit 2) and write nothing outside the output."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "one.jsonl").write_text(json.dumps({"title": "One story", "body": "The ferry left at noon."}) + "\n",
                                      encoding="utf-8")
    output = tmp_path / "a" / "out"
    before = all_paths(tmp_path)

    code = run_cli("--output", str(output), "--inputs", str(inputs), "--run_id", "../../evil", *FAST)

    created = all_paths(tmp_path) - before
    root = output.resolve()
    assert sorted(str(path) for path in created if not path.is_relative_to(root)) in ([], [str(tmp_path / "a")])
    assert code == 2
    assert "--run_id" in capsys.readouterr().err


def test_run_id_with_a_trailing_newline__refused_as_configuration_error(tmp_path, capsys):
    """'$' matches before a final newline: 'nightly\\n' must be refused like any run id that can't name a file."""
    output = tmp_path / "out"

    code = run_cli("--output", str(output), "--run_id", "nightly\n", *FAST)

    assert code == 2
    assert "--run_id" in capsys.readouterr().err
    assert not output.exists()
