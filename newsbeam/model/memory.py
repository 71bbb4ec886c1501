"""Giving the pages that freed tensors leave behind back to the OS.

glibc keeps freed blocks below its mmap threshold in the heap, and a long
labelling run frees hundreds of megabytes of activations per batch in varying
sizes: the heap fragments and a worker's RSS creeps up with every batch
although nothing more is alive. ``malloc_trim`` returns the free pages.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Callable, Optional


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only: musl and others have none
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))
