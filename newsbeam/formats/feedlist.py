"""Feed lists -> FeedSpecs: a URL, or a file in text, OPML, YAML or TOML.

Files are read through Beam's FileSystems, so ``gs://`` and other registered
filesystems work as local paths do. The format comes from the extension,
else from the content. Any problem raises ``ValueError`` naming the file and
what is wrong with it, before the pipeline starts.

OPML is parsed with the standard library's ElementTree after refusing any
document that declares entities: a feed list has no use for them, and
refusing them rules out entity-expansion and external-entity tricks.
"""
from __future__ import annotations

import logging
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

import yaml
from apache_beam.io.filesystems import FileSystems

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


def load_feed_list(path_or_url: str) -> list[FeedSpec]:
    """A feed URL -> ``[FeedSpec(url)]``; a feed-list file -> its FeedSpecs, in order, duplicates dropped."""
    if _is_feed_url(path_or_url):
        return [FeedSpec(url=path_or_url)]
    text = _read_text(path_or_url)
    feed_format = _detect_format(path_or_url, text)
    parse = PARSERS[feed_format]
    specs = _unique(parse(text, path_or_url))
    if not specs:
        raise ValueError(f"feed list {path_or_url!r} ({feed_format}) lists no feeds")
    LOGGER.info("read %d feeds from %s (%s)", len(specs), path_or_url, feed_format)
    return specs


def _is_feed_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme.lower() in FEED_URL_SCHEMES and bool(parts.netloc)


def _read_text(path: str) -> str:
    try:
        with FileSystems.open(path) as handle:
            data = handle.read()
    except (OSError, ValueError) as exc:  # BeamIOError is an OSError; unknown schemes a ValueError
        raise ValueError(f"feed list {path!r} cannot be read: {exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"feed list {path!r} is not UTF-8 text: {exc}") from exc


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


def _check_url(url: Any, path: str, where: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"feed list {path!r}: {where} has no url (got {url!r})")
    url = url.strip()
    if not _is_feed_url(url):
        raise ValueError(f"feed list {path!r}: {where}: {url!r} is not an http(s) URL")
    return url


def _optional_text(value: Any, key: str, path: str, where: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"feed list {path!r}: {where}: {key} must be text, got {value!r}")
    return value.strip() or None


def _spec_from_item(item: Any, path: str, where: str) -> FeedSpec:
    """A YAML/TOML item: a URL string or a mapping with url, name, language."""
    if isinstance(item, str):
        return FeedSpec(url=_check_url(item, path, where))
    if not isinstance(item, dict):
        raise ValueError(f"feed list {path!r}: {where} must be a URL or a mapping, got {item!r}")
    unknown = sorted(set(item) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"feed list {path!r}: {where} has unknown key(s) {unknown}; "
                         f"expected {list(SPEC_KEYS)}")
    return FeedSpec(
        url=_check_url(item.get("url"), path, where),
        name=_optional_text(item.get("name"), "name", path, where),
        language=_optional_text(item.get("language"), "language", path, where),
    )


def _specs_from_document(document: Any, path: str) -> list[FeedSpec]:
    """``{feeds: [...]}`` or a bare list, shared by YAML and TOML."""
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"feeds"})
        if unknown:
            raise ValueError(f"feed list {path!r}: unknown top-level key(s) {unknown}; expected 'feeds'")
        items = document.get("feeds")
    else:
        items = document
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"feed list {path!r}: 'feeds' must be a list, got {type(items).__name__}")
    return [_spec_from_item(item, path, f"feed #{number}") for number, item in enumerate(items, 1)]


def parse_text_list(text: str, path: str) -> list[FeedSpec]:
    """One URL a line; blank lines and ``#`` comments (whole-line or after a space) ignored."""
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = INLINE_COMMENT.sub("", line).strip()
        if not line or line.startswith("#"):
            continue
        specs.append(FeedSpec(url=_check_url(line, path, f"line {number}")))
    return specs


def parse_yaml_list(text: str, path: str) -> list[FeedSpec]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"feed list {path!r} is not valid YAML: {exc}") from exc
    return _specs_from_document(document, path)


def parse_toml_list(text: str, path: str) -> list[FeedSpec]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"feed list {path!r} is not valid TOML: {exc}") from exc
    return _specs_from_document(document, path)


def parse_opml_list(text: str, path: str) -> list[FeedSpec]:
    """Every ``<outline xmlUrl=...>`` at any depth; ``title`` (else ``text``) names it."""
    if "<!ENTITY" in text:
        raise ValueError(f"feed list {path!r}: OPML declares XML entities, which are not allowed")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ValueError(f"feed list {path!r} is not well-formed OPML: {exc}") from exc
    if _local_name(root.tag) != "opml":
        raise ValueError(f"feed list {path!r}: root element is <{root.tag}>, expected <opml>")
    specs = []
    for outline in root.iter():
        if _local_name(outline.tag) != "outline":
            continue
        attributes = {name.lower(): value for name, value in outline.attrib.items()}
        url = attributes.get("xmlurl")
        if url is None:
            continue  # a folder, or a plain link without a feed
        label = attributes.get("title") or attributes.get("text")
        where = f"outline {label!r}" if label else "an outline"
        specs.append(FeedSpec(
            url=_check_url(url, path, where),
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
