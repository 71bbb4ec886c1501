"""How the encoder uses memory: glibc's heap for activations, mapped files for weights.

Two opposite pulls. Within a batch, the encoder allocates and frees tens of
megabytes of activations per layer, and glibc's defaults hand much of that
back to the OS as it goes: blocks above its adaptive mmap threshold are
unmapped when freed, the main heap is trimmed once its free top passes the
trim threshold, and another thread's heap is unmapped whenever it empties.
The next layer faults the same pages in again. Measured on a 1,000-article
run: 1.6-2.4 million page faults and 3-3.8 s of system time with glibc's
defaults, 0.29 million and 1 s with the settings below; the same encoder on
a thread took 8% longer with the defaults. Across batches, the varying sizes
fragment the heap, and a long run's RSS creeps up although nothing more is
alive.

So the process keeps freed memory mapped while it labels
(:func:`keep_freed_memory_mapped`), and newsbeam gives the free pages back
at its own pace, after every labelled batch of articles
(:func:`release_freed_memory`).

The weights are a third matter. safetensors maps them from their file, and
a page becomes resident the first time a batch reads it: for the vocabulary
table, when a word in it is first seen. So a worker's memory rose for as long
as it met new words (measured: +50 MB over 2,500 articles), which looks like a
leak on a long-running job's memory graph. :func:`page_in_weights` reads them
all once at load: the footprint is flat from the first batch, and the pages
stay the file's, shared by every process on the machine that maps it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import sys
from typing import Optional

import torch

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# The largest blocks glibc will serve from a heap rather than a fresh mmap (its
# cap on 64-bit); the encoder's activations at the default budgets are smaller.
HEAP_BLOCK_LIMIT = 32 * 2**20
# A thread's heap is deleted when it empties unless this much padding may stay
# mapped: a thread heap's full size.
KEPT_PADDING = 64 * 2**20
# Free memory the main heap keeps at its top before glibc trims it itself.
KEPT_FREE_TOP = 256 * 2**20


@functools.lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # glibc only: musl and others have neither
    except (OSError, AttributeError):
        return None
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


@functools.lru_cache(maxsize=1)
def keep_freed_memory_mapped() -> bool:
    """Stop glibc returning freed heap memory to the OS on its own (process-wide,
    once); False where the C library cannot. Pair it with regular
    :func:`release_freed_memory` calls."""
    libc = _glibc()
    if libc is None:
        return False
    settings = ((M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT), (M_TOP_PAD, KEPT_PADDING), (M_TRIM_THRESHOLD, KEPT_FREE_TOP))
    return all([libc.mallopt(parameter, value) == 1 for parameter, value in settings])


def release_freed_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


def page_in_weights(model: torch.nn.Module) -> None:
    """Make every page of ``model``'s parameters and buffers resident, reading one value per page."""
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            flat = tensor.detach().reshape(-1)
            flat[:: max(1, mmap.PAGESIZE // flat.element_size())].sum()
