"""glibc malloc's knobs, reached through ctypes: a long-lived process that forks (a Celery
worker and its pool children) gives memory back, and keeps fewer arenas.

Each is a no-op where the C library is not glibc (musl, macOS): nothing depends on them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def trim_heap() -> bool:
    """Hand free heap memory back to the system (malloc_trim(0)); True if any was."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def set_malloc_option(parameter: int, value: int) -> bool:
    """mallopt(parameter, value) for this process (and children it forks later)."""
    libc = _libc()
    return bool(libc.mallopt(parameter, value)) if libc is not None else False
