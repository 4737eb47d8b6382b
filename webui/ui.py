"""The Gradio Blocks UI: paint over what should go, click Repair, get the photo back.

build_ui only lays out components and wires events: the editor and its handlers are
webui/editor.py (plain functions that tests call without a browser), the Batch tab
webui/batch_tab.py, the Resources tab webui/dashboard.py; all pixel work goes through
RepairService, the same path as the HTTP API.
"""

from __future__ import annotations

import gradio as gr

from lama.engine import STRATEGIES
from lama.output_formats import OUTPUT_FORMATS, SAME, output_format
from webui.batch_tab import build_batch_tab, editor_mask_for_batch
from webui.client_api import API_NAME, repair_endpoint
from webui.dashboard import build_resources_tab
from webui.editor import EditorBackend, build_editor
from webui.gradio_import import without_interim_apps
from service.pipeline import RepairOptions, RepairService

# What the download may be: each format once (jpg is jpeg), and "same".
FORMAT_CHOICES = [(fmt.name.upper(), fmt.name) for fmt in OUTPUT_FORMATS.values()] + [("Same as the photo", SAME)]
SLIDER_MAX_PX = 64  # dilate/feather beyond this is rarely useful; the service accepts more
# Several handlers may wait on the service's GPU queue at once, so that one repair can be
# decoded or encoded while another runs on the GPU; the service's queue serializes the GPU.
UI_CONCURRENCY = 2
REPAIR_GROUP = "repair"  # the page's repairs and the API endpoint's share UI_CONCURRENCY
# Gradio's queue looks for UI events every 1 ms and for progress to send every 10 ms, on the event
# loop that serves the HTTP API too, even when idle. Every 5 and 50 ms: on the H200 the API then
# served 14 % more repairs per second at 16 clients (docs/BENCHMARKS.md, "What holds one process
# back", the pipeline probe's variant at 0941cff), and a UI event waits at most 5 ms to start.
QUEUE_POLL_S = 0.005
PROGRESS_POLL_S = 0.05
ANALYTICS_NEVER = 2**62  # events between two of Gradio's traffic summaries
# Gradio keeps a copy of the page's components for every session (each page opened) that sent an
# event, about 95 kB here, and drops the least recently used only beyond 10,000 by default: close
# to 1 GB held for good by a server that has been opened 10,000 times (tools/ui_session_cost.py).
# A session dropped here that acts again starts from the page's defaults, which is all the page
# keeps on the server: its editor's state lives in the browser.
UI_SESSIONS = 1000


# ---------------------------------------------------------------- layout

def fallback_banner(service: RepairService) -> str | None:
    warning = service.engine.backend.warning
    return f"⚠️ **Running without the big-lama model**: {warning}." if warning else None


def options_row(defaults: RepairOptions) -> tuple[gr.Radio, gr.Slider, gr.Slider]:
    """Strategy, dilation and feather, as a row in the current tab (the Repair and Batch tabs each have one)."""
    with gr.Row():
        strategy = gr.Radio(list(STRATEGIES), value=defaults.strategy, label="Strategy",
                            info="crop: repair around each painted area at full resolution; "
                                 "resize: repair a downscaled copy; original: the whole photo")
        dilate = gr.Slider(0, max(SLIDER_MAX_PX, defaults.dilate), value=defaults.dilate, step=1,
                           label="Mask dilation (px)", info="grow the painted area to catch halos")
        feather = gr.Slider(0, max(SLIDER_MAX_PX, defaults.feather), value=defaults.feather, step=1,
                            label="Edge feather (px)", info="blend the repair into its surroundings")
    return strategy, dilate, feather


def format_choice(defaults: RepairOptions) -> gr.Dropdown:
    """The download format (the editor's, the Batch tab's): the photo's own by default where the settings say same."""
    default = SAME if defaults.format == SAME else output_format(defaults.format).name
    return gr.Dropdown(FORMAT_CHOICES, value=default, label="Download format",
                       info="same: the photo's own (PNG for BMP and TIFF); the photo's EXIF and colour profile are kept")


def gradio_cache_clean_up(cache_max_age_s: float) -> tuple[int, int] | None:
    """Gradio's clean-up of the UI's cache (its delete_cache): (every how many seconds, the files
    older than how many seconds); None for a cache kept for good (`cache_max_age_s` 0)."""
    if cache_max_age_s <= 0:
        return None
    return max(1, min(60, round(cache_max_age_s / 2))), max(1, round(cache_max_age_s))


def build_ui(service: RepairService, defaults: RepairOptions, cache_max_age_s: float = 0) -> gr.Blocks:
    """`cache_max_age_s`: Gradio deletes the uploads and results it cached for this UI (which it
    serves to whoever holds their URL) once they are this old, checking every minute or more
    often, and all of them when the server stops; 0 keeps them."""
    delete_cache = gradio_cache_clean_up(cache_max_age_s)
    backend = EditorBackend(service)
    with without_interim_apps(), gr.Blocks(title="LaMa inpainting", delete_cache=delete_cache) as blocks:
        gr.Markdown("# LaMa inpainting\nDrop a photo, paint over what should go, click **Repair**. "
                    "Scripts: [the HTTP API](/docs).")
        banner = fallback_banner(service)
        if banner:
            gr.Markdown(banner, elem_id="fallback-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Repair", id="repair-tab"):
                # The editor holds the tools, the canvas, Repair and the result (webui/editor.py).
                editor = build_editor(backend, mask_threshold=defaults.mask_threshold, elem_id="editor")
                strategy, dilate, feather = options_row(defaults)
                fmt = format_choice(defaults)
            batch_masks = build_batch_tab(service, backend.files, defaults,
                                          lambda: (*options_row(defaults), format_choice(defaults)))
            build_resources_tab(tabs, service.sampler, service.requests)

        # The page's event names its files in the event's data, which Gradio's clients cannot send:
        # private. The same handler is public as /repair for them (webui/client_api.py), in the
        # same concurrency group. The editor shows its own progress and errors: no Gradio overlay.
        editor.repair(backend.on_repair, inputs=[strategy, dilate, feather, fmt], outputs=editor,
                      api_visibility="private", show_progress="hidden", concurrency_id=REPAIR_GROUP)
        gr.api(repair_endpoint(backend, defaults), api_name=API_NAME, concurrency_id=REPAIR_GROUP)

        def use_mask_for_batch(evt: gr.EventData) -> list:
            """The editor's More → Use mask for a batch: its mask becomes the batch's, and the Batch tab opens."""
            return [editor_mask_for_batch(backend.files, evt._data), gr.Tabs(selected="batch-tab")]

        editor.batch_mask(use_mask_for_batch, outputs=[batch_masks, tabs], queue=False, api_visibility="private")
    # The service's queue bounds GPU work; Gradio's queue in front of it shows people their
    # place in line and refuses (with a message) beyond the same capacity. Its app is the
    # blocks' first (without_interim_apps).
    blocks.queue(default_concurrency_limit=UI_CONCURRENCY, max_size=service.queue.capacity)
    # Gradio has no setting for these: its queue's attributes (tests/unit/test_ui_queue.py fails
    # if an upgrade renames them).
    blocks._queue.sleep_when_free = QUEUE_POLL_S
    blocks._queue.progress_update_sleep_when_free = PROGRESS_POLL_S
    # After every event Gradio's queue summarised its last 10,000 in a pandas table (milliseconds
    # of a thread holding the GIL, per event) for its traffic page, which the server turns off
    # (webui/compose.py): one event remembered, and the summary never made.
    blocks._queue.ANALYTICS_MAX_EVENTS = 1
    blocks._queue.ANAYLTICS_CACHE_FREQUENCY = ANALYTICS_NEVER  # (sic) Gradio's spelling
    blocks.state_session_capacity = UI_SESSIONS  # what launch() would set; read when the app is made
    return blocks
