"""OpenCV's own ceiling on what one image decode may allocate, set before OpenCV loads.

OpenCV refuses to decode an image whose size, as its own decoder reads the header, is
over OPENCV_IO_MAX_IMAGE_PIXELS / _WIDTH / _HEIGHT (defaults 2**30 pixels and 2**20 a
side: 3 GB for one RGB image). It reads them once, when the library is loaded (they are
namespace-scope constants in imgcodecs' loadsave.cpp): setting them after ``import cv2``
changes nothing. lama/__init__.py calls :func:`apply` before any module of the package
imports cv2, so every process that decodes through lama (server, CLI, bench) has them.

imageio checks sizes itself, with the size the decoder will use (lama.formats); these
caps are the second line, for a file that some decoder still reads differently. They are
the largest limits imageio accepts by default (its ImageLimits), so no image imageio lets
through is refused here; an operator who sets the variables keeps their values, and
imageio's limits never go above them (:func:`in_effect`).

The same goes for libtiff's bound on the scans of a progressive JPEG inside a TIFF (read
at each decode; its default is 100): lama.formats counts a JPEG file's scans but does not
look inside TIFF strips, so libtiff is held to the same bound.
"""

from __future__ import annotations

import logging
import os
import sys

from lama.formats import MAX_JPEG_SCANS

MAX_PIXELS = 40_000_000
MAX_SIDE = 16384
_VARIABLES = {"OPENCV_IO_MAX_IMAGE_PIXELS": MAX_PIXELS, "OPENCV_IO_MAX_IMAGE_WIDTH": MAX_SIDE,
              "OPENCV_IO_MAX_IMAGE_HEIGHT": MAX_SIDE,
              # libtiff refuses the scan whose number reaches this: one more lets MAX_JPEG_SCANS through.
              "LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER": MAX_JPEG_SCANS + 1}


def apply() -> None:
    """Put the caps into the environment unless it sets them already (before cv2 loads).

    imageio's checks use the same numbers either way; only OpenCV's own refusal is lost
    when cv2 was imported first, so that is worth a warning, not an error.
    """
    if "cv2" in sys.modules:
        logging.getLogger(__name__).warning(
            "cv2 was imported before lama: OpenCV decodes without lama's caps in this process")
    for name, value in _VARIABLES.items():
        os.environ.setdefault(name, str(value))


def in_effect() -> tuple[int, int]:
    """(pixels, side): the caps OpenCV loaded with, provided it loaded after :func:`apply`."""
    pixels = _read("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_PIXELS)
    side = min(_read("OPENCV_IO_MAX_IMAGE_WIDTH", MAX_SIDE), _read("OPENCV_IO_MAX_IMAGE_HEIGHT", MAX_SIDE))
    return pixels, side


def _read(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)  # OpenCV aborts the process on a value that is not a number
