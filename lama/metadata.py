"""The metadata a repaired photo keeps from its upload: EXIF and the ICC colour profile.

Both are read from the header Pillow has already parsed for the decode gate (lama.imageio), so
reading them costs no pass over the pixels and stays within what the gate bounds; each is
carried only up to a size that every output format can store, and dropped (with a log line)
beyond it, never cut.

EXIF is rewritten, not copied: the decoder has already turned the pixels upright, so the
orientation becomes 1 (a viewer would otherwise turn them a second time) and the pixel
dimensions are the upright ones. Only the main directory and its Exif and GPS directories are
kept: the thumbnail directory would still show what the repair removed. A TIFF's EXIF is its
image structure (strip offsets, compression...), not a camera's notes: from a TIFF only the
profile is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile

log = logging.getLogger(__name__)

# A JPEG stores EXIF in one APP1 segment: 65,535 bytes less its length field and "Exif\0\0".
MAX_EXIF_BYTES = 65_527
# Pillow itself reads at most 1 MiB of a PNG's compressed profile; camera and display profiles
# are a few kB, printer profiles up to a few hundred.
MAX_ICC_BYTES = 1 << 20
EXIF_HEADER = b"Exif\x00\x00"
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003  # ExifImageWidth, ExifImageHeight in the Exif directory


@dataclass(frozen=True)
class Metadata:
    exif: bytes | None = None  # "Exif\0\0" + a TIFF-structured block, orientation 1
    icc_profile: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.exif or self.icc_profile)


NO_METADATA = Metadata()


def raw_exif(header: ImageFile.ImageFile) -> bytes | None:
    """The upload's EXIF block as stored, None when it has none or one too large to carry.

    A PNG's eXIf chunk counts only before the pixel data (Pillow would decode the whole image
    to find one after it); a TIFF has none of its own (see the module's docstring).
    """
    if header.format == "TIFF":
        return None
    raw = header.info.get("exif")
    if not isinstance(raw, bytes) or not raw:
        return None
    if len(raw) > MAX_EXIF_BYTES + len(EXIF_HEADER):
        log.info("an upload's EXIF block is %d bytes, more than a JPEG can hold: not read", len(raw))
        return None
    return raw


def from_header(header: ImageFile.ImageFile, upright_size: tuple[int, int]) -> Metadata:
    """The metadata to carry from an upload whose header Pillow has parsed; `upright_size` is
    (width, height) of the decoded, upright pixels."""
    return Metadata(_normalised_exif(raw_exif(header), upright_size), _icc_profile(header))


def _normalised_exif(raw: bytes | None, size: tuple[int, int]) -> bytes | None:
    if raw is None:
        return None
    try:
        exif = Image.Exif()
        exif.load(raw)
        if not exif:
            return None  # nothing readable in it (Pillow skips what it cannot parse)
        if ExifTags.Base.Orientation in exif:
            exif[ExifTags.Base.Orientation] = 1
        details = exif.get_ifd(ExifTags.IFD.Exif)
        for tag, value in zip((_PIXEL_X, _PIXEL_Y), size):
            if tag in details:
                details[tag] = value
        data = exif.tobytes()
    except Exception as error:  # noqa: BLE001 - Pillow raises many types on a broken block
        log.info("an upload's EXIF block cannot be read (%s: %s): not carried", type(error).__name__, error)
        return None
    if len(data) > MAX_EXIF_BYTES + len(EXIF_HEADER):
        return None
    return data


def _icc_profile(header: ImageFile.ImageFile) -> bytes | None:
    profile = header.info.get("icc_profile")
    if not isinstance(profile, bytes) or not profile:
        return None
    if len(profile) > MAX_ICC_BYTES:
        log.info("an upload's ICC profile is %d bytes, more than %d: not carried", len(profile), MAX_ICC_BYTES)
        return None
    return profile
