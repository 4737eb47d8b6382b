"""Writing the client's outputs whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> Path:
    """Readers see the old file or the whole new one, never a half-written one (Ctrl-C, a full
    disk): the bytes go to a hidden file beside `path` (same filesystem), which then replaces it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
