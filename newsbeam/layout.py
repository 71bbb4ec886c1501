"""The dataset's layout on disk, defined once: every module that names a
folder, builds or parses a file name, or globs the dataset asks this one.

    <output>/<key>=<value>/.../part-<run_id>-h<hash8>[-w<start>p<pane>]-<nnnn>.parquet
    <output>/_tmp/<run_id>/<uuid>.parquet.inprogress     a run's files before its commit
    <output>/_tmp/<run_id>/OWNER                          host, pid and start of a run on this machine
    <output>/_tmp/compact-<id>/                           a compaction's staging area
    <output>/_errors/run_id=<run_id>/part-*.parquet       dead letters
    <output>/_runs/<run_id>.json                          run manifests
    <output>/_iceberg/                                    the embedded Iceberg catalog (--iceberg_table)
    <output>/_compact.lock                                held by a running compaction
    <output>/_compact.lock.guard                          flock'ed while that lock changes hands

Readers glob only ``key=value`` folders, so ``_tmp``, ``_errors`` and
``_runs`` never show up as articles. Paths may be local or gs://: the
filesystem helpers below go through Beam's FileSystems.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from newsbeam.records import Article

LOGGER = logging.getLogger(__name__)

TMP_DIR = "_tmp"
ERRORS_DIR = "_errors"
RUNS_DIR = "_runs"
ICEBERG_DIR = "_iceberg"  # the embedded Iceberg catalog and table metadata (newsbeam.iceberg)
COMPACT_LOCK_NAME = "_compact.lock"
OWNER_FILE = "OWNER"  # in a run's temp folder: which process on which host writes it
COMPACT_STAGING_PREFIX = "compact-"
TEMP_SUFFIX = ".parquet.inprogress"
# A temp folder nobody wrote to for this long belongs to a run that is over,
# even when no process on this host can vouch for it (another host's run).
HIVE_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"

SUPPORTED_PARTITION_KEYS = ("dt", "lang", "month", "year", "source_host")
DEFAULT_PARTITION_KEYS = ("dt", "lang")

# Run ids name files and folders. "\Z", not "$": "$" also matches before a
# trailing newline, which would let "nightly\n" through as a file name.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
# The run key ends where "-h<hash8>" begins: after it come only the optional
# window tag and the number, neither of which can contain "-h<hex>", so a run
# id that itself ends like a window tag or a hash still parses back whole.
# Numbers are at least four digits (the 10,000th file has five).
PART_NAME_RE = re.compile(r"^part-(?P<run>.+)-h[0-9a-f]{8}(?:-w-?\d+p\d+)?-\d{4,}\.parquet\Z")
# Names written before the "h" marker (window tag before the hash). Its
# hash segment is plain hex, never "h" + hex, so the two forms never overlap,
# and these files keep the run key they always had (a run id ending like
# "-w1p2" is read as a window tag there: those names cannot tell).
LEGACY_PART_NAME_RE = re.compile(r"^part-(?P<run>.+?)(?:-w-?\d+p\d+)?-[0-9a-f]{8}-\d{4,}\.parquet\Z")
PARTITION_SEGMENT_RE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_]*)=(?P<value>.+)$")
LANGUAGE_VALUE_RE = re.compile(r"^[a-z]{2,3}$")
DATE_VALUE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")


# ---- run ids ----------------------------------------------------------------------

def new_run_id(now: Optional[dt.datetime] = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} may only use letters, digits, '_', '.' and '-' (it names files)")
    return run_id


# ---- partitions -------------------------------------------------------------------

def validate_partition_keys(keys: Sequence[str]) -> tuple[str, ...]:
    unknown = [key for key in keys if key not in SUPPORTED_PARTITION_KEYS]
    if unknown or not keys:
        raise ValueError(f"unknown partition key(s) {unknown!r}; expected some of {SUPPORTED_PARTITION_KEYS}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"partition keys repeat: {list(keys)!r}")
    return tuple(keys)


def sanitise_partition_value(value: Any) -> str:
    """A value that is exactly one safe path segment.

    Anything outside ``[A-Za-z0-9_.-]`` is percent-encoded (Hive's own escape),
    and values made of dots or starting with one are encoded too, so no value
    can climb out of the output folder or hide itself.
    """
    text = "" if value is None else str(value)
    if not text:
        return HIVE_DEFAULT_PARTITION
    if _SAFE_VALUE_RE.match(text) and not text.startswith("."):
        return text
    encoded = quote(text, safe="-_")  # '.' and '/' are encoded as well
    encoded = encoded.replace(".", "%2E")
    if len(encoded) > 100:
        encoded = encoded[:80] + "-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return encoded


def partition_values(article: "Article", keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The sanitised (key, value) pairs of ``article``'s partition folder."""
    date = article.partition_date
    values = {
        "dt": date if DATE_VALUE_RE.match(date) else None,
        "month": date[:7],
        "year": date[:4],
        "lang": article.language if LANGUAGE_VALUE_RE.match(article.language or "") else "und",
        "source_host": (urlsplit(article.source).hostname or "local") if article.source else "local",
    }
    return tuple((key, sanitise_partition_value(values[key])) for key in keys)


def partition_days(relative: str) -> Optional[tuple[dt.date, dt.date]]:
    """The first and last day the files under ``relative`` can hold, from its ``dt``,
    ``month`` and ``year`` folders (``dt=2024-05-01`` -> that day, ``month=2024-05``
    -> May); None when no folder names a date (other keys, or the default partition
    of an article without a usable date), so a reader must look inside."""
    first, last = dt.date.min, dt.date.max
    dated = False
    for part in relative.replace("\\", "/").split("/"):
        match = PARTITION_SEGMENT_RE.match(part)
        if not match:
            continue
        key, value = match.group("key"), match.group("value")
        try:
            if key == "dt" and DATE_VALUE_RE.match(value):
                span = (dt.date.fromisoformat(value),) * 2
            elif key == "month" and re.fullmatch(r"\d{4}-\d{2}", value):
                start = dt.date.fromisoformat(value + "-01")
                span = (start, (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1))
            elif key == "year" and re.fullmatch(r"\d{4}", value):
                span = (dt.date(int(value), 1, 1), dt.date(int(value), 12, 31))
            else:
                continue
        except ValueError:  # e.g. month=2024-13: no date, so no pruning on it
            continue
        first, last, dated = max(first, span[0]), min(last, span[1]), True
    return (first, last) if dated else None


def partition_path(values: Iterable[tuple[str, str]]) -> str:
    """("dt", "2024-05-01"), ("lang", "ar") -> ``dt=2024-05-01/lang=ar`` (values already sanitised)."""
    return "/".join(f"{key}={value}" for key, value in values)


def errors_partition(run_id: str) -> str:
    return f"{ERRORS_DIR}/run_id={sanitise_partition_value(run_id)}"


# ---- file names -------------------------------------------------------------------

def part_name(run_key: str, partition: str, number: int, window_tag: str = "") -> str:
    """The committed name of a run's ``number``-th file of ``partition``.

    ``run_key`` is a run id (or ``compact-<id>`` for compacted files); the
    partition's hash keeps names unique when several partitions share a folder
    (dead letters) and lets a retried commit find its own files.
    """
    partition_hash = hashlib.sha256(partition.encode()).hexdigest()[:8]
    return f"part-{run_key}-h{partition_hash}{window_tag}-{number:04d}.parquet"


def run_key_of(file_name: str) -> str:
    """The run a data file belongs to (compacted files are their own key)."""
    match = PART_NAME_RE.match(file_name) or LEGACY_PART_NAME_RE.match(file_name)
    return match.group("run") if match else file_name.rsplit(".", 1)[0]


def temp_folder(output: str, run_id: str) -> str:
    return join_path(output, TMP_DIR, run_id)


def temp_file(output: str, run_id: str, unique: str) -> str:
    return join_path(temp_folder(output, run_id), f"{unique}{TEMP_SUFFIX}")


def remove_temp_files(output: str, run_id: str) -> None:
    """Drop what a run left in its temp folder (retried bundles' leftovers)."""
    folder = temp_folder(output, run_id)
    leftovers = [m.path for m in filesystems().match([join_path(folder, "*")])[0].metadata_list]
    if leftovers:
        filesystems().delete(leftovers)
    if filesystems().get_scheme(folder) in (None, "file") and filesystems().exists(folder):
        filesystems().delete([folder])


def compact_staging(output: str, compact_id: str = "") -> str:
    return join_path(output, TMP_DIR, f"{COMPACT_STAGING_PREFIX}{compact_id}")


def manifest_path(output: str, run_id: str) -> str:
    return join_path(output, RUNS_DIR, f"{run_id}.json")


def compact_lock_path(output: str) -> str:
    return join_path(output, COMPACT_LOCK_NAME)


# ---- globs --------------------------------------------------------------------------

def _article_files(output: str, name_glob: str) -> list[str]:
    """Files named like ``name_glob`` anywhere below ``output``, outside ``_tmp``, ``_errors``, ``_runs`` and ``_iceberg``.

    Only the path below ``output`` is looked at: an output folder that itself
    lives inside a folder named ``_tmp`` (say) still lists its data.
    """
    below = join_path(output, "**")
    root = below[: -len("**")]  # every listed path starts with the glob's own prefix
    found = []
    for path in list_paths(join_path(below, name_glob)):
        relative = path[len(root):] if path.startswith(root) else path
        if not set(relative.replace("\\", "/").split("/")[:-1]) & {ERRORS_DIR, TMP_DIR, RUNS_DIR, ICEBERG_DIR}:
            found.append(path)
    return found


def data_files(output: str) -> list[str]:
    """Every committed article file (any run, compacted ones too)."""
    return _article_files(output, "part-*.parquet")


def committed_files(output: str, run_id: str) -> list[str]:
    """The article files one run committed.

    The glob also matches runs whose id extends this one (``daily`` and
    ``daily-2``): each name's run key must be exactly ``run_id``.
    """
    return [path for path in _article_files(output, f"part-{run_id}-*.parquet")
            if run_key_of(filesystems().split(path)[1]) == run_id]


def run_error_files(output: str, run_id: str) -> str:
    return join_path(output, errors_partition(run_id), "*.parquet")


def articles_glob(root: str | Path, partition_keys: Sequence[str]) -> str:
    """A glob over the article files only, so ``_runs``/``_errors`` never match."""
    return str(Path(root).joinpath(*[f"{key}=*" for key in partition_keys], "*.parquet"))


def errors_glob(root: str | Path) -> str:
    return str(Path(root) / ERRORS_DIR / "*" / "*.parquet")


def manifests_glob(root: str | Path) -> str:
    return str(Path(root) / RUNS_DIR / "*.json")


def is_readable_file(relative: str) -> bool:
    """Whether a path below the dataset root is one the readers above take in: an
    article file under ``key=value`` folders, a dead-letter file or a run manifest.
    What a copy of the dataset (``newsbeam report --data gs://...``) must hold, and
    no more: never a run's unfinished files, a staging area or a lock."""
    parts = relative.replace("\\", "/").strip("/").split("/")
    name = parts[-1]
    if parts[0] == RUNS_DIR:
        return len(parts) == 2 and name.endswith(".json")
    if parts[0] == ERRORS_DIR:
        return len(parts) == 3 and name.endswith(".parquet")
    return name.endswith(".parquet") and all(PARTITION_SEGMENT_RE.match(part) for part in parts[:-1])


# ---- filesystem helpers (local and gs:// alike) -----------------------------------

def filesystems():
    """Beam's FileSystems, imported on first use: it takes 2 s, and readers of
    the layout such as ``newsbeam query`` only need names and globs."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def delete_tree(path: str) -> None:
    """Delete a folder and everything below it (on GCS: every object under the prefix)."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    leftovers = [m.path for m in filesystems().match([join_path(path, "**")])[0].metadata_list]
    if leftovers:
        filesystems().delete(leftovers)


def join_path(base: str, *parts: str) -> str:
    return filesystems().join(base, *parts) if parts else base


def is_local(path: str) -> bool:
    return filesystems().get_scheme(path) in (None, "file")


def make_dirs(path: str) -> None:
    """Create a folder (and parents) if the filesystem has folders; GCS has none."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)


def list_paths(pattern: str) -> list[str]:
    return sorted(m.path for m in filesystems().match([pattern])[0].metadata_list)


def read_text(path: str, errors: str = "strict") -> Optional[str]:
    """The file's text (None when absent); ``errors="replace"`` reads damaged bytes as U+FFFD."""
    if not filesystems().exists(path):
        return None
    with filesystems().open(path) as handle:
        return handle.read().decode("utf-8", errors=errors)


def write_text_atomically(path: str, text: str) -> None:
    make_dirs(filesystems().split(path)[0])
    temp = f"{path}.inprogress-{os.getpid()}"
    with filesystems().create(temp) as handle:
        handle.write(text.encode("utf-8"))
    if is_local(path):
        # Local disk: os.replace swaps the file in one step, so a reader (or a
        # kill -9) never finds it missing.
        os.replace(temp, path)
        return
    if filesystems().exists(path):
        filesystems().delete([path])  # GCS (and other object stores): rename does not overwrite
    filesystems().rename([temp], [path])
