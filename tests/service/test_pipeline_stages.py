"""The GPU workers run the model and nothing else: the CPU's stages of a repair run on the
requests' own threads, beside them (issue 15, item 3). A worker busy with a mask's refinement
or a paste is a GPU left idle, however many cores the box has."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from lama import imageio, png
from lama.engine import InpaintEngine
from service.pipeline import Decoded, RepairOptions
from support.app import encode
from support.engine import SMALL_HD
from support.paths import ROOT
from support.service import repair_service


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu", hd=SMALL_HD)


def two_strokes(height=96, width=128):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[10:30, 12:40] = 255
    mask[60:84, 90:118] = 200
    return image, mask


def test_only_the_model_runs_on_a_gpu_worker(engine, tmp_path, monkeypatch):
    threads: dict[str, list[str]] = {"prepare": [], "run_models": [], "compose": []}
    for step in threads:
        real = getattr(engine, step)

        def watched(*args, _real=real, _step=step, **kwargs):
            threads[_step].append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(engine, step, watched)
    image, mask = two_strokes()
    with repair_service(engine, tmp_path) as service:
        service.repair(image, mask, RepairOptions(strategy="crop", dilate=3, feather=3))
    assert threads["run_models"] and all(name.startswith("gpu-worker") for name in threads["run_models"])
    caller = threading.current_thread().name
    assert threads["prepare"] == [caller] and threads["compose"] == [caller]


@pytest.mark.parametrize("strategy", ["original", "resize", "crop"])
def test_the_service_s_split_repair_is_the_engine_s_repair(engine, tmp_path, strategy):
    image, mask = two_strokes()
    options = RepairOptions(strategy=strategy, dilate=4, feather=4, mask_threshold=0)
    with repair_service(engine, tmp_path) as service:
        started = time.perf_counter()
        result = service.repair(image, mask, options)
        waited = time.perf_counter() - started
    whole = engine.inpaint(image, mask > 0, strategy=strategy, dilate=4, feather=4)
    assert np.array_equal(result.image, whole)
    timings = result.timings
    # In the stages' order (Server-Timing's), though postprocessing is timed before the model ends.
    assert list(timings) == ["decode", "queue", "preprocess", "infer", "postprocess", "encode", "save", "total"]
    # The total is what the request waited: at least its stages that run one after another, at
    # most the call's own time (postprocessing and encoding begin while the model runs: not a sum).
    assert timings["preprocess"] + timings["infer"] + timings["save"] <= timings["total"] <= waited


def test_the_feather_ramp_is_computed_while_the_model_runs(engine, tmp_path, monkeypatch):
    """It depends on the mask alone: the request's thread computes it while the GPU worker runs
    the model, so one client's repair waits for it no longer (issue 15, one client's total)."""
    computed_before_the_model_ended = []
    real = engine.run_models
    image, mask = two_strokes()
    # Before the patch: a plain inpaint computes no ramp ahead, so the patched model would wait
    # out its whole deadline for one.
    expected = engine.inpaint(image, mask > 127, dilate=2, feather=5)

    def slow_model(job, timings=None):
        outputs = real(job, timings)
        deadline = time.monotonic() + 10
        while 5 not in job.ramps and time.monotonic() < deadline:
            time.sleep(0.001)
        computed_before_the_model_ended.append(5 in job.ramps)
        return outputs

    monkeypatch.setattr(engine, "run_models", slow_model)
    with repair_service(engine, tmp_path) as service:
        result = service.repair(image, mask, RepairOptions(dilate=2, feather=5))
    assert computed_before_the_model_ended == [True]
    assert np.array_equal(result.image, expected)


def test_the_png_rows_the_repair_leaves_alone_are_compressed_while_the_model_runs(engine, tmp_path, monkeypatch):
    """A PNG result differs from the photo in the mask's box alone: the request's thread
    compresses the segments above and below it while the GPU worker runs the model, and the
    file is the one encoded after it (issue 15, one client's total)."""
    monkeypatch.setattr(png, "MIN_SEGMENT_BYTES", 1024)  # the 96-row photo in 16 segments of 6 rows
    image, mask = two_strokes()
    mask[40:] = 0  # one stroke, rows 10..29: dilated and feathered, rows 8..31 change
    options = RepairOptions(dilate=2, feather=5)
    expected = png.encode(engine.inpaint(image, mask > 127, dilate=2, feather=5))
    decoded = Decoded(image, mask)
    compressed_before_the_model_ended = []
    real = engine.run_models

    def slow_model(job, timings=None):
        outputs = real(job, timings)
        deadline = time.monotonic() + 10
        while decoded.png_ahead is None and time.monotonic() < deadline:
            time.sleep(0.001)
        compressed_before_the_model_ended.append(decoded.png_ahead is not None)
        return outputs

    monkeypatch.setattr(engine, "run_models", slow_model)
    encoded_with = []
    real_encode = png.encode

    def watched_encode(image, *args, ahead=None, **kwargs):
        encoded_with.append(ahead)
        return real_encode(image, *args, ahead=ahead, **kwargs)

    monkeypatch.setattr(png, "encode", watched_encode)
    with repair_service(engine, tmp_path) as service:
        result = service.finish(decoded, service.submit(decoded, options).result(), options)
        assert compressed_before_the_model_ended == [True]
        assert sorted(decoded.png_ahead.segments) == [0, *range(6, 16)]  # rows 0..5 and 36..95
        assert len(encoded_with) == 1 and encoded_with[0] is decoded.png_ahead and result.data == expected
        # A JPEG result has no segments to compress ahead.
        jpeg = Decoded(image, mask)
        as_jpeg = RepairOptions(dilate=2, feather=5, format="jpeg")
        service.finish(jpeg, service.submit(jpeg, as_jpeg).result(), as_jpeg)
        assert jpeg.png_ahead is None


def test_a_mask_that_thresholds_to_nothing_comes_back_as_the_photo(engine, tmp_path):
    image, mask = two_strokes()
    with repair_service(engine, tmp_path) as service:
        decoded = Decoded(image, mask // 4)  # at most 63, under the default threshold of 127
        options = RepairOptions()
        result = service.finish(decoded, service.submit(decoded, options).result(), options)
    assert np.array_equal(result.image, image) and result.image is not image


def encoded(image, mask):
    return encode(image), encode(mask)


def test_the_mask_is_planned_in_its_own_thread_while_the_photo_decodes(engine, tmp_path, monkeypatch):
    """Decoding with the request's options binarizes, refines and plans the mask in the mask's
    decoding thread, where it waits for the (larger) photo anyway: the request's own thread then
    only builds the model's inputs (issue 15, one client's total). The repair is the same."""
    planned_on = []
    planned = threading.Event()
    real = engine.plan_mask

    def watched(*args, **kwargs):
        planned_on.append(threading.current_thread().name)
        try:
            return real(*args, **kwargs)
        finally:
            planned.set()

    real_decode = imageio._decode

    def photo_decoding_until_planned(checked):
        """The photo's decode lasts until the mask is planned (a small photo would otherwise be
        done before the mask's thread starts, and the request's thread take the mask back)."""
        pixels = real_decode(checked)
        if pixels.ndim == 3:
            assert planned.wait(10), "the mask was not planned while the photo decoded"
        return pixels

    monkeypatch.setattr(engine, "plan_mask", watched)
    monkeypatch.setattr(imageio, "_decode", photo_decoding_until_planned)
    image, mask = two_strokes()
    options = RepairOptions(strategy="crop", dilate=3, feather=2)
    with repair_service(engine, tmp_path) as service:
        decoded = service.decode(*encoded(image, mask), "photo.png", options)
        assert decoded.mask.dtype == bool and decoded.plan is not None
        result = service.finish(decoded, service.submit(decoded, options).result(), options)
    assert len(planned_on) == 1 and planned_on[0] != threading.current_thread().name
    assert np.array_equal(result.image, engine.inpaint(image, mask > 127, "crop", dilate=3, feather=2))
    assert result.timings["preprocess"] > 0


def test_a_plan_made_for_other_options_is_not_used(engine, tmp_path):
    image, mask = two_strokes()
    with repair_service(engine, tmp_path) as service:
        decoded = service.decode(*encoded(image, mask), None, RepairOptions(strategy="original", dilate=0))
        options = RepairOptions(strategy="crop", dilate=5, feather=1)
        result = service.finish(decoded, service.submit(decoded, options).result(), options)
        assert np.array_equal(result.image, engine.inpaint(image, mask > 127, "crop", dilate=5, feather=1))
        with pytest.raises(ValueError, match="binarized above 127, not 3"):
            service.submit(decoded, RepairOptions(mask_threshold=3))


def test_an_uploads_photo_becomes_the_result_and_arrays_handed_in_are_left_alone(engine, tmp_path):
    """A decoded upload's photo is the request's own: the repair is pasted into it rather than a
    copy of it (a full frame's copy and its fresh pages, per repair). The UI's arrays are kept by
    the UI (its before/after view, its history): those the service never writes into."""
    image, mask = two_strokes()
    options = RepairOptions(dilate=2, feather=2)
    expected = engine.inpaint(image, mask > 127, dilate=2, feather=2)
    with repair_service(engine, tmp_path) as service:
        decoded = service.decode(*encoded(image, mask), None, options)
        result = service.finish(decoded, service.submit(decoded, options).result(), options)
        assert result.image is decoded.image and np.array_equal(result.image, expected)
        kept = image.copy()
        handed_in = service.repair(image, mask, options)
        assert np.array_equal(image, kept) and np.array_equal(handed_in.image, expected)


def test_the_stage_command_times_the_steps_around_the_model_for_each_mask(tiny_dir):
    """tools/stage_times.py --postprocess: a row per size and mask, every figure a number; the
    object's rows are a part of the photo, so some of its PNG is compressed ahead (speeds are
    printed, not tested)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "stage_times.py"), "--postprocess", "--model",
                           str(tiny_dir), "--runs", "1", "--sizes", "640x480", "--masks", "strokes,object"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("| size"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = [dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in done.stdout.splitlines() if line.startswith("| 640")]
    assert [(row["size"], row["mask"]) for row in rows] == [("640×480", "strokes"), ("640×480", "object")]
    for row in rows:
        assert float(row["compose"]) > 0 and float(row["encode, nothing ahead"]) > 0
    assert float(rows[1]["PNG ahead"]) > 0 and float(rows[1]["rows changed %"]) < 50
