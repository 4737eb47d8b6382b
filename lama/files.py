"""Writing files so that a crash or a full disk never leaves a half-written one behind."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a hidden temporary file in the same directory (same filesystem, so
    os.replace is atomic), are fsynced, then renamed; on failure the temporary file is
    removed and the OSError propagates.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # 'xb' creates the file with the umask's usual permissions, unlike mkstemp's 0600.
    # If creating it fails there is nothing to clean up.
    f = open(tmp, "xb")
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
