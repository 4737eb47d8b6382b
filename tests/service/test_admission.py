"""GPU memory admission, on the CPU: the memory model's fit, the engine's estimate of what a job
will run (checked against the model calls it really makes with the tiny checkpoint), and the
service admitting, re-planning (crop) or refusing (413) jobs by a budget.

There is no GPU here, so the memory model is set by hand (as the warm-up on CUDA would learn
it) and so is the budget; everything that uses them is the real code. The live test starts
`python app.py` with a fake model and budget put in by a sitecustomize module, then sends
20 simultaneous large requests through real HTTP.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lama import masks
from lama.engine import HDSettings, InpaintEngine
from lama.memory import SAFETY_MARGIN, MemoryModel, budget_bytes
from lama.units import format_bytes
from support.liveserver import ROOT, LiveServer
from support.reliability import record
from support.app import (decode, error_of, make_case, make_settings, metric, saves_written, serve, service_of, upload,
                         wait_until)
from support.engine import SMALL_HD, model_calls

MB = 10**6
WAIT_S = 60


def official_padding(size: int) -> int:
    """What the model sees for `size` pixels: the next multiple of 8, at least 16."""
    return max(-(-size // 8) * 8, 16)


def padded(shapes):
    return [(1, 4, official_padding(height), official_padding(width)) for height, width in shapes]


# ------------------------------------------------------------------ the memory model


def test_measurements_on_a_line_give_that_line_times_the_margin():
    samples = [(pixels, 300 * MB + 480 * pixels) for pixels in (262_144, 307_200, 786_432, 1_228_800)]
    model = MemoryModel.fit(samples)
    assert model.per_pixel_bytes == pytest.approx(480 * SAFETY_MARGIN)
    assert model.fixed_bytes == pytest.approx(300 * MB * SAFETY_MARGIN)
    assert model.bytes_for(1_000_000) == pytest.approx((300 * MB + 480 * 1_000_000) * SAFETY_MARGIN, rel=1e-9)
    assert model.samples == tuple(samples)


def test_the_fit_lies_above_every_noisy_measurement():
    rng = np.random.default_rng(0)
    pixels = [262_144, 307_200, 786_432, 1_228_800, 500_000, 640_000]
    samples = [(x, int(200 * MB + 500 * x + rng.normal(0, 40 * MB))) for x in pixels]
    model = MemoryModel.fit(samples, margin=1.0)
    assert all(model.bytes_for(x) >= y for x, y in samples)
    # It is least squares lifted, not a loose bound: the slope stays near the true 500 B/px.
    assert 350 < model.per_pixel_bytes < 650


def test_the_fit_extrapolates_safely_to_the_large_size():
    """Warm-up sizes reach 1.2 MP; a 2560×1920 job is 4.9 MP. With activations growing per pixel
    and a fixed part, the estimate there covers the true cost."""
    def true_cost(x):
        return 250 * MB + 470 * x

    model = MemoryModel.fit([(x, true_cost(x)) for x in (262_144, 307_200, 786_432, 1_228_800)])
    assert model.bytes_for(2560 * 1920) >= true_cost(2560 * 1920)


def test_one_measurement_or_no_growth_falls_back_to_the_largest_ratio():
    single = MemoryModel.fit([(1_000_000, 600 * MB)], margin=1.0)
    assert (single.fixed_bytes, single.per_pixel_bytes) == (0.0, 600.0)
    flat = [(100_000, 90 * MB), (1_000_000, 80 * MB)]  # noise, no growth: no slope to trust
    model = MemoryModel.fit(flat, margin=1.0)
    assert model.fixed_bytes == 0.0 and model.per_pixel_bytes == pytest.approx(900.0)
    assert all(model.bytes_for(x) >= y for x, y in flat)


def test_a_negative_intercept_is_clamped_so_small_jobs_are_not_free():
    samples = [(1_000_000, 500 * MB), (2_000_000, 1_100 * MB)]  # the line crosses zero at 166k px
    model = MemoryModel.fit(samples, margin=1.0)
    assert model.fixed_bytes == 0.0
    assert model.bytes_for(100_000) > 0 and all(model.bytes_for(x) >= y for x, y in samples)


def test_no_model_run_needs_nothing_and_bad_input_is_refused():
    assert MemoryModel(1e8, 500).bytes_for(0) == 0
    with pytest.raises(ValueError, match="at least one"):
        MemoryModel.fit([])
    with pytest.raises(ValueError, match="margin"):
        MemoryModel.fit([(1000, 1000)], margin=0.9)


def test_the_budget_is_the_share_of_the_card_less_what_is_held_at_rest():
    assert budget_bytes(80 * 10**9, 0.7, 2 * 10**9) == 54 * 10**9
    assert budget_bytes(8 * 10**9, 0.1, 2 * 10**9) == 0  # the rest is all there is: nothing, not negative
    assert format_bytes(1_340_000_000) == "1.3 GB" and format_bytes(840_000_000) == "840 MB"


# ------------------------------------------------------------------ the estimate against what really runs


@pytest.fixture(scope="module")
def small_hd(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu", hd=SMALL_HD)


@pytest.fixture(scope="module")
def bounded(tiny_dir):
    """max_side below the resize limit: it caps every strategy, crops included."""
    return InpaintEngine(tiny_dir, device="cpu", hd=HDSettings(crop_trigger=48, crop_margin=8, resize_limit=40,
                                                                max_side=30))


def two_regions(height=120, width=200):
    mask = np.zeros((height, width), np.uint8)
    mask[10:20, 10:20] = 255
    mask[70:100, 120:185] = 255
    return mask


@pytest.mark.parametrize("strategy, expected", [
    ("original", [(120, 200)]),
    ("resize", [(24, 40)]),  # 200×120 scaled to the 40-px limit
    ("crop", [(26, 26), (46, 81)]),  # each region with its 8-px margin, one run each
])
def test_model_input_shapes_are_the_runs_inpaint_makes(small_hd, strategy, expected):
    mask = two_regions()
    image = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    shapes = small_hd.model_input_shapes(mask > 0, strategy)
    assert sorted(shapes) == sorted(expected)
    with model_calls(small_hd) as calls:
        small_hd.inpaint(image, mask, strategy=strategy)
    assert calls == padded(shapes)
    assert small_hd.peak_model_pixels(mask, strategy) == max(h * w for h, w in expected)


def test_max_side_caps_every_strategy_in_the_estimate_as_in_the_runs(bounded):
    mask = two_regions()
    image = np.random.default_rng(2).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    expected = {"original": [(18, 30)], "resize": [(18, 30)], "crop": [(26, 26), (17, 30)]}
    for strategy, shapes in expected.items():
        assert sorted(bounded.model_input_shapes(mask > 0, strategy)) == sorted(shapes), strategy
        with model_calls(bounded) as calls:
            bounded.inpaint(image, mask, strategy=strategy)
        assert sorted(calls) == sorted(padded(shapes)), strategy


def test_dilation_counts_and_an_empty_mask_runs_nothing(small_hd):
    mask = np.zeros((120, 200), np.uint8)
    mask[50:60, 90:100] = 255
    assert small_hd.peak_model_pixels(mask, "crop") == 26 * 26
    assert small_hd.peak_model_pixels(mask, "crop", dilate=5) == 36 * 36  # the box grows with the mask
    assert small_hd.peak_model_pixels(np.zeros((120, 200), np.uint8), "original", dilate=5) == 0
    assert small_hd.memory_estimate(mask, "crop") is None  # no memory model on the CPU
    small_hd.memory = MemoryModel(1000.0, 10.0)
    try:
        assert small_hd.memory_estimate(mask, "crop", dilate=5) == 1000 + 10 * 36 * 36
        assert small_hd.memory_estimate(np.zeros((120, 200), np.uint8), "crop") == 0
    finally:
        del small_hd.memory  # back to the class's None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 130), width=st.integers(1, 130), strategy=st.sampled_from(["original", "resize", "crop"]),
       dilate=st.integers(0, 4), share=st.floats(0.0, 0.3), seed=st.integers(0, 2**32 - 1))
def test_the_estimated_runs_match_the_real_ones_for_any_job(bounded, height, width, strategy, dilate, share, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = (rng.random((height, width)) < share).astype(np.uint8) * 255
    shapes = bounded.model_input_shapes(masks.dilate(mask > 0, dilate), strategy)
    with model_calls(bounded) as calls:
        bounded.inpaint(image, mask, strategy=strategy, dilate=dilate)
    assert calls == padded(shapes)
    assert bounded.peak_model_pixels(mask, strategy, dilate) == max((h * w for h, w in shapes), default=0)


# ------------------------------------------------------------------ learning at warm-up


def test_learning_fits_the_measured_peaks_on_the_pixels_the_model_saw(bounded):
    """The warm-up's learning with the measurement replaced (CUDA's allocator counters): each
    case is measured around exactly one model run, and the pixels it is fitted on are those the
    model saw (a case over max_side counts its downscaled size, not the upload's)."""
    cases = [(np.zeros((h, w, 3), np.uint8), np.ones((h, w), bool)) for w, h in ((24, 16), (28, 20), (64, 40))]
    measured_runs = []

    def measure(run):
        with model_calls(bounded) as calls:
            run()
        measured_runs.append(calls)
        _, _, height, width = calls[0]
        return 5000 + 20 * height * width

    model = bounded.learn_memory(cases, measure)
    assert [len(calls) for calls in measured_runs] == [1, 1, 1]
    assert [pixels for pixels, _ in model.samples] == [16 * 24, 20 * 28, 19 * 30]  # 64×40 capped at 30
    assert all(model.bytes_for(pixels) >= peak for pixels, peak in model.samples)


def test_on_the_cpu_the_warm_up_learns_nothing_and_there_is_no_budget(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="cpu")
    engine.warmup()
    assert engine.memory is None and engine.steady_gpu_bytes is None
    engine.device.limit_memory(0.7)
    assert engine.gpu_budget() is None
    assert engine.memory_estimate(two_regions(), "original") is None


# ------------------------------------------------------------------ the service, in process


PER_PIXEL = 100  # bytes per model-input pixel of the fake memory model


@pytest.fixture(scope="module")
def budgeted(tiny_dir, tmp_path_factory):
    """The app with three workers, the fake memory model and a 20 MB budget: a 296×296 crop
    (8.8 MB) fits, a whole 1000×600 image (60 MB) does not."""
    folder = tmp_path_factory.mktemp("admission")
    with serve(make_settings(tiny_dir, folder, gpu_workers=3)) as client:
        service = service_of(client)
        service.engine.memory = MemoryModel(0.0, PER_PIXEL)
        service.queue.set_budget(20 * MB)
        yield client


def wide_case(box=(280, 480, 320, 520)):
    return make_case(1000, 600, box=box, seed=3)


def test_a_job_too_large_for_the_budget_is_repaired_with_crop_instead(budgeted, caplog):
    service = service_of(budgeted)
    image, mask = wide_case()
    with model_calls(service.engine) as calls:
        response = budgeted.post("/api/v1/inpaint", **upload(image, mask, strategy="original", dilate=0, feather=0))
    assert response.status_code == 200, response.text
    assert response.headers["x-strategy"] == "crop"
    assert calls == [(1, 4, 296, 296)], "the 40×40 region with its 128-px margin, not the whole image"
    result = decode(response.content)
    assert np.array_equal(result[mask == 0], image[mask == 0]) and not np.array_equal(result, image)
    saves_written(budgeted)  # recorded once its file is written, just after the answer
    record = service.requests.recent()[-1]
    assert (record["status"], record["strategy"], record["requested_strategy"]) == (200, "crop", "original")
    assert any("crop strategy instead" in r.getMessage() and "60 MB" in r.getMessage() for r in caplog.records)
    # A job that fits keeps its strategy.
    small, small_mask = make_case(200, 150, seed=4)
    fits = budgeted.post("/api/v1/inpaint", **upload(small, small_mask, strategy="original"))
    assert fits.status_code == 200 and fits.headers["x-strategy"] == "original"


def test_the_ui_path_says_when_crop_replaced_the_strategy(budgeted):
    from service.pipeline import RepairOptions

    image, mask = wide_case()
    result = service_of(budgeted).repair(image, mask, RepairOptions(strategy="resize"))
    assert (result.strategy, result.requested_strategy) == ("crop", "resize")
    assert "crop (too large for the GPU as resize)" in result.summary


def test_a_job_too_large_even_cropped_is_refused_with_413_before_the_gpu(budgeted):
    service = service_of(budgeted)
    image, mask = wide_case(box=(20, 20, 580, 980))  # one region nearly the whole picture
    before = metric(budgeted.get("/metrics").text, "inpaint_requests_total", status="413")
    for strategy in ("original", "crop"):
        with model_calls(service.engine) as calls:
            response = budgeted.post("/api/v1/inpaint", **upload(image, mask, strategy=strategy, dilate=0))
        message = error_of(response, 413, "too_large_for_gpu")
        assert calls == [] and service.queue.depth == 0
        # The size, what it would need, what fits.
        assert "1000×600" in message and strategy in message and "60 MB" in message and "20 MB" in message, message
    assert metric(budgeted.get("/metrics").text, "inpaint_requests_total", status="413") == before + 2
    assert budgeted.get("/readyz").status_code == 200, "a refusal is not a fault"


def test_a_job_waits_while_the_budget_is_held_and_runs_when_it_frees(budgeted):
    service = service_of(budgeted)
    release, holding = threading.Event(), threading.Event()
    # Holds the whole budget on one of three workers: a second worker is free, the memory is not.
    service.queue.submit(lambda: holding.set() or release.wait(WAIT_S), cost_bytes=20 * MB)
    assert holding.wait(WAIT_S)
    image, mask = wide_case()
    answer = {}
    thread = threading.Thread(target=lambda: answer.setdefault(
        "response", budgeted.post("/api/v1/inpaint", **upload(image, mask, dilate=0))))
    try:
        thread.start()
        wait_until(lambda: service.queue.admission()["waiting"] == 1, what="the repair waiting for memory")
        budget = budgeted.get("/healthz").json()["gpu_budget"]
        assert budget["budget_bytes"] == 20 * MB and budget["admitted_bytes"] == 20 * MB
        assert budget["waiting_bytes"] == PER_PIXEL * 296 * 296 and budget["running"] == 1
        assert budget["memory_model"]["per_pixel_bytes"] == PER_PIXEL
        text = budgeted.get("/metrics").text
        assert metric(text, "inpaint_gpu_budget_bytes") == 20 * MB
        assert metric(text, "inpaint_gpu_admitted_bytes") == 20 * MB
        assert metric(text, "inpaint_gpu_waiting_bytes") == PER_PIXEL * 296 * 296
        time.sleep(0.2)
        assert "response" not in answer, "it must wait for the memory, not fail"
    finally:
        release.set()
        thread.join(WAIT_S)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert float(response.headers["server-timing"].split("queue;dur=")[1].split(",")[0]) >= 200
    wait_until(lambda: service.queue.admission()["admitted_bytes"] == 0, what="the budget released")


# ------------------------------------------------------------------ 20 simultaneous large requests, live

# Imported by the server's interpreter at start-up: its engine then estimates as a GPU one would
# (the pixel logic is the engine's own; only the bytes per pixel and the budget are made up).
FAKE_GPU = '''
import os
from lama import engine as _engine
from lama.memory import MemoryModel

_per_pixel = float(os.environ["LAMA_TEST_BYTES_PER_PIXEL"])
_budget = int(os.environ["LAMA_TEST_GPU_BUDGET"])
_warmup = _engine.InpaintEngine.warmup


def warmup(self, *args, **kwargs):
    _warmup(self, *args, **kwargs)
    self.memory = MemoryModel(0.0, _per_pixel)


_engine.InpaintEngine.warmup = warmup
_engine.InpaintEngine.gpu_budget = lambda self: _budget
'''
BURST = 20
LARGE = (1024, 768)  # with strategy original: 786,432 model-input pixels each
LIVE_PER_PIXEL = 1000
LIVE_BUDGET = int(2.5 * LARGE[0] * LARGE[1] * LIVE_PER_PIXEL)  # two of them fit, not three
CLIENT_TIMEOUT_S = 240


def large_picture(seed):
    width, height = LARGE
    rng = np.random.default_rng(seed)
    image = np.repeat(np.repeat(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3: height // 2, width // 3: width // 2] = 255
    return image, mask


def test_twenty_simultaneous_large_requests_all_complete_within_the_budget(tiny_dir, tmp_path):
    hook = tmp_path / "fake-gpu"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAKE_GPU)
    env = {"PYTHONPATH": f"{hook}:{ROOT}", "LAMA_TEST_BYTES_PER_PIXEL": str(LIVE_PER_PIXEL),
           "LAMA_TEST_GPU_BUDGET": str(LIVE_BUDGET)}
    cases = [large_picture(seed) for seed in range(BURST)]
    bodies = [upload(image, mask, strategy="original", dilate=0, feather=0) for image, mask in cases]
    with LiveServer.start(tiny_dir, tmp_path / "server", "--gpu-workers", "3", env=env) as server:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert http.get("/healthz").json()["gpu_budget"]["budget_bytes"] == LIVE_BUDGET
        views, stop = [], threading.Event()

        def watch():
            with httpx.Client(base_url=server.base, timeout=30) as http:
                while not stop.is_set():
                    views.append(http.get("/healthz").json()["gpu_budget"])
                    stop.wait(0.02)

        results, errors = {}, []
        barrier = threading.Barrier(BURST)

        def post(index):
            try:
                with httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT_S) as http:
                    barrier.wait(WAIT_S)
                    results[index] = http.post("/api/v1/inpaint", **bodies[index])
            except Exception as error:  # surfaced below
                errors.append(error)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=post, args=(i,)) for i in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S + 10)
        stop.set()
        watcher.join(30)
        with httpx.Client(base_url=server.base, timeout=30) as http:
            text = http.get("/metrics").text
            after = http.get("/healthz").json()["gpu_budget"]
        requests_log = tmp_path / "server" / "logs" / "requests.jsonl"
        # Each repair is recorded once its file is written, just after its answer.
        wait_until(lambda: len(requests_log.read_text().splitlines()) >= BURST, timeout=10, what="every repair logged")
        log = requests_log.read_text().splitlines()
    assert errors == [] and len(results) == BURST, errors
    for index, response in results.items():
        assert response.status_code == 200, response.text
        assert response.headers["x-strategy"] == "original"
        image, mask = cases[index]
        assert np.array_equal(decode(response.content)[mask == 0], image[mask == 0])
    one_job = LARGE[0] * LARGE[1] * LIVE_PER_PIXEL
    case = f"Admission: {BURST} simultaneous {LARGE[0]}×{LARGE[1]} requests, a budget for 2, 3 workers"
    record(case, "answered 200", f"{sum(r.status_code == 200 for r in results.values())} / {BURST}", f"all {BURST}")
    record(case, "most running at once / most admitted bytes",
           f"{max(view['running'] for view in views)} / {max(view['admitted_bytes'] for view in views) / 1e9:.2f} GB "
           f"(budget {LIVE_BUDGET / 1e9:.2f} GB)", "2 / ≤ the budget")
    assert max(view["admitted_bytes"] for view in views) <= LIVE_BUDGET
    assert max(view["running"] for view in views) == 2, "two fit at a time: both workers' worth, never three"
    assert any(view["waiting_bytes"] >= one_job for view in views), "the burst never queued for memory"
    assert after["admitted_bytes"] == 0 and after["waiting_bytes"] == 0 and after["waiting"] == 0
    assert metric(text, "inpaint_requests_total", status="200") == BURST
    assert metric(text, "inpaint_gpu_budget_bytes") == LIVE_BUDGET
    assert metric(text, "inpaint_gpu_admitted_bytes") == 0.0
    assert sum(json.loads(line)["status"] == 200 for line in log) == BURST
