"""Triton's version key, kept on disk beside the compiled kernels instead of computed in every process.

Triton names each entry of its kernel cache after a key that starts with its own version key
(`triton.runtime.cache.triton_key`): a SHA-256 of its compiler's and language's Python files and
of its whole native library, libtriton.so, 416 MB in Triton 3.6. A process computes it before its
first kernel, whether that kernel is then found in the cache or not. On the GPU box that was the
largest part of loading the 15 cached kernels at start-up (0.75 s), and after a reboot it reads
the 416 MB from disk first (docs/BENCHMARKS.md).

The key is a function of those files only, so it is kept in the kernel cache folder with the files'
sizes, modification times and inodes, and used again while none of them has changed: a Triton
installed or upgraded anew (new files, new inodes) or a file edited in place computes it again.
Torch- and Triton-free: `lama.kernels` installs it with Triton's own paths and function.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from lama.files import write_bytes_atomic

KEPT_FILE = "lama-triton-key.json"
# What Triton's key reads: its package's Python files under these folders, the cache module, and
# the native library (triton/_C).
HASHED_FOLDERS = ("compiler", "backends", "language", "runtime", "_C")


def fingerprint(package: Path) -> list[list]:
    """The size, modification time and inode of every file Triton's key reads (and a few more:
    any change among them computes the key again)."""
    files: Iterable[Path] = (path for folder in HASHED_FOLDERS for path in (package / folder).rglob("*")
                             if path.suffix in (".py", ".so") and path.is_file())
    rows = []
    for path in sorted(files):
        status = path.stat()
        rows.append([str(path.relative_to(package)), status.st_size, status.st_mtime_ns, status.st_ino])
    return rows


def kept_key(package: Path, cache_folder: Callable[[], str], compute: Callable[[], str]) -> Callable[[], str]:
    """A function giving what `compute` (Triton's key function) gives, read from the kernel cache
    folder where the files of `package` (Triton's folder) are as when it was kept, else computed
    and kept there. `cache_folder` is asked at the first call: the service sets the folder after
    this module is imported. Once a process has the key it keeps it, as Triton's own does.
    Threads asking at once (the warm-up loads its kernels on every core) wait for the first: in
    a restart's profile on the H200 each of the 16 walked Triton's folders for itself, 0.33 s
    apiece against the others for the GIL, while loading the 16 kernels took 0.30–0.42 s in
    all (docs/BENCHMARKS.md)."""
    known: list[str] = []
    finding = threading.Lock()

    def key() -> str:
        if known:
            return known[0]
        with finding:
            if not known:
                known.append(kept_or_computed(package, Path(cache_folder()) / KEPT_FILE, compute))
        return known[0]

    return key


def kept_or_computed(package: Path, kept: Path, compute: Callable[[], str]) -> str:
    """The key kept in `kept` where Triton's files are as they were then, else computed and kept."""
    files = fingerprint(package)
    try:
        record = json.loads(kept.read_text())
        if record["files"] == files and isinstance(record["key"], str):
            return record["key"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none kept yet, or unreadable: computed below
    computed = compute()
    _write_atomically(kept, json.dumps({"files": files, "key": computed}))
    return computed


def _write_atomically(path: Path, text: str) -> None:
    """Written whole or not at all (replicas may share the folder); a folder that cannot be
    written only means that the next process computes the key again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, text.encode())
    except OSError:
        pass
