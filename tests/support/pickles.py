"""Checkpoint archives written by hand, as torch.save lays them out."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path


def write_archive(path: Path, pickle_bytes: bytes, data: dict[str, bytes] | None = None,
                  compress: int = zipfile.ZIP_STORED, extra: dict[str, bytes] | None = None) -> Path:
    """A zip laid out as torch.save writes it: archive/data.pkl plus archive/data/<key>."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        for key, raw in (data or {}).items():
            zf.writestr(f"archive/data/{key}", raw, compress_type=compress)
        for name, raw in (extra or {}).items():
            zf.writestr(name, raw)
    return path


def _ops(value: object) -> bytes:
    """The protocol-2 opcodes that push ``value`` (no PROTO header, no STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]
