"""The GPU workers run the model and nothing else: the CPU's stages of a repair run on the
requests' own threads, beside them (issue 15, item 3). A worker busy with a mask's refinement
or a paste is a GPU left idle, however many cores the box has."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lama.engine import InpaintEngine
from service.pipeline import Decoded, RepairOptions
from support.engine import SMALL_HD
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
        result = service.repair(image, mask, options)
    whole = engine.inpaint(image, mask > 0, strategy=strategy, dilate=4, feather=4)
    assert np.array_equal(result.image, whole)
    assert set(result.timings) >= {"decode", "preprocess", "queue", "infer", "postprocess", "encode", "save", "total"}
    assert result.timings["total"] >= sum(result.timings[stage] for stage in ("preprocess", "infer", "postprocess"))


def test_a_mask_that_thresholds_to_nothing_comes_back_as_the_photo(engine, tmp_path):
    image, mask = two_strokes()
    with repair_service(engine, tmp_path) as service:
        decoded = Decoded(image, mask // 4)  # at most 63, under the default threshold of 127
        options = RepairOptions()
        result = service.finish(decoded, service.submit(decoded, options).result(), options)
    assert np.array_equal(result.image, image) and result.image is not image
