"""Files as the editor page leaves them in the UI cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lama import imageio


def picture(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], axis=-1)
    return np.clip(rgb + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)


def uploaded(cache: Path, name: str, image: np.ndarray) -> dict:
    """A file as the page's upload leaves it in the cache: {"path": ...}."""
    folder = cache / f"upload-{len(list(cache.iterdir()))}"
    folder.mkdir()
    path = folder / name
    imageio.write_image_atomic(path, image)
    return {"path": str(path)}


def mask_file(cache: Path, shape: tuple[int, int], box: tuple[slice, slice]) -> dict:
    """The page's mask: black and white at the photo's size (1-bit, as editor.js writes it)."""
    mask = np.zeros(shape, np.uint8)
    mask[box] = 255
    return uploaded(cache, "mask.png", mask)
