"""InpaintEngine on the tiny official-layout checkpoint: the official pipeline, strategies, layouts."""

import json
import logging
import time

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import lama.engine as engine_module
from lama import masks, parallel
from lama.engine import EngineError, HDSettings, InpaintEngine
from lama.reference import model_name
from lama.model import BIG_LAMA_CONFIG
from support.engine import SMALL_HD, model_calls

# Small thresholds so that the crop and resize strategies really engage on test-sized images.
def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_gray(path):
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def case_names(tiny_dir):
    return [case["name"] for case in json.loads((tiny_dir / "cases" / "index.json").read_text())["cases"]]


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def small_hd_engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu", hd=SMALL_HD)


# ---------------------------------------------------------------- the official pipeline

def test_fixture_cases_match_the_official_float_output(engine, tiny_dir):
    names = case_names(tiny_dir)
    assert len(names) == 5
    for name in names:
        image = read_rgb(tiny_dir / "cases" / f"{name}_image.png")
        mask = read_gray(tiny_dir / "cases" / f"{name}_mask.png") > 0
        expected = np.load(tiny_dir / "cases" / f"{name}_expected.npy")
        predicted = engine.backend.predict(image, mask)
        assert predicted.shape == expected.shape, name
        assert np.abs(predicted - expected).max() <= 1e-4, name


def test_fixture_cases_match_the_official_uint8_output(engine, tiny_dir):
    for name in case_names(tiny_dir):
        image = read_rgb(tiny_dir / "cases" / f"{name}_image.png")
        mask = read_gray(tiny_dir / "cases" / f"{name}_mask.png")
        expected = read_rgb(tiny_dir / "cases" / f"{name}_expected.png")
        result = engine.inpaint(image, mask, strategy="original")
        difference = np.abs(result.astype(int) - expected.astype(int))
        assert difference.max() <= 1, name


def test_the_fixture_is_sensitive_to_padding_mode(engine, tiny_dir):
    """Guard for the guard: reflect (instead of symmetric) padding must miss the fixture badly."""
    image = read_rgb(tiny_dir / "cases" / "stroke_100x76_image.png")
    mask = read_gray(tiny_dir / "cases" / "stroke_100x76_mask.png") > 0
    expected = np.load(tiny_dir / "cases" / "stroke_100x76_expected.npy")
    pad = ((0, 4), (0, 4))
    x = torch.from_numpy(np.pad(image, pad + ((0, 0),), mode="reflect")).permute(2, 0, 1)[None].float() / 255
    m = torch.from_numpy(np.pad(mask, pad, mode="reflect"))[None, None].float()
    with torch.inference_mode():
        out = m * engine.backend.generator(torch.cat((x * (1 - m), m), 1)) + (1 - m) * x
    wrong = out[0, :, :76, :100].permute(1, 2, 0).numpy()
    assert np.abs(wrong - expected).max() > 10 / 255


# ---------------------------------------------------------------- unmasked pixels never change

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 160),
    strategy=st.sampled_from(["original", "resize", "crop"]),
    feather=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
@example(height=33, width=150, strategy="crop", feather=3, seed=1)
@example(height=150 // 2, width=33, strategy="resize", feather=0, seed=2)
@example(height=1, width=1, strategy="original", feather=2, seed=3)
@example(height=1, width=1, strategy="crop", feather=0, seed=4)
def test_every_strategy_keeps_unmasked_pixels_bit_identical(small_hd_engine, height, width, strategy, feather, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = (rng.random((height, width)) < rng.uniform(0.02, 0.6)).astype(np.uint8) * rng.integers(1, 256)
    result = small_hd_engine.inpaint(image, mask, strategy=strategy, feather=feather)
    assert result.shape == image.shape and result.dtype == np.uint8
    outside = mask == 0
    assert np.array_equal(result[outside], image[outside])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(8, 120),
    width=st.integers(8, 200),
    strategy=st.sampled_from(["original", "resize", "crop"]),
    feather=st.integers(0, 6),
    strokes=st.lists(st.tuples(*[st.floats(0, 1)] * 2, *[st.integers(1, 14)] * 2), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    snap=st.booleans(),
    chunk=st.sampled_from([3, engine_module.FEATHER_CHUNK_PIXELS]),
)
# Two regions far apart: two crops, pasted over the box that holds both.
@example(height=120, width=200, strategy="crop", feather=3, strokes=[(0.1, 0.05, 10, 10), (0.8, 0.85, 10, 14)], seed=1,
         snap=False, chunk=3)
@example(height=120, width=200, strategy="crop", feather=3, strokes=[(0.1, 0.05, 10, 10), (0.8, 0.85, 10, 14)], seed=1,
         snap=True, chunk=engine_module.FEATHER_CHUNK_PIXELS)
def test_compose_is_the_whole_frame_paste_and_blend(small_hd_engine, height, width, strategy, feather, strokes, seed,
                                                    snap, chunk, monkeypatch):
    """compose works on the mask's box and, where one run covers it, on a window of that run's
    output; the result is what pasting every run's output over the whole frame in order and
    blending with the whole frame's feather weights gives. `snap`: crops on the ladder of sides,
    as the GPU fast path plans them. `chunk`: the feather ramp's chunks, as few pixels as 3 (many
    chunks, blended on the pool at once) or as many as the engine's."""
    monkeypatch.setattr(small_hd_engine.backend, "prefers_few_shapes", snap)
    monkeypatch.setattr(engine_module, "FEATHER_CHUNK_PIXELS", chunk)
    monkeypatch.setattr(parallel, "cores", lambda: 8)
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    for down, right, rows, cols in strokes:
        top, left = int(down * (height - 1)), int(right * (width - 1))
        mask[top:top + rows, left:left + cols] = True
    engine = small_hd_engine
    job = engine.prepare(image, mask, strategy, dilate=1)
    outputs = engine.run_models(job)
    pasted = image.astype(np.float32)
    for run, output in zip(job.runs, outputs, strict=True):
        if run.scaled:
            output = cv2.resize(output, run.box.shape[::-1], interpolation=cv2.INTER_CUBIC)
        pasted[run.box.slices] = output
    refined = job.region.over(masks.Box(0, 0, height, width))
    weights = masks.feather_weights(refined, feather)[..., None]
    expected = np.where(refined[..., None], np.rint(weights * pasted + (1 - weights) * image), image).astype(np.uint8)
    assert np.array_equal(engine.compose(job, outputs, feather), expected)


def test_dilation_changes_pixels_only_within_the_dilation_radius(engine):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), np.uint8)
    mask[30:34, 38:42] = 255
    result = engine.inpaint(image, mask, strategy="original", dilate=6)
    changed = np.any(result != image, axis=2)
    # Distance of every pixel to the painted square, measured independently of the engine.
    distance = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    assert changed.any()
    assert distance[changed].max() <= 6.5
    assert changed[distance > 4].any(), "the repair did not reach beyond the painted pixels"


@pytest.mark.parametrize("window", [
    lambda image: image,  # a whole image
    lambda image: image[2:15, 3:25],  # a box of one, as compose meets them
    lambda image: image[2:15, 3:25, ::-1],  # channels reversed: indexed as it is
    lambda image: image[::2, ::3],  # pixels apart: indexed as it is
], ids=["image", "window", "reversed-channels", "strided"])
def test_ramp_pixels_read_and_write_exactly_the_pixels_at_their_coordinates(window):
    """The feather blend's gather and scatter (engine._RampPixels) against numpy's own indexing,
    for every layout of an RGB window, and nothing written outside the pixels asked for."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    view = window(image)
    where = rng.choice(view.shape[0] * view.shape[1], 25, replace=False)
    rows, cols = where // view.shape[1], where % view.shape[1]
    pixels = engine_module._RampPixels(view, rows, cols)
    assert np.array_equal(pixels.get(slice(None)), view[rows, cols])
    assert np.array_equal(pixels.get(slice(5, 9)), view[rows[5:9], cols[5:9]])
    values = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    expected = image.copy()
    window(expected)[rows[5:9], cols[5:9]] = values
    pixels.put(slice(5, 9), values)
    assert np.array_equal(image, expected)


def test_feather_blends_at_the_mask_edge_and_not_deep_inside(engine):
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1
    sharp = engine.inpaint(image, mask, strategy="original")
    soft = engine.inpaint(image, mask, strategy="original", feather=4)
    assert np.array_equal(soft[32, 32], sharp[32, 32]), "deep inside the mask, feathering must not act"
    edge = soft[16, 20:44].astype(float)
    expected_edge = (sharp[16, 20:44] * 0.2 + image[16, 20:44] * 0.8)
    assert np.abs(edge - expected_edge).max() <= 1.0, "border pixel (distance 1) is 1/(4+1) repair"
    assert not np.array_equal(soft, sharp)


# ---------------------------------------------------------------- the HD strategies

def test_crop_strategy_runs_the_model_on_each_region_with_its_margin(small_hd_engine):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    mask = np.zeros((120, 200), np.uint8)
    mask[10:20, 10:20] = 1  # two regions far apart: two crops
    mask[90:100, 170:185] = 1
    with model_calls(small_hd_engine) as shapes:
        result = small_hd_engine.inpaint(image, mask, strategy="crop")
    # Region 1: rows 2..28, cols 2..28 -> 26×26, padded to 32×32; region 2: rows 82..108, cols 162..193.
    assert shapes == [(1, 4, 32, 32), (1, 4, 32, 32)]
    crop_alone = small_hd_engine.inpaint(image[2:28, 2:28], mask[2:28, 2:28], strategy="original")
    assert np.array_equal(result[2:28, 2:28], crop_alone)


def test_crop_regions_merge_when_a_merged_box_reaches_a_third_region(small_hd_engine):
    image = np.random.default_rng(9).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    mask = np.zeros((120, 200), np.uint8)
    mask[10:20, 10:20] = 1  # box rows 2..28, cols 2..28
    mask[30:40, 30:40] = 1  # box rows 22..48, cols 22..48: overlaps the first
    mask[40:45, 10:14] = 1  # box rows 32..53, cols 2..22: overlaps neither, but the union of the two
    mask[90:100, 170:185] = 1  # far away: a crop of its own
    with model_calls(small_hd_engine) as shapes:
        small_hd_engine.inpaint(image, mask, strategy="crop")
    # Rows 2..53, cols 2..48 -> 51×46, padded to 56×48; then rows 82..108, cols 162..193.
    assert shapes == [(1, 4, 56, 48), (1, 4, 32, 32)]


def test_crop_strategy_runs_the_whole_image_below_its_trigger(small_hd_engine):
    image = np.full((40, 44, 3), 128, np.uint8)
    mask = np.zeros((40, 44), np.uint8)
    mask[5:8, 5:8] = 1
    with model_calls(small_hd_engine) as shapes:
        small_hd_engine.inpaint(image, mask, strategy="crop")
    assert shapes == [(1, 4, 40, 48)]


def test_resize_strategy_limits_the_long_side_the_model_sees(small_hd_engine):
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    mask = np.zeros((60, 100), np.uint8)
    mask[20:40, 30:60] = 1
    with model_calls(small_hd_engine) as shapes:
        result = small_hd_engine.inpaint(image, mask, strategy="resize")
    assert shapes == [(1, 4, 24, 40)]  # 100×60 scaled to 40×24
    assert not np.array_equal(result[20:40, 30:60], image[20:40, 30:60])


# ---------------------------------------------------------------- layouts and edge cases

def test_rgba_keeps_its_alpha_and_gray_stays_gray(engine):
    rng = np.random.default_rng(9)
    rgba = rng.integers(0, 256, (48, 40, 4), dtype=np.uint8)
    mask = np.zeros((48, 40), np.uint8)
    mask[10:30, 10:30] = 255
    out = engine.inpaint(rgba, mask)
    assert out.shape == rgba.shape
    assert np.array_equal(out[..., 3], rgba[..., 3])
    assert not np.array_equal(out[10:30, 10:30, :3], rgba[10:30, 10:30, :3])

    gray = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    for image in (gray, gray[..., None]):
        out = engine.inpaint(image, mask)
        assert out.shape == image.shape
        assert not np.array_equal(out[10:30, 10:30], image[10:30, 10:30])
        assert np.array_equal(out[mask == 0], image[mask == 0])


def test_an_empty_mask_returns_the_input_without_running_the_model(engine):
    image = np.arange(30 * 20 * 3, dtype=np.uint32).reshape(30, 20, 3).astype(np.uint8)
    with model_calls(engine) as shapes:
        out = engine.inpaint(image, np.zeros((30, 20), np.uint8), dilate=5, feather=5)
    assert shapes == []
    assert np.array_equal(out, image) and out is not image


def test_a_multichannel_mask_counts_any_nonzero_channel(engine):
    image = np.full((32, 32, 3), 90, np.uint8)
    mask = np.zeros((32, 32, 3), np.uint8)
    mask[4:8, 4:8, 2] = 1
    assert np.array_equal(masks.binarize(mask), mask.max(axis=2) > 0)
    out = engine.inpaint(image, mask)
    assert np.array_equal(out[mask.max(axis=2) == 0], image[mask.max(axis=2) == 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.ones((10, 12), np.uint8)}, "mask is 12×10 but the image is 16×12"),
        ({"strategy": "tile"}, "unknown strategy 'tile'"),
        ({"dilate": -1}, "zero or positive"),
        ({"image": np.zeros((12, 16, 3), np.float32)}, "must be uint8"),
        ({"image": np.zeros((12, 16, 2), np.uint8)}, "unsupported image shape"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(engine, kwargs, message):
    call = {"image": np.zeros((12, 16, 3), np.uint8), "mask": np.ones((12, 16), np.uint8), **kwargs}
    with pytest.raises(EngineError, match=message):
        engine.inpaint(**call)


def test_fp16_on_the_cpu_is_refused(tiny_dir):
    with pytest.raises(EngineError, match="fp16 needs a CUDA device"):
        InpaintEngine(tiny_dir, device="cpu", precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_an_error_not_a_silent_cpu_run(tiny_dir):
    with pytest.raises(EngineError, match="CUDA is not available"):
        InpaintEngine(tiny_dir, device="cuda")


def test_auto_precision_is_fp32_on_the_cpu(engine):
    assert engine.precision == "fp32"
    assert all(p.dtype == torch.float32 for p in engine.backend.generator.parameters())
    assert engine.describe()["source"] == "official-dir"
    assert engine.describe()["fallback"] is False


def test_on_the_cpu_the_network_runs_channels_last(engine):
    """oneDNN's layout, weights and activations alike: nothing reordered per convolution (the
    fixture tests above hold its output to the official one)."""
    convolutions = [module for module in engine.backend.generator.modules() if isinstance(module, torch.nn.Conv2d)]
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convolutions)
    seen = []
    hooks = [conv.register_forward_hook(lambda _module, inputs, _output: seen.append(
        inputs[0].is_contiguous(memory_format=torch.channels_last))) for conv in convolutions]
    try:
        engine.inpaint(np.zeros((40, 48, 3), np.uint8), np.ones((40, 48), np.uint8), strategy="original")
    finally:
        for hook in hooks:
            hook.remove()
    # All but those after a Fourier unit's inverse transform, which answers in torch's default layout.
    assert len(seen) == len(convolutions) and sum(seen) >= 0.75 * len(seen), seen


# ---------------------------------------------------------------- weights discovery and the fallback

def test_without_weights_the_engine_falls_back_to_opencv_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lama.engine"):
        engine = InpaintEngine(device="cpu")
    assert not engine.backend.model_loaded and engine.device.is_cuda is False
    info = engine.describe()
    assert info["name"] == "opencv-telea" and info["fallback"] is True
    assert "no big-lama weights" in info["note"]
    assert "OpenCV Telea" in caplog.text

    image = np.full((40, 40, 3), 200, np.uint8)
    image[15:25, 15:25] = 0
    mask = np.zeros((40, 40), np.uint8)
    mask[14:26, 14:26] = 1
    out = engine.inpaint(image, mask)
    assert out[15:25, 15:25].mean() > 150, "the black square should be filled from its gray surroundings"
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_on_a_gpu_machine_the_fallback_reports_the_cpu_it_runs_on(tmp_path, monkeypatch):
    """/healthz, /metrics and the sampler all read the engine's device: the fallback's is the CPU."""
    monkeypatch.chdir(tmp_path)  # no weights here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    engine = InpaintEngine(device="auto")
    assert engine.describe()["device"] == "cpu" and engine.describe()["fallback"] is True
    assert not engine.device.is_cuda and engine.device.memory_report() is None
    assert engine.device.allocator_reading() is None and engine.gpu_budget() is None


def test_weights_in_models_are_found_without_being_named(tmp_path, monkeypatch, tiny_dir):
    from lama.checkpoint import load_checkpoint, save_safetensors

    (tmp_path / "models").mkdir()
    save_safetensors(load_checkpoint(tiny_dir), tmp_path / "models" / "big-lama.safetensors")
    monkeypatch.chdir(tmp_path)
    engine = InpaintEngine(device="cpu")
    assert engine.backend.model_loaded
    assert engine.describe()["source"] == "safetensors"


@pytest.mark.parametrize("strategy", ["original", "crop", "resize"])
def test_max_side_bounds_what_the_model_sees_whatever_the_strategy(tiny_dir, strategy):
    engine = InpaintEngine(tiny_dir, device="cpu", hd=HDSettings(crop_trigger=48, crop_margin=200,
                                                                 resize_limit=64, max_side=40))
    rng = np.random.default_rng(10)
    image = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    mask = np.zeros((60, 100), np.uint8)
    mask[20:40, 30:60] = 1
    with model_calls(engine) as shapes:
        result = engine.inpaint(image, mask, strategy=strategy)
    assert shapes == [(1, 4, 24, 40)]  # 100×60 scaled to 40×24 in every case
    assert np.array_equal(result[mask == 0], image[mask == 0])


def test_stage_timings_cover_the_repair(engine):
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 1
    timings = {}
    started = time.perf_counter()
    engine.inpaint(image, mask, dilate=3, feather=3, timings=timings)
    elapsed = time.perf_counter() - started
    assert set(timings) == {"preprocess", "infer", "postprocess"}
    assert all(value > 0 for value in timings.values())
    assert sum(timings.values()) <= elapsed
    assert timings["infer"] > timings["preprocess"], "the model run is the expensive part"


def test_only_big_lama_s_architecture_is_called_big_lama(tiny_dir):
    assert model_name(BIG_LAMA_CONFIG, 50_975_875) == "big-lama"
    tiny = InpaintEngine(tiny_dir, device="cpu").describe()
    assert tiny["name"] == "lama-0.5M" and tiny["parameters"] == 533_795
