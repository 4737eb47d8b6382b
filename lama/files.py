"""Writing files so that a crash or a full disk never leaves a half-written one behind.

A write goes to a hidden temporary file beside its destination (`.<name>.<hex>.tmp`) that its
writer holds an exclusive flock on until the rename. The kernel drops the lock when the writer
exits, however it exits (kill -9 included), so whether a temporary file is abandoned is a
question of locks, not of clocks: :func:`remove_if_abandoned` removes one only if it can take
the lock. This holds across processes sharing a folder (several replicas writing one outputs
folder), whatever their start times or their clocks.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

# write_bytes_atomic's temporary files.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a locked temporary file in the same directory (same filesystem, so
    os.replace is atomic), are fsynced, then renamed, all before the lock is released; on
    failure the temporary file is removed and the OSError propagates.
    """
    path = Path(path)
    tmp, f = _locked_temp_file(path)
    try:
        with f:  # closing it releases the lock: only once the rename is done
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _locked_temp_file(path: Path) -> tuple[Path, BinaryIO]:
    """A new temporary file for `path`, open and locked by this process."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        # 'xb' creates the file with the umask's usual permissions, unlike mkstemp's 0600.
        # If creating it fails there is nothing to clean up.
        f = open(tmp, "xb")
        fcntl.flock(f, fcntl.LOCK_EX)
        # Between creating and locking it, a sweep may have found it unlocked, taken it for
        # abandoned and removed it: only a file still at its name is ours to write.
        try:
            if os.path.samestat(os.stat(tmp), os.fstat(f.fileno())):
                return tmp, f
        except FileNotFoundError:
            pass
        f.close()


def remove_if_abandoned(path: str | os.PathLike[str]) -> bool:
    """Remove the temporary file at `path` if no process holds its lock (its writer is gone);
    True if it was removed. A file being written, or one this process cannot open, stays."""
    try:
        # Read-write: on NFS an exclusive flock is a write lock, which needs it.
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:  # gone meanwhile, a symlink, or not ours to open
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its writer is alive
        os.close(fd)
        return False
    try:
        # Under the lock: a writer that finished meanwhile renamed it away (nothing to remove);
        # no writer can take this name again (each is new, created exclusively).
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
