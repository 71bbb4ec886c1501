"""Is the run behind a lock or a temp folder still alive, and cleaning up after
runs that are not.

A lock (:mod:`newsbeam.state.lock`) and a run's temp folder (``_tmp/<run_id>/OWNER``)
record their process as host, pid and a start marker; from the same host that
proves whether the process is gone. Another host's process can't be checked
from here: locks use a renewed lease for that, temp folders an idle bound.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from typing import Optional

from newsbeam.layout import (
    COMPACT_STAGING_PREFIX,
    OWNER_FILE,
    TMP_DIR,
    delete_tree,
    filesystems,
    is_local,
    join_path,
    manifest_path,
    read_text,
    temp_folder,
    write_text_atomically,
)

LOGGER = logging.getLogger(__name__)

TEMP_FOLDER_MAX_IDLE = dt.timedelta(hours=24)


OWNER_ALIVE, OWNER_GONE, OWNER_UNKNOWN = "alive", "gone", "unknown"


def process_start_marker(pid: int) -> Optional[str]:
    """``<boot id>:<start tick>`` of a live process, or None where /proc can't tell.

    A pid alone can't prove a process is the same one: after a crash, a reboot
    or in a fresh container the number is handed out again. The boot id and
    the start time in clock ticks since boot together name one process.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot_id = handle.read().strip()
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields_after_name = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{boot_id}:{fields_after_name[19]}"  # field 22 of proc(5), 'starttime'


def process_owner() -> dict:
    """This process, as a lock or temp folder records it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "process": process_start_marker(os.getpid()),
            "since": dt.datetime.now(dt.timezone.utc).isoformat()}


def owner_status(owner: dict) -> str:
    """OWNER_ALIVE, OWNER_GONE, or OWNER_UNKNOWN: another host's process can't be checked from here."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return OWNER_UNKNOWN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return OWNER_GONE
    except PermissionError:
        pass  # it exists, run by another user
    recorded, current = owner.get("process"), process_start_marker(pid)
    if recorded and current and recorded != current:
        return OWNER_GONE  # the pid now belongs to a later process
    return OWNER_ALIVE


# ---- temp folders of runs that ended or died ----------------------------------

def write_temp_owner(output: str, run_id: str) -> None:
    """Mark ``_tmp/<run_id>/`` as this process's, so a later run can tell whether it is still alive."""
    write_text_atomically(join_path(temp_folder(output, run_id), OWNER_FILE), json.dumps(process_owner()))


def remove_abandoned_temp_folders(output: str, *, keep_run_id: str = "",
                                  max_idle: dt.timedelta = TEMP_FOLDER_MAX_IDLE) -> list[tuple[str, str]]:
    """Delete the ``_tmp/<run_id>/`` folders of runs that are provably over; (folder, why) of each.

    A run is over when its OWNER names a process on this host that is gone,
    when it wrote its manifest, or when nothing in its folder changed for
    ``max_idle``. A folder whose OWNER is alive here is never touched, nor is
    compaction staging (``compact-*``: compaction recovers its own).
    """
    removed = []
    for run_id, modified in _temp_folders(output).items():
        if run_id == keep_run_id or run_id.startswith(COMPACT_STAGING_PREFIX):
            continue
        folder = temp_folder(output, run_id)
        why = _why_temp_folder_is_abandoned(output, run_id, modified, max_idle)
        if why:
            delete_tree(folder)
            LOGGER.warning("removed the temp folder %s of run %s: %s", folder, run_id, why)
            removed.append((folder, why))
    return removed


def _temp_folders(output: str) -> dict[str, float]:
    """run id -> when anything in its temp folder last changed (epoch seconds)."""
    root = join_path(output, TMP_DIR)
    folders: dict[str, float] = {}
    if is_local(root) and os.path.isdir(root):  # empty folders hold no files to list
        folders = {entry.name: entry.stat().st_mtime for entry in os.scandir(root) if entry.is_dir()}
    prefix = root.rstrip("/") + "/"
    for metadata in filesystems().match([join_path(root, "**")])[0].metadata_list:
        run_id = metadata.path[len(prefix):].split("/", 1)[0]
        folders[run_id] = max(folders.get(run_id, 0.0), metadata.last_updated_in_seconds)
    return folders


def _why_temp_folder_is_abandoned(output: str, run_id: str, modified: float, max_idle: dt.timedelta) -> str:
    try:
        owner = json.loads(read_text(join_path(temp_folder(output, run_id), OWNER_FILE)) or "{}")
    except ValueError:
        owner = {}
    status = owner_status(owner) if isinstance(owner, dict) and owner else OWNER_UNKNOWN
    if status == OWNER_ALIVE:
        return ""
    if status == OWNER_GONE:
        return f"its process {owner.get('pid')} on this host is gone"
    if filesystems().exists(manifest_path(output, run_id)):
        return "the run ended (it wrote its manifest)"
    idle = time.time() - modified
    if idle > max_idle.total_seconds():
        return f"nothing in it changed for {idle / 3600:.0f} h"
    return ""
