"""Decode, validate and encode images: the only place bytes become pixels.

Uploads are untrusted. Before anything is decoded, the file's structure is walked the
way its pixel decoder will read it (lama.formats: PNG chunks, JPEG segments and scans,
TIFF tags) and Pillow reads only the header (format, size, mode, EXIF orientation), so a
file that claims 100000×100000 pixels, or that the decoder would read at another size than
Pillow does, is refused without allocating it. The pixels themselves are decoded by
simplejpeg (libjpeg-turbo's TurboJPEG) for the JPEGs photos come as (8-bit gray or colour),
which it decodes faster than OpenCV (tools/codec_bench.py; docs/BENCHMARKS.md), in RGB order
and into an array this module allocates at the checked size; by lama.png on all cores for
PNGs this service wrote; by lama.mask_png for masks sent as sparse gray PNGs (OpenCV's, the
editor's); by OpenCV for everything else (other PNGs, CMYK JPEG, TIFF, WebP, BMP:
docs/BENCHMARKS.md says why no PNG decoder replaced it). PNG is encoded by lama.png on
all cores (no library measured writes it as fast), JPEG by lama.jpeg on all cores
(libjpeg-turbo's strips joined by restart markers), WebP by Pillow (libwebp, and it writes
EXIF and ICC profiles). Every one of
these codecs releases the GIL (lama.mask_png for its inflating and scans). A photo's EXIF
and ICC profile (lama.metadata) can be carried from the upload to the result:
:func:`decode_photo` returns them with the pixels.

What one decode may cost is bounded three ways: the structure checks bound its time by
the file's size; what the decoder allocates is bounded whatever the header says (simplejpeg
fills an array of the checked size and refuses a file that needs more, OpenCV has its own
caps, lama.opencv_caps); and at most DECODE_SLOTS decodes run at once in the process.

Arrays are uint8 in the image's own layout: H×W (gray), H×W×3 RGB or H×W×4 RGBA.
Every problem a user can cause raises :class:`ImageError` with a one-line message that
can be shown to them as is; no raw OpenCV or Pillow exception escapes this module.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import cv2
import numpy as np
import simplejpeg
from PIL import (
    BmpImagePlugin,
    ExifTags,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from lama import formats, jpeg, mask_png, opencv_caps, parallel, png
from lama.errors import ImageError, ImageTooLargeError
from lama.files import write_bytes_atomic
from lama.units import format_bytes
from lama.metadata import NO_METADATA, Metadata, from_header
from lama.output_formats import OutputFormat, for_suffix, output_format

# Suffixes the CLI treats as images when it is given a directory (compare lower-cased).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Pictures people keep beside their photos in formats not decoded here (an iPhone's HEIC photos):
# a folder's are listed as skipped, not passed over in silence.
OTHER_PICTURE_SUFFIXES: tuple[str, ...] = (".heic", ".heif", ".avif", ".gif", ".jxl", ".psd")

# Header parsers by format. They are called directly rather than through Image.open,
# which would raise its own DecompressionBombError (no size in it) before our check.
_HEADER_PARSERS: dict[str, type[ImageFile.ImageFile]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
    "TIFF": TiffImagePlugin.TiffImageFile,
}
_ACCEPTED = "PNG, JPEG, WebP, BMP or TIFF"
_NOT_AN_IMAGE = f"not an image: expected {_ACCEPTED}"
# ISO base media files (HEIF, AVIF) by the brand in their first box.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_CORRUPT = formats.CORRUPT

# OpenCV's TIFF decoder applies the orientation tag itself, even with IMREAD_UNCHANGED;
# for the other formats it is ignored and this module applies it.
_ORIENTED_BY_OPENCV = frozenset({"TIFF"})


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may cost before it is decoded.

    max_pixels bounds the decoded memory (40 MP × 4 channels × 2 bytes for 16-bit RGBA
    is 320 MB); max_side refuses absurd aspect ratios that pass the pixel limit. Neither
    goes above OpenCV's caps (lama.opencv_caps): a larger value acts as the cap.
    """

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = opencv_caps.MAX_PIXELS
    max_side: int = opencv_caps.MAX_SIDE

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ImageLimits.{name} must be positive")


DEFAULT_LIMITS = ImageLimits()

# (pixels, side) over which OpenCV itself refuses to decode.
_DECODER_CAPS = opencv_caps.in_effect()

# Decodes at once in this process. Each holds up to its image's pixels (40 MP of 16-bit RGBA
# is 320 MB, plus the 8-bit copy) and a core, so more than the cores adds memory, not speed;
# at least 2 so that a request's image and mask decode side by side; at most 8 so that a
# burst on a many-core box holds a few GB, not all of memory.
DECODE_SLOTS = max(2, min(parallel.cores(), 8))
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


def _new_decode_slots() -> None:
    """A forked child starts with free slots (the threads that held its parent's are gone)."""
    global _decode_slots
    _decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_decode_slots)


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an uploaded PNG, JPEG, WebP, BMP or TIFF into an upright uint8 array.

    Returns H×W for gray images, H×W×3 RGB, or H×W×4 RGBA when the file has
    transparency (including palette PNGs with a transparent entry and gray+alpha).
    16-bit images are scaled to 8 bits with rounding, CMYK is converted to RGB and the
    EXIF orientation is applied, so the array looks the way a photo viewer shows it.
    """
    return _decode(_check(data, limits))


def decode_mask(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an uploaded mask into H×W uint8 where nonzero marks the area to repair.

    The rule for masks with several channels:
      * with an alpha channel that is not fully opaque, the alpha is the mask: the
        mask is a painted layer on a transparent canvas, whatever colour the paint is;
      * otherwise (RGB, or RGBA that is opaque everywhere) the mask is the maximum over
        the colour channels, so white, red or any non-black paint on black counts.
    Values are kept as they are (anti-aliased edges survive); thresholding, dilation
    and feathering are the engine's job.
    """
    return _decode_mask(_check(data, limits))


@dataclass(frozen=True)
class Source:
    """What an upload says about itself besides its pixels."""

    format: str  # as sniffed: "PNG", "JPEG", "WEBP", "BMP" or "TIFF"
    metadata: Metadata  # what a result made of it can carry (lama.metadata)


class Photo(NamedTuple):
    pixels: np.ndarray  # as decode_image returns them
    source: Source


def decode_photo(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Photo:
    """:func:`decode_image`, with the upload's format and metadata."""
    checked = _check(data, limits)
    return Photo(_decode(checked), _source(checked))


def decode_source(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Source:
    """The upload's format and metadata without decoding its pixels (it is checked as for
    decoding, so a file decode_photo refuses is refused here too)."""
    return _source(_check(data, limits))


# Runs the mask's half of decode_photo_and_mask. Its tasks wait only on a decode slot and
# lama.png's pool, whose tasks wait on nothing, so any number of requests can share them
# without deadlock; a mask the pool has not started by the time its image is decoded is
# taken back (below), so slow masks in the pool never hold up another request's. No more
# threads than decode slots: a mask decode holds one.
_mask_pool = parallel.LazyPool("mask", DECODE_SLOTS)


def decode_photo_and_mask(
    image_data: bytes, mask_data: bytes, limits: ImageLimits = DEFAULT_LIMITS,
    then: Callable[[np.ndarray], Any] | None = None,
) -> tuple[Photo, Any]:
    """:func:`decode_photo` and :func:`decode_mask` at once, the mask in another thread.

    Both files are checked (structure, header, limits) before either is decoded, so a
    refusal costs no decoding at all. OpenCV and zlib release the GIL, so the mask costs
    (almost) no time of its own. The error raised has ``part`` set to "image" or "mask":
    the first one found, checks before decoding, the image before the mask. `then`: what
    to make of the decoded mask in its thread while the image still decodes (the service
    prepares its part of a repair there); the mask's place in the answer holds what it returns.
    """
    with _blaming("image"):
        image_checked = _check(image_data, limits)
    with _blaming("mask"):
        mask_checked = _check(mask_data, limits)

    def mask_and_then() -> Any:
        mask = _decode_mask(mask_checked)
        return then(mask) if then is not None else mask

    mask_future = _mask_pool.get().submit(mask_and_then)
    with _blaming("image"):
        try:
            image = _decode(image_checked)
        except ImageError:
            mask_future.cancel()
            raise
    with _blaming("mask"):
        mask = mask_and_then() if mask_future.cancel() else mask_future.result()
    return Photo(image, _source(image_checked)), mask


def decode_image_and_mask(
    image_data: bytes, mask_data: bytes, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_photo_and_mask` for the pixels alone."""
    photo, mask = decode_photo_and_mask(image_data, mask_data, limits)
    return photo.pixels, mask


@contextlib.contextmanager
def _blaming(part: str) -> Iterator[None]:
    """Marks an ImageError raised inside as the image's or the mask's."""
    try:
        yield
    except ImageError as error:
        error.part = part
        raise


@dataclass(frozen=True)
class _Checked:
    """An upload that passed every check before decoding: what to decode and how."""

    fmt: str
    data: bytes  # the file, for lama.png's reader of our own PNGs
    pixel_data: bytes  # what the decoder is given (a PNG without its ancillary chunks)
    has_alpha: bool
    orientation: int
    header: ImageFile.ImageFile  # Pillow's parsed header: where the metadata is read from
    # The array simplejpeg fills, (height, width[, channels]); None: another decoder reads the file.
    shape: tuple[int, ...] | None = None


def _check(data: bytes, limits: ImageLimits) -> _Checked:
    """Everything that can refuse a file without decoding its pixels, cheapest first."""
    _check_byte_size(len(data), limits)
    fmt = sniff_format(data)
    if fmt is None:
        other = _other_format(data)
        raise ImageError(f"{other} is not supported: expected {_ACCEPTED}" if other else _NOT_AN_IMAGE)
    webp_size = _webp_canvas_size(data)
    if webp_size is not None:
        # Checked before Pillow sees the file: its WebP plugin hands the whole file to
        # libwebp, which (depending on the version) reserves the canvas or fails vaguely.
        _check_dimensions(webp_size, limits)
    try:  # before Pillow too: its header readers are as exposed to a hostile structure
        structure = formats.walk(fmt, data)
    except formats.StructureError as error:
        raise ImageError(str(error)) from None
    header = _read_header(fmt, data, limits)
    # The size checked must be the one the decoder will use. Either way round: Pillow gives
    # a TIFF's size turned by its orientation tag, and the limits are the same both ways.
    if structure is not None and sorted(structure.size) != sorted(header.size):
        raise ImageError(_CORRUPT)
    _check_dimensions(header.size, limits)
    if fmt == "TIFF":
        _check_tiff_tiles(header, limits)
    pixel_data = data if structure is None else structure.pixel_data
    has_alpha = _header_has_alpha(header)
    shape = None
    if structure is not None and structure.channels is not None:
        width, height = structure.size
        shape = (height, width) if structure.channels == 1 else (height, width, structure.channels)
    return _Checked(fmt, data, pixel_data, has_alpha, _orientation(header), header, shape)


def _source(checked: _Checked) -> Source:
    width, height = checked.header.size
    if checked.orientation in (5, 6, 7, 8):  # decoded upright, these swap width and height
        width, height = height, width
    return Source(checked.fmt, from_header(checked.header, (width, height)))


def _decode(checked: _Checked) -> np.ndarray:
    """The pixels of a checked file, upright, in one of the DECODE_SLOTS."""
    with _decode_slots:
        # A PNG this service wrote (a repaired picture sent back for another pass, the
        # benchmark's inputs) is read in parallel, already in RGB(A) order; lama.png gives
        # None for any other PNG and for a damaged one, and OpenCV decodes it or says why not.
        image = png.decode(checked.data) if checked.fmt == "PNG" else None
        if image is None:
            image = _decode_pixels(checked)
        if checked.fmt not in _ORIENTED_BY_OPENCV:
            image = _apply_orientation(image, checked.orientation)
        return np.ascontiguousarray(image)


def _decode_mask(checked: _Checked) -> np.ndarray:
    if checked.fmt == "PNG":
        with _decode_slots:
            mask = mask_png.decode(checked.pixel_data)  # a brush mask in a few ms; None: not one
        if mask is not None:
            return np.ascontiguousarray(_apply_orientation(mask, checked.orientation))
    return np.ascontiguousarray(_mask_from_image(_decode(checked)))


def read_image(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read and decode an image file; see :func:`decode_image`. Errors name the path."""
    return _read_with(decode_image, Path(path), limits)


def read_photo(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> Photo:
    """Read and decode an image file; see :func:`decode_photo`. Errors name the path."""
    return _read_with(decode_photo, Path(path), limits)


def read_source(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> Source:
    """Read an image file's format and metadata; see :func:`decode_source`. Errors name the path."""
    return _read_with(decode_source, Path(path), limits)


def read_mask(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read and decode a mask file; see :func:`decode_mask`. Errors name the path."""
    return _read_with(decode_mask, Path(path), limits)


Decoded = TypeVar("Decoded")


def _read_with(decoder: Callable[[bytes, ImageLimits], Decoded], path: Path, limits: ImageLimits) -> Decoded:
    try:
        # Checking the size first means a huge file is refused without reading it.
        _check_byte_size(path.stat().st_size, limits)
        data = path.read_bytes()
        return decoder(data, limits)
    except ImageError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _check_byte_size(size: int, limits: ImageLimits) -> None:
    if size == 0:
        raise ImageError("file is empty")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"file is {format_bytes(size, binary=True)}, the limit is {format_bytes(limits.max_bytes, binary=True)}"
        )


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's magic bytes, or None for anything we don't accept."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _other_format(data: bytes) -> str | None:
    """The name of a picture format people send that is not decoded here (by its magic bytes), so
    that a refusal says what the file is: an iPhone's HEIC photo is an image, only not one of ours."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC (HEIF)"
    if data.startswith(b"\xff\x0a") or data.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "JPEG XL"
    if data.startswith(b"8BPS"):
        return "Photoshop (PSD)"
    if data.startswith(b"%PDF"):
        return "PDF"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "SVG"
    return None


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP's first chunk header, None if it is not a readable WebP.

    The three chunk kinds store the size differently: VP8X as 24-bit (value − 1),
    lossless VP8L as 14-bit (value − 1) after a 0x2F signature, lossy VP8 as 14-bit
    values after the 9D 01 2A start code.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _read_header(fmt: str, data: bytes, limits: ImageLimits) -> ImageFile.ImageFile:
    """Parse only the header: Pillow's image files are lazy until .load()."""
    try:
        return _HEADER_PARSERS[fmt](io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow's WebP parser checks its own (higher) limit before it allocates a
        # canvas, and its error carries no size: report ours.
        limit = _format_megapixels(_effective(limits)[0])
        raise ImageTooLargeError(f"image is too large, the limit is {limit}") from None
    except Exception:  # Pillow's parsers raise many types on hostile input
        raise ImageError(_CORRUPT) from None


def _effective(limits: ImageLimits) -> tuple[int, int]:
    """(max_pixels, max_side): the limits, within what OpenCV itself decodes."""
    return min(limits.max_pixels, _DECODER_CAPS[0]), min(limits.max_side, _DECODER_CAPS[1])


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    max_pixels, max_side = _effective(limits)
    if width <= 0 or height <= 0:
        raise ImageError(_CORRUPT)
    if max(width, height) > max_side:
        raise ImageTooLargeError(
            f"image is {width}×{height}, the limit is {max_side} pixels per side"
        )
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}×{height} = {_format_megapixels(width * height)}, "
            f"the limit is {_format_megapixels(max_pixels)}"
        )


def _check_tiff_tiles(header: ImageFile.ImageFile, limits: ImageLimits) -> None:
    """Refuse TIFF tiles larger than the pixel limit, whatever the image's own size.

    OpenCV's TIFF decoder allocates and fills one whole tile before it copies the part
    inside the image: a 300-byte file declaring a 64×48 image made of 16384×16368 tiles
    costs 1 GB (OpenCV's own cap), which the image-size check cannot see.
    """
    tags = header.tag_v2
    width, length = tags.get(322), tags.get(323)  # TileWidth, TileLength
    if width is None and length is None:
        return  # strips: OpenCV caps a strip at the image's height
    if not all(isinstance(value, int) and value > 0 for value in (width, length)):
        raise ImageError(_CORRUPT)
    max_pixels = _effective(limits)[0]
    if width * length > max_pixels:
        raise ImageTooLargeError(
            f"TIFF tiles are {width}×{length} = {_format_megapixels(width * length)}, "
            f"the limit is {_format_megapixels(max_pixels)}"
        )


def _orientation(header: ImageFile.ImageFile) -> int:
    """The EXIF orientation (1..8), 1 when absent or unreadable.

    For PNG only an eXIf chunk before the pixel data is looked at: Pillow would decode
    the whole image to find one after it, which defeats reading the header first.
    """
    if header.format == "PNG" and "exif" not in header.info:
        return 1
    try:
        value = header.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block should not make the photo unusable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _header_has_alpha(header: ImageFile.ImageFile) -> bool:
    return "A" in header.getbands() or "transparency" in header.info


def _decode_pixels(checked: _Checked) -> np.ndarray:
    """The stored pixels, uint8 in RGB(A) order or gray, before orientation."""
    if checked.shape is not None:
        return _decode_jpeg_into(checked.pixel_data, np.empty(checked.shape, np.uint8))
    try:
        image = cv2.imdecode(np.frombuffer(checked.pixel_data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageError(_CORRUPT)
    return _to_rgb_layout(_to_uint8(image), checked.has_alpha)


def _decode_jpeg_into(data: bytes, out: np.ndarray) -> np.ndarray:
    """simplejpeg's decode of `data` into `out`, an array of the size and channels checked.

    It refuses a file that needs a larger buffer (ValueError); a file that fits in fewer bytes
    decodes to another shape, which is refused here. Not strict: libjpeg-turbo's warnings (a
    progression it can still follow) are tolerated, as OpenCV tolerated them before; a file
    cut short is refused by the walk (lama.formats), which wants its end marker.
    """
    colorspace = "GRAY" if out.ndim == 2 else "RGB"
    try:
        image = simplejpeg.decode_jpeg(data, colorspace=colorspace, buffer=out, strict=False)
    except ValueError:
        raise ImageError(_CORRUPT) from None
    if image.shape[:2] != out.shape[:2] or image.size != out.size:
        raise ImageError(_CORRUPT)
    return out


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit stays, 16-bit is scaled (65535 -> 255, rounded); other depths are refused."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255 / 65535)
    raise ImageError(
        f"unsupported pixel format ({image.dtype}): only 8- and 16-bit images are accepted"
    )


def _to_rgb_layout(image: np.ndarray, header_has_alpha: bool) -> np.ndarray:
    """OpenCV's BGR(A) -> RGB(A); gray stays 2-D.

    OpenCV already expands palette and gray+alpha PNGs to BGR(A) and converts CMYK JPEG.
    Some decoders return four channels for files without transparency (CMYK TIFF); the
    header says whether an alpha channel really exists, and a padding one is dropped.
    """
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 3:  # in place: the decoded array is ours, a second one costs ~1 ms
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
    if channels == 4 and header_has_alpha:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA, dst=image)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"unsupported image with {channels} channels")


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored pixels upright as EXIF orientation 1..8 prescribes (numpy views)."""
    if orientation in (5, 6, 7, 8):  # these swap width and height
        image = image.swapaxes(0, 1)
    if orientation in (2, 3, 6, 7):
        image = image[:, ::-1]
    if orientation in (3, 4, 7, 8):
        image = image[::-1]
    return image


def _mask_from_image(image: np.ndarray) -> np.ndarray:
    # OpenCV rather than numpy: ndarray.max(axis=2) over 3 channels takes ~200 ms at
    # 2560×1920 (a reduction over a tiny last axis), split + max ~10 ms.
    if image.ndim == 2:
        return image
    image = np.ascontiguousarray(image)  # orientation may have left a view
    if image.shape[2] == 4:
        alpha = cv2.extractChannel(image, 3)
        if alpha.min() < 255:
            return alpha
    red, green, blue = cv2.split(image)[:3]
    colour = cv2.max(red, green)
    return cv2.max(colour, blue, dst=colour)


def _format_megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f}".removesuffix(".0") + " MP"


# --------------------------------------------------------------------------- encoding


def encode_image(image: np.ndarray, fmt: str | OutputFormat = "png", quality: int = 95,
                 metadata: Metadata = NO_METADATA, png_ahead: png.Ahead | None = None) -> bytes:
    """Encode an RGB, RGBA or gray uint8 array as PNG, JPEG or WebP (`fmt`: a name of
    lama.output_formats, "same" excepted, or its OutputFormat).

    PNG is written by lama.png on all cores (about as small as OpenCV's), JPEG by lama.jpeg on
    all cores (libjpeg-turbo's, in strips), WebP by Pillow. `metadata` (EXIF, ICC profile:
    lama.metadata) goes into the file, in the chunk or segment its format has for it.
    `png_ahead`: for PNG, segments of the image compressed ahead (lama.png.compress_ahead).

    ``quality`` (1..100) applies to JPEG and WebP. JPEG has no transparency, so RGBA is
    composited on white, which is how the picture looks on a white page; dropping the
    alpha instead would reveal whatever colour hides under transparent pixels.
    A malformed array is a programming error and raises ValueError, not ImageError.
    """
    if not isinstance(fmt, OutputFormat):
        fmt = output_format(fmt)
    if not 1 <= quality <= 100:
        raise ImageError(f"quality must be between 1 and 100, got {quality}")
    _check_array(image)
    height, width = image.shape[:2]
    if max(height, width) > fmt.max_side:
        raise ImageError(
            f"image is {width}×{height}, {fmt.name.upper()} stores at most {fmt.max_side} pixels per side"
        )
    if metadata.icc_profile and not _profile_describes(metadata.icc_profile, image):
        # A CMYK photo's profile, say, once its pixels are RGB: a viewer would read them through it.
        metadata = replace(metadata, icc_profile=None)
    if fmt.name == "png":
        return png.encode(image, exif=metadata.exif, icc_profile=metadata.icc_profile, ahead=png_ahead)
    try:
        if fmt.name == "jpeg":
            if image.ndim == 3 and image.shape[2] == 4:
                image = _composite_on_white(image)
            return jpeg.encode(image, quality, exif=metadata.exif, icc_profile=metadata.icc_profile)
        extra = {key: value for key, value in (("exif", metadata.exif), ("icc_profile", metadata.icc_profile))
                 if value}
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "WEBP", quality=quality, **extra)
        return buffer.getvalue()
    except (OSError, ValueError) as error:
        raise ImageError(f"could not encode a {width}×{height} image as {fmt.name.upper()}: {error}") from None


def write_image_atomic(
    path: str | os.PathLike[str], image: np.ndarray, quality: int = 95, metadata: Metadata = NO_METADATA
) -> Path:
    """Encode ``image`` in the format its suffix names and replace ``path`` atomically.

    See :func:`write_bytes_atomic`. Disk errors are the server's problem, not the user's,
    and propagate as OSError.
    """
    path = Path(path)
    fmt = for_suffix(path.suffix)
    if fmt is None:
        raise ImageError(f"cannot write {path.name}: use a .png, .jpg, .jpeg or .webp name")
    return write_bytes_atomic(path, encode_image(image, fmt, quality, metadata))


def _check_array(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy array")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"expected H×W, H×W×3 or H×W×4, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("cannot encode an empty image")


def _profile_describes(profile: bytes, image: np.ndarray) -> bool:
    """Whether an ICC profile is one for `image`'s pixels: its data colour space (the header's
    bytes 16-19) RGB for colour pixels, GRAY for gray ones."""
    return profile[16:20] == (b"GRAY" if image.ndim == 2 else b"RGB ")


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:].astype(np.uint16)
    blended = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)
