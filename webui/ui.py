"""The Gradio Blocks UI: paint over what should go, click Repair, get the photo back.

The handlers are plain functions of (service, component values) so that tests can call
them without a browser; build_ui only lays out components and wires events to them.
All pixel work goes through RepairService, the same path as the HTTP API.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any

import gradio as gr
import numpy as np

from lama import imageio
from lama.engine import STRATEGIES
from lama.imageio import ImageLimits
from webui.dashboard import build_resources_tab
from webui.editor import EditorBackend, build_editor
from webui.service import RepairOptions, RepairService, ServiceError

log = logging.getLogger(__name__)

# Translucent magenta: strokes stay visible on any photo and the object under them too.
BRUSH_COLOUR = ("#ff00ff", 0.5)
SLIDER_MAX_PX = 64  # dilate/feather beyond this is rarely useful; the service accepts more
RESULT_HEIGHT_PX = 420  # result and comparison side by side at one height, whatever the photo
# Several handlers may wait on the service's GPU queue at once, so that one repair can be
# decoded or encoded while another runs on the GPU; the service's queue serializes the GPU.
UI_CONCURRENCY = 2

NO_IMAGE = "Upload a photo first: drop it on the editor, click it to browse, or paste one."
NO_PAINT = "Paint over what should be removed first (the brush tool), then click Repair."
NO_RESULT = "Nothing to continue with yet: repair a photo first."
UNREADABLE_IMAGE = "The photo could not be read; clear the editor and upload it again."
UNREADABLE_LAYER = "The painted strokes could not be read; clear the editor and upload the photo again."
REMOTE_FILE = "This page takes files uploaded to it, not links: upload the photo."
EXPIRED = "The photo is no longer on the server (uploads are kept for a while only); upload it again."

# What the editor sends (its value unprocessed: the event runs with preprocess=False, see
# build_ui): {"background": FileData, "layers": [FileData, ...], "composite": FileData}, each
# FileData a dict whose "path" is a file the page uploaded to Gradio's cache.
EditorPayload = dict[str, Any]
# The editor paints on one layer (layers=False); the browser sends it and nothing more.
MAX_LAYERS = 1


# ---------------------------------------------------------------- handlers

def editor_image(value: EditorPayload | None, limits: ImageLimits) -> np.ndarray:
    """The uploaded photo, through the service's decode gate: RGB, or RGBA when it has real
    transparency."""
    image = _decode(_background(value), limits, "photo")
    # The editor hands every image over as RGBA; an alpha that is opaque everywhere is
    # only the editor's, and keeping it would turn plain RGB photos into RGBA results.
    if image.ndim == 3 and image.shape[2] == 4 and (image[..., 3] == 255).all():
        image = image[..., :3]
    return image


def _background(value: EditorPayload | None) -> Any:
    background = value.get("background") if isinstance(value, dict) else None
    if background is None:
        raise gr.Error(NO_IMAGE)
    return background


def editor_layers(value: EditorPayload | None) -> list[Any]:
    """The painted layers' files, counted before anything is decoded."""
    _background(value)
    layers = value.get("layers") or []
    if not isinstance(layers, (list, tuple)):
        raise gr.Error(UNREADABLE_LAYER)
    layers = [layer for layer in layers if layer is not None]
    if len(layers) > MAX_LAYERS:
        raise gr.Error(f"The editor sent {len(layers)} painted layers; this page paints on {MAX_LAYERS}. "
                       "Clear the editor and upload the photo again.")
    return layers


def editor_mask(layers: list[Any], shape: tuple[int, int], limits: ImageLimits) -> np.ndarray:
    """Where the user painted: any pixel of any layer with alpha > 0.

    The layer holds exactly the strokes, whatever their colour or opacity. Comparing the
    composite with the background instead would miss strokes over pixels of the brush's
    own colour, and depend on the canvas's colour round trip for transparent photos (and the
    composite, a third full-size image, is never decoded at all).
    """
    mask = np.zeros(shape, dtype=bool)
    for file in layers:
        layer = _decode(file, limits, "painted layer")
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise gr.Error(UNREADABLE_LAYER)
        if layer.shape[:2] != shape:
            raise gr.Error(f"the painted layer is {layer.shape[1]}×{layer.shape[0]} but the photo is "
                           f"{shape[1]}×{shape[0]}; clear the editor and upload the photo again")
        mask |= layer[..., 3] > 0
    if not mask.any():
        raise gr.Error(NO_PAINT)
    return mask


def _decode(file: Any, limits: ImageLimits, what: str) -> np.ndarray:
    """One of the editor's files through lama.imageio's gate: its size, then its header, are
    checked against the service's limits before any full-size buffer exists."""
    path = file.get("path") if isinstance(file, dict) else None
    if not isinstance(path, str):
        raise gr.Error(UNREADABLE_LAYER if what == "painted layer" else UNREADABLE_IMAGE)
    try:
        return imageio.read_image(path, limits)
    except imageio.ImageError as error:
        if not os.path.isfile(path):
            raise gr.Error(EXPIRED) from None
        # read_image names the file; the person only needs the reason.
        raise gr.Error(f"The {what}: {str(error).removeprefix(f'{path}: ')}") from None


def _px(name: str, value: Any) -> int:
    """A slider's value as whole pixels; gr.Error for what is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise gr.Error(f"{name} must be a number of pixels, got {value!r}")
    return int(number)


def repair(service: RepairService, value: EditorPayload | None, strategy: str, dilate: float, feather: float
           ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], str]:
    """Repair button: (result, (before, after) for the slider, timing line)."""
    # Cheap checks first: the options, a photo, the number of layers; then the decodes.
    options = RepairOptions(strategy, _px("dilate", dilate), _px("feather", feather))
    try:
        options.validate()
    except ServiceError as error:
        raise gr.Error(error.message) from None
    layers = editor_layers(value)
    image = editor_image(value, service.limits)
    mask = editor_mask(layers, image.shape[:2], service.limits)
    try:
        result = service.repair(image, mask, options)
    except ServiceError as error:
        raise gr.Error(error.message) from None
    except Exception:
        # Never a silent spinner: the user learns it failed, the operator gets the traceback.
        log.exception("repair failed")
        raise gr.Error("The repair failed on the server (the log has the details); please try again.") from None
    return result.image, (image, result.image), result.summary


def continue_editing(result: dict[str, Any] | None) -> dict[str, Any]:
    """'Continue editing': the result becomes the editor's photo, with nothing painted yet. The
    result's file (in Gradio's cache: Gradio checked the path) goes back as it is: the server
    decodes nothing, the browser shows it."""
    path = result.get("path") if isinstance(result, dict) else None
    if not isinstance(path, str):
        raise gr.Error(NO_RESULT)
    return {"background": path, "layers": [], "composite": path}


# ---------------------------------------------------------------- layout

def _local_files_only(component: gr.components.Component) -> None:
    """Refuse a URL as this input's file: Gradio would download it into its cache first, read
    whole into memory and of any size. The page only ever sends files it uploaded. Set on the
    instance: a subclass would make Gradio write a .pyi file beside this module."""
    move_to_cache = component.async_move_resource_to_block_cache

    async def local_only(url_or_file_path: str | None) -> str | None:
        if isinstance(url_or_file_path, str) and url_or_file_path.startswith(("http://", "https://")):
            raise gr.Error(REMOTE_FILE)
        return await move_to_cache(url_or_file_path)

    component.async_move_resource_to_block_cache = local_only


def fallback_banner(service: RepairService) -> str | None:
    if not service.engine.uses_fallback:
        return None
    return f"⚠️ **Running without the big-lama model**: {service.engine.describe()['note']}."


def build_ui(service: RepairService, defaults: RepairOptions, cache_max_age_s: float = 0) -> gr.Blocks:
    """`cache_max_age_s`: Gradio deletes the uploads and results it cached for this UI (which it
    serves to whoever holds their URL) once they are this old, checking every minute or more
    often, and all of them when the server stops; 0 keeps them."""
    delete_cache = None
    if cache_max_age_s > 0:
        delete_cache = (max(1, min(60, round(cache_max_age_s / 2))), max(1, round(cache_max_age_s)))
    backend = EditorBackend(service)
    with gr.Blocks(title="LaMa inpainting", delete_cache=delete_cache) as blocks:
        gr.Markdown("# LaMa inpainting\nDrop a photo, paint over what should go, click **Repair**.")
        banner = fallback_banner(service)
        if banner:
            gr.Markdown(banner, elem_id="fallback-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Repair", id="repair-tab"):
                # The editor holds the tools, the canvas, Repair and the result (webui/editor.py).
                editor = build_editor(backend, elem_id="editor")
                with gr.Row():
                    strategy = gr.Radio(list(STRATEGIES), value=defaults.strategy, label="Strategy",
                                        info="crop: repair around each painted area at full resolution; "
                                             "resize: repair a downscaled copy; original: the whole photo")
                    dilate = gr.Slider(0, max(SLIDER_MAX_PX, defaults.dilate), value=defaults.dilate, step=1,
                                       label="Mask dilation (px)", info="grow the painted area to catch halos")
                    feather = gr.Slider(0, max(SLIDER_MAX_PX, defaults.feather), value=defaults.feather, step=1,
                                        label="Edge feather (px)", info="blend the repair into its surroundings")
            build_resources_tab(tabs, service.sampler, service.requests)

        # Private event: scripts have the documented HTTP API (/api/v1/inpaint) instead. The editor
        # shows its own progress and errors: no Gradio overlay on it (show_progress hidden).
        editor.repair(backend.on_repair, inputs=[strategy, dilate, feather], outputs=editor,
                      api_visibility="private", show_progress="hidden")
    # The service's queue bounds GPU work; Gradio's queue in front of it shows people their
    # place in line and refuses (with a message) beyond the same capacity.
    blocks.queue(default_concurrency_limit=UI_CONCURRENCY, max_size=service.queue.capacity)
    return blocks
