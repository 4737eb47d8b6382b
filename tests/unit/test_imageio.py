"""lama.imageio: decoding untrusted uploads, masks, limits, encoding and atomic writes."""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from lama import imageio
from lama.errors import OptionError
from lama.imageio import (
    IMAGE_SUFFIXES,
    ImageError,
    ImageLimits,
    ImageTooLargeError,
    decode_image,
    decode_mask,
    encode_image,
    read_image,
    read_mask,
    write_image_atomic,
)

ORIENTATION = 0x0112


def pil_bytes(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def colourful(height: int = 20, width: int = 30) -> np.ndarray:
    """An RGB image where every pixel differs and R, G, B differ from each other."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 8 % 256, y * 12 % 256, (x + y) * 5 % 256]).astype(np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def forged_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header that claims a huge size, followed by almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------- layouts


def test_rgb_png_decodes_to_rgb_not_bgr():
    pixels = colourful()
    decoded = decode_image(pil_bytes(Image.fromarray(pixels), "PNG"))
    assert decoded.dtype == np.uint8 and decoded.shape == (20, 30, 3)
    np.testing.assert_array_equal(decoded, pixels)


def test_gray_png_stays_two_dimensional():
    pixels = colourful()[:, :, 0]
    decoded = decode_image(pil_bytes(Image.fromarray(pixels), "PNG"))
    np.testing.assert_array_equal(decoded, pixels)


def test_rgba_png_keeps_alpha_in_rgba_order():
    pixels = np.dstack([colourful(), np.arange(600, dtype=np.uint8).reshape(20, 30)])
    decoded = decode_image(pil_bytes(Image.fromarray(pixels, "RGBA"), "PNG"))
    np.testing.assert_array_equal(decoded, pixels)


def test_16_bit_gray_png_is_scaled_not_truncated():
    values = np.array([[0, 257, 257 * 200, 65535, 32896, 255]], np.uint16)
    decoded = decode_image(pil_bytes(Image.fromarray(values), "PNG"))
    assert decoded.dtype == np.uint8
    # round(v * 255 / 65535); truncating to the low byte would give 0, 1, 200, 255, 128, 255
    np.testing.assert_array_equal(decoded, [[0, 1, 200, 255, 128, 1]])


def test_16_bit_rgb_png_is_scaled_and_rgb():
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0] = 65535  # red
    rgb16[..., 2] = 257 * 10
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    assert ok
    decoded = decode_image(encoded.tobytes())
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0, 0], [255, 0, 10])


def test_palette_png_with_transparency_becomes_rgba():
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([255, 0, 0, 0, 255, 0])
    palette_image.putpixel((3, 1), 1)
    decoded = decode_image(pil_bytes(palette_image, "PNG", transparency=1))
    assert decoded.shape == (2, 4, 4)
    np.testing.assert_array_equal(decoded[0, 0], [255, 0, 0, 255])
    assert decoded[1, 3, 3] == 0  # palette entry 1 is the transparent one


def test_palette_png_without_transparency_becomes_rgb():
    palette_image = Image.new("P", (4, 2), 1)
    palette_image.putpalette([255, 0, 0, 0, 255, 0])
    decoded = decode_image(pil_bytes(palette_image, "PNG"))
    assert decoded.shape == (2, 4, 3)
    np.testing.assert_array_equal(decoded[0, 0], [0, 255, 0])


def test_gray_alpha_png_becomes_rgba():
    decoded = decode_image(pil_bytes(Image.new("LA", (3, 2), (100, 40)), "PNG"))
    assert decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded[1, 2], [100, 100, 100, 40])


def test_one_bit_png_spans_0_to_255():
    bits = Image.new("1", (4, 1), 0)
    bits.putpixel((2, 0), 1)
    np.testing.assert_array_equal(decode_image(pil_bytes(bits, "PNG")), [[0, 0, 255, 0]])


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    cmyk = Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK")
    decoded = decode_image(pil_bytes(cmyk, fmt))
    assert decoded.shape == (16, 16, 3)
    np.testing.assert_allclose(decoded[8, 8], [255, 0, 0], atol=6)


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_every_listed_suffix_is_readable(tmp_path, suffix):
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix[1:].upper())
    path = tmp_path / f"picture{suffix}"
    path.write_bytes(pil_bytes(Image.fromarray(colourful()), fmt))
    assert read_image(path).shape == (20, 30, 3)


# ------------------------------------------------------------------------- which decoder


LAYOUTS = [  # (id, file, whether simplejpeg decodes it)
    ("jpeg-rgb", lambda: pil_bytes(Image.fromarray(colourful()), "JPEG"), True),
    ("jpeg-gray", lambda: pil_bytes(Image.fromarray(colourful()[:, :, 0]), "JPEG"), True),
    ("jpeg-progressive", lambda: pil_bytes(Image.fromarray(colourful()), "JPEG", progressive=True), True),
    ("jpeg-cmyk", lambda: pil_bytes(Image.fromarray(colourful()).convert("CMYK"), "JPEG"), False),
    ("png-rgb", lambda: pil_bytes(Image.fromarray(colourful()), "PNG"), False),
    ("webp", lambda: pil_bytes(Image.fromarray(colourful()), "WEBP"), False),
    ("tiff", lambda: pil_bytes(Image.fromarray(colourful()), "TIFF"), False),
]


@pytest.mark.parametrize(("build", "by_simplejpeg"), [case[1:] for case in LAYOUTS], ids=[c[0] for c in LAYOUTS])
def test_photos_are_decoded_by_simplejpeg_the_rest_by_opencv(monkeypatch, build, by_simplejpeg):
    """simplejpeg takes the JPEGs photos come as (it decodes them faster than OpenCV), into the
    same pixels in RGB order; the others go to OpenCV (CMYK, which simplejpeg cannot convert)."""
    calls = []
    real = imageio._decode_jpeg_into
    monkeypatch.setattr(imageio, "_decode_jpeg_into", lambda data, out: calls.append(out.shape) or real(data, out))
    data = build()
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    decoded = decode_image(data)
    assert bool(calls) == by_simplejpeg
    if by_simplejpeg:
        expected = opencv if opencv.ndim == 2 else cv2.cvtColor(opencv, cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decoded, expected)


def test_simplejpeg_fills_only_an_array_of_the_checked_size():
    """The second line behind the walk: had a JPEG decoded to another size than the one checked,
    the decoder refuses it rather than allocate what the file says."""
    checked = imageio._check(pil_bytes(Image.fromarray(colourful()), "JPEG"), imageio.DEFAULT_LIMITS)
    assert checked.shape == (20, 30, 3)
    for wrong in ((20, 31, 3), (10, 15, 3), (40, 60, 3), (20, 30, 4)):
        with pytest.raises(ImageError, match="truncated or corrupt"):
            imageio._decode_pixels(dataclasses.replace(checked, shape=wrong))


# ------------------------------------------------------------------------- orientation


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return exif.tobytes()


def test_jpeg_exif_orientation_6_rotates_clockwise():
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:4, :4] = 255  # mark the stored top-left corner
    data = pil_bytes(Image.fromarray(pixels), "JPEG", quality=95, exif=exif_with_orientation(6))
    decoded = decode_image(data)
    assert decoded.shape == (30, 20, 3)  # 90° turn: width and height swap
    # Turning clockwise carries the top-left corner to the top-right.
    assert decoded[1, 18].min() > 200
    assert decoded[1, 1].max() < 50


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})]
)
def test_every_orientation_matches_pillow_exif_transpose(fmt, params, orientation):
    data = pil_bytes(
        Image.fromarray(colourful()), fmt, exif=exif_with_orientation(orientation), **params
    )
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(decode_image(data), upright)


# ------------------------------------------------------------------------- hostile input


def test_forged_huge_png_is_refused_from_the_header():
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(forged_png(16_000, 16_000))
    assert time.perf_counter() - started < 0.5
    message = str(caught.value)
    assert "16000×16000" in message and "256 MP" in message
    assert "the limit is 40 MP" in message


def test_limits_above_opencv_caps_act_as_the_caps():
    """OpenCV refuses to decode beyond its caps (lama.opencv_caps): a configured limit above
    them would let a file through the checks only to fail as 'corrupt' in the decoder."""
    generous = ImageLimits(max_pixels=10**12, max_side=10**6)
    with pytest.raises(ImageTooLargeError, match=r"100000×100000, the limit is 16384 pixels per side"):
        decode_image(forged_png(100_000, 100_000), generous)
    with pytest.raises(ImageTooLargeError, match=r"16000×16000 = 256 MP, the limit is 40 MP"):
        decode_image(forged_png(16_000, 16_000), generous)


def test_side_limit_refuses_a_thin_strip():
    with pytest.raises(ImageTooLargeError, match=r"20000×10, the limit is 16384 pixels per side"):
        decode_image(forged_png(20_000, 10))


def test_forged_huge_webp_is_refused_with_the_limit():
    # VP8X header declaring a 16000×16000 canvas: Pillow refuses it before allocating.
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    vp8x += (16000 - 1).to_bytes(3, "little") + (16000 - 1).to_bytes(3, "little")
    data = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    with pytest.raises(ImageError, match="limit is 40 MP"):
        decode_image(data)


def test_file_size_limit():
    data = pil_bytes(Image.fromarray(colourful()), "BMP")
    with pytest.raises(ImageError, match=r"file is 1\.8 KB, the limit is 1000 bytes"):
        decode_image(data, ImageLimits(max_bytes=1000))


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_pixels"):
        ImageLimits(max_pixels=0)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("JPEG", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {})],
)
@pytest.mark.parametrize("keep", [0.5, -1])
def test_truncated_files_are_refused(fmt, params, keep):
    data = pil_bytes(Image.fromarray(colourful(64, 64)), fmt, **params)
    cut = data[: int(len(data) * keep)] if keep > 0 else data[:keep]
    with pytest.raises(ImageError, match="image is truncated or corrupt"):
        decode_image(cut)


def jpeg_with_thumbnail() -> bytes:
    """A JPEG whose EXIF block holds a complete small JPEG, end marker included."""
    thumbnail = pil_bytes(Image.new("RGB", (8, 8), (9, 9, 9)), "JPEG")
    return pil_bytes(Image.fromarray(colourful(64, 64)), "JPEG", exif=b"Exif\x00\x00" + thumbnail)


def test_truncated_jpeg_is_refused_despite_the_thumbnail_end_marker():
    data = jpeg_with_thumbnail()
    assert decode_image(data).shape == (64, 64, 3)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) - 200])


def test_jpeg_with_trailing_data_is_accepted():
    # Phones append videos or depth maps after the end marker ("motion photos").
    data = pil_bytes(Image.fromarray(colourful()), "JPEG") + b"\x00\x00ftypmp42" + b"\x55" * 500
    assert decode_image(data).shape == (20, 30, 3)


def test_random_bytes_are_not_an_image():
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="not an image: expected PNG, JPEG, WebP, BMP or TIFF"):
        decode_image(noise)


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("AVIF", "AVIF"), ("PDF", "PDF")])
def test_a_picture_format_not_decoded_here_is_named_in_the_refusal(fmt, name):
    data = pil_bytes(Image.fromarray(colourful()), fmt)
    with pytest.raises(ImageError, match=rf"^{name} is not supported: expected PNG, JPEG, WebP, BMP or TIFF$"):
        decode_image(data)


@pytest.mark.parametrize(("head", "name"), [
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC (HEIF)"),  # an iPhone's photo
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"8BPS\x00\x01", "Photoshop (PSD)"),
    (b'\xef\xbb\xbf<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
])
def test_formats_pillow_cannot_write_here_are_named_by_their_first_bytes(head, name):
    with pytest.raises(ImageError, match=rf"^{re.escape(name)} is not supported"):
        decode_image(head + b"\x00" * 64)


def test_garbage_behind_a_png_signature_is_corrupt():
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x07" * 100)


def test_empty_data():
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


# ------------------------------------------------------------------------- masks


def test_gray_mask_keeps_its_values():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    mask[2, 2] = 90  # an anti-aliased edge pixel
    np.testing.assert_array_equal(decode_mask(pil_bytes(Image.fromarray(mask), "PNG")), mask)


def test_colour_mask_uses_any_channel():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[1, 1] = (200, 0, 0)  # red paint
    rgb[5, 5] = (0, 0, 30)  # faint blue paint
    mask = decode_mask(pil_bytes(Image.fromarray(rgb), "PNG"))
    assert mask.shape == (8, 8)
    assert mask[1, 1] == 200 and mask[5, 5] == 30
    assert np.count_nonzero(mask) == 2


def test_transparent_canvas_mask_uses_alpha_even_for_black_paint():
    rgba = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent
    rgba[3:5, 3:5, 3] = 255  # opaque black strokes
    mask = decode_mask(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(mask, rgba[:, :, 3])


def test_opaque_rgba_mask_uses_colour():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2, 6, :3] = 255
    mask = decode_mask(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert mask[2, 6] == 255 and np.count_nonzero(mask) == 1


# ------------------------------------------------------------------------- files


def test_read_image_and_mask_from_files(tmp_path):
    image_path, mask_path = tmp_path / "photo.jpg", tmp_path / "mask.png"
    image_path.write_bytes(pil_bytes(Image.fromarray(colourful()), "JPEG"))
    mask_path.write_bytes(pil_bytes(Image.new("L", (30, 20), 255), "PNG"))
    assert read_image(image_path).shape == (20, 30, 3)
    assert read_mask(str(mask_path)).min() == 255


def test_read_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError, match=f"cannot read {missing}"):
        read_image(missing)


def test_read_error_of_a_bad_file_names_the_path(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(ImageError, match=f"^{path}: not an image"):
        read_mask(path)


def test_read_refuses_a_large_file_before_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * 5000)
    with pytest.raises(ImageError, match="file is 4.9 KB, the limit is 4 KB"):
        read_image(path, ImageLimits(max_bytes=4096))


# ------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    "pixels",
    [colourful(), colourful()[:, :, 1], np.dstack([colourful(), np.full((20, 30), 7, np.uint8)])],
    ids=["rgb", "gray", "rgba"],
)
def test_png_round_trip_is_exact(pixels):
    encoded = encode_image(pixels, "png")
    assert encoded.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_image(encoded), pixels)


def test_jpeg_is_rgb_and_close():
    flat = np.zeros((16, 16, 3), np.uint8)
    flat[...] = (220, 30, 90)
    encoded = encode_image(flat, "jpg", quality=95)
    assert encoded.startswith(b"\xff\xd8\xff")
    np.testing.assert_allclose(decode_image(encoded)[8, 8], [220, 30, 90], atol=4)


def test_jpeg_composites_rgba_on_white():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, hidden under transparency on the left
    rgba[:, 8:, 3] = 255
    decoded = decode_image(encode_image(rgba, "jpeg", quality=100))
    assert decoded.shape == (16, 16, 3)
    np.testing.assert_allclose(decoded[8, 2], [255, 255, 255], atol=4)  # transparent -> white
    np.testing.assert_allclose(decoded[8, 13], [255, 0, 0], atol=4)  # opaque red stays red


def test_webp_keeps_alpha():
    rgba = np.dstack([colourful(), np.full((20, 30), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    encoded = encode_image(rgba, "webp", quality=90)
    assert encoded[8:12] == b"WEBP"
    decoded = decode_image(encoded)
    assert decoded.shape == (20, 30, 4) and decoded[0, 0, 3] == 0


def test_quality_changes_jpeg_size():
    noisy = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_image(noisy, "jpeg", quality=30)) < len(encode_image(noisy, "jpeg", 95))


def test_encode_rejects_user_choices():
    with pytest.raises(OptionError, match="format must be one of png, jpeg, webp, jpg, same, got 'gif'"):
        encode_image(colourful(), "gif")
    with pytest.raises(ImageError, match="quality"):
        encode_image(colourful(), "jpeg", quality=0)
    with pytest.raises(ImageError, match="WEBP stores at most 16383"):
        encode_image(np.zeros((1, 16384, 3), np.uint8), "webp")


def test_encode_rejects_malformed_arrays_as_programming_errors():
    with pytest.raises(ValueError) as caught:
        encode_image(np.zeros((4, 4, 3), np.float32))
    assert not isinstance(caught.value, ImageError)
    with pytest.raises(ValueError, match="shape"):
        encode_image(np.zeros((4, 4, 2), np.uint8))


def test_write_image_atomic_picks_format_from_suffix(tmp_path):
    png = write_image_atomic(tmp_path / "a.png", colourful())
    jpeg = write_image_atomic(tmp_path / "b.JPG", colourful())
    assert png.read_bytes().startswith(b"\x89PNG")
    assert jpeg.read_bytes().startswith(b"\xff\xd8\xff")
    np.testing.assert_array_equal(read_image(png), colourful())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG"]


def test_write_image_atomic_replaces_existing_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_image_atomic(target, colourful())
    np.testing.assert_array_equal(read_image(target), colourful())


def test_write_image_atomic_unknown_suffix_writes_nothing(tmp_path):
    with pytest.raises(ImageError, match=r"\.png, \.jpg, \.jpeg or \.webp"):
        write_image_atomic(tmp_path / "out.gif", colourful())
    assert list(tmp_path.iterdir()) == []


def test_write_image_atomic_failure_leaves_no_temporary_file(tmp_path):
    blocker = tmp_path / "out.png"
    blocker.mkdir()
    (blocker / "keep").write_text("x")  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        write_image_atomic(blocker, colourful())
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert blocker.is_dir()


def test_written_file_has_ordinary_permissions(tmp_path):
    reference = tmp_path / "reference"
    reference.write_bytes(b"")  # created with the umask, as any program's output is
    path = write_image_atomic(tmp_path / "out.webp", colourful())
    # A temporary file from mkstemp would leave the result at 0600.
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777
