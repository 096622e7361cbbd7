"""Give freed heap memory back to the system: glibc keeps what Python frees for reuse, so a burst of large
request bodies would otherwise stay in the process's RSS for good. A no-op where malloc_trim is missing."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_free_memory"]


def _find_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    return trim


_TRIM = _find_trim()


def release_free_memory() -> None:
    """Return the free memory at the top and in the middle of the heap to the system (glibc only)."""
    if _TRIM is not None:
        _TRIM(0)
