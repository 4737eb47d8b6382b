"""The pictures the client uploads: photo-like content, brush-stroke masks, encoded as people send them.

Generated, not shipped, and deterministic (a seed), so that runs on different machines send
the same pixels and compare like with like. Encoded by OpenCV, as any other program would
write them: the service must not meet files in a layout of its own making. Masks can also be
encoded as the browser editor sends them (editor_mask_png).
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

STROKE_SEGMENTS = 12  # a brush stroke is a short random walk of this many segments
JPEG_QUALITY = 92  # what cameras and phones commonly write
# Detail at every scale, weaker as it gets finer, as in photographs (whose spectra fall off
# roughly as 1/frequency): (cells along the longer side, standard deviation in levels).
OCTAVES = ((3, 55.0), (12, 30.0), (48, 16.0), (192, 8.0))
CHROMA = 0.35  # colour varies less than brightness: a photo's channels move mostly together
OBJECTS = 10  # hard-edged shapes: the edges a photo has and smooth noise does not
GRAIN = 3.0  # sensor noise, in levels: what makes a photo's JPEG as large as it is


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like width×height colour picture (uint8, H×W×3, OpenCV's channel order)."""
    rng = np.random.default_rng(seed)
    longest = max(width, height)
    picture = np.full((height, width, 3), 128.0, np.float32)
    for cells, spread in OCTAVES:
        shape = (max(2, cells * height // longest), max(2, cells * width // longest))
        grid = rng.normal(0.0, spread, (*shape, 1)) + rng.normal(0.0, spread * CHROMA, (*shape, 3))
        picture += cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(OBJECTS):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = tuple(int(rng.uniform(0.02, 0.12) * longest) for _ in range(2))
        cv2.ellipse(picture, centre, axes, rng.uniform(0, 180), 0, 360, rng.uniform(20, 235, 3).tolist(), -1)
    picture += rng.standard_normal(picture.shape, np.float32) * GRAIN
    return np.clip(picture, 0, 255).astype(np.uint8)


def stroke_mask(width: int, height: int, coverage: float, seed: int = 0) -> np.ndarray:
    """Brush strokes over `coverage` of a width×height picture (uint8, 255 = repair).

    Strokes are drawn one short segment at a time and drawing stops as soon as the target
    is reached; a segment adds at most ~0.3% of the picture, so the result lands within
    a fraction of a percent above the target. Hard edges (no anti-aliasing) keep the
    fraction exact for the server, which counts every nonzero pixel.
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be between 0 and 1, got {coverage}")
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    thickness = max(2, min(width, height) // 40)
    longest = max(width, height)
    low, high = np.array([0.1 * width, 0.1 * height]), np.array([0.9 * width, 0.9 * height])
    target = coverage * width * height
    while True:
        point, angle = rng.uniform(low, high), rng.uniform(0, 2 * np.pi)
        for _ in range(STROKE_SEGMENTS):
            angle += rng.normal(0, 0.6)
            step = rng.uniform(0.02, 0.06) * longest
            following = np.clip(point + step * np.array([np.cos(angle), np.sin(angle)]), low, high)
            cv2.line(mask, tuple(int(v) for v in point), tuple(int(v) for v in following), 255, thickness)
            if cv2.countNonZero(mask) >= target:
                return mask
            point = following


def object_mask(width: int, height: int, coverage: float, seed: int = 0) -> np.ndarray:
    """One thing painted over, as one removes an object from a photo: a filled ellipse over
    `coverage` of a width×height picture (uint8, 255 = repair), its centre and proportions drawn
    from `seed`, always whole inside the picture. Unlike `stroke_mask`'s strokes, spread over
    most of the picture's rows, its box is a part of them."""
    if not 0 < coverage < 0.75:  # an ellipse fills π/4 of its box: above that it cannot fit
        raise ValueError(f"coverage must be between 0 and 0.75, got {coverage}")
    rng = np.random.default_rng(seed)
    ratio = rng.uniform(0.6, 1.6) * width / height  # half-width over half-height
    area = coverage * width * height  # an ellipse's is π × its half-axes
    half_height = np.sqrt(area / (np.pi * ratio))
    half_width = min(half_height * ratio, width / 2 - 1)
    half_height = min(area / (np.pi * half_width), height / 2 - 1)
    centre = (rng.uniform(half_width, width - half_width), rng.uniform(half_height, height - half_height))
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), (round(half_width), round(half_height)), 0, 0, 360, 255, -1)
    return mask


MASK_SHAPES = {"strokes": stroke_mask, "object": object_mask}


def png(pixels: np.ndarray) -> bytes:
    return _encode(".png", pixels, [])


def editor_mask_png(mask: np.ndarray) -> bytes:
    """`mask` (nonzero: repair) as the browser editor sends it (webui/static/editor.js, maskPng):
    a 1-bit gray PNG, every row unfiltered, one IDAT."""
    height, width = mask.shape
    rows = np.zeros((height, 1 + (width + 7) // 8), np.uint8)  # each row's filter byte: 0, None
    rows[:, 1:] = np.packbits(mask > 0, axis=1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes()))
            + chunk(b"IEND", b""))


def jpeg(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    return _encode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])


def _encode(extension: str, pixels: np.ndarray, parameters: list[int]) -> bytes:
    ok, data = cv2.imencode(extension, pixels, parameters)
    if not ok:  # only for arrays no image format holds: a bug in the caller, not the user's doing
        raise ValueError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} array as {extension}")
    return data.tobytes()
