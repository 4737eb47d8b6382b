"""glibc's heap controls, where the C library is glibc (no-ops elsewhere). Torch-free: the server
(lama.resources) and the CPU workers (service.cpu_workers) both use them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # mallopt's parameter: the most arenas the heap keeps
# The arenas a server's processes keep (lama.resources), as start_app.sh sets MALLOC_ARENA_MAX;
# an operator's value wins.
MALLOC_ARENAS = 2


def release_free_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim); a no-op elsewhere.
    It takes the arenas' locks for a moment: call it from a periodic sweep, not per request."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def mallopt(parameter: int, value: int) -> bool:
    libc = _glibc()
    return libc is not None and libc.mallopt(parameter, value) == 1


def _glibc() -> ctypes.CDLL | None:
    if os.name != "posix":
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018  glibc has both; musl and macOS do not
    except (OSError, AttributeError, TypeError):
        return None
    return libc
