"""Feed lists -> FeedSpecs: a URL, or a file in text, OPML, YAML or TOML.

Files are read through Beam's FileSystems, so ``gs://`` and other registered
filesystems work as local paths do. The format comes from the extension,
else from the content. Any problem raises ``ValueError`` naming the file and
what is wrong with it, before the pipeline starts.

An error never repeats the file's content, not even the offending line: a
mistyped ``--feeds /etc/passwd`` (or a secrets file) must not print a line of
it to a terminal or a CI log. It says where (line, column, feed #n, outline #n)
and what was expected instead. The one thing shown is the ``--feeds`` value the
user typed, with any credentials in it redacted.

OPML is parsed with the standard library's ElementTree after refusing any
document that declares entities: a feed list has no use for them, and
refusing them rules out entity-expansion and external-entity tricks.
"""
from __future__ import annotations

import difflib
import logging
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

import yaml
from apache_beam.io.filesystems import FileSystems

from newsbeam.normalise import redact_url
from newsbeam.records import FeedSpec

LOGGER = logging.getLogger(__name__)

FEED_URL_SCHEMES = ("http", "https")
SPEC_KEYS = ("url", "name", "language")
FORMAT_BY_EXTENSION = {
    ".txt": "text", ".list": "text", ".urls": "text",
    ".opml": "opml", ".xml": "opml",
    ".yaml": "yaml", ".yml": "yaml",
    ".toml": "toml",
}
TOML_TABLE_OR_KEY = re.compile(r"^\s*(\[\[?\s*[\w.\"-]+\s*\]\]?|[\w\"-]+\s*=)", re.MULTILINE)
YAML_MAPPING_OR_LIST = re.compile(r"^(feeds\s*:|-\s)", re.MULTILINE)
INLINE_COMMENT = re.compile(r"\s+#.*$")
# tomllib ends every message with where it stopped; the rest may quote the file (a key name).
TOML_ERROR_PLACE = re.compile(r"\(at (line \d+, column \d+|end of document)\)$")


def load_feed_list(path_or_url: str) -> list[FeedSpec]:
    """A feed URL -> ``[FeedSpec(url)]``; a feed-list file -> its FeedSpecs, in order, duplicates dropped."""
    if _is_feed_url(path_or_url):
        return [FeedSpec(url=path_or_url)]
    text = _read_text(path_or_url)
    feed_format = _detect_format(path_or_url, text)
    parse = PARSERS[feed_format]
    specs = _unique(parse(text, path_or_url))
    if not specs:
        raise ValueError(f"feed list {_shown(path_or_url)!r} ({feed_format}) lists no feeds")
    LOGGER.info("read %d feeds from %s (%s)", len(specs), _shown(path_or_url), feed_format)
    return specs


def _shown(path: str) -> str:
    """The --feeds value as errors show it: what the user typed, less any user:password@."""
    return redact_url(path) or path


def _is_feed_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme.lower() in FEED_URL_SCHEMES and bool(parts.netloc)


def _read_text(path: str) -> str:
    scheme = urlsplit(path).scheme.lower() if "://" in path else ""
    if scheme and scheme not in FEED_URL_SCHEMES:
        try:
            FileSystems.get_filesystem(path)
        except ValueError:  # Beam's message asks to install apache-beam[gcp]: for file:// or ftp:// that misleads
            raise ValueError(f"--feeds {_shown(path)!r}: {scheme}:// is neither a feed URL (http://, https://) "
                             "nor a place a feed list is read from (a local path, gs://)") from None
    try:
        with FileSystems.open(path) as handle:
            data = handle.read()
    except (OSError, ValueError) as exc:  # BeamIOError is an OSError; unknown schemes a ValueError
        # Beam's message quotes the path as given, credentials and all.
        reason = str(exc).replace(path, _shown(path))
        raise ValueError(f"feed list {_shown(path)!r} cannot be read: {reason}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # its message quotes the bad bytes: say where they are instead
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"feed list {_shown(path)!r} is not UTF-8 text (first bad byte on line {line})") from exc


def _detect_format(path: str, text: str) -> str:
    lowered = path.lower()
    for compressed in (".gz", ".bz2", ".zst", ".deflate"):
        lowered = lowered.removesuffix(compressed)
    for extension, feed_format in FORMAT_BY_EXTENSION.items():
        if lowered.endswith(extension):
            return feed_format
    head = text.lstrip()
    if head.startswith("<"):
        return "opml"
    meaningful = "\n".join(line for line in text.splitlines()
                           if line.strip() and not line.lstrip().startswith("#"))
    if YAML_MAPPING_OR_LIST.search(meaningful):
        return "yaml"
    if TOML_TABLE_OR_KEY.search(meaningful):
        return "toml"
    return "text"


def _problem(path: str, message: str) -> ValueError:
    return ValueError(f"feed list {_shown(path)!r}: {message}")


def _check_url(url: Any, path: str, where: str, field: str = "url") -> str:
    """``url`` stripped, else an error saying where the bad URL is, never what it is (file content)."""
    if not isinstance(url, str) or not url.strip():
        raise _problem(path, f"{where} has no {field}")
    url = url.strip()
    if not _is_feed_url(url):
        raise _problem(path, f"{where}: its {field} is not an http(s) URL")
    return url


def _optional_text(value: Any, key: str, path: str, where: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _problem(path, f"{where}: {key} must be text, got {type(value).__name__}")
    return value.strip() or None


def _check_keys(keys: Iterable[Any], expected: tuple[str, ...], path: str, where: str) -> None:
    """An error when a key is not ``expected``. A key is file content, so the message names
    only expected keys: all of them, and the one closest to a typo."""
    unknown = [str(key) for key in keys if key not in expected]
    if not unknown:
        return
    close = [match for key in unknown for match in difflib.get_close_matches(key, expected, n=1)]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise _problem(path, f"{where} unknown key(s); expected only {', '.join(expected)}{hint}")


def _spec_from_item(item: Any, path: str, where: str) -> FeedSpec:
    """A YAML/TOML item: a URL string or a mapping with url, name, language."""
    if isinstance(item, str):
        return FeedSpec(url=_check_url(item, path, where))
    if not isinstance(item, dict):
        raise _problem(path, f"{where} must be a URL or a mapping with {', '.join(SPEC_KEYS)}; "
                             f"got {type(item).__name__}")
    _check_keys(item, SPEC_KEYS, path, f"{where} has")
    return FeedSpec(
        url=_check_url(item.get("url"), path, where),
        name=_optional_text(item.get("name"), "name", path, where),
        language=_optional_text(item.get("language"), "language", path, where),
    )


def _specs_from_document(document: Any, path: str) -> list[FeedSpec]:
    """``{feeds: [...]}`` or a bare list, shared by YAML and TOML."""
    if isinstance(document, dict):
        _check_keys(document, ("feeds",), path, "top level has")
        items = document.get("feeds")
    elif isinstance(document, (list, type(None))):
        items = document
    else:  # a lone scalar, such as one line of prose in a .yaml file
        raise _problem(path, f"expected a list of feeds or a 'feeds' key, got {type(document).__name__}")
    if items is None:
        return []
    if not isinstance(items, list):
        raise _problem(path, f"'feeds' must be a list, got {type(items).__name__}")
    return [_spec_from_item(item, path, f"feed #{number}") for number, item in enumerate(items, 1)]


def parse_text_list(text: str, path: str) -> list[FeedSpec]:
    """One URL a line; blank lines and ``#`` comments (whole-line or after a space) ignored."""
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = INLINE_COMMENT.sub("", line).strip()
        if not line or line.startswith("#"):
            continue
        if not _is_feed_url(line):
            raise _problem(path, f"line {number} is not an http(s) URL (expected one feed URL a line, or a # comment)")
        specs.append(FeedSpec(url=line))
    return specs


def parse_yaml_list(text: str, path: str) -> list[FeedSpec]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's message quotes the offending line; keep only its position (0-based there).
        mark = getattr(exc, "problem_mark", None)
        place = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"feed list {_shown(path)!r} is not valid YAML{place}") from exc
    return _specs_from_document(document, path)


def parse_toml_list(text: str, path: str) -> list[FeedSpec]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        place = TOML_ERROR_PLACE.search(str(exc))
        where = f" ({place.group(1)})" if place else ""
        raise ValueError(f"feed list {_shown(path)!r} is not valid TOML{where}") from exc
    return _specs_from_document(document, path)


def parse_opml_list(text: str, path: str) -> list[FeedSpec]:
    """Every ``<outline xmlUrl=...>`` at any depth; ``title`` (else ``text``) names it."""
    if "<!ENTITY" in text:
        raise _problem(path, "OPML declares XML entities, which are not allowed")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:  # its message can quote an entity name: keep the position
        line, column = exc.position
        place = f"line {line}, column {column + 1}"
        raise ValueError(f"feed list {_shown(path)!r} is not well-formed OPML ({place})") from exc
    if _local_name(root.tag) != "opml":
        raise _problem(path, "root element is not <opml> (expected an OPML document)")
    specs = []
    for outline in root.iter():
        if _local_name(outline.tag) != "outline":
            continue
        attributes = {name.lower(): value for name, value in outline.attrib.items()}
        url = attributes.get("xmlurl")
        if url is None:
            continue  # a folder, or a plain link without a feed
        label = attributes.get("title") or attributes.get("text")
        specs.append(FeedSpec(
            url=_check_url(url, path, f"outline #{len(specs) + 1}", "xmlUrl"),
            name=(label or "").strip() or None,
            language=(attributes.get("language") or "").strip() or None,
        ))
    return specs


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _unique(specs: Iterable[FeedSpec]) -> list[FeedSpec]:
    """First occurrence of each URL wins."""
    seen: dict[str, FeedSpec] = {}
    for spec in specs:
        seen.setdefault(spec.url, spec)
    return list(seen.values())


PARSERS: dict[str, Callable[[str, str], list[FeedSpec]]] = {
    "text": parse_text_list,
    "opml": parse_opml_list,
    "yaml": parse_yaml_list,
    "toml": parse_toml_list,
}


def resolve_feed_specs(feeds: Iterable[str]) -> list[FeedSpec]:
    """Feed URLs and feed-list files -> FeedSpecs, first occurrence of a URL wins."""
    specs: dict[str, FeedSpec] = {}
    for item in feeds:
        for spec in load_feed_list(item):
            specs.setdefault(spec.url, spec)
    if not specs:
        raise ValueError(f"--feeds {list(feeds)!r} lists no feed")
    return list(specs.values())
