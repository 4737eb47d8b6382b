"""Mask geometry: refinement before repair and the regions the crop strategy works on.

Masks here are boolean H×W arrays (True = repair). Everything is OpenCV on the CPU:
these are cheap next to the model and keep the engine free of image-processing detail.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np


class Box(NamedTuple):
    """A half-open pixel rectangle: rows top..bottom-1, columns left..right-1."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)

    def overlaps(self, other: Box) -> bool:
        return (self.top < other.bottom and other.top < self.bottom
                and self.left < other.right and other.left < self.right)

    def union(self, other: Box) -> Box:
        return Box(min(self.top, other.top), min(self.left, other.left),
                   max(self.bottom, other.bottom), max(self.right, other.right))


def binarize(mask: np.ndarray) -> np.ndarray:
    """Any nonzero value means "repair", as in the official pipeline (anti-aliased edges count)."""
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W or H×W×C, got an array of shape {mask.shape}")
    return mask > 0


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow the mask by `pixels` in every direction (a disc, so corners stay round).

    Users paint tightly around an object; its halo and shadow sit just outside the
    stroke, and LaMa copies whatever is left at the border into the hole.
    """
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def feather_weights(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Blend weight of the repaired pixels: 0 outside the mask, rising to 1 over `pixels` inside.

    The ramp lies inside the mask so that pixels outside it stay bit-identical; a pixel
    at distance d from the nearest unmasked pixel gets d / (pixels + 1), capped at 1.
    """
    if pixels <= 0:
        return mask.astype(np.float32)
    # Distance to the nearest unmasked pixel. The image border is not a mask edge
    # (there is nothing outside to blend with), so a mask covering everything gets no ramp.
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(distance / (pixels + 1), 0.0, 1.0).astype(np.float32) * mask


def region_boxes(mask: np.ndarray, margin: int) -> list[Box]:
    """Boxes around each connected masked region, grown by `margin` and clipped to the image.

    Boxes that overlap after growing are merged, so each pixel is repaired once and a
    mask of many specks does not turn into many model runs.
    """
    height, width = mask.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:count]:
        boxes.append(Box(max(0, y - margin), max(0, x - margin),
                         min(height, y + h + margin), min(width, x + w + margin)))
    return _merge_overlapping(boxes)


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    merged: list[Box] = []
    pending = list(boxes)
    while pending:
        box = pending.pop()
        # A union can grow into boxes already kept, so re-examine those too.
        absorbed = True
        while absorbed:
            absorbed = False
            for other in merged + pending:
                if box.overlaps(other):
                    box = box.union(other)
                    (merged if other in merged else pending).remove(other)
                    absorbed = True
                    break
        merged.append(box)
    return sorted(merged)
