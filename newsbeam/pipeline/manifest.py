"""The run manifest: ``<output>/_runs/<run_id>.json`` and the printed summary.

Counts come from Beam metrics (they work on every runner); rows per partition
come from the committed files' own Parquet footers, so the manifest reports
what readers will actually see.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import sys
import threading
from typing import Any, Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from newsbeam import __version__
from newsbeam.layout import committed_files, make_dirs, manifest_path, run_error_files
from newsbeam.metrics import NAMESPACE

LOGGER = logging.getLogger(__name__)

SOURCE_STAGES = ("fetch", "parse_feed", "read_file")
COUNTER_NAMES = (
    "feeds_ok", "feeds_failed", "feeds_not_modified", "files_read", "files_failed", "entries_read",
    "already_written", "duplicates", "duplicates_by_article_id", "duplicates_by_content_hash",
    "dead_lettered_normalise", "dead_lettered_label", "dead_lettered_story", "rows_written", "dead_letters_written",
    "language_undetermined", "pages_fetched", "pages_failed", "pages_used", "pages_skipped_robots",
)


def metric_counters(result) -> dict[str, int]:
    counts = {name: 0 for name in COUNTER_NAMES}
    try:
        queried = _query_with_deep_stack(result)
    except Exception:  # a runner without metrics support still gets a manifest
        LOGGER.warning("could not read pipeline metrics; counts will be zero", exc_info=True)
        return counts
    for counter in queried.get("counters", []):
        value = counter.committed if counter.committed is not None else counter.attempted
        counts[counter.key.metric.name] = counts.get(counter.key.metric.name, 0) + int(value or 0)
    return counts


def _query_with_deep_stack(result):
    """Query metrics in a thread with a deep stack.

    The FnApiRunner merges per-bundle metric records recursively, and a polling
    (streaming) run has thousands of bundles: that overflows the default
    recursion limit, and a higher limit needs a larger C stack to be safe.
    """
    found: dict = {}

    def query():
        try:
            found["metrics"] = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
        except BaseException as error:  # handed back to the caller's thread
            found["error"] = error

    previous_limit = sys.getrecursionlimit()
    previous_stack = threading.stack_size(512 * 1024 * 1024)
    sys.setrecursionlimit(max(previous_limit, 200_000))
    try:
        worker = threading.Thread(target=query, name="newsbeam-metrics")
        worker.start()
        worker.join()
    finally:
        threading.stack_size(previous_stack)
        sys.setrecursionlimit(previous_limit)
    if "error" in found:
        raise found["error"]
    return found["metrics"]


def parquet_rows(path: str) -> int:
    with FileSystems.open(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def rows_per_partition(output: str, run_id: str) -> dict[str, int]:
    prefix = output.rstrip("/") + "/"
    counts: dict[str, int] = {}
    for path in committed_files(output, run_id):
        partition = path[len(prefix):].rsplit("/", 1)[0] if path.startswith(prefix) else FileSystems.split(path)[0]
        counts[partition] = counts.get(partition, 0) + parquet_rows(path)
    return dict(sorted(counts.items()))


def dead_letters(output: str, run_id: str, limit: int = 200) -> list[dict[str, Any]]:
    folder = run_error_files(output, run_id)
    rows: list[dict[str, Any]] = []
    for match in FileSystems.match([folder])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            rows.extend(pq.read_table(handle, columns=["stage", "source", "reason"]).to_pylist())
    return sorted(rows, key=lambda r: (r["stage"], r["source"] or ""))[:limit]


def versions() -> dict[str, str]:
    import apache_beam
    import pyarrow

    found = {"newsbeam": __version__, "python": platform.python_version(), "apache_beam": apache_beam.__version__,
             "pyarrow": pyarrow.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "transformers", "feedparser"):
        try:  # from the installed metadata: importing transformers just to ask costs half a second
            found[name] = version(name)
        except PackageNotFoundError:  # a missing optional library is simply not listed
            pass
    return found


def build_manifest(
    *, output: str, run_id: str, result, started_at: dt.datetime, status: str, error: Optional[str] = None,
    options: Optional[dict] = None,
) -> dict[str, Any]:
    finished_at = dt.datetime.now(dt.timezone.utc)
    counters = metric_counters(result) if result is not None else {name: 0 for name in COUNTER_NAMES}
    partitions = rows_per_partition(output, run_id) if status == "committed" else {}
    letters = dead_letters(output, run_id) if status == "committed" else []
    source_failures = [letter for letter in letters if letter["stage"] in SOURCE_STAGES]
    dead_lettered_entries = (counters["dead_lettered_normalise"] + counters["dead_lettered_label"]
                             + counters["dead_lettered_story"])
    counts = {
        "feeds_ok": counters["feeds_ok"],
        "feeds_not_modified": counters["feeds_not_modified"],
        "feeds_failed": counters["feeds_failed"],
        "files_read": counters["files_read"],
        "files_failed": counters["files_failed"],
        "entries_read": counters["entries_read"],
        "already_written": counters["already_written"],
        "duplicates": counters["duplicates"],
        "dead_lettered": dead_lettered_entries,
        "rows_written": sum(partitions.values()),
    }
    return {
        "run_id": run_id,
        "status": status,
        "error": error,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "counts": counts,
        "accounting_ok": counts["entries_read"]
        == counts["rows_written"] + counts["duplicates"] + counts["dead_lettered"] + counts["already_written"],
        "rows_per_partition": partitions,
        "failures": [{"stage": f["stage"], "source": f["source"], "reason": f["reason"]} for f in source_failures],
        "dead_letters_by_stage": _count_by(letters, "stage"),
        "pages": {name[len("pages_"):]: counters[name] for name in COUNTER_NAMES if name.startswith("pages_")},
        "timings": {"wall_seconds": round((finished_at - started_at).total_seconds(), 3)},
        "versions": versions(),
        "options": options or {},
    }


def _count_by(rows: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def write_manifest(output: str, manifest: dict[str, Any]) -> str:
    """Write atomically: a reader sees the whole manifest or none."""
    final = manifest_path(output, manifest["run_id"])
    make_dirs(FileSystems.split(final)[0])
    temp = final + ".inprogress"
    with FileSystems.create(temp) as handle:
        handle.write(json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    FileSystems.rename([temp], [final])
    return final


def format_summary(manifest: dict[str, Any]) -> str:
    lines = [f"newsbeam run {manifest['run_id']}: {manifest['status']}"]
    if manifest.get("error"):
        lines.append(f"  error: {manifest['error']}")
    width = max(len(k) for k in manifest["counts"])
    for name, value in manifest["counts"].items():
        lines.append(f"  {name:<{width}}  {value:>8}")
    if manifest["rows_per_partition"]:
        lines.append("  rows per partition:")
        for partition, rows in manifest["rows_per_partition"].items():
            lines.append(f"    {partition:<40} {rows:>8}")
    for failure in manifest["failures"][:20]:
        lines.append(f"  failed {failure['stage']}: {failure['source']}: {failure['reason']}")
    table = manifest.get("iceberg")
    if table:
        lines.append(f"  iceberg table {table['table']}: "
                     + (f"snapshot {table['snapshot_id']}" if table.get("snapshot_id") else
                        f"error: {table['error']}" if table.get("error") else "no new snapshot (nothing written)"))
    lines.append(f"  wall time: {manifest['timings']['wall_seconds']} s")
    return "\n".join(lines)
