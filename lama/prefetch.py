"""torch's CUDA libraries and the checkpoint asked into the page cache from the start-up's first
moment, all at once.

On a box that has just booted, or a container whose image was just pulled, nothing of torch's
libraries is in memory yet: torch's import, CUDA's set-up and the model's load fault their pages
in from the disk one after another as they touch them (gigabytes of libtorch_cuda, cuDNN,
cuBLAS), each fault waiting for the one before. Read through whole, in order of need, on a
thread of their own, they come at the disk's sequential rate while the process is still
importing Python. Torch-free: it runs before torch is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Where the packages keep what their import and first CUDA calls map, in the order they need it:
# torch's own libraries at import, NVIDIA's (cuDNN, cuBLAS, the runtime ...) as CUDA is set up,
# Triton's compiler and ptxas at the warm-up.
LIBRARY_FOLDERS = (("torch", "lib"), ("nvidia", ""), ("triton", "_C"), ("triton", "backends/nvidia/bin"))


def library_files() -> list[Path]:
    """The shared libraries (and Triton's ptxas) that the GPU start-up maps, biggest first in each
    package (they are the ones a fault at a time is slowest for); [] where torch is not installed."""
    files: list[Path] = []
    for package, folder in LIBRARY_FOLDERS:
        for root in _package_folders(package):
            found = [path for path in (root / folder).rglob("*") if _is_library(path)]
            files += sorted(found, key=lambda path: path.stat().st_size, reverse=True)
    return files


def start(files: Iterable[Path]) -> threading.Thread:
    """Reads `files` into the page cache on a thread of its own; returns the thread. Files that
    cannot be read are skipped."""
    thread = threading.Thread(target=_prefetch, args=(list(files),), name="prefetch", daemon=True)
    thread.start()
    return thread


def _prefetch(files: list[Path]) -> None:
    started, read, count = time.perf_counter(), 0, 0
    with open(os.devnull, "wb") as sink:
        for path in files:
            try:
                read += _read_through(path, sink.fileno())
                count += 1
            except OSError:
                continue
    log.info("prefetch: %d of %d files, %.1f GB read into the page cache in %.2f s", count, len(files),
             read / 1e9, time.perf_counter() - started)


def _read_through(path: Path, sink: int) -> int:
    """The file read into the page cache, to `sink` (/dev/null) by sendfile: nothing is copied out
    of the kernel, and the GIL is free meanwhile. posix_fadvise's WILLNEED would read only the
    first readahead window of each file (a few MB), as Linux caps it. Returns the bytes read."""
    with open(path, "rb", buffering=0) as source:
        size, offset = os.fstat(source.fileno()).st_size, 0
        while offset < size:
            sent = os.sendfile(sink, source.fileno(), offset, size - offset)
            if sent <= 0:
                break
            offset += sent
    return offset


def _package_folders(name: str) -> list[Path]:
    """The folders of an installed package (several for a namespace package such as `nvidia`),
    found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    return [Path(location) for location in (spec.submodule_search_locations or [])] if spec else []


def _is_library(path: Path) -> bool:
    return path.is_file() and (".so" in path.suffixes or path.name == "ptxas")
