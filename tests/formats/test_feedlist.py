"""load_feed_list: URLs and feed-list files in every supported format."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from newsbeam.exit_codes import EXIT_CONFIG
from newsbeam.formats.feedlist import load_feed_list
from newsbeam.pipeline.cli import main
from newsbeam.records import FeedSpec


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_feed_url_is_its_own_list():
    assert load_feed_list("https://example.com/rss.xml") == [FeedSpec("https://example.com/rss.xml")]


def test_text_list_skips_comments_and_blank_lines(tmp_path):
    path = write(tmp_path, "feeds.txt", """# world news
https://example.com/world.xml

   https://example.org/atom.xml   # trailing comment
#https://example.net/commented-out.xml
https://example.com/page#section
""")

    assert load_feed_list(path) == [
        FeedSpec("https://example.com/world.xml"),
        FeedSpec("https://example.org/atom.xml"),
        FeedSpec("https://example.com/page#section"),
    ]


def test_text_list_drops_duplicate_urls_keeping_first(tmp_path):
    path = write(tmp_path, "feeds.txt", "https://a.example/1\nhttps://b.example/2\nhttps://a.example/1\n")

    assert [spec.url for spec in load_feed_list(path)] == ["https://a.example/1", "https://b.example/2"]


OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>My subscriptions</title></head>
  <body>
    <outline text="News" title="News">
      <outline type="rss" text="World text" title="World" xmlUrl="https://example.com/world.xml"
               htmlUrl="https://example.com/" language="en"/>
      <outline text="Deeper">
        <outline type="rss" text="Le Monde" xmlUrl="https://example.fr/une.xml" language="fr"/>
      </outline>
    </outline>
    <outline type="link" text="Just a link" url="https://example.com/about"/>
    <outline type="rss" xmlUrl="https://example.org/untitled.xml"/>
  </body>
</opml>"""


def test_opml_nested_outlines_with_titles_and_languages(tmp_path):
    assert load_feed_list(write(tmp_path, "subs.opml", OPML)) == [
        FeedSpec("https://example.com/world.xml", name="World", language="en"),
        FeedSpec("https://example.fr/une.xml", name="Le Monde", language="fr"),
        FeedSpec("https://example.org/untitled.xml"),
    ]


def test_opml_detected_by_content_without_extension(tmp_path):
    assert len(load_feed_list(write(tmp_path, "export", OPML))) == 3


def test_opml_with_entity_declarations_is_refused(tmp_path):
    bomb = OPML.replace('<opml version="2.0">', '<!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa">]>\n<opml version="2.0">')
    path = write(tmp_path, "bomb.opml", bomb)

    with pytest.raises(ValueError, match=r"bomb\.opml.*entities"):
        load_feed_list(path)


YAML_MAPPING = """feeds:
  - url: https://example.com/world.xml
    name: World
    language: en
  - url: https://example.de/news.xml
  - https://example.org/plain.xml   # a bare URL works too
"""


def test_yaml_feeds_mapping(tmp_path):
    assert load_feed_list(write(tmp_path, "feeds.yaml", YAML_MAPPING)) == [
        FeedSpec("https://example.com/world.xml", name="World", language="en"),
        FeedSpec("https://example.de/news.xml"),
        FeedSpec("https://example.org/plain.xml"),
    ]


def test_yaml_bare_list_detected_by_content(tmp_path):
    path = write(tmp_path, "feeds.conf", "- https://a.example/rss\n- url: https://b.example/rss\n  name: B\n")

    assert load_feed_list(path) == [FeedSpec("https://a.example/rss"), FeedSpec("https://b.example/rss", name="B")]


TOML = """# my feeds
[[feeds]]
url = "https://example.com/world.xml"
name = "World"
language = "en"

[[feeds]]
url = "https://example.jp/news.rdf"
language = "ja"
"""


def test_toml_feeds_tables(tmp_path):
    assert load_feed_list(write(tmp_path, "feeds.toml", TOML)) == [
        FeedSpec("https://example.com/world.xml", name="World", language="en"),
        FeedSpec("https://example.jp/news.rdf", language="ja"),
    ]


def test_toml_detected_by_content(tmp_path):
    assert len(load_feed_list(write(tmp_path, "feeds.cfg", TOML))) == 2


def test_gzipped_list_is_read_through_beam_filesystems(tmp_path):
    path = tmp_path / "feeds.txt.gz"
    path.write_bytes(gzip.compress(b"https://example.com/a.xml\n"))

    assert load_feed_list(str(path)) == [FeedSpec("https://example.com/a.xml")]


# Each bad list hides "SECRET" in the part the error is about: the message names the file,
# the place and what was expected, and never repeats the file's content.
@pytest.mark.parametrize("name, text, problem", [
    ("feeds.yaml", "feeds:\n  - name: SECRET\n", r"feed #1 has no url"),
    ("feeds.yaml", "feeds:\n  - url: https://a.example/\n    SECRET: typo\n",
     r"feed #1 has unknown key\(s\); expected only url, name, language$"),
    ("feeds.yaml", "feeds:\n  - url: https://a.example/\n    nmae: SECRET\n",
     r"feed #1 has unknown key\(s\); expected only url, name, language \(did you mean 'name'\?\)"),
    ("feeds.yaml", "feeds: https://SECRET.example/\n", r"'feeds' must be a list, got str"),
    ("feeds.yaml", "SECRET\n", r"expected a list of feeds or a 'feeds' key, got str"),
    ("feeds.yaml", "SECRET:\n  - https://a.example/\n", r"top level has unknown key\(s\); expected only feeds$"),
    ("feeds.yaml", "feeds: [SECRET\n", r"not valid YAML \(line 2, column 1\)"),
    ("feeds.yaml", "feeds:\n  - 7\n", r"feed #1 must be a URL or a mapping with url, name, language; got int"),
    ("feeds.yaml", "feeds:\n  - url: https://a.example/\n    language: 7\n", r"feed #1: language must be text, got int"),
    ("feeds.yaml", "feeds:\n  - url: ftp://SECRET.example/\n", r"feed #1: its url is not an http\(s\) URL"),
    ("feeds.toml", "[[feeds]]\nname = 'SECRET'\n", r"feed #1 has no url"),
    ("feeds.toml", "[[feeds]\nurl = 'SECRET'\n", r"not valid TOML \(line 1, column 8\)"),
    ("feeds.toml", "SECRET = 1\nSECRET = 2\n", r"not valid TOML \(line 2, column 11\)"),
    ("feeds.txt", "https://ok.example/\nftp://SECRET.example/feed.xml\n",
     r"line 2 is not an http\(s\) URL \(expected one feed URL a line, or a # comment\)"),
    ("feeds.txt", "SECRET.example/rss\n", r"line 1 is not an http\(s\) URL"),
    ("feeds.txt", "# only comments\n\n", r"lists no feeds"),
    ("feeds.opml", "<opml><body><outline text='SECRET'", r"not well-formed OPML \(line 1, column 13\)"),
    ("feeds.opml", "<opml>&SECRET;</opml>", r"not well-formed OPML \(line 1, column 7\)"),
    ("feeds.opml", "<SECRET version='2.0'/>", r"root element is not <opml>"),
    ("feeds.opml", "<opml><body><outline xmlUrl='https://a.example/'/>"
     "<outline text='SECRET' xmlUrl='file:///etc/SECRET'/></body></opml>",
     r"outline #2: its xmlUrl is not an http\(s\) URL"),
])
def test_bad_feed_list_fails_naming_file_and_problem_but_not_content(tmp_path, name, text, problem):
    path = write(tmp_path, name, text)

    with pytest.raises(ValueError, match=problem) as caught:
        load_feed_list(path)

    assert name in str(caught.value)
    assert "SECRET" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_system_file_given_as_feed_list_is_refused_without_echoing_it(tmp_path, capsys):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    output = tmp_path / "out"

    code = main(["run", "--feeds", str(passwd), "--output", str(output), "--skip_labels"])

    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert "root:x" not in err and "/bin/bash" not in err and "daemon" not in err
    assert f"feed list {str(passwd)!r}: line 1 is not an http(s) URL" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_credentials_in_a_typed_feed_list_url_are_redacted(tmp_path):
    with pytest.raises(ValueError, match=r"--feeds 'ftp://host.example/feeds.txt': ftp:// is neither") as caught:
        load_feed_list("ftp://user:SECRET@host.example/feeds.txt")

    assert "SECRET" not in str(caught.value)


def test_missing_file_fails_naming_it(tmp_path):
    missing = str(tmp_path / "nope.txt")

    with pytest.raises(ValueError, match=r"nope\.txt.*cannot be read"):
        load_feed_list(missing)


def test_non_utf8_file_fails_naming_it_and_the_line(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("https://example.com/a\nhttps://example.com/caf\xe9\n".encode("latin-1"))

    with pytest.raises(ValueError, match=r"latin\.txt' is not UTF-8 text \(first bad byte on line 2\)$"):
        load_feed_list(str(path))


@pytest.mark.parametrize("value", ["file:///etc/passwd", "ftp://example.com/feed.xml"])
def test_a_feeds_value_of_another_scheme_says_what_feeds_takes(tmp_path, capsys, value):
    """Beam's own message for these asked to install apache-beam[gcp]."""
    with pytest.raises(ValueError, match=r"is neither a feed URL \(http://, https://\) nor a place a feed list"):
        load_feed_list(value)
    assert main(["run", "--output", str(tmp_path / "out"), "--feeds", value, "--skip_labels"]) == EXIT_CONFIG
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and value.split(":")[0] + "://" in lines[0] and "gcp" not in lines[0], lines
    assert not (tmp_path / "out").exists()
