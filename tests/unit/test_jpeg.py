"""lama.jpeg: JPEG written in strips joined by restart markers reads back, in every decoder, as the
picture encoded whole by libjpeg-turbo; its metadata is where readers look for it.

Correctness only; speed is printed by `python tools/codec_bench.py` (rows `JPEG lama.jpeg`)."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
import simplejpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lama import imageio, jpeg, metadata, parallel
from loadreport import images

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=120,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def small_strips(monkeypatch):
    """Strips of a few MCU rows, so that small pictures take the joined path with many."""
    monkeypatch.setattr(jpeg, "MIN_STRIP_PIXELS", 64)


def photo(height: int, width: int, gray: bool = False, seed: int = 0) -> np.ndarray:
    picture = cv2.cvtColor(images.photo(max(width, 2), max(height, 2), seed)[:height, :width], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(picture[:, :, 1]) if gray else picture


def whole(picture: np.ndarray, quality: int) -> bytes:
    """The picture encoded in one piece by libjpeg-turbo, as lama.jpeg's strips are."""
    gray = picture.ndim == 2
    return simplejpeg.encode_jpeg(picture[:, :, None] if gray else picture, quality, "GRAY" if gray else "RGB",
                                  "Gray" if gray else jpeg.CHROMA_SUBSAMPLING)


def decoded_by_all(data: bytes, gray: bool) -> list[np.ndarray]:
    """The pixels as libjpeg-turbo (simplejpeg), Pillow and OpenCV read them."""
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    turbo = simplejpeg.decode_jpeg(data, "GRAY" if gray else "RGB")
    return [turbo[:, :, 0] if gray else turbo, np.asarray(Image.open(io.BytesIO(data))),
            opencv if gray else opencv[:, :, ::-1]]


def markers(data: bytes) -> list[bytes]:
    """The marker of every segment before the scan, then every marker inside it (RSTn, EOI)."""
    found, position = [], 2
    while data[position + 1] != 0xDA:
        found.append(data[position:position + 2])
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    found.append(b"\xff\xda")
    scan = data[position:]
    found += [scan[i:i + 2] for i in range(len(scan) - 1) if scan[i] == 0xFF and scan[i + 1] not in (0x00, 0xFF)][1:]
    return found


@FUZZ
@given(height=st.integers(1, 140), width=st.integers(1, 90), gray=st.booleans(), quality=st.integers(1, 100))
def test_strips_read_back_as_the_picture_encoded_whole_everywhere(small_strips, height, width, gray, quality):
    picture = photo(height, width, gray, seed=height * width)
    data = jpeg.encode(picture, quality)
    reference = decoded_by_all(whole(picture, quality), gray)
    for ours, theirs in zip(decoded_by_all(data, gray), reference, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    strips = -(-height // jpeg.strip_rows(width, height, 8 if gray else 16))
    found = markers(data)
    assert found.count(b"\xff\xdd") == (strips > 1)  # DRI only where there are restarts
    assert [marker for marker in found if 0xD0 <= marker[1] <= 0xD7] == \
        [bytes((0xFF, 0xD0 + index % 8)) for index in range(strips - 1)]


def test_a_large_photo_is_cut_into_many_strips_and_is_as_small_as_whole():
    picture = photo(1920, 2560)
    data = jpeg.encode(picture, 95)
    # 16 strips of 120 rows, rounded up to whole MCU rows: 15 of 128, joined by 14 markers.
    assert [m for m in markers(data) if 0xD0 <= m[1] <= 0xD7] == [bytes((0xFF, 0xD0 + i % 8)) for i in range(14)]
    assert abs(len(data) - len(whole(picture, 95))) < 0.01 * len(data)


def test_a_small_picture_is_one_strip_in_the_calling_thread(monkeypatch):
    def refuse():
        raise AssertionError("one strip must not use the pool")
    monkeypatch.setattr(parallel.pieces, "get", refuse)
    picture = photo(48, 64)
    assert decoded_by_all(jpeg.encode(picture, 90), False)[0].tolist() == \
        decoded_by_all(whole(picture, 90), False)[0].tolist()


def test_restart_intervals_never_exceed_what_dri_counts():
    # 65,535 columns of 4:2:0 MCUs (4,096 a row): at most 15 MCU rows between two markers.
    assert jpeg.strip_rows(65_535, 4_000, 16) == 15 * 16
    assert jpeg.strip_rows(2560, 1920, 16) == 128 and jpeg.strip_rows(640, 480, 16) == 480


def test_exif_and_the_icc_profile_are_read_back_by_pillow(small_strips):
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    exif[0x0112] = 1
    raw_exif = exif.tobytes()
    # 153,600 bytes (three APP2 chunks) of a profile for RGB pixels (its colour space at bytes 16-19).
    profile = (bytes(16) + b"RGB " + bytes(range(256)) * 600)[:153_600]
    data = imageio.encode_image(photo(64, 80), "jpeg", 92, metadata.Metadata(raw_exif, profile))
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.getexif()[0x010F] == "Maker"
        assert opened.info["icc_profile"] == profile
    assert markers(data)[:5] == [b"\xff\xe0", b"\xff\xe1", b"\xff\xe2", b"\xff\xe2", b"\xff\xe2"]


def test_rgba_is_composited_on_white_and_a_too_large_profile_is_an_image_error():
    rgba = np.zeros((32, 32, 4), np.uint8)  # all transparent: white once composited
    assert decoded_by_all(imageio.encode_image(rgba, "jpeg"), False)[0].min() >= 250
    with pytest.raises(imageio.ImageError, match="could not encode"):
        too_large = bytes(16) + b"RGB " + bytes(256 * 65_519 - 20)
        imageio.encode_image(photo(16, 16), "jpeg", metadata=metadata.Metadata(None, too_large))
