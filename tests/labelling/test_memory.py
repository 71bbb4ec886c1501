"""How the encoder's process uses glibc's heap (newsbeam.labelling.memory)."""
import json
import subprocess
import sys
import textwrap

import pytest

from newsbeam.labelling.memory import release_freed_memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and mallopt")


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        import os

        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@linux_only
def test_pages_freed_between_live_blocks_go_back_to_the_os():
    # 64 KB blocks stay below glibc's mmap threshold, so they live in the heap;
    # keeping every 16th alive pins the heap's top, so free() alone returns nothing.
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # about 250 MB, every page touched
    pinned = blocks[::16]
    del blocks
    before = resident_mb()
    assert release_freed_memory() is True
    after = resident_mb()
    assert before - after > 150, f"RSS {before:.0f} MB -> {after:.0f} MB"
    assert all(len(block) == 64 * 1024 for block in pinned)


# Like encoder batches: blocks of activation sizes allocated, written and
# freed, round after round, on the main thread (where the local runner labels)
# or on another thread (as in Dataflow's SDK harness). A page written counts
# as a page fault only when glibc had given it back to the OS in between.
ACTIVATION_ROUNDS = textwrap.dedent("""
    import ctypes, json, resource, sys, threading
    from newsbeam.labelling.memory import keep_freed_memory_mapped
    mode, where = sys.argv[1:]
    if mode == "kept":
        assert keep_freed_memory_mapped() is True
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    sizes = [int(mb * 2**20) for mb in (3, 12, 6, 25, 1.5, 9, 18)]
    faults = []
    def batches():
        for _ in range(6):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            blocks = [libc.malloc(size) for size in sizes]
            for block, size in zip(blocks, sizes):
                ctypes.memset(block, 1, size)
            for block in blocks:
                libc.free(block)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    if where == "thread":
        worker = threading.Thread(target=batches)
        worker.start()
        worker.join()
    else:
        batches()
    print(json.dumps({"faults": faults}))
""")


def faults_per_round(mode: str, where: str) -> dict:
    done = subprocess.run([sys.executable, "-c", ACTIVATION_ROUNDS, mode, where], capture_output=True, text=True,
                          check=True, timeout=60)
    return json.loads(done.stdout)


@linux_only
@pytest.mark.parametrize("where", ["main", "thread"])
def test_freed_activation_memory_stays_mapped_for_the_next_batch(where):
    # Compared with each run's first round, which faults everything in: with
    # transparent huge pages a fault may bring in 2 MB instead of 4 KB.
    kept = faults_per_round("kept", where)
    first, later = kept["faults"][0], kept["faults"][1:]
    assert first > 0
    assert max(later) <= first * 0.01, kept  # later rounds reuse what the first mapped
    # glibc's defaults give part of it back at every round (what the settings are for)
    default = faults_per_round("default", where)
    assert min(default["faults"][1:]) >= default["faults"][0] * 0.1, default
