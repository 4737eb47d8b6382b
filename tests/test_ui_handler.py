"""The UI's handlers called directly, as Gradio calls them, on the tiny checkpoint (no browser).

The editor's value reaches the handler as the page sends it (the event skips Gradio's own
preprocessing): files the page uploaded, which the handler decodes through lama.imageio.
"""

from __future__ import annotations

import itertools
import os
import re
import threading

import gradio as gr
import numpy as np
import pytest

from lama import imageio, masks
from lama.engine import InpaintEngine
from lama.imageio import ImageLimits
from monitor.metrics import ServiceMetrics
from webui import ui
from webui.jobs import JobQueue
from webui.outputs import OutputStore
from webui.service import RepairOptions, RepairService

# Small enough for tests to build an image over it cheaply; the formatting of the limit
# in the message ("1 MP") is part of what is checked.
LIMITS = ImageLimits(max_pixels=1_000_000, max_side=1200)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


def make_service(engine: InpaintEngine, outputs, capacity: int = 4) -> RepairService:
    """As app.build_app wires it, minus the web app."""
    queue = JobQueue(capacity)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    return RepairService(engine, OutputStore(outputs), queue, metrics, LIMITS)


@pytest.fixture
def service(engine, tmp_path):
    service = make_service(engine, tmp_path / "outputs")
    yield service
    service.queue.shutdown()


def photo(height: int = 96, width: int = 128, alpha: np.ndarray | None = None) -> np.ndarray:
    """A smooth, textured RGB (or RGBA) test picture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], axis=-1)
    rgb = np.clip(rgb + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    return rgb if alpha is None else np.dstack([rgb, alpha]).astype(np.uint8)


def stroke(height: int, width: int, box: tuple[slice, slice]) -> np.ndarray:
    painted = np.zeros((height, width), dtype=bool)
    painted[box] = True
    return painted


_uploads = itertools.count()


def file_data(folder, image: np.ndarray, name: str) -> dict:
    """A file the page uploaded, as the editor's value names it (Gradio's FileData)."""
    path = folder / f"{next(_uploads)}-{name}"
    path.write_bytes(imageio.encode_image(image, "png"))
    return {"path": str(path), "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def editor_value(folder, image: np.ndarray, painted: np.ndarray | None) -> dict:
    """What the page sends for gr.ImageEditor: the RGBA background, one RGBA layer holding the
    strokes (translucent magenta) and the composite, each an uploaded PNG."""
    background = image if image.shape[2] == 4 else np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    layers = []
    composite = background.copy()
    if painted is not None:
        layer = np.zeros_like(background)
        layer[painted] = (255, 0, 255, 127)
        layers.append(file_data(folder, layer, "layer_0.png"))
        composite[painted, :3] = (background[painted, :3] // 2 + layer[painted, :3] // 2)
    return {"background": file_data(folder, background, "background.png"), "layers": layers,
            "composite": file_data(folder, composite, "composite.png"), "id": None}


def run_repair(service: RepairService, value: dict, strategy: str = "crop", dilate: int = 0, feather: int = 0):
    return ui.repair(service, value, strategy, dilate, feather)


def test_repair_changes_only_the_painted_area_grown_by_the_dilation(service, tmp_path):
    image = photo()
    painted = stroke(96, 128, (slice(40, 52), slice(30, 90)))
    result, (before, after), summary = run_repair(service, editor_value(tmp_path, image, painted), dilate=3)

    assert result.shape == image.shape and result.dtype == np.uint8  # opaque upload -> RGB result
    changed = (result != image).any(axis=2)
    assert not (changed & ~masks.dilate(painted, 3)).any(), "pixels outside the dilated stroke changed"
    assert changed[painted].mean() > 0.5, "the painted area was not repaired"
    assert np.array_equal(before, image) and np.array_equal(after, result)
    assert re.fullmatch(r"128×96 · \d+ ms on CPU", summary), summary
    assert len(list(service.outputs.root.rglob("*.png"))) == 1  # the result was saved


def test_rgba_upload_keeps_its_alpha(service, tmp_path):
    alpha = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (96, 1))
    image = photo(alpha=alpha)
    painted = stroke(96, 128, (slice(20, 30), slice(60, 100)))
    result, _, _ = run_repair(service, editor_value(tmp_path, image, painted))

    assert result.shape == (96, 128, 4)
    assert np.array_equal(result[..., 3], alpha)
    assert not (result[~painted] != image[~painted]).any()


@pytest.mark.parametrize("layers", [[], [np.zeros((96, 128, 4), np.uint8)]], ids=["no layer", "empty layer"])
def test_nothing_painted_asks_to_paint_first(service, tmp_path, layers):
    value = editor_value(tmp_path, photo(), None) | {"layers": [file_data(tmp_path, layer, "l.png") for layer in layers]}
    with pytest.raises(gr.Error, match="Paint over what should be removed first"):
        run_repair(service, value)


@pytest.mark.parametrize("value", [None, {"background": None, "layers": [], "composite": None}],
                         ids=["empty editor", "strokes without a photo"])
def test_no_photo_asks_to_upload_first(service, value):
    with pytest.raises(gr.Error, match="Upload a photo first"):
        run_repair(service, value)


def test_too_large_image_names_the_limit(service, tmp_path):
    image = np.zeros((1000, 1100, 3), np.uint8)
    painted = stroke(1000, 1100, (slice(10, 20), slice(10, 20)))
    with pytest.raises(gr.Error) as raised:
        run_repair(service, editor_value(tmp_path, image, painted))
    assert re.fullmatch(r"The photo: image is 1100×1000 = 1\.1 MP, the limit is 1(\.0)? MP", raised.value.message)
    assert str(tmp_path) not in raised.value.message  # the server's folders are not the user's business


def test_layer_of_another_size_is_refused_with_a_message(service, tmp_path):
    value = editor_value(tmp_path, photo(), None) | {
        "layers": [file_data(tmp_path, np.full((48, 64, 4), 255, np.uint8), "l.png")]}
    with pytest.raises(gr.Error, match="64×48 but the photo is 128×96"):
        run_repair(service, value)


def test_an_upload_gone_from_the_cache_asks_for_it_again(service, tmp_path):
    value = editor_value(tmp_path, photo(), stroke(96, 128, (slice(0, 8), slice(0, 8))))
    os.unlink(value["background"]["path"])  # the cache sweep removed it
    with pytest.raises(gr.Error, match="no longer on the server"):
        run_repair(service, value)


def test_invalid_option_is_reported(service, tmp_path):
    value = editor_value(tmp_path, photo(), stroke(96, 128, (slice(0, 8), slice(0, 8))))
    with pytest.raises(gr.Error, match="strategy must be one of"):
        run_repair(service, value, strategy="stretch")


def test_full_queue_is_reported_not_waited_on(engine, tmp_path):
    service = make_service(engine, tmp_path, capacity=1)
    release = threading.Event()
    service.queue.submit(release.wait)  # occupies the only slot, as a long API job would
    try:
        with pytest.raises(gr.Error, match="queue is full"):
            run_repair(service, editor_value(tmp_path, photo(), stroke(96, 128, (slice(0, 8), slice(0, 8)))))
    finally:
        release.set()
        service.queue.shutdown()


def test_continue_editing_puts_the_result_back_for_another_pass(service, tmp_path):
    image = photo()
    first, _, _ = run_repair(service, editor_value(tmp_path, image, stroke(96, 128, (slice(10, 20), slice(10, 40)))))
    shown = file_data(tmp_path, first, "image.png")  # the result as Gradio cached and showed it
    value = ui.continue_editing(shown)
    # The file goes back as it is: nothing decoded or encoded on the server.
    assert value == {"background": shown["path"], "layers": [], "composite": shown["path"]}

    # The second pass starts from the first result and keeps what it did; the page sends the
    # editor's photo back (as it re-encodes it: RGBA) with the new strokes.
    second_stroke = stroke(96, 128, (slice(60, 70), slice(80, 110)))
    second, (before, _), _ = run_repair(service, editor_value(tmp_path, first, second_stroke))
    assert np.array_equal(before, first)
    assert np.array_equal(second[~second_stroke], first[~second_stroke])


@pytest.mark.parametrize("result", [None, {"path": None}, "a string"])
def test_continue_editing_without_a_result_says_so(result):
    with pytest.raises(gr.Error, match="repair a photo first"):
        ui.continue_editing(result)


def test_layout_has_the_ids_and_lossless_formats_the_page_relies_on(service):
    blocks = ui.build_ui(service, RepairOptions("resize", 5, 7))
    by_id = {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}
    assert isinstance(by_id["editor"], gr.ImageEditor) and by_id["editor"].format == "png"
    assert isinstance(by_id["repair"], gr.Button) and by_id["repair"].value == "Repair"
    assert isinstance(by_id["result"], gr.Image) and by_id["result"].format == "png"
    assert isinstance(by_id["comparison"], gr.ImageSlider) and by_id["comparison"].format == "png"
    # The handlers read the files themselves, through the gate: Gradio's preprocessing (Pillow on
    # every layer and the composite) never runs for the events that take the editor or the result.
    events = [fn for fn in blocks.fns.values() if {by_id["editor"], by_id["result"]} & set(fn.inputs)]
    assert len(events) == 2 and not any(fn.preprocess for fn in events)
    # No component offers a server function: /gradio_api/component_server stays closed (ui_guard).
    assert not any(getattr(block, "server_fns", None) for block in blocks.blocks.values())
    values = {block.label: block.value for block in blocks.blocks.values() if isinstance(block, (gr.Radio, gr.Slider))}
    assert values == {"Strategy": "resize", "Mask dilation (px)": 5, "Edge feather (px)": 7}
    assert "fallback-banner" not in by_id


def test_fallback_engine_shows_a_banner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ here: the engine falls back to OpenCV
    service = make_service(InpaintEngine(None, device="cpu"), tmp_path / "outputs")
    blocks = ui.build_ui(service, RepairOptions())
    banner = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "fallback-banner")
    assert "big-lama" in banner.value and "python -m lama download" in banner.value
    service.queue.shutdown()
