"""Formats and metadata as a client meets them: the API's `format` and `keep_metadata` fields,
the configured default, and the editor's download format (its server side, called directly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.app import make_case, make_settings, serve
from support.photos import MAKE, ORIENTATION, SRGB, camera_exif, opened, photo_bytes

from lama import imageio
from lama.engine import InpaintEngine
from monitor.metrics import ServiceMetrics
from service.jobs import JobQueue
from service.pipeline import RepairService
from service.storage import OutputStore
from webui.editor import EditorBackend
from webui.errors import status_of


# ------------------------------------------------------------------ the API's form fields


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
    service = RepairService(InpaintEngine(tiny_dir, device="cpu"), OutputStore(tmp_path / "outputs"), queue, metrics,
                            status_of=status_of)
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
