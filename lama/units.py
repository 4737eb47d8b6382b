"""Byte counts for people: the one formatter of messages, logs and tables."""

from __future__ import annotations


def format_bytes(count: float, binary: bool = False) -> str:
    """'1.3 GB', '840 MB', '12.5 KB', '512 bytes'. Decimal units by default (what GPU memory and
    disks are sold in); `binary` counts in 1024s under the same labels, as file managers do, so
    that an upload limit of 50 × 2**20 bytes reads '50 MB' as the operator wrote it."""
    base = 1024 if binary else 1000
    for unit, power in (("GB", 3), ("MB", 2), ("KB", 1)):
        scale = base**power
        if count >= scale:
            digits = 0 if unit == "MB" and not binary else 1
            return f"{count / scale:.{digits}f}".removesuffix(".0") + f" {unit}"
    return f"{int(count)} bytes"
