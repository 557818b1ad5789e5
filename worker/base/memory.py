"""glibc malloc's malloc_trim, reached through ctypes: a long-lived process that forks (a
Celery worker and its pool children) hands free heap memory back to the system.

A no-op where the C library is not glibc (musl, macOS): nothing depends on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim_heap() -> bool:
    """Hand free heap memory back to the system (malloc_trim(0)); True if any was."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
