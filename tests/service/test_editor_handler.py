"""The editor's server side called directly, as Gradio calls it, on the tiny checkpoint (no browser).

The page names files it uploaded to the UI cache; the backend decodes them through
lama.imageio, repairs through RepairService and publishes the result next to them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama import imageio
from lama.engine import InpaintEngine
from lama.imageio import ImageLimits
from monitor.metrics import ServiceMetrics
from monitor.requestlog import RequestLog
from webui import editor
from webui.editor import EditorBackend, ImageCache
from service.jobs import JobQueue
from service.storage import DEFAULT_STEM, OutputStore
from service.pipeline import RepairService
from webui.errors import status_of
from support.service import repair_service
from support.editor import mask_file, picture, uploaded
from support.photos import RED_AS_GREEN

LIMITS = ImageLimits(max_pixels=4_000_000, max_side=4000)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


@pytest.fixture
def service(engine, tmp_path):
    with repair_service(engine, tmp_path / "outputs", LIMITS) as service:
        yield service


@pytest.fixture
def cache(tmp_path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


@pytest.fixture
def backend(service, cache) -> EditorBackend:
    return EditorBackend(service, cache)


def test_a_repair_publishes_the_saved_file_a_preview_and_the_repaired_rectangle(backend, service, cache):
    image = picture(1000, 1800)  # long side over the preview's
    photo = uploaded(cache, "holiday.png", image)
    box = (slice(400, 460), slice(700, 900))
    answer = backend.repair({"request": "r1", "photo": photo, "mask": mask_file(cache, image.shape[:2], box),
                             "name": "holiday.png"}, "crop", 0, 0)
    assert answer["request"] == "r1" and "error" not in answer, answer
    result = answer["result"]

    # The download is the very file the service saved under outputs/, not a second encoding.
    full = Path(result["image"]["path"])
    assert full.name == "holiday_repaired.png" and full.is_relative_to(cache)
    saved = next((service.outputs.root).rglob("*.png"))
    assert os.path.samefile(full, saved)
    repaired = imageio.read_image(full)
    changed = (repaired != image).any(axis=2)
    assert changed[box].mean() > 0.9 and not np.delete(changed, np.s_[400:460], axis=0).any()

    preview = imageio.read_image(result["preview"]["path"])
    assert preview.shape[:2] == (889, 1600)  # the long side at PREVIEW_SIDE_PX, the aspect kept

    x, y, width, height = result["patch"]["box"]
    assert (x, y, x + width, y + height) == (699, 399, 901, 461)  # the painted area grown by dilate + 1
    patch = imageio.read_image(result["patch"]["path"])
    assert np.array_equal(patch, repaired[y:y + height, x:x + width]), "the canvas would not show the result"

    assert result["width"] == 1800 and result["height"] == 1000 and result["summary"].startswith("1800×1000")
    timings = result["timings"]
    assert timings["server"] >= timings["queue"] + timings["model"] and timings["save"] >= 0


def test_the_preview_and_the_rectangle_carry_the_photo_s_colour_profile(backend, cache):
    """The page's browser draws the photo through its profile: what it draws over it must go
    through the same one (tests/live/test_editor_browser.py shows the rectangle otherwise)."""
    image = picture(120, 160)
    folder = cache / "upload-profiled"
    folder.mkdir()
    Image.fromarray(image).save(folder / "p3.png", icc_profile=RED_AS_GREEN)
    plain = uploaded(cache, "plain.png", image)
    for photo, profile in (({"path": str(folder / "p3.png")}, RED_AS_GREEN), (plain, None)):
        result = backend.repair({"request": "r", "photo": photo,
                                 "mask": mask_file(cache, (120, 160), np.s_[40:60, 30:90])}, "crop", 0, 0)["result"]
        for part in ("preview", "patch"):
            assert Image.open(result[part]["path"]).info.get("icc_profile") == profile, (part, profile)


def test_the_photo_is_decoded_once_per_session_and_a_result_is_repaired_without_a_decode(backend, cache,
                                                                                          monkeypatch):
    image = picture(120, 160)
    photo = uploaded(cache, "photo.png", image)
    decoded = []
    read_image = imageio.read_image
    monkeypatch.setattr(imageio, "read_image", lambda path, limits: decoded.append(path) or read_image(path, limits))

    assert backend.prepare(photo) == {"width": 160, "height": 120}
    first = backend.repair({"request": "a", "photo": photo, "mask": mask_file(cache, (120, 160), np.s_[10:30, 10:60])},
                           "crop", 0, 0)["result"]
    second = backend.repair({"request": "b", "photo": first["image"],
                             "mask": mask_file(cache, (120, 160), np.s_[60:90, 80:120])}, "crop", 0, 0)["result"]
    assert decoded == [Path(photo["path"])], "the photo was decoded more than once, or a result was decoded"
    assert second["summary"].startswith("160×120")


@pytest.mark.parametrize("path", ["/etc/hostname", "{cache}/../outside.png", "{cache}/link.png", "", None, 7])
def test_a_file_outside_the_cache_is_refused(backend, cache, tmp_path, path):
    imageio.write_image_atomic(tmp_path / "outside.png", picture(8, 8))
    (cache / "link.png").symlink_to(tmp_path / "outside.png")
    if isinstance(path, str):
        path = path.format(cache=cache)
    mask = mask_file(cache, (8, 8), np.s_[2:4, 2:4])
    answer = backend.repair({"request": "x", "photo": {"path": path}, "mask": mask}, "crop", 0, 0)
    assert answer["code"] == "invalid_request", answer
    assert "photo" in answer["error"]
    assert backend.prepare({"path": path})["code"] == "invalid_request"


def test_an_expired_upload_says_so(backend, cache):
    mask = mask_file(cache, (8, 8), np.s_[2:4, 2:4])
    answer = backend.repair({"request": "x", "photo": {"path": str(cache / "gone" / "photo.png")}, "mask": mask},
                            "crop", 0, 0)
    assert answer == {"request": "x", "error": editor.PHOTO_GONE, "code": "photo_gone"}


def test_an_empty_mask_asks_for_paint(backend, cache):
    photo = uploaded(cache, "photo.png", picture(16, 16))
    answer = backend.repair({"request": "x", "photo": photo, "mask": mask_file(cache, (16, 16), np.s_[0:0, 0:0])},
                            "crop", 0, 0)
    assert answer["code"] == "empty_mask" and "Paint over" in answer["error"]


def test_the_service_s_refusals_reach_the_page_without_server_paths(backend, cache):
    photo = uploaded(cache, "big.png", picture(8, 4001))  # over LIMITS.max_side
    answer = backend.repair({"request": "x", "photo": photo, "mask": mask_file(cache, (8, 4001), np.s_[2:4, 2:4])},
                            "crop", 0, 0)
    assert answer["code"] == "image_too_large" and "4001" in answer["error"], answer
    assert str(cache) not in answer["error"]

    photo = uploaded(cache, "photo.png", picture(16, 16))
    mismatched = mask_file(cache, (8, 8), np.s_[2:4, 2:4])
    answer = backend.repair({"request": "y", "photo": photo, "mask": mismatched}, "crop", 0, 0)
    assert answer["code"] == "mask_size_mismatch", answer
    answer = backend.repair({"request": "z", "photo": photo, "mask": mismatched}, "sideways", 0, 0)
    assert answer["code"] == "invalid_option" and "strategy" in answer["error"]
    answer = backend.repair({"request": "w", "photo": photo, "mask": mismatched}, "crop", "nan", 0)
    assert answer["code"] == "invalid_option" and "dilate" in answer["error"]


def test_an_unexpected_failure_is_a_message_and_a_logged_traceback(backend, service, cache, monkeypatch, caplog):
    photo = uploaded(cache, "photo.png", picture(16, 16))
    mask = mask_file(cache, (16, 16), np.s_[2:6, 2:6])

    def broken(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(service, "repair", broken)
    with caplog.at_level(logging.ERROR, logger="webui.editor"):
        answer = backend.repair({"request": "x", "photo": photo, "mask": mask}, "crop", 0, 0)
    assert answer == {"request": "x", "error": editor.FAILED, "code": "internal_error"}
    assert "kaboom" in caplog.text


def test_a_result_whose_file_was_not_saved_is_still_published_from_its_bytes(backend, service, cache, monkeypatch):
    def disk_full(data, fmt, upload_name=None, named=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(service.outputs, "save", disk_full)
    image = picture(40, 40)
    answer = backend.repair({"request": "x", "photo": uploaded(cache, "p.png", image),
                             "mask": mask_file(cache, (40, 40), np.s_[5:15, 5:15])}, "crop", 0, 0)
    repaired = imageio.read_image(answer["result"]["image"]["path"])
    assert repaired.shape == image.shape


def test_the_image_cache_keeps_the_most_recently_used_within_its_bounds(tmp_path):
    cache = ImageCache(max_entries=2, max_bytes=1000)
    small = [np.zeros((10, 10), np.uint8) for _ in range(3)]  # 100 bytes each
    for index, image in enumerate(small):
        cache.put(tmp_path / f"{index}", image)
    assert len(cache) == 2
    assert cache.get(tmp_path / "2", LIMITS) is small[2]
    cache.put(tmp_path / "big", np.zeros((40, 40), np.uint8))  # 1600 bytes: never kept
    assert len(cache) == 2
    cache.put(tmp_path / "most", np.zeros((31, 31), np.uint8))  # 961 bytes: evicts until it fits
    assert len(cache) == 1


def test_repaired_box_grows_and_clips():
    mask = np.zeros((50, 60), bool)
    assert editor.repaired_box(mask, 3) is None
    mask[0:5, 55:60] = True
    assert editor.repaired_box(mask, 3) == (52, 0, 8, 8)


def test_a_large_repaired_rectangle_is_a_jpeg_scaled_down_unless_it_is_transparent():
    image = picture(1100, 1000)  # 1.1 MP: over PATCH_PNG_MAX_PIXELS
    data, extension = editor.patch(image, (0, 0, 1000, 1100))
    assert extension == "jpg" and imageio.decode_image(data).shape == (1100, 1000, 3)
    data, extension = editor.patch(np.dstack([image, np.full((1100, 1000), 128, np.uint8)]), (0, 0, 1000, 1100))
    decoded = imageio.decode_image(data)
    assert extension == "png" and decoded.shape == (1100, 1000, 4) and (decoded[..., 3] == 128).all()
    huge = np.zeros((2100, 10, 3), np.uint8)
    assert imageio.decode_image(editor.patch(huge, (0, 0, 10, 2100))[0]).shape[0] == editor.PATCH_SIDE_PX


def test_a_result_the_cache_cannot_hold_goes_to_the_page_inline_and_can_be_repaired_again(backend, cache, caplog):
    (cache / "editor").write_text("a file where the results' folder goes: every write there fails")
    image = picture(40, 60)
    with caplog.at_level(logging.ERROR, logger="webui.editor"):
        result = backend.repair({"request": "x", "photo": uploaded(cache, "p.png", image),
                                 "mask": mask_file(cache, (40, 60), np.s_[5:15, 5:25])}, "crop", 0, 0)["result"]
    assert "could not write a result into the UI cache" in caplog.text and result["unsaved"]
    downloaded = imageio.decode_image(base64.b64decode(result["image"]["url"].split(",", 1)[1]))
    assert downloaded.shape == image.shape and (downloaded != image).any()
    assert result["preview"]["url"].startswith("data:image/jpeg;base64,")
    assert result["patch"]["url"].startswith("data:image/png;base64,") and result["patch"]["box"] == [4, 4, 22, 12]
    again = backend.repair({"request": "y", "photo": result["image"],
                            "mask": mask_file(cache, (40, 60), np.s_[20:30, 30:50])}, "crop", 0, 0)
    assert "result" in again, again  # the server still holds the unwritten result


def test_the_page_s_report_of_the_user_s_wait_is_added_to_the_repair_s_record(engine, tmp_path, cache):
    queue = JobQueue(4)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    requests = RequestLog(tmp_path / "requests.jsonl")
    backend = EditorBackend(RepairService(engine, OutputStore(tmp_path / "outputs"), queue, metrics, LIMITS,
                                          requests=requests, status_of=status_of), cache)
    try:
        answer = backend.repair({"request": "r", "photo": uploaded(cache, "p.png", picture(40, 60)),
                                 "mask": mask_file(cache, (40, 60), np.s_[5:15, 5:25])}, "crop", 0, 0)
    finally:
        queue.shutdown()
    server_ms = answer["result"]["timings"]["server"] * 1000
    report = {"token": answer["wait_token"], "waited_ms": server_ms + 300, "upload_ms": 40, "transfer_ms": 60}

    for forged in ({**report, "token": "guessed"}, {**report, "waited_ms": server_ms / 2},  # shorter than the server
                   {**report, "upload_ms": server_ms + 300}, {**report, "waited_ms": float("inf")},
                   {**report, "waited_ms": "300"}, {**report, "transfer_ms": -1}, "not a report", None):
        assert backend.report_wait(forged) == {"recorded": False}, forged
    assert "waited" not in requests.recent()[-1]
    assert backend.report_wait(report) == {"recorded": True}
    assert backend.report_wait(report) == {"recorded": False}  # a token is good for one report

    record = requests.recent()[-1]
    assert record["status"] == 200 and record["waited"]["upload"] == 0.04 and record["waited"]["transfer"] == 0.06
    assert abs(record["waited"]["total"] - (server_ms + 300) / 1000) < 1e-3
    lines = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [line.get("amends") for line in lines] == [None, record["id"]] and lines[1]["waited"] == record["waited"]


def test_a_script_s_repair_publishes_only_the_file_and_keeps_nothing_decoded(backend, cache):
    answer = backend.repair({"photo": uploaded(cache, "p.png", picture(40, 60)),
                             "mask": mask_file(cache, (40, 60), np.s_[5:15, 5:25])}, "crop", 0, 0, for_page=False)
    result = answer["result"]
    assert "preview" not in result and "patch" not in result and "wait_token" not in answer
    assert len(backend.images) == 0, "a script's photo or result pushed the editing sessions' photos out"
    assert sorted(path.name for path in Path(result["image"]["path"]).parent.iterdir()) == [f"{DEFAULT_STEM}_repaired.png"]


def test_a_script_s_photo_and_mask_are_decoded_as_the_api_decodes_an_upload(backend, service, cache, monkeypatch):
    """Both at once, the mask planned in its thread, the photo the request's own: the same repair
    as the page's path, which keeps its photo decoded and so repairs a copy of it."""
    decoded = []
    decode = service.decode
    monkeypatch.setattr(service, "decode", lambda *args: decoded.append(decode(*args)) or decoded[-1])
    photo = uploaded(cache, "p.png", picture(40, 60))
    request = {"photo": photo, "mask": mask_file(cache, (40, 60), np.s_[5:15, 5:25])}
    script = backend.repair(request, "crop", 2, 2, for_page=False)["result"]
    page = backend.repair(request, "crop", 2, 2)["result"]
    assert len(decoded) == 1 and decoded[0].owned and decoded[0].plan is not None
    assert Path(script["image"]["path"]).read_bytes() == Path(page["image"]["path"]).read_bytes()
    empty = backend.repair({**request, "mask": mask_file(cache, (40, 60), np.s_[0:0, 0:0])}, "crop", 0, 0,
                           for_page=False)
    assert empty["code"] == "empty_mask"
    too_large = backend.repair({"photo": uploaded(cache, "big.png", picture(8, 4001)),
                                "mask": mask_file(cache, (8, 4001), np.s_[2:4, 2:4])}, "crop", 0, 0, for_page=False)
    assert too_large["code"] == "image_too_large" and str(cache) not in too_large["error"]


def test_the_wait_reports_waiting_are_bounded():
    waits = editor.WaitReports(max_pending=2)
    tokens = [waits.expect(f"id{index}", 0.1) for index in range(3)]
    requests = RequestLog(None)
    requests.record({"id": "id0"})
    report = {"waited_ms": 500, "upload_ms": 0, "transfer_ms": 0}
    assert not waits.report({**report, "token": tokens[0]}, requests)  # the oldest was forgotten
