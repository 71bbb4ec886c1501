"""release_freed_memory hands fragmented free heap back to the OS."""
import sys

import pytest

from newsbeam.model.memory import release_freed_memory


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        import os

        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
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
