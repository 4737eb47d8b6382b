"""The Gradio Blocks UI: paint over what should go, click Repair, get the photo back.

The handlers are plain functions of (service, component values) so that tests can call
them without a browser; build_ui only lays out components and wires events to them.
All pixel work goes through RepairService, the same path as the HTTP API.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import gradio as gr
import numpy as np

from lama.engine import STRATEGIES
from webui.dashboard import build_resources_tab
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

EditorValue = dict[str, Any]


# ---------------------------------------------------------------- handlers

def editor_image(value: EditorValue | None) -> np.ndarray:
    """The uploaded photo: RGB, or RGBA when it has real transparency."""
    background = value.get("background") if isinstance(value, dict) else None
    if background is None:
        raise gr.Error(NO_IMAGE)
    image = _as_array(background)
    # What the editor hands over: uint8 H×W, H×W×3 or H×W×4. Anything else (a broken
    # client, a hand-made request) is refused with a message rather than a traceback.
    if (image is None or image.size == 0 or image.dtype.kind not in "biu"
            or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)))
            or (image.dtype != np.uint8 and (image.min() < 0 or image.max() > 255))):
        raise gr.Error(UNREADABLE_IMAGE)
    image = image.astype(np.uint8, copy=False)
    # The editor hands every image over as RGBA; an alpha that is opaque everywhere is
    # only the editor's, and keeping it would turn plain RGB photos into RGBA results.
    if image.ndim == 3 and image.shape[2] == 4 and (image[..., 3] == 255).all():
        image = image[..., :3]
    return image


def editor_mask(value: EditorValue, shape: tuple[int, int]) -> np.ndarray:
    """Where the user painted: any pixel of any layer with alpha > 0.

    The layer holds exactly the strokes, whatever their colour or opacity. Comparing the
    composite with the background instead would miss strokes over pixels of the brush's
    own colour, and depend on the canvas's colour round trip for transparent photos.
    """
    mask = np.zeros(shape, dtype=bool)
    layers = value.get("layers") or []
    if not isinstance(layers, (list, tuple)):
        raise gr.Error(UNREADABLE_LAYER)
    for layer in layers:
        if layer is None:
            continue
        layer = _as_array(layer)
        if layer is None or layer.ndim != 3 or layer.shape[2] != 4 or layer.dtype.kind not in "biuf":
            raise gr.Error(UNREADABLE_LAYER)
        if layer.shape[:2] != shape:
            raise gr.Error(f"the painted layer is {layer.shape[1]}×{layer.shape[0]} but the photo is "
                           f"{shape[1]}×{shape[0]}; clear the editor and upload the photo again")
        mask |= layer[..., 3] > 0
    if not mask.any():
        raise gr.Error(NO_PAINT)
    return mask


def _as_array(value: Any) -> np.ndarray | None:
    try:
        return np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists, objects numpy cannot hold
        return None


def _px(name: str, value: Any) -> int:
    """A slider's value as whole pixels; gr.Error for what is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise gr.Error(f"{name} must be a number of pixels, got {value!r}")
    return int(number)


def repair(service: RepairService, value: EditorValue | None, strategy: str, dilate: float, feather: float
           ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], str]:
    """Repair button: (result, (before, after) for the slider, timing line)."""
    image = editor_image(value)
    mask = editor_mask(value, image.shape[:2])
    options = RepairOptions(strategy, _px("dilate", dilate), _px("feather", feather))
    try:
        result = service.repair(image, mask, options)
    except ServiceError as error:
        raise gr.Error(error.message) from None
    except Exception:
        # Never a silent spinner: the user learns it failed, the operator gets the traceback.
        log.exception("repair failed")
        raise gr.Error("The repair failed on the server (the log has the details); please try again.") from None
    return result.image, (image, result.image), result.summary


def continue_editing(result: np.ndarray | None) -> EditorValue:
    """'Continue editing': the result becomes the editor's photo, with nothing painted yet."""
    if result is None:
        raise gr.Error(NO_RESULT)
    return {"background": result, "layers": [], "composite": result}


# ---------------------------------------------------------------- layout

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
    with gr.Blocks(title="LaMa inpainting", delete_cache=delete_cache) as blocks:
        gr.Markdown("# LaMa inpainting\nDrop a photo, paint over what should go, click **Repair**.")
        banner = fallback_banner(service)
        if banner:
            gr.Markdown(banner, elem_id="fallback-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Repair", id="repair-tab"):
                # Every component sits in a Column: an ImageEditor directly in a Row gets a wrongly
                # sized canvas on first load (Gradio 6).
                with gr.Row():
                    with gr.Column(scale=3):
                        editor = gr.ImageEditor(
                            elem_id="editor", label="Photo (paint over what should be removed)",
                            type="numpy", image_mode="RGBA", sources=("upload", "clipboard"),
                            brush=gr.Brush(colors=[BRUSH_COLOUR], color_mode="fixed"), eraser=gr.Eraser(),
                            layers=False, transforms=(),
                            # PNG, not the default WebP: "Continue editing" must not degrade the photo.
                            format="png")
                    with gr.Column(scale=1, min_width=240):
                        strategy = gr.Radio(list(STRATEGIES), value=defaults.strategy, label="Strategy",
                                            info="crop: repair around each painted area at full resolution; "
                                                 "resize: repair a downscaled copy; original: the whole photo")
                        dilate = gr.Slider(0, max(SLIDER_MAX_PX, defaults.dilate), value=defaults.dilate, step=1,
                                           label="Mask dilation (px)", info="grow the painted area to catch halos")
                        feather = gr.Slider(0, max(SLIDER_MAX_PX, defaults.feather), value=defaults.feather, step=1,
                                            label="Edge feather (px)", info="blend the repair into its surroundings")
                        repair_button = gr.Button("Repair", elem_id="repair", variant="primary")
                        summary = gr.Markdown(elem_id="summary")
                with gr.Row():
                    with gr.Column():
                        # PNG, not the default lossy WebP: the result is what people download.
                        result = gr.Image(elem_id="result", label="Result", format="png", type="numpy",
                                          image_mode=None, interactive=False, height=RESULT_HEIGHT_PX,
                                          buttons=["download", "fullscreen"])
                        continue_button = gr.Button("Continue editing", elem_id="continue")
                    with gr.Column():
                        comparison = gr.ImageSlider(elem_id="comparison", label="Before / after", format="png",
                                                    image_mode=None, interactive=False, height=RESULT_HEIGHT_PX,
                                                    max_height=RESULT_HEIGHT_PX, buttons=["fullscreen"])
            build_resources_tab(tabs, service.sampler, service.requests)

        # Private events: scripts have the documented HTTP API (/api/v1/inpaint) instead.
        repair_button.click(functools.partial(repair, service), inputs=[editor, strategy, dilate, feather],
                            outputs=[result, comparison, summary], api_visibility="private")
        continue_button.click(continue_editing, inputs=result, outputs=editor, api_visibility="private")
    # The service's queue bounds GPU work; Gradio's queue in front of it shows people their
    # place in line and refuses (with a message) beyond the same capacity.
    blocks.queue(default_concurrency_limit=UI_CONCURRENCY, max_size=service.queue.capacity)
    return blocks
