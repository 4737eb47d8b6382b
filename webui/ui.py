"""The Gradio Blocks UI: paint over what should go, click Repair, get the photo back.

build_ui only lays out components and wires events: the editor and its handlers are
webui/editor.py (plain functions that tests call without a browser); all pixel work goes
through RepairService, the same path as the HTTP API.
"""

from __future__ import annotations

import gradio as gr

from lama.engine import STRATEGIES
from webui.client_api import API_NAME, repair_endpoint
from webui.dashboard import build_resources_tab
from webui.editor import EditorBackend, build_editor
from service.pipeline import RepairOptions, RepairService

SLIDER_MAX_PX = 64  # dilate/feather beyond this is rarely useful; the service accepts more
# Several handlers may wait on the service's GPU queue at once, so that one repair can be
# decoded or encoded while another runs on the GPU; the service's queue serializes the GPU.
UI_CONCURRENCY = 2
REPAIR_GROUP = "repair"  # the page's repairs and the API endpoint's share UI_CONCURRENCY


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
    backend = EditorBackend(service)
    with gr.Blocks(title="LaMa inpainting", delete_cache=delete_cache) as blocks:
        gr.Markdown("# LaMa inpainting\nDrop a photo, paint over what should go, click **Repair**.")
        banner = fallback_banner(service)
        if banner:
            gr.Markdown(banner, elem_id="fallback-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Repair", id="repair-tab"):
                # The editor holds the tools, the canvas, Repair and the result (webui/editor.py).
                editor = build_editor(backend, mask_threshold=defaults.mask_threshold, elem_id="editor")
                with gr.Row():
                    strategy = gr.Radio(list(STRATEGIES), value=defaults.strategy, label="Strategy",
                                        info="crop: repair around each painted area at full resolution; "
                                             "resize: repair a downscaled copy; original: the whole photo")
                    dilate = gr.Slider(0, max(SLIDER_MAX_PX, defaults.dilate), value=defaults.dilate, step=1,
                                       label="Mask dilation (px)", info="grow the painted area to catch halos")
                    feather = gr.Slider(0, max(SLIDER_MAX_PX, defaults.feather), value=defaults.feather, step=1,
                                        label="Edge feather (px)", info="blend the repair into its surroundings")
            build_resources_tab(tabs, service.sampler, service.requests)

        # The page's event names its files in the event's data, which Gradio's clients cannot send:
        # private. The same handler is public as /repair for them (webui/client_api.py), in the
        # same concurrency group. The editor shows its own progress and errors: no Gradio overlay.
        editor.repair(backend.on_repair, inputs=[strategy, dilate, feather], outputs=editor,
                      api_visibility="private", show_progress="hidden", concurrency_id=REPAIR_GROUP)
        gr.api(repair_endpoint(backend, defaults), api_name=API_NAME, concurrency_id=REPAIR_GROUP)
    # The service's queue bounds GPU work; Gradio's queue in front of it shows people their
    # place in line and refuses (with a message) beyond the same capacity.
    blocks.queue(default_concurrency_limit=UI_CONCURRENCY, max_size=service.queue.capacity)
    return blocks
