"""Process-level settings that make CPU inference faster. Nothing here runs on import.

`tune_allocator()`: glibc hands every large tensor (the encoder's activations are tens
of MB each) to the kernel with mmap and gives it back on free, so each forward pass
page-faults and zero-fills the same memory again; on a 2-core machine that is a
quarter of the encoder's time. Keeping freed memory in the heap for reuse removes it.
The cost: the process keeps its peak memory instead of returning it to the system.
The CLI and `MobileSAM` call this; `SamPredictor` users can opt in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_BYTES = 2**31 - 1  # only trim the heap when this much is free at its top


@functools.cache
def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc only). Returns whether the setting took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
