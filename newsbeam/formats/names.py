"""What a file's name says of its format, under a compression suffix (one rule for the registry and the formats)."""
from __future__ import annotations

# A supported file may also come compressed (articles.jsonl.gz, feed.xml.zst): Beam's
# FileSystems.open decompresses by these suffixes (CompressionTypes.AUTO), on disk and GCS alike.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".xz", ".lzma", ".deflate")


def format_name(path: str) -> str:
    """``path`` lowercased without its compression suffix: the part that says its format."""
    lowered = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lowered.endswith(suffix):
            return lowered[:-len(suffix)]
    return lowered
