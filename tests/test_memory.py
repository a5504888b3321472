"""release_freed_memory: freed small heap blocks go back to the system (glibc), and it is harmless elsewhere."""

import ctypes
import ctypes.util
import sys

import pytest

from cmtp.transforms.common.memory import release_freed_memory


def _rss_anon_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssAnon and malloc_trim are Linux/glibc")
def test_freed_heap_blocks_are_returned():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "malloc_trim"):
        pytest.skip("not glibc")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 2000, 40_000  # 80 MB of blocks small enough for the heap (not mapped one by one)
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    keep = blocks.pop()  # the last block pins the heap's top, so free() alone cannot shrink it
    for block in blocks:
        libc.free(block)
    before = _rss_anon_mib()
    release_freed_memory()
    after = _rss_anon_mib()
    libc.free(keep)
    assert before - after > 40, (before, after)


def test_harmless_when_nothing_was_freed():
    release_freed_memory()
    release_freed_memory()
