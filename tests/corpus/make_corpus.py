"""Writes the fixed corpus of tests/service/test_fuzz.py: small valid images in every format, mode and
orientation the service accepts, masks in every mode, and hostile files (forged headers with
absurd sizes, truncations, wrong formats), with manifest.json saying what each must give.

    python tests/corpus/make_corpus.py        # rewrites the files beside this script

Deterministic (fixed seeds, no timestamps), so re-running it changes nothing; the files are
committed. Each entry of manifest.json: {"file", "role": "image"|"mask", "expect": "ok"|4xx
status, "size": [width, height] as a viewer shows it (EXIF orientation applied), "note"}.
A regression case found by the fuzzer is added here, with a note naming the bug.
"""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
W, H = 64, 48  # the corpus's standard size: small, not square (orientation shows)


def picture(width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus a little noise: compresses well, every orientation differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(width, 1), yy * 255 // max(height, 1),
                    (xx + 2 * yy) * 255 // max(width + 2 * height, 1)], axis=-1)
    return np.clip(rgb + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)


def alpha(width: int = W, height: int = H) -> np.ndarray:
    a = np.full((height, width), 255, np.uint8)
    a[: height // 3, : width // 3] = 0
    a[height // 3: height // 2, : width // 2] = 128
    return a


def painted(width: int = W, height: int = H) -> np.ndarray:
    """The area to repair: a box in the middle."""
    m = np.zeros((height, width), np.uint8)
    m[height // 4: height // 2 + 1, width // 4: width // 2 + 1] = 255
    return m


def pil(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def cv(array: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, array)
    assert ok, ext
    return data.tobytes()


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_forged(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose IHDR (with a valid CRC) claims width×height; one tiny IDAT follows."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0\0"))
            + png_chunk(b"IEND", b""))


def jpeg_forged(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame header is rewritten to claim width×height."""
    data = bytearray(cv(picture()[:, :, ::-1], ".jpg"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def webp_forged(width: int, height: int) -> bytes:
    """An extended-format (VP8X) WebP header claiming a width×height canvas, then a small frame."""
    frame = pil(Image.fromarray(picture()), "WEBP", lossless=True)[12:]  # the VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + \
        (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_forged(width: int, height: int) -> bytes:
    data = bytearray(cv(picture()[:, :, ::-1], ".bmp"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def tiff_forged(width: int, height: int) -> bytes:
    """A real TIFF whose ImageWidth/ImageLength tags are rewritten."""
    data = bytearray(pil(Image.fromarray(picture()), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    for index in range(count):
        entry = ifd + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<HHII", data, entry, tag, 4, 1, value)  # LONG
    return bytes(data)


def tiff_tiled(width: int, height: int, tile: tuple[int, int]) -> bytes:
    """A little-endian RGB TIFF declaring width×height in tiles of tile[0]×tile[1], with 16×16
    pixels of data (enough for the parsers; the decoder sizes its buffer from the tags)."""
    pixels = np.random.default_rng(1).integers(0, 256, 16 * 16 * 3, dtype=np.uint8).tobytes()
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 2), (277, 3, 3),
               (284, 3, 1), (322, 4, tile[0]), (323, 4, tile[1]), (324, 4, None), (325, 4, len(pixels))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, value in entries:
        value = data_at if value is None else value
        out += struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, 1, value)
    return bytes(out + b"\0\0\0\0" + pixels)


# ------------------------------------------------------------ the decode gate's hostile shapes (issue 12)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_rgb(width: int = W, height: int = H, before: bytes = b"", after: bytes = b"", pixels: bool = True) -> bytes:
    """An 8-bit RGB PNG of picture() (black when not `pixels`), with the chunks `before` between
    IHDR and IDAT and `after` between IDAT and IEND."""
    rows = picture(width, height) if pixels else np.zeros((height, width, 3), np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + before + png_chunk(b"IDAT", zlib.compress(raw, 9)) + after
            + png_chunk(b"IEND", b""))


def png_declaring_idat_length(length: int = 0xFFFFFFFF) -> bytes:
    """A black 64×48 PNG whose IDAT declares `length` bytes, 88 bytes long (the attack's had 83):
    OpenCV's PNG reader allocated and filled the declared 4 GB before it noticed the file was short."""
    data = png_rgb(pixels=False)
    idat = data.index(b"IDAT") - 4
    return data[:idat] + struct.pack(">I", length) + data[idat + 4:]


def apng_declaring_fdat_length(length: int = 0xFFFFFFFF) -> bytes:
    """An animated PNG whose second frame's fdAT declares `length` bytes (OpenCV's APNG reader
    allocates whatever a frame chunk declares)."""
    def frame_control(sequence: int) -> bytes:
        return png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, W, H, 0, 0, 1, 10, 0, 0))

    frame = zlib.compress(b"\0" * (H * (3 * W + 1)), 9)
    after = frame_control(1) + struct.pack(">I", length) + b"fdAT" + struct.pack(">I", 2) + frame
    data = png_rgb(before=png_chunk(b"acTL", struct.pack(">II", 2, 0)) + frame_control(0), after=after)
    return data[:-12]  # the file ends inside the fdAT: no IEND


def png_with_text_chunks(count: int, after_idat: bool = True) -> bytes:
    """A valid PNG with `count` small compressed text (zTXt) chunks: 1,000 after IDAT made
    libpng spend 20 s; Pillow's header reader parses those before IDAT one by one."""
    text = b"".join(png_chunk(b"zTXt", b"Comment%d\0\0" % index + zlib.compress(b"x" * 64)) for index in range(count))
    return png_rgb(after=text) if after_idat else png_rgb(before=text)


def apng() -> bytes:
    """A valid animated PNG of two frames (the first is what is repaired)."""
    frames = [Image.fromarray(picture()), Image.fromarray(picture(seed=1))]
    return pil(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def tiff_with_entries(entries: list[tuple[int, int, int]], data: bytes = b"") -> bytes:
    """A little-endian TIFF whose first directory holds `entries` (tag, type, value) in that
    order, each with one value; the value None is replaced by the offset of `data`."""
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, value in entries:
        value = data_at if value is None else value
        out += struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, 1, value)
    return bytes(out + b"\0\0\0\0" + data)


def tiff_with_duplicate_size(first: tuple[int, int], last: tuple[int, int]) -> bytes:
    """An RGB TIFF with two ImageWidth and two ImageLength tags: Pillow keeps the last pair,
    libtiff the first (64×48 checked, 20000×20000 decoded: 82 s and 5 GB). 64×48 pixels of data."""
    pixels = picture().tobytes()
    return tiff_with_entries([(256, 4, first[0]), (257, 4, first[1]), (256, 4, last[0]), (257, 4, last[1]),
                              (258, 3, 8), (259, 3, 1), (262, 3, 2), (273, 4, None), (277, 3, 3),
                              (278, 4, 2**32 - 1), (279, 4, len(pixels))], pixels)


def tiff_with_tags(count: int) -> bytes:
    """A valid 64×48 gray TIFF padded with private tags (65000 and up) to `count` tags."""
    pixels = cv2.cvtColor(picture(), cv2.COLOR_RGB2GRAY).tobytes()
    entries = [(256, 4, W), (257, 4, H), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, None), (277, 3, 1),
               (278, 4, H), (279, 4, len(pixels))]
    return tiff_with_entries(entries + [(65000 + index, 4, index) for index in range(count - len(entries))], pixels)


def jpeg_with_junk() -> bytes:
    """A baseline JPEG with 64 zero bytes between its first two segments: libjpeg skips them
    with a warning, Pillow's header reader one at a time in Python (1.35 s for 10 MB)."""
    data = cv(picture()[:, :, ::-1], ".jpg")
    after_app0 = 4 + struct.unpack_from(">H", data, 4)[0]
    return data[:after_app0] + b"\0" * 64 + data[after_app0:]


_JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG cut into its segments after SOI, each scan with its entropy-coded data, EOI last."""
    segments, pos = [], 2
    while data[pos + 1] != 0xD9:
        end = pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if data[pos + 1] == 0xDA:
            end = _JPEG_MARKER_AFTER_SCAN.search(data, end).start()
        segments.append(data[pos:end])
        pos = end
    return segments + [data[pos:pos + 2]]


def progressive_jpeg(width: int, height: int, scans: int, mode: str = "L") -> bytes:
    """A flat progressive JPEG with `scans` scans: the encoder's last one (a refinement of every
    block's AC coefficients, a few bytes for a flat image) repeated. libjpeg warns that the
    progression is inconsistent and decodes each repeat over every block: 20,000 of them in
    0.81 MB took 46 s."""
    shape = (height, width) if mode == "L" else (height, width, 3)
    segments = jpeg_segments(pil(Image.fromarray(np.full(shape, 128, np.uint8), mode), "JPEG", progressive=True))
    last = max(index for index, segment in enumerate(segments) if segment[1] == 0xDA)
    first = last
    while segments[first - 1][1] == 0xC4:  # with the Huffman tables sent just before it
        first -= 1
    repeat = b"".join(segments[first:last + 1])
    count = sum(segment[1] == 0xDA for segment in segments)
    return b"\xff\xd8" + b"".join(segments[:-1]) + repeat * (scans - count) + segments[-1]


def tiff_with_jpeg_strip(jpeg: bytes, width: int = W, height: int = H) -> bytes:
    """A gray TIFF (JPEG compression) whose one strip is the JPEG file `jpeg`."""
    return tiff_with_entries([(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 7), (262, 3, 1),
                              (273, 4, None), (277, 3, 1), (278, 4, height), (279, 4, len(jpeg))], jpeg)


def images() -> list[tuple[str, bytes, object, tuple[int, int] | None, str]]:
    """(file, bytes, expect, viewer size, note)."""
    rgb = picture()
    bgr = rgb[:, :, ::-1]
    rgba = np.dstack([rgb, alpha()])
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cases: list[tuple[str, bytes, object, tuple[int, int] | None, str]] = [
        ("rgb.png", cv(bgr, ".png"), "ok", (W, H), "8-bit RGB PNG"),
        ("rgb.jpg", cv(bgr, ".jpg"), "ok", (W, H), "baseline JPEG"),
        ("rgb-progressive.jpg", pil(Image.fromarray(rgb), "JPEG", progressive=True), "ok", (W, H), "progressive JPEG"),
        ("gray.png", cv(gray, ".png"), "ok", (W, H), "8-bit gray PNG"),
        ("gray.jpg", cv(gray, ".jpg"), "ok", (W, H), "gray JPEG"),
        ("gray-alpha.png", pil(Image.fromarray(np.dstack([gray, alpha()]), "LA"), "PNG"), "ok", (W, H),
         "gray + alpha PNG"),
        ("rgba.png", cv(np.dstack([bgr, alpha()]), ".png"), "ok", (W, H), "RGBA PNG with transparency"),
        ("rgba-opaque.png", cv(np.dstack([bgr, np.full((H, W), 255, np.uint8)]), ".png"), "ok", (W, H),
         "RGBA PNG, opaque everywhere"),
        ("palette.png", pil(Image.fromarray(rgb).quantize(16), "PNG"), "ok", (W, H), "palette PNG"),
        ("palette-transparent.png", pil(Image.fromarray(rgba).quantize(16, method=Image.Quantize.FASTOCTREE), "PNG"),
         "ok", (W, H), "palette PNG with transparent entries"),
        ("bilevel.png", pil(Image.fromarray(gray).convert("1"), "PNG"), "ok", (W, H), "1-bit PNG"),
        ("rgb16.png", cv((bgr.astype(np.uint16) * 257), ".png"), "ok", (W, H), "16-bit RGB PNG"),
        ("gray16.png", cv((gray.astype(np.uint16) * 257), ".png"), "ok", (W, H), "16-bit gray PNG"),
        ("rgba16.png", cv(np.dstack([bgr, alpha()]).astype(np.uint16) * 257, ".png"), "ok", (W, H),
         "16-bit RGBA PNG"),
        ("cmyk.jpg", pil(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "ok", (W, H), "CMYK JPEG"),
        ("rgb.webp", pil(Image.fromarray(rgb), "WEBP", quality=80), "ok", (W, H), "lossy WebP"),
        ("rgba.webp", pil(Image.fromarray(rgba), "WEBP", lossless=True), "ok", (W, H), "lossless WebP with alpha"),
        ("rgb.bmp", cv(bgr, ".bmp"), "ok", (W, H), "24-bit BMP"),
        ("rgb.tiff", pil(Image.fromarray(rgb), "TIFF"), "ok", (W, H), "RGB TIFF"),
        ("cmyk.tiff", pil(Image.fromarray(rgb).convert("CMYK"), "TIFF"), "ok", (W, H), "CMYK TIFF"),
        ("1x1.png", cv(bgr[:1, :1], ".png"), "ok", (1, 1), "1×1 pixel"),
        ("1x1.jpg", cv(bgr[:1, :1], ".jpg"), "ok", (1, 1), "1×1 pixel JPEG"),
        ("1x5000.png", cv(cv2.resize(bgr, (1, 5000)), ".png"), "ok", (1, 5000), "1 wide, 5000 high"),
        ("5000x1.png", cv(cv2.resize(bgr, (5000, 1)), ".png"), "ok", (5000, 1), "5000 wide, 1 high"),
    ]
    for orientation in range(1, 9):
        size = (H, W) if orientation >= 5 else (W, H)
        data = pil(Image.fromarray(rgb), "JPEG", exif=exif_with_orientation(orientation))
        cases.append((f"exif-{orientation}.jpg", data, "ok", size, f"JPEG with EXIF orientation {orientation}"))
    cases += [
        ("exif-6.png", pil(Image.fromarray(rgb), "PNG", exif=exif_with_orientation(6)), "ok", (H, W),
         "PNG with an eXIf chunk, orientation 6"),
        ("exif-8.webp", pil(Image.fromarray(rgb), "WEBP", exif=exif_with_orientation(8), lossless=True), "ok",
         (H, W), "WebP with EXIF orientation 8"),
        ("exif-6.tiff", pil(Image.fromarray(rgb), "TIFF", exif=exif_with_orientation(6)), "ok", (H, W),
         "TIFF with orientation 6"),
        ("exif-6-rgba.png", pil(Image.fromarray(rgba), "PNG", exif=exif_with_orientation(6)), "ok", (H, W),
         "RGBA PNG with orientation 6"),
        ("exif-broken.jpg", broken_exif_jpeg(rgb), "ok", (W, H), "JPEG whose EXIF block is garbage"),
        # Hostile: forged sizes. 413: over the limits; 400: impossible or corrupt.
        ("forged-png-100000x100000.png", png_forged(100_000, 100_000), 413, None, "PNG IHDR claims 10 GP"),
        ("forged-png-2147483647x1.png", png_forged(2**31 - 1, 1), 413, None, "PNG IHDR claims the largest width"),
        ("forged-png-8000x8000.png", png_forged(8000, 8000), 413, None, "PNG IHDR over the pixel limit"),
        ("forged-png-0x0.png", png_forged(0, 0), 400, None, "PNG IHDR claims 0×0"),
        ("forged-png-16bit-palette.png", png_forged(64, 48, depth=16, colour=3), 400, None,
         "PNG IHDR with an impossible depth/colour pair"),
        ("forged-jpeg-65535x65535.jpg", jpeg_forged(65535, 65535), 413, None, "JPEG SOF claims 65535×65535"),
        ("forged-jpeg-60000x100.jpg", jpeg_forged(60000, 100), 413, None, "JPEG SOF over the per-side limit"),
        ("forged-jpeg-0x0.jpg", jpeg_forged(0, 0), 400, None, "JPEG SOF claims 0×0"),
        ("forged-webp-16384x16384.webp", webp_forged(16384, 16384), 413, None, "WebP VP8X canvas of 268 MP"),
        ("forged-bmp-100000x100000.bmp", bmp_forged(100_000, 100_000), 413, None, "BMP header claims 10 GP"),
        ("forged-bmp-negative.bmp", bmp_forged(-64, -48), 413, None,
         "BMP with a negative width (read as 2³² − 64)"),
        ("forged-tiff-100000x100000.tiff", tiff_forged(100_000, 100_000), 413, None, "TIFF tags claim 10 GP"),
        # Regression (fixed in lama/imageio.py): OpenCV allocated, and filled, one whole 1 GB tile
        # for this 300-byte file before noticing the data was missing; now 413 from the header.
        ("forged-tiff-tile-16384x16368.tiff", tiff_tiled(W, H, (16384, 16368)), 413, None,
         "TIFF of 64×48 in 16384×16368 tiles: 1 GB of tile buffer (regression)"),
        # Regressions of issue 12 (fixed in lama/formats.py): refused from their structure.
        ("png-idat-declares-4gb.png", png_declaring_idat_length(), 400, None,
         "83-byte PNG whose IDAT declares 4 GB: OpenCV allocated it, 8.6 GB peak for image + mask (regression)"),
        ("apng-fdat-declares-4gb.png", apng_declaring_fdat_length(), 400, None,
         "APNG whose fdAT declares 4 GB (regression)"),
        ("png-257-text-chunks.png", png_with_text_chunks(257), 400, None,
         "PNG with 257 zTXt chunks after IDAT, over the ancillary-chunk bound (1,000 took libpng 20 s)"),
        ("tiff-duplicate-size-tags.tiff", tiff_with_duplicate_size((20000, 20000), (W, H)), 400, None,
         "TIFF with two size tag pairs: Pillow read 64×48, libtiff decoded 20000×20000 (regression)"),
        ("tiff-129-tags.tiff", tiff_with_tags(129), 400, None, "TIFF with 129 tags, over the bound"),
        ("jpeg-65-scans.jpg", progressive_jpeg(W, H, 65), 400, None,
         "progressive JPEG with 65 scans, over the bound (20,000 took 46 s)"),
        ("tiff-jpeg-strip-65-scans.tiff", tiff_with_jpeg_strip(progressive_jpeg(W, H, 65)), 400, None,
         "TIFF whose JPEG strip has 65 scans: libtiff is held to the same bound"),
        ("jpeg-junk-between-segments.jpg", jpeg_with_junk(), 400, None,
         "JPEG with bytes between two segments (Pillow skips them one at a time)"),
        # ... and the same shapes within the bounds still decode.
        ("apng.png", apng(), "ok", (W, H), "animated PNG, two frames: the first is the image"),
        ("png-256-text-chunks.png", png_with_text_chunks(256, after_idat=False), "ok", (W, H),
         "PNG with 256 zTXt chunks before IDAT, the most allowed"),
        ("tiff-128-tags.tiff", tiff_with_tags(128), "ok", (W, H), "gray TIFF with 128 tags, the most allowed"),
        ("jpeg-64-scans.jpg", progressive_jpeg(W, H, 64), "ok", (W, H),
         "progressive JPEG with 64 scans, the most allowed"),
        ("tiff-jpeg-strip-64-scans.tiff", tiff_with_jpeg_strip(progressive_jpeg(W, H, 64)), "ok", (W, H),
         "TIFF whose JPEG strip has 64 scans, the most allowed"),
        ("truncated.png", cv(bgr, ".png")[:300], 400, None, "PNG cut in the pixel data"),
        ("truncated.jpg", cv(bgr, ".jpg")[:400], 400, None, "JPEG cut in the scan"),
        ("header-only.jpg", cv(bgr, ".jpg")[:200], 400, None, "JPEG cut before the scan"),
        ("signature-only.png", b"\x89PNG\r\n\x1a\n", 400, None, "PNG signature and nothing else"),
        ("image.gif", pil(Image.fromarray(rgb).quantize(16), "GIF"), 400, None, "GIF: not accepted"),
        ("text.txt", b"I am not an image, only a text file\n", 400, None, "text"),
        ("empty.bin", b"", 400, None, "empty file"),
    ]
    return cases


def broken_exif_jpeg(rgb: np.ndarray) -> bytes:
    """A JPEG with an APP1 'Exif' segment whose TIFF structure is garbage."""
    data = cv(rgb[:, :, ::-1], ".jpg")
    body = b"Exif\0\0" + b"MM\0*" + b"\xff" * 40
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return data[:2] + segment + data[2:]


def masks() -> list[tuple[str, bytes, str]]:
    """(file, bytes, note): the same painted box, W×H, in every mode a mask can come in."""
    m = painted()
    rgb = np.dstack([m, np.zeros_like(m), m])  # magenta paint on black
    layer = np.dstack([np.full((H, W, 3), (255, 0, 255), np.uint8), m])  # paint on a transparent canvas
    return [
        ("mask-L.png", cv(m, ".png"), "8-bit gray"),
        ("mask-1.png", pil(Image.fromarray(m).convert("1"), "PNG"), "1-bit"),
        ("mask-LA.png", pil(Image.fromarray(np.dstack([np.full_like(m, 255), m]), "LA"), "PNG"), "gray + alpha"),
        ("mask-RGB.png", cv(rgb[:, :, ::-1], ".png"), "RGB, coloured paint"),
        ("mask-RGBA.png", cv(layer[:, :, [2, 1, 0, 3]], ".png"), "RGBA, the alpha is the mask"),
        ("mask-RGBA-opaque.png", cv(np.dstack([rgb[:, :, ::-1], np.full_like(m, 255)]), ".png"), "RGBA, opaque"),
        ("mask-P.png", pil(Image.fromarray(rgb).quantize(2), "PNG"), "palette"),
        ("mask-I16.png", cv(m.astype(np.uint16) * 257, ".png"), "16-bit gray"),
        ("mask-L.jpg", cv(m, ".jpg"), "gray JPEG"),
        ("mask-L.webp", pil(Image.fromarray(m), "WEBP", lossless=True), "WebP"),
        ("mask-L.bmp", cv(m, ".bmp"), "BMP"),
        ("mask-L.tiff", pil(Image.fromarray(m), "TIFF"), "TIFF"),
        ("mask-empty.png", cv(np.zeros_like(m), ".png"), "nothing painted"),
        ("mask-full.png", cv(np.full_like(m, 255), ".png"), "everything painted"),
    ]


def main() -> None:
    manifest = []
    written = set()
    for name, data, expect, size, note in images():
        manifest.append({"file": name, "role": "image", "expect": expect, "size": list(size) if size else None,
                         "note": note})
        written.add(name)
        (HERE / name).write_bytes(data)
    for name, data, note in masks():
        manifest.append({"file": name, "role": "mask", "expect": "ok", "size": [W, H], "note": note})
        written.add(name)
        (HERE / name).write_bytes(data)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    ours = written | {"manifest.json", Path(__file__).name}
    stale = [p.name for p in HERE.iterdir() if p.is_file() and p.name not in ours]
    total = sum((HERE / name).stat().st_size for name in written)
    print(f"{len(written)} files, {total / 1024:.0f} KB in {HERE}", file=sys.stderr)
    if stale:
        print(f"not written by this script (remove them?): {', '.join(sorted(stale))}", file=sys.stderr)


if __name__ == "__main__":
    main()
