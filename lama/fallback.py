"""The embedded default: classical inpainting for when no big-lama weights are present.

Telea's fast-marching method fills the hole from its border inwards. It is fine for
scratches and thin strokes and smears large areas, but it needs no weights and no GPU,
so the service can answer (and its tests can run) before a model is downloaded.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from lama.backend import Backend
from lama.device import Device

NOTE = ("no big-lama weights found: using OpenCV Telea inpainting "
        "(run `python -m lama download` for the real model)")


class OpenCVTelea(Backend):
    """Telea on the CPU, whatever GPU the machine has: so it reports the CPU as its device."""

    precision = "uint8"
    model_loaded = False
    warning = NOTE

    def __init__(self) -> None:
        self.device = Device.cpu()

    def repair(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return telea_inpaint(rgb, mask)

    def describe(self) -> dict[str, Any]:
        return {"name": "opencv-telea", "loaded": True, "fallback": True, "device": str(self.device),
                "precision": self.precision, "source": "embedded", "path": None, "parameters": 0, "note": NOTE}


def telea_inpaint(image: np.ndarray, mask: np.ndarray, radius: int = 5) -> np.ndarray:
    """Fill the nonzero area of ``mask`` in an H×W×3 uint8 ``image``; returns H×W×3 uint8.

    ``radius`` is the neighbourhood (in pixels) each filled pixel is estimated from.
    Pixels outside the mask are returned unchanged.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    # cv2.inpaint wants an 8-bit single-channel mask; any nonzero value means "fill".
    hole = (mask != 0).astype(np.uint8)
    # The channel order does not matter: Telea fills each channel independently from
    # the same neighbours, so RGB in gives RGB out without a BGR round trip.
    return cv2.inpaint(image, hole, float(radius), cv2.INPAINT_TELEA)
