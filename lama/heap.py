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


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def usage() -> tuple[int, int] | None:
    """(bytes allocated, bytes its arenas hold free) as glibc counts them (mallinfo2, glibc 2.33+):
    allocated counts the arenas' chunks in use and the blocks mmapped on their own. None elsewhere."""
    libc = _glibc()
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


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
