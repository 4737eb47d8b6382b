"""Image layouts: grayscale and RGBA in, the same layout out, through the RGB the backends repair.

Both directions work on any window of the image, so that the engine converts only the pixels it
touches (the masked region and the model's input), never the whole frame for a small mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

from lama.errors import EngineError

class Layout(NamedTuple):
    # The image's pixels (any window of it) as H×W×3 RGB; a view where the layout is RGB already.
    to_rgb: Callable[[np.ndarray], np.ndarray]
    # A repaired RGB window back in the image's layout; the second argument is the same window of
    # the original image (RGBA takes its alpha from there, untouched).
    from_rgb: Callable[[np.ndarray, np.ndarray], np.ndarray]


def layout_of(image: np.ndarray) -> Layout:
    if image.dtype != np.uint8:
        raise EngineError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return Layout(_gray_to_rgb, lambda rgb, _original: _rgb_to_gray(rgb))
    if image.ndim == 3 and image.shape[2] == 1:
        return Layout(lambda pixels: _gray_to_rgb(pixels[..., 0]), lambda rgb, _original: _rgb_to_gray(rgb)[..., None])
    if image.ndim == 3 and image.shape[2] == 3:
        return Layout(lambda pixels: pixels, lambda rgb, _original: rgb)
    if image.ndim == 3 and image.shape[2] == 4:
        return Layout(lambda pixels: np.ascontiguousarray(pixels[..., :3]),
                      lambda rgb, original: np.concatenate((rgb, original[..., 3:]), axis=2))
    raise EngineError(f"unsupported image shape {image.shape}: expected H×W, H×W×3 (RGB) or H×W×4 (RGBA)")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
