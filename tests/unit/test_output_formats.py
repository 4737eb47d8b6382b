"""Output formats, result names and the metadata a result carries from its upload: the one
table (lama.output_formats), the names (service.storage) and the codecs (lama.imageio, lama.png)."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from PIL import ExifTags
from support.app import make_case
from support.photos import MAKE, ORIENTATION, SRGB, camera_exif, opened, photo_bytes

from lama import imageio, metadata, png
from lama.errors import OptionError
from lama.output_formats import OUTPUT_FORMATS, for_suffix, output_format
from service.storage import RESULT_NAME, OutputStore, result_name

# ------------------------------------------------------------------ the table


@pytest.mark.parametrize(("name", "upload", "expected"), [
    ("jpg", None, "jpeg"), ("JPEG", None, "jpeg"), ("png", "JPEG", "png"), ("webp", None, "webp"),
    ("same", "JPEG", "jpeg"), ("same", "WEBP", "webp"), ("same", "PNG", "png"),
    ("same", "TIFF", "png"), ("same", "BMP", "png"), ("same", None, "png"),
])
def test_format_names_as_people_spell_them(name, upload, expected):
    assert output_format(name, upload) is OUTPUT_FORMATS[expected]


def test_an_unknown_format_names_the_choices():
    with pytest.raises(OptionError, match=r"format must be one of png, jpeg, webp, jpg, same, got 'gif'"):
        output_format("gif")


def test_file_suffixes_name_their_format():
    assert [for_suffix(s).name for s in (".JPG", ".jpeg", ".png", ".WebP")] == ["jpeg", "jpeg", "png", "webp"]
    assert for_suffix(".tif") is None


# ------------------------------------------------------------------ result names


@pytest.mark.parametrize(("upload", "expected"), [
    ("holiday.JPG", "holiday_repaired.jpg"), ("../../etc/passwd", "passwd_repaired.jpg"),
    ("C:\\Users\\me\\p.png", "p_repaired.jpg"), ("a b:c?.png", "a_b_c_repaired.jpg"),
    ("", "photo_repaired.jpg"), (None, "photo_repaired.jpg"), (".bashrc", "bashrc_repaired.jpg"),
    ("Ferien Müller.png", "Ferien_Muller_repaired.jpg"), ("照片.png", "photo_repaired.jpg"),
    ("x" * 300 + ".png", "x" * 120 + "_repaired.jpg"),
])
def test_results_are_named_after_the_upload_and_never_choose_a_path(upload, expected):
    assert result_name(upload, OUTPUT_FORMATS["jpeg"]) == expected


def test_named_results_are_this_stores_own_for_retention(tmp_path):
    store = OutputStore(tmp_path, keep_bytes=1)
    saved = store.save(b"x" * 10, OUTPUT_FORMATS["webp"], "../../holiday.jpg")
    day, name = saved.split("/")
    assert re.fullmatch(r"\d{6}-[0-9a-f]{12}-holiday_repaired\.webp", name) and RESULT_NAME.fullmatch(name)
    foreign = tmp_path / day / "holiday_repaired.webp"  # someone's file in the folder: not ours
    foreign.write_bytes(b"y")
    store.sweep()
    assert not (tmp_path / saved).exists() and foreign.exists()


# ------------------------------------------------------------------ metadata through the codecs


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_exif_and_the_profile_reach_each_format_with_the_orientation_normalised(fmt):
    upload = photo_bytes("JPEG", exif=camera_exif(6), icc_profile=SRGB, quality=95)
    photo = imageio.decode_photo(upload)
    assert photo.pixels.shape == (64, 48, 3) and photo.source.format == "JPEG"
    result = opened(imageio.encode_image(photo.pixels, fmt, metadata=photo.source.metadata))
    assert result.size == (48, 64)
    exif = result.getexif()
    assert exif[ORIENTATION] == 1, "the pixels are upright already: a viewer must not turn them again"
    assert exif[MAKE] == "Camera"
    details = exif.get_ifd(ExifTags.IFD.Exif)
    assert (details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight]) == (48, 64)
    assert result.info["icc_profile"] == SRGB
    # Decoded again, nothing turns: the result reads as it was written.
    assert imageio.decode_image(imageio.encode_image(photo.pixels, fmt, metadata=photo.source.metadata)).shape \
        == (64, 48, 3)


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """EXIF as cameras lay it out: IFD0 (orientation 1), then IFD1 pointing at a JPEG thumbnail."""
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", ORIENTATION, 3, 1, 1) + struct.pack("<I", 26)
    ifd1 = (struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, 56)  # JPEGInterchangeFormat
            + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail)) + struct.pack("<I", 0))
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd0 + ifd1 + thumbnail


def test_the_thumbnail_is_not_carried():
    thumbnail = photo_bytes("JPEG", size=(8, 6))
    upload = photo_bytes("JPEG", exif=exif_with_thumbnail(thumbnail))
    assert opened(upload).getexif().get_ifd(ExifTags.IFD.IFD1), "the upload has a thumbnail directory"
    carried = imageio.decode_photo(upload).source.metadata.exif
    assert carried is not None and thumbnail not in carried, "it would still show what the repair removed"


def test_our_pngs_with_metadata_are_still_read_on_all_cores():
    image, _ = make_case()
    data = imageio.encode_image(image, "png", metadata=metadata.Metadata(camera_exif(1).tobytes(), SRGB))
    assert np.array_equal(png.decode(data), image), "lama.png's reader steps over its own metadata chunks"


def test_what_cannot_be_carried_is_dropped_whole_and_the_photo_still_decodes():
    huge_profile = SRGB + bytes(metadata.MAX_ICC_BYTES)
    photo = imageio.decode_photo(photo_bytes("JPEG", icc_profile=huge_profile))
    assert photo.source.metadata.icc_profile is None and photo.pixels.shape == (48, 64, 3)
    broken = imageio.decode_photo(photo_bytes("JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"))
    assert broken.source.metadata.exif is None


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_profile_for_other_pixels_than_the_result_s_is_not_carried(fmt):
    """A CMYK photo's profile once its pixels are RGB (a viewer would read them through it), an
    RGB profile on gray pixels: left out; a gray photo's GRAY profile stays."""
    cmyk_profile = SRGB[:16] + b"CMYK" + SRGB[20:]  # the data colour space is all that is read
    gray_profile = SRGB[:16] + b"GRAY" + SRGB[20:]
    cmyk = imageio.decode_photo(photo_bytes("JPEG", icc_profile=cmyk_profile, mode="CMYK"))
    assert cmyk.pixels.shape == (48, 64, 3) and cmyk.source.metadata.icc_profile == cmyk_profile
    for pixels, profile, carried in ((cmyk.pixels, cmyk_profile, None), (cmyk.pixels, SRGB, SRGB),
                                     (cmyk.pixels[..., 0].copy(), SRGB, None),
                                     (cmyk.pixels[..., 0].copy(), gray_profile, gray_profile)):
        result = opened(imageio.encode_image(pixels, fmt, metadata=metadata.Metadata(icc_profile=profile)))
        assert result.info.get("icc_profile") == carried, (pixels.ndim, profile[16:20])


def test_a_tiff_gives_its_profile_but_not_its_structure_tags():
    photo = imageio.decode_photo(photo_bytes("TIFF", icc_profile=SRGB))
    assert photo.source.metadata == metadata.Metadata(None, SRGB)
