"""Deterministic photo-like test images, for the engine's benchmarks and tests.

(The resource report, a client of the HTTP API, draws its own: loadreport.images.)
"""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_case(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like RGB image (smooth gradients, shapes, grain) and a ~10% brush-stroke mask.

    Deterministic, so runs on different machines repair the same pixels.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / max(width, 1), ys / max(height, 1), (xs + ys) / max(width + height, 1)], axis=2)
    image = base * 200 + 30
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.03, 0.15) * max(width, height)
        inside = (ys - cy) ** 2 + (xs - cx) ** 2 < radius**2
        image[inside] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)

    mask = np.zeros((height, width), np.uint8)
    thickness = max(1, min(width, height) // 12)
    points = rng.uniform((0.2 * width, 0.2 * height), (0.8 * width, 0.8 * height), (4, 2)).astype(np.int32)
    cv2.polylines(mask, [points], isClosed=False, color=255, thickness=thickness)
    return image, mask
