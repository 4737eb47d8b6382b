"""Photos as cameras write them: EXIF (orientation, make, the Exif directory's size), an ICC profile."""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image, ImageCms

MAKE, ORIENTATION = ExifTags.Base.Make, ExifTags.Base.Orientation
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation=6):
    """EXIF as a camera writes it: a make, an orientation and the Exif directory's pixel size."""
    exif = Image.Exif()
    exif[MAKE] = "Camera"
    exif[ORIENTATION] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight] = 64, 48
    return exif


def photo_bytes(fmt="JPEG", size=(64, 48), **params):
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **params)
    return buffer.getvalue()


def opened(data):
    return Image.open(io.BytesIO(data))
