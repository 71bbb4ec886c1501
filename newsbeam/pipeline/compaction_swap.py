"""Compaction's swap: how compacted files replace a leaf's old ones so that a
reader sees each row once (``exchange``) or a rerun can finish the job
(``replace``), and finishing what an interrupted compaction left behind."""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
from typing import Callable, Sequence

from apache_beam.io.filesystems import FileSystems

from newsbeam.layout import (
    COMPACT_STAGING_PREFIX,
    TMP_DIR,
    delete_tree,
    is_local,
    join_path,
)
from newsbeam.pipeline.compaction_files import DataFile, LeafFolder, open_file, relative_path

StepHook = Callable[[str, str], None]  # (step, partition): tests stop a compaction between steps

LOGGER = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
STAGED_LEAF = "leaf"

# renameat2(2): swap two paths atomically (Linux >= 3.15; ext4, xfs, btrfs, tmpfs).
AT_FDCWD = -100
RENAME_EXCHANGE = 2
EXCHANGE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM, errno.EXDEV}


# ---- the swap ------------------------------------------------------------------------

def _load_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def exchange_folders(first: str, second: str) -> bool:
    """Swap two local paths in one atomic step; False where the OS or filesystem can't."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, f"renameat2 exchange failed: {os.strerror(code)}", first, None, second)


def _write_plan(staging: str, plan: dict) -> None:
    with open_file(join_path(staging, PLAN_NAME), "w") as handle:
        handle.write(json.dumps(plan, indent=1).encode("utf-8"))


def _restore_strays(staged_leaf: str, leaf: str, plan: dict) -> None:
    """Move back files that reached the live leaf after it was listed (a run's late commit)."""
    known = set(plan["merged"]) | set(plan["kept"]) | set(plan["new"])
    for name in sorted(os.listdir(staged_leaf)):
        if name not in known and not os.path.exists(os.path.join(leaf, name)):
            LOGGER.warning("file %s landed in %s during compaction; moving it back", name, leaf)
            os.rename(os.path.join(staged_leaf, name), os.path.join(leaf, name))


def _roll_forward_replace(staged_leaf: str, leaf: str, plan: dict) -> None:
    for name in plan["new"]:
        staged, final = join_path(staged_leaf, name), join_path(leaf, name)
        if FileSystems.exists(staged):
            if FileSystems.exists(final):
                FileSystems.delete([staged])
            else:
                FileSystems.rename([staged], [final])
    remaining = [path for path in (join_path(leaf, name) for name in plan["merged"]) if FileSystems.exists(path)]
    if remaining:
        FileSystems.delete(remaining)


def swap_by_exchange(leaf: LeafFolder, staging: str, merged: Sequence[DataFile], new: Sequence[DataFile],
                      on_step: StepHook) -> bool:
    """Build the whole new leaf in staging, then exchange; False if it can't be done here."""
    staged_leaf = join_path(staging, STAGED_LEAF)
    entries = sorted(os.listdir(leaf.path))
    if any(os.path.isdir(os.path.join(leaf.path, name)) for name in entries):
        return False  # folders below a leaf would vanish for the duration; don't
    merged_names = {f.name for f in merged}
    kept = [name for name in entries if name not in merged_names]
    try:
        for name in kept:
            os.link(os.path.join(leaf.path, name), os.path.join(staged_leaf, name))
    except OSError as error:
        LOGGER.info("no hard links in %s (%s); replacing files instead", leaf.path, error)
        for name in kept:
            if os.path.exists(os.path.join(staged_leaf, name)):
                os.unlink(os.path.join(staged_leaf, name))
        return False
    plan = {"strategy": "exchange", "leaf": leaf.path, "merged": sorted(merged_names),
            "kept": kept, "new": [f.name for f in new]}
    _write_plan(staging, plan)
    on_step("staged", leaf.partition)
    if not exchange_folders(staged_leaf, leaf.path):
        for name in kept:
            os.unlink(os.path.join(staged_leaf, name))
        os.unlink(join_path(staging, PLAN_NAME))
        return False
    on_step("swapped", leaf.partition)
    _restore_strays(staged_leaf, leaf.path, plan)
    return True


def swap_by_replace(leaf: LeafFolder, staging: str, merged: Sequence[DataFile], new: Sequence[DataFile],
                     on_step: StepHook) -> None:
    plan = {"strategy": "replace", "leaf": leaf.path, "merged": sorted(f.name for f in merged),
            "kept": [], "new": [f.name for f in new]}
    _write_plan(staging, plan)
    on_step("staged", leaf.partition)
    staged_leaf = join_path(staging, STAGED_LEAF)
    for data_file in new:
        FileSystems.rename([join_path(staged_leaf, data_file.name)], [join_path(leaf.path, data_file.name)])
    on_step("placed", leaf.partition)
    FileSystems.delete([f.path for f in merged])
    on_step("swapped", leaf.partition)


def recover_compactions(output: str) -> int:
    """Finish or drop what an interrupted compaction left in ``_tmp``; returns plans finished."""
    staging_root = join_path(output, TMP_DIR)
    plans = [m.path for m in FileSystems.match([join_path(staging_root, f"{COMPACT_STAGING_PREFIX}*", "*", PLAN_NAME)])[0].metadata_list]
    for plan_path in sorted(plans):
        staging = FileSystems.split(plan_path)[0]
        with open_file(plan_path) as handle:
            plan = json.loads(handle.read().decode("utf-8"))
        staged_leaf = join_path(staging, STAGED_LEAF)
        if plan["strategy"] == "exchange":
            # Before or after the exchange the live leaf is whole; only strays need care.
            if os.path.isdir(staged_leaf) and os.path.isdir(plan["leaf"]):
                _restore_strays(staged_leaf, plan["leaf"], plan)
        else:
            _roll_forward_replace(staged_leaf, plan["leaf"], plan)
        LOGGER.warning("finished an interrupted compaction of %s", plan["leaf"])
    if is_local(staging_root):
        leftovers = [os.path.join(staging_root, name) for name in
                     (os.listdir(staging_root) if os.path.isdir(staging_root) else []) if name.startswith(COMPACT_STAGING_PREFIX)]
    else:
        pattern = join_path(staging_root, f"{COMPACT_STAGING_PREFIX}*", "**")
        leftovers = sorted({join_path(staging_root, relative_path(m.path, staging_root).split("/", 1)[0])
                            for m in FileSystems.match([pattern])[0].metadata_list})
    for path in leftovers:
        delete_tree(path)
    return len(plans)


