"""Photos as cameras write them: EXIF (orientation, make, the Exif directory's size), an ICC profile."""

from __future__ import annotations

import io
import struct

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


def photo_bytes(fmt="JPEG", size=(64, 48), mode="RGB", **params):
    """Random RGB pixels written in `fmt`, converted to `mode` first (a CMYK JPEG, say)."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, **params)
    return buffer.getvalue()


def opened(data):
    return Image.open(io.BytesIO(data))


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _tag_text(signature: bytes, text: str) -> bytes:
    encoded = text.encode("ascii") + b"\0"
    if signature == b"desc":  # textDescriptionType: ASCII, then empty Unicode and ScriptCode parts
        return b"desc" + bytes(4) + struct.pack(">I", len(encoded)) + encoded + bytes(8) + bytes(3) + bytes(67)
    return b"text" + bytes(4) + encoded


def matrix_profile(red: tuple[float, float, float], green: tuple[float, float, float],
                   blue: tuple[float, float, float], gamma: float = 2.2) -> bytes:
    """An ICC v2 display profile of three colorants (their XYZ, D50) and one gamma, as a
    display's or a camera's (an iPhone's Display P3 is one) is built."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", _tag_text(b"desc", "test profile")), (b"cprt", _tag_text(b"cprt", "none")),
            (b"wtpt", _xyz(*D50)), (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        data += bytes(-(start + len(data)) % 4)  # each tag 4-byte aligned
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acspAPPL" + bytes(24) + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


D50 = (0.9642, 1.0, 0.8249)
# sRGB's colorants (adapted to D50), red and green exchanged: a browser shows a red pixel of a photo
# with this profile as green, so that a picture drawn without it stands out at once.
SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
RED_AS_GREEN = matrix_profile(SRGB_GREEN, SRGB_RED, SRGB_BLUE)
