"""Work bounded by the image's size, not by the shape of the input (issue 12): the crop
strategy's region merge, the dilation and the queue's watchdog, each with the attack that
found it (commit df95237: a dotted mask kept the only worker busy for 338 s while /readyz
said 200; dilate=256 on a 4096² image took 40 s)."""

from __future__ import annotations

import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from lama import masks
from lama.engine import InpaintEngine
from support.liveserver import LiveServer
from monitor.metrics import ServiceMetrics
from support.reliability import record
from webui.api import create_api
from service.jobs import JobQueue
from service.storage import OutputStore
from service.pipeline import RepairService
from webui.errors import status_of

WAIT_S = 10  # upper bound for conditions that normally hold within milliseconds


@pytest.fixture(scope="module")
def engine(tiny_dir):
    """The service's crop settings (800-px trigger, 128-px margin), as app.py builds the engine."""
    return InpaintEngine(tiny_dir, device="cpu")


def dotted(side: int, every: int = 4) -> np.ndarray:
    """The attack's mask: one pixel every `every` px in both directions, nothing touching."""
    mask = np.zeros((side, side), np.uint8)
    mask[::every, ::every] = 255
    return mask


# ------------------------------------------------------------------ the region merge


def quadratic_merge(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """The merge as it was at df95237 (pure Python, quadratic): the reference for the result."""
    def overlaps(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    def union(a, b):
        return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])

    merged: list = []
    pending = list(boxes)
    while pending:
        box = pending.pop()
        absorbed = True
        while absorbed:
            absorbed = False
            for other in merged + pending:
                if overlaps(box, other):
                    box = union(box, other)
                    (merged if other in merged else pending).remove(other)
                    absorbed = True
                    break
        merged.append(box)
    return sorted(merged)


def reference_region_boxes(mask: np.ndarray, margin: int) -> list[tuple[int, int, int, int]]:
    """region_boxes as it was at df95237."""
    height, width = mask.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return quadratic_merge([(max(0, y - margin), max(0, x - margin), min(height, y + h + margin),
                             min(width, x + w + margin)) for x, y, w, h, _ in stats[1:count].tolist()])


@settings(max_examples=400, deadline=None)
@given(height=st.integers(1, 48), width=st.integers(1, 48), density=st.floats(0, 0.15),
       margin=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_region_boxes_are_those_of_the_quadratic_merge(height, width, density, margin, seed):
    mask = np.random.default_rng(seed).random((height, width)) < density
    assert [tuple(box) for box in masks.region_boxes(mask, margin)] == reference_region_boxes(mask, margin)


box_lists = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 14), st.integers(1, 14))
                     .map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])), min_size=1, max_size=30)


@settings(max_examples=400, deadline=None)
@given(boxes=box_lists)
def test_merged_boxes_are_those_of_the_quadratic_merge(boxes):
    merged = masks.merge_overlapping(np.array(boxes, np.int64))
    assert sorted(map(tuple, merged.tolist())) == quadratic_merge(boxes)


def test_a_merged_box_takes_in_the_boxes_its_union_reaches_and_not_those_it_only_touches():
    first, second = (0, 0, 10, 10), (8, 8, 20, 20)
    reached = (12, 0, 20, 6)  # overlaps neither alone, but their union (0, 0, 20, 20)
    touching = (20, 0, 25, 5)  # shares the union's bottom edge, no pixel
    merged = masks.merge_overlapping(np.array([reached, touching, first, second], np.int64))
    assert sorted(map(tuple, merged.tolist())) == [(0, 0, 20, 20), touching]


def test_past_the_cap_the_regions_are_repaired_as_one(monkeypatch, caplog):
    monkeypatch.setattr(masks, "MAX_MERGED_BOXES", 3)
    boxes = np.array([(0, 0, 2, 2), (10, 10, 12, 12), (20, 0, 22, 2), (5, 30, 7, 33)], np.int64)
    assert masks.merge_overlapping(boxes).tolist() == [[0, 0, 22, 33]]
    assert "4 separate regions to crop, more than 3: repairing them as one region" in caplog.text


def test_a_dotted_mask_costs_the_crop_strategy_milliseconds_not_minutes(engine):
    mask = dotted(2048)
    regions = cv2.connectedComponents(mask, connectivity=8)[0] - 1
    assert regions == 512 * 512, "the attack's shape: every dot a region of its own"
    started = time.perf_counter()
    shapes = engine.model_input_shapes(masks.binarize(mask), "crop")
    elapsed = time.perf_counter() - started
    assert shapes == [(2048, 2048)], "the dots' boxes overlap their neighbours': one region"
    record("Security: dotted mask (crop strategy)", f"the engine's crop regions for a dot every 4 px on 2048² "
           f"({regions:,} regions; 338 s at df95237)", f"{elapsed:.2f} s", "< 1 s")
    assert elapsed < 1.0


# ------------------------------------------------------------------ the dilation


def brute_force_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Euclidean distance `radius` of a masked pixel, by comparing every pair."""
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    yy, xx = np.mgrid[:height, :width]
    squared = (yy[..., None] - rows) ** 2 + (xx[..., None] - cols) ** 2
    return (squared <= radius * radius).any(axis=-1)


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), density=st.floats(0, 0.05),
       radius=st.integers(1, 2 * masks.KERNEL_DILATION_MAX_PX + 4), seed=st.integers(0, 2**32 - 1))
def test_dilation_is_exactly_the_euclidean_disc_on_either_side_of_the_kernel_limit(height, width, density, radius,
                                                                                  seed):
    mask = np.random.default_rng(seed).random((height, width)) < density
    assert np.array_equal(masks.dilate(mask, radius), brute_force_disc(mask, radius))


@pytest.mark.parametrize("radius", [1, 5, masks.KERNEL_DILATION_MAX_PX, masks.KERNEL_DILATION_MAX_PX + 1, 40])
def test_dilation_differs_from_the_former_ellipse_kernel_only_within_half_a_pixel_of_the_radius(radius):
    """df95237 dilated with OpenCV's ellipse kernel, whose rows are rounded: it holds the exact
    disc and a few pixels up to radius + ½ (dx² + dy² <= r² + r) besides."""
    mask = np.zeros((4 * radius + 9, 4 * radius + 9), bool)
    mask[2 * radius + 4, 2 * radius + 4] = mask[2 * radius + 4, 2 * radius + 6] = True
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    former = cv2.dilate(mask.astype(np.uint8), ellipse) > 0
    exact = masks.dilate(mask, radius)
    assert not (exact & ~former).any(), "the exact disc lies within the former kernel"
    rows, cols = np.nonzero(mask)
    yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    squared = ((yy[..., None] - rows) ** 2 + (xx[..., None] - cols) ** 2).min(axis=-1)
    assert (squared[former & ~exact] > radius * radius).all()
    assert (squared[former & ~exact] <= radius * radius + radius).all()


def test_dilating_by_256_px_on_4096_squared_takes_a_second_not_40(engine):
    mask = np.zeros((4096, 4096), np.uint8)
    mask[::512, ::512] = 255  # 64 dots whose 256-px discs overlap their neighbours'
    started = time.perf_counter()
    pixels = engine.peak_model_pixels(mask, "crop", dilate=256)
    elapsed = time.perf_counter() - started
    assert pixels == 3969 * 3969, "one region: the last dot (3584) + 256 + the 128-px margin"
    record("Security: dilate=256 on 4096²", "the engine's mask preparation (binarize, dilate, crop regions; "
           "40 s at df95237)", f"{elapsed:.2f} s", "< 2 s")
    assert elapsed < 2.0
    grown = masks.dilate(mask > 0, 256)
    assert grown[256, 0] and grown[181, 181], "within 256 px of the dot at (0, 0)"
    assert not grown[182, 182] and not grown[256, 256], "beyond 256 px of every dot"


# ------------------------------------------------------------------ the watchdog


class Clock:
    """The watchdog's time, moved by the test: no waiting for a real bound to pass."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_stuck_worker_makes_readyz_503_and_healthz_say_why_until_the_job_ends(engine, tmp_path):
    clock = Clock()
    queue = JobQueue(4, workers=1, stuck_after_s=120, clock=clock)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    service = RepairService(engine, OutputStore(tmp_path / "outputs"), queue, metrics, status_of=status_of)
    service.warm = True
    running, release = threading.Event(), threading.Event()
    try:
        with TestClient(create_api(service)) as client:
            held = queue.submit(lambda: running.set() or release.wait(WAIT_S))
            assert running.wait(WAIT_S)
            clock.now += 120
            assert client.get("/readyz").status_code == 200, "a job within its bound is just work"
            clock.now += 218
            assert client.get("/readyz").status_code == 503
            health = client.get("/healthz").json()
            assert health["status"] == "degraded"
            assert health["stuck"] == ("a job has run on gpu-worker-0 for 338 s, longer than the 120 s bound: "
                                       "not ready until it ends")
            release.set()
            held.result(WAIT_S)
            assert client.get("/readyz").status_code == 200
            health = client.get("/healthz").json()
            assert health["status"] == "ok" and "stuck" not in health
    finally:
        release.set()
        queue.shutdown()


# ------------------------------------------------------------------ the attack, live


def png(array: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(".png", array, list(params))
    assert ok
    return data.tobytes()


LIVE_BOUND_S = 15  # the tiny model's one run on the CPU at the preset's 1280 px, decoding and encoding


def test_live_a_dotted_mask_is_answered_in_seconds_and_the_server_stays_ready(tiny_dir, tmp_path):
    side = 2048
    yy, xx = np.mgrid[:side, :side]
    image = np.stack([xx * 255 // side, yy * 255 // side, (xx + yy) * 255 // (2 * side)], axis=-1).astype(np.uint8)
    mask = png(dotted(side), cv2.IMWRITE_PNG_BILEVEL, 1)  # 1 bit per pixel: a few kB
    with LiveServer.start(tiny_dir, tmp_path / "live", "--preset", "fast") as server:
        started = time.perf_counter()
        # dilate=0: any dilation would join the dots into one region and defuse the attack.
        response = httpx.post(server.url("/api/v1/inpaint"), timeout=LIVE_BOUND_S + 60,
                              files={"image": ("photo.png", png(image), "image/png"),
                                     "mask": ("mask.png", mask, "image/png")},
                              data={"strategy": "crop", "dilate": "0", "feather": "0"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        result = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        assert result.shape == (side, side, 3)
        record("Security: dotted mask (crop strategy)", f"live: a {len(mask) / 1000:.1f} kB PNG mask, a dot every "
               "4 px on 2048², strategy crop: answered 200 (338 s at df95237)", f"{elapsed:.1f} s",
               f"< {LIVE_BOUND_S} s")
        assert elapsed < LIVE_BOUND_S
        assert httpx.get(server.url("/readyz"), timeout=5).status_code == 200
