"""Drops torch's CUDA libraries (the shared objects of torch, NVIDIA's CUDA packages and Triton)
and any further files named from the page cache, as on a box that has just booted, and says how
much of them was in memory before (what the start-up before it touched, the most of it by file)
and after. Needs no root (posix_fadvise DONTNEED on files it can read); pages that a running
process maps stay, so run it between servers.

    python tools/evict_page_cache.py [--record RANGES.json] [FILE...]

gpu_soak.sh readyz runs it before each start with READYZ_EVICT=1 (with the checkpoint as FILE).
--record first writes each file's runs of pages in the page cache ({path: [[offset, length], ...]}):
what the start before touched, which tools/pipeline_probe.py's read-ahead variant reads ahead.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import mmap
import os
from pathlib import Path

# Where the packages keep what a GPU server's import and first CUDA calls map.
LIBRARY_FOLDERS = (("torch", "lib"), ("nvidia", ""), ("triton", "_C"), ("triton", "backends/nvidia/bin"))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def library_files() -> list[Path]:
    """The shared libraries (and Triton's ptxas) of the packages a GPU server loads, found without
    importing them."""
    files = []
    for package, folder in LIBRARY_FOLDERS:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            files += [path for path in sorted((Path(location) / folder).rglob("*"))
                      if path.is_file() and (".so" in path.suffixes or path.name == "ptxas")]
    return files


def resident_bytes(path: Path) -> int:
    """How much of the file is in the page cache."""
    return sum(byte & 1 for byte in resident_pages(path)) * mmap.PAGESIZE


def resident_ranges(path: Path) -> list[list[int]]:
    """The file's runs of pages in the page cache, as [offset, length] in bytes."""
    ranges: list[list[int]] = []
    for page, byte in enumerate(resident_pages(path)):
        if not byte & 1:
            continue
        if ranges and ranges[-1][0] + ranges[-1][1] == page * mmap.PAGESIZE:
            ranges[-1][1] += mmap.PAGESIZE
        else:
            ranges.append([page * mmap.PAGESIZE, mmap.PAGESIZE])
    return ranges


def resident_pages(path: Path) -> bytes:
    """mincore's vector over a mapping of the file: a byte a page, its lowest bit set where the
    page is in the page cache (empty where the file is empty or cannot be mapped)."""
    size = path.stat().st_size
    if size == 0:
        return b""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return b""
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) != 0:
                return b""
            return vector.raw[:pages]
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(descriptor)


def evict(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, help="first write the files' runs of resident pages here (JSON)")
    parser.add_argument("files", nargs="*", type=Path, help="further files to evict (the checkpoint)")
    args = parser.parse_args()
    files = [*library_files(), *args.files]
    ranges = {path: resident_ranges(path) for path in files}  # one mincore pass a file, for both
    if args.record is not None:
        args.record.write_text(json.dumps({str(path): runs for path, runs in ranges.items()}))
    resident = {path: sum(length for _, length in runs) for path, runs in ranges.items()}
    for path in files:
        evict(path)
    after = sum(map(resident_bytes, files))
    total = sum(path.stat().st_size for path in files)
    most = sorted(resident.items(), key=lambda item: item[1], reverse=True)[:8]
    print(f"evicted: {len(files)} files of {total / 1e9:.2f} GB, {sum(resident.values()) / 1e9:.2f} GB of them in "
          f"the page cache before ({', '.join(f'{path.name} {size / 1e6:.0f} MB' for path, size in most)}), "
          f"{after / 1e9:.2f} GB after")


if __name__ == "__main__":
    main()
