"""Where repaired images are kept: outputs/YYYY-MM-DD/<time>-<random>.<ext>, written atomically.

Names are generated here, never taken from an upload, so a request cannot choose or
overwrite a path; a crash mid-write leaves at most a hidden temporary file that
write_bytes_atomic removes on error.
"""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path

from lama.files import write_bytes_atomic

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class OutputStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def save(self, data: bytes, fmt: str) -> str:
        """Write `data`; returns its name relative to the root (e.g. '2026-11-26/201503-1a2b3c4d.png')."""
        now = datetime.datetime.now()
        folder = self.root / f"{now:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{now:%H%M%S}-{secrets.token_hex(6)}.{EXTENSIONS[fmt]}"
        write_bytes_atomic(folder / name, data)
        return f"{folder.name}/{name}"
