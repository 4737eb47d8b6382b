"""The Batch tab's handlers (webui/batch_tab.py) without a browser, on the tiny checkpoint: which
mask each photo gets, the batch's bounds, per-photo errors that do not stop it, the zip. The tab
in Chromium: tests/live/test_editor_browser.py (test_a_batch_...)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from lama import imageio
from lama.engine import InpaintEngine
from lama.imageio import ImageLimits
from monitor.requestlog import RequestLog
from service.pipeline import RepairOptions
from webui import batch_tab
from webui.batch_tab import BatchError, BatchLimits, BatchRunner, Job, plan
from webui.editor import EditorFiles

from support.photos import RED_AS_GREEN
from support.service import repair_service

LIMITS = ImageLimits(max_pixels=1_000_000, max_side=2000)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


@pytest.fixture
def service(engine, tmp_path):
    with repair_service(engine, tmp_path / "outputs", LIMITS, requests=RequestLog(None)) as service:
        yield service


@pytest.fixture
def cache(tmp_path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


@pytest.fixture
def runner(service, cache) -> BatchRunner:
    return BatchRunner(service, EditorFiles(cache))


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write(folder: Path, name: str, image: np.ndarray) -> Path:
    """As Gradio's upload leaves a file: its own folder, the original name."""
    path = folder / f"upload-{len(list(folder.iterdir()))}" / name
    path.parent.mkdir()
    imageio.write_image_atomic(path, image)
    return path


def touch(folder: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = folder / name
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def run(runner: BatchRunner, batch, options=RepairOptions()) -> list:
    return list(runner.run(batch, options))


# ---------------------------------------------------------------- which mask for which photo

def test_one_mask_goes_to_every_photo(tmp_path):
    photos = touch(tmp_path, "a.jpg", "b.png", "c.webp")
    [mask] = touch(tmp_path, "watermark.png")
    assert plan(photos, [mask], BatchLimits()).jobs == [Job(photo, mask) for photo in photos]


def test_masks_go_to_the_photos_named_like_them_and_the_rest_is_listed(tmp_path):
    photos = touch(tmp_path, "holiday.jpg", "Beach.JPG", "dog.png", "cat.png")
    masks = touch(tmp_path, "holiday.png", "beach_mask.png", "dog-mask.webp", "stray.png")
    batch = plan(photos, masks, BatchLimits())
    assert [(job.photo.name, job.mask.name) for job in batch.jobs] == [
        ("holiday.jpg", "holiday.png"), ("Beach.JPG", "beach_mask.png"), ("dog.png", "dog-mask.webp")]
    assert batch.skipped == [("cat.png", "no mask named like it (cat.png or cat_mask.png)"),
                             ("stray.png", "a mask named like none of the photos")]


@pytest.mark.parametrize("photos, masks, limits, message", [
    (0, 1, BatchLimits(), "Add the photos"),
    (2, 0, BatchLimits(), "Add a mask"),
    (4, 1, BatchLimits(max_photos=3), "4 photos and 1 masks: a batch holds at most 3 of each"),
    (2, 4, BatchLimits(max_photos=3), "a batch holds at most 3"),
    (3, 1, BatchLimits(max_total_bytes=3), "add up to 0 MB; a batch holds at most 0 MB"),
])
def test_a_batch_beyond_its_bounds_is_refused_before_any_decode(tmp_path, photos, masks, limits, message):
    with pytest.raises(BatchError, match=message):
        plan(touch(tmp_path, *(f"p{n}.png" for n in range(photos))),
             touch(tmp_path, *(f"m{n}.png" for n in range(masks))), limits)


def test_an_upload_that_expired_before_the_run_is_said(tmp_path):
    photos = touch(tmp_path, "a.png", "b.png")
    photos[1].unlink()  # swept by the cache's retention meanwhile
    with pytest.raises(BatchError, match="no longer on the server"):
        plan(photos, touch(tmp_path, "m.png"), BatchLimits())


# ---------------------------------------------------------------- running

def test_a_batch_repairs_what_it_can_lists_the_rest_and_zips_the_results(runner, service, cache, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    small, large = picture(60, 80, 1), picture(120, 160, 2)
    mask = np.zeros((30, 40), np.uint8)  # half the small photo's size: resized to each photo
    mask[5:15, 10:30] = 255
    photos = [write(uploads, "small.png", small), uploads / "notes.png", write(uploads, "large.jpg", large)]
    photos[1].write_text("not a picture")
    batch = plan(photos, [write(uploads, "mask.png", mask)], BatchLimits())

    done = []
    for final in runner.run(batch, RepairOptions()):
        done.append(final.done)  # read as each step is shown
    assert done == [1, 1, 2, 2]  # one step per photo as it finishes, then the one naming the zip
    assert final.summary() == "2 of 3 repaired, 1 not (listed below)"
    assert final.problems == [("notes.png", "not an image: expected PNG, JPEG, WebP, BMP or TIFF")]
    assert [caption for _, caption in final.gallery] == ["small_repaired.png", "large_repaired.png"]
    assert all(max(imageio.read_image(path).shape[:2]) <= batch_tab.PREVIEW_SIDE_PX for path, _ in final.gallery)

    with zipfile.ZipFile(final.zip_path) as archive:
        assert archive.namelist() == ["small_repaired.png", "large_repaired.png"]
        for name, photo, scale in (("small_repaired.png", photos[0], 2), ("large_repaired.png", photos[2], 4)):
            result = imageio.decode_image(archive.read(name))
            changed = (result != imageio.read_image(photo)).any(axis=2)
            inside = np.zeros(changed.shape, bool)
            inside[5 * scale:15 * scale, 10 * scale:30 * scale] = True
            assert changed[inside].mean() > 0.9 and not changed[~inside].any(), name
    assert final.zip_path.parent.is_relative_to(cache) and not list(final.zip_path.parent.glob(".*"))
    assert len([rec for rec in service.requests.recent() if rec["status"] == 200]) == 2  # the service's queue


def test_stop_ends_the_session_s_batch_before_its_next_photo_and_zips_what_was_done(runner, tmp_path):
    photos = [write(tmp_path, f"p{index}.png", picture(40, 60, index)) for index in range(4)]
    batch = plan(photos, [write(tmp_path, "m.png", np.full((40, 60), 255, np.uint8))], BatchLimits())
    assert runner.stop("page-a") is False  # nothing runs
    with runner.stoppable("page-a") as stopping:
        states = runner.run(batch, RepairOptions(), stopping)
        assert next(states).done == 1
        assert runner.stop("page-b") is False, "another page's Stop"
        assert runner.stop("page-a") is True
        final = list(states)[-1]
    assert runner.stop("page-a") is False  # ended: its event is gone
    assert final.stopped and final.done == 1
    assert final.summary() == "Stopped: 1 of 4 repaired; the zip holds those repaired"
    with zipfile.ZipFile(final.zip_path) as archive:
        assert archive.namelist() == ["p0_repaired.png"]


def test_a_failure_of_one_photo_is_listed_and_the_batch_goes_on(runner, service, tmp_path, monkeypatch):
    photos = [write(tmp_path, f"{name}.png", picture(40, 40, seed)) for seed, name in enumerate("abc")]
    mask = np.full((40, 40), 255, np.uint8)
    repair = service.repair

    def fails_on_the_second(image, mask, options, *args, **kwargs):
        if (image == imageio.read_image(photos[1])).all():
            raise RuntimeError("kaboom")
        return repair(image, mask, options, *args, **kwargs)

    monkeypatch.setattr(service, "repair", fails_on_the_second)
    final = run(runner, plan(photos, [write(tmp_path, "m.png", mask)], BatchLimits()))[-1]
    assert final.problems == [("b.png", batch_tab.FAILED)]
    assert [caption for _, caption in final.gallery] == ["a_repaired.png", "c_repaired.png"]


def test_an_empty_mask_and_a_photo_over_the_limits_are_listed(runner, tmp_path):
    photos = [write(tmp_path, "wide.png", picture(10, 2001)), write(tmp_path, "fine.png", picture(20, 20))]
    final = run(runner, plan(photos, [write(tmp_path, "m.png", np.full((8, 8), 100, np.uint8))], BatchLimits()))[-1]
    assert [name for name, _ in final.problems] == ["wide.png", "fine.png"]
    assert "2001" in final.problems[0][1] and str(tmp_path) not in final.problems[0][1]
    assert final.problems[1][1] == "its mask (m.png) marks nothing above the threshold 127"
    assert final.zip_path is None and not list(Path(runner.files.root).rglob("*.zip*"))  # nothing to download


def test_photos_of_the_same_name_get_numbered_results(runner, tmp_path):
    photos = [write(tmp_path, "IMG_1.png", picture(20, 20, seed)) for seed in range(3)]
    final = run(runner, plan(photos, [write(tmp_path, "m.png", np.full((20, 20), 255, np.uint8))], BatchLimits()))[-1]
    assert zipfile.ZipFile(final.zip_path).namelist() == ["IMG_1_repaired.png", "IMG_1_repaired-2.png",
                                                          "IMG_1_repaired-3.png"]


def test_the_editor_s_mask_is_taken_only_from_the_ui_cache(cache, tmp_path):
    files = EditorFiles(cache)
    mask = write(cache, "mask.png", np.zeros((4, 4), np.uint8))
    assert batch_tab.editor_mask_for_batch(files, {"mask": {"path": str(mask)}}) == [str(mask.resolve())]
    outside = write(tmp_path, "secret.png", np.zeros((4, 4), np.uint8))
    for request in ({"mask": {"path": str(outside)}}, {"mask": "x"}, None):
        with pytest.raises(Exception, match="mask"):
            batch_tab.editor_mask_for_batch(files, request)


def test_the_zip_is_only_there_once_complete(runner, tmp_path, monkeypatch):
    photos = [write(tmp_path, f"{n}.png", picture(20, 20, n)) for n in range(2)]
    states = runner.run(plan(photos, [write(tmp_path, "m.png", np.full((20, 20), 255, np.uint8))], BatchLimits()),
                        RepairOptions())
    first = next(states)
    folder = Path(first.gallery[0][0]).parent
    assert not (folder / batch_tab.ZIP_NAME).exists()
    states.close()  # the user left (or the server stopped) half-way
    assert not [path.name for path in folder.iterdir() if "zip" in path.name]


# ---------------------------------------------------------------- the button's handler

def no_progress(*args, **kwargs) -> None:
    pass


def test_the_handler_refuses_a_batch_in_one_line_and_shows_each_step(runner, tmp_path):
    handler = batch_tab.repair_all_handler(runner, BatchLimits(max_photos=2))
    photos = [str(write(tmp_path, f"{n}.png", picture(20, 20, n))) for n in range(3)]
    mask = [str(write(tmp_path, "m.png", np.full((20, 20), 255, np.uint8)))]
    with pytest.raises(gr.Error, match="a batch holds at most 2"):
        list(handler(photos, mask, "crop", 0, 0, "png", 127, progress=no_progress))
    with pytest.raises(gr.Error, match="strategy must be one of"):
        list(handler(photos[:2], mask, "sideways", 0, 0, "png", 127, progress=no_progress))
    with pytest.raises(gr.Error, match="must be numbers"):
        list(handler(photos[:2], mask, "crop", float("nan"), 0, "png", 127, progress=no_progress))
    steps = list(handler(photos[:2], mask, "crop", 0, 0, "png", 127, progress=no_progress))
    status, gallery, zip_path, problems = steps[-1]
    assert [step[0] for step in steps] == ["1 of 2 repaired", "2 of 2 repaired", "2 of 2 repaired"]
    assert len(gallery) == 2 and zip_path.endswith("repaired.zip") and problems["visible"] is False


def test_a_disk_that_cannot_hold_the_results_is_one_line(runner, cache, tmp_path):
    (cache / batch_tab.BATCH_FOLDER).write_text("a file where the batches' folder goes: every write there fails")
    handler = batch_tab.repair_all_handler(runner, BatchLimits())
    photos = [str(write(tmp_path, "a.png", picture(20, 20)))]
    with pytest.raises(gr.Error, match="could not write the batch's results"):
        list(handler(photos, [str(write(tmp_path, "m.png", np.full((20, 20), 255, np.uint8)))], "crop", 0, 0, "png", 127,
                     progress=no_progress))


def test_a_batch_keeps_each_photo_s_format_and_metadata_when_asked(runner, tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "BatchCam"  # Make
    Image.fromarray(picture(40, 60)).save(tmp_path / "trip.jpg", quality=95, exif=exif, icc_profile=RED_AS_GREEN)
    photos = [tmp_path / "trip.jpg", write(tmp_path, "scan.png", picture(40, 60, 1))]
    mask = write(tmp_path, "m.png", np.full((40, 60), 255, np.uint8))
    final = run(runner, plan(photos, [mask], BatchLimits()), RepairOptions(format="same"))[-1]
    archive = zipfile.ZipFile(final.zip_path)
    assert archive.namelist() == ["trip_repaired.jpg", "scan_repaired.png"]
    with Image.open(io.BytesIO(archive.read("trip_repaired.jpg"))) as result:
        assert result.format == "JPEG" and result.getexif()[0x010F] == "BatchCam"
        assert result.info["icc_profile"] == RED_AS_GREEN
    # The gallery's thumbnails too: the browser shows them in the photo's colours.
    assert [Image.open(path).info.get("icc_profile") for path, _ in final.gallery] == [RED_AS_GREEN, None]
