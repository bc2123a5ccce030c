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
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc `malloc_trim`; else nothing).

    For long loops whose temporaries change size from step to step: with
    `tune_allocator` on, their freed memory would otherwise fragment and accumulate.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc only). Returns whether the setting took effect."""
    mallopt = getattr(_libc(), "mallopt", None)  # musl and other C libraries have none
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
