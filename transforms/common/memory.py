"""Give memory a large structure freed back to the operating system, so the next one does not sit beside it.

glibc keeps the small blocks a freed structure leaves (a faiss IVF index's thousands of inverted lists) on its
heap instead of returning them: the process's resident memory does not fall, and the structure built next (an
exact index in fresh mapped pages) adds to it. ``malloc_trim(0)`` returns those free pages; neither Python nor
faiss offers it (dask.distributed calls it the same way for the same reason). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def release_freed_memory() -> None:
    """Collect garbage, then hand glibc's free heap pages back to the system (a no-op off glibc)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        pass
