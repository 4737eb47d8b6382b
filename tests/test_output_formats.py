"""Output formats, result names and the metadata a result carries from its upload: the table,
the codecs (lama.imageio, lama.png) and the API's form fields as a client sends them."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms
from test_api import make_case, make_settings, serve

from lama import imageio, metadata, png
from lama.engine import InpaintEngine
from lama.output_formats import OUTPUT_FORMATS, for_suffix, output_format
from monitor.metrics import ServiceMetrics
from service.jobs import JobQueue
from service.pipeline import RepairService
from service.storage import RESULT_NAME, OutputStore, result_name
from webui.editor import EditorBackend

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAKE, ORIENTATION = ExifTags.Base.Make, ExifTags.Base.Orientation


def camera_exif(orientation=6):
    """EXIF as a camera writes it: a make, an orientation, the Exif directory's pixel size and a
    thumbnail directory (which would still show what a repair removed)."""
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


# ------------------------------------------------------------------ the table


@pytest.mark.parametrize(("name", "upload", "expected"), [
    ("jpg", None, "jpeg"), ("JPEG", None, "jpeg"), ("png", "JPEG", "png"), ("webp", None, "webp"),
    ("same", "JPEG", "jpeg"), ("same", "WEBP", "webp"), ("same", "PNG", "png"),
    ("same", "TIFF", "png"), ("same", "BMP", "png"), ("same", None, "png"),
])
def test_format_names_as_people_spell_them(name, upload, expected):
    assert output_format(name, upload) is OUTPUT_FORMATS[expected]


def test_an_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match=r"format must be one of png, jpeg, webp, jpg, same, got 'gif'"):
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


def test_a_tiff_gives_its_profile_but_not_its_structure_tags():
    photo = imageio.decode_photo(photo_bytes("TIFF", icc_profile=SRGB))
    assert photo.source.metadata == metadata.Metadata(None, SRGB)


# ------------------------------------------------------------------ the API's form fields


@pytest.fixture(scope="module")
def client(tiny_dir, tmp_path_factory):
    with serve(make_settings(tiny_dir, tmp_path_factory.mktemp("formats"))) as client:
        yield client


def send(client, image_bytes, filename="holiday.jpg", size=(64, 48), **fields):
    _, mask = make_case(*size, box=(10, 10, 20, 20))
    mask_bytes = imageio.encode_image(mask, "png")
    return client.post("/api/v1/inpaint", files={"image": (filename, image_bytes, "application/octet-stream"),
                                                 "mask": ("mask.png", mask_bytes, "image/png")},
                       data={key: str(value) for key, value in fields.items()})


@pytest.mark.parametrize(("upload_fmt", "field", "media_type", "extension"), [
    ("JPEG", "jpg", "image/jpeg", "jpg"), ("JPEG", "same", "image/jpeg", "jpg"),
    ("WEBP", "same", "image/webp", "webp"), ("BMP", "same", "image/png", "png"),
])
def test_the_api_accepts_jpg_and_same(client, upload_fmt, field, media_type, extension):
    response = send(client, photo_bytes(upload_fmt), "holiday.jpg", format=field)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["content-disposition"] == f'inline; filename="holiday_repaired.{extension}"'
    assert response.headers["x-saved-as"].endswith(f"-holiday_repaired.{extension}")


def test_the_api_carries_metadata_unless_asked_not_to(client):
    upload = photo_bytes("JPEG", exif=camera_exif(6), icc_profile=SRGB)
    upright = (48, 64)  # the mask is drawn on the photo as a viewer shows it
    kept = opened(send(client, upload, size=upright, format="jpeg").content)
    assert kept.size == (48, 64) and kept.getexif()[MAKE] == "Camera" and kept.getexif()[ORIENTATION] == 1
    assert kept.info["icc_profile"] == SRGB
    dropped = opened(send(client, upload, size=upright, format="png", keep_metadata="false").content)
    assert dropped.size == (48, 64), "upright either way"
    assert not dropped.getexif() and "icc_profile" not in dropped.info


def test_an_unknown_format_is_refused_with_the_choices(client):
    response = send(client, photo_bytes("PNG"), format="gif")
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "invalid_option",
                                        "message": "format must be one of png, jpeg, webp, jpg, same, got 'gif'"}


def test_the_configured_default_can_keep_no_metadata(tiny_dir, tmp_path):
    with serve(make_settings(tiny_dir, tmp_path, keep_metadata=False)) as client:
        upload = photo_bytes("JPEG", exif=camera_exif(1), icc_profile=SRGB)
        result = opened(send(client, upload, format="jpeg").content)
        assert not result.getexif() and "icc_profile" not in result.info
        asked = opened(send(client, upload, format="jpeg", keep_metadata="true").content)
        assert asked.getexif()[MAKE] == "Camera"


# ------------------------------------------------------------------ the UI's editor


def test_the_editor_downloads_in_the_chosen_format_with_the_photo_metadata(tiny_dir, tmp_path):
    queue = JobQueue(2)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    service = RepairService(InpaintEngine(tiny_dir, device="cpu"), OutputStore(tmp_path / "outputs"), queue, metrics)
    backend = EditorBackend(service, tmp_path / "cache")
    try:
        upload = tmp_path / "cache" / "upload" / "holiday.jpg"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(photo_bytes("JPEG", exif=camera_exif(6), icc_profile=SRGB))
        mask = tmp_path / "cache" / "upload" / "mask.png"
        painted = np.zeros((64, 48), np.uint8)  # upright, as the page shows the photo
        painted[10:20, 10:20] = 255
        mask.write_bytes(imageio.encode_image(painted, "png"))
        request = {"request": "r", "photo": {"path": str(upload)}, "mask": {"path": str(mask)}, "name": "holiday.jpg"}
        for fmt, name in (("same", "holiday_repaired.jpg"), ("jpg", "holiday_repaired.jpg"),
                          ("webp", "holiday_repaired.webp")):
            answer = backend.repair(request, "crop", 0, 0, fmt)
            assert "error" not in answer, answer
            download = Path(answer["result"]["image"]["path"])
            assert download.name == name
            with Image.open(download) as result:
                assert result.getexif()[MAKE] == "Camera" and result.getexif()[ORIENTATION] == 1
                assert result.info["icc_profile"] == SRGB
    finally:
        queue.shutdown()
