"""The UI's layout built as app.py builds it, on the tiny checkpoint (no browser). The editor's
handlers are webui/editor.py's: tests/service/test_editor_handler.py calls them."""

from __future__ import annotations

import gradio as gr
import pytest

from lama.engine import InpaintEngine
from lama.imageio import ImageLimits
from monitor.metrics import ServiceMetrics
from webui import ui
from service.jobs import JobQueue
from service.storage import OutputStore
from service.pipeline import RepairOptions, RepairService
from webui.errors import status_of

LIMITS = ImageLimits(max_pixels=1_000_000, max_side=1200)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


def make_service(engine: InpaintEngine, outputs, capacity: int = 4) -> RepairService:
    """As app.build_app wires it, minus the web app."""
    queue = JobQueue(capacity)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    return RepairService(engine, OutputStore(outputs), queue, metrics, LIMITS, status_of=status_of)


@pytest.fixture
def service(engine, tmp_path):
    service = make_service(engine, tmp_path / "outputs")
    yield service
    service.queue.shutdown()


def test_layout_has_the_ids_and_defaults_the_page_relies_on(service):
    blocks = ui.build_ui(service, RepairOptions("resize", 5, 7))
    by_id = {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}
    assert isinstance(by_id["editor"], gr.HTML)
    # The page's own ids (DESIGN: browser checks drive it through these) are in the editor's page.
    page = by_id["editor"].html_template
    assert 'id="repair"' in page and 'id="result"' in page
    values = sorted((block.label, block.value) for block in blocks.blocks.values()
                    if isinstance(block, (gr.Radio, gr.Slider)))
    assert values == sorted([("Strategy", "resize"), ("Mask dilation (px)", 5), ("Edge feather (px)", 7)] * 2
                            + [("Mask threshold", 127)])  # the Repair tab's and the Batch tab's
    assert "fallback-banner" not in by_id


def test_no_component_preprocesses_an_image_with_gradio(service):
    """Gradio's image components open their files with Pillow before any check of the service's
    (gr.ImageEditor: every layer and the composite; a 13000² PNG cost 3.5 GB before the size
    message): the page has none, its files are read by the editor's handlers through lama.imageio."""
    blocks = ui.build_ui(service, RepairOptions())
    image_components = (gr.Image, gr.ImageEditor, gr.ImageSlider)
    assert not [block for block in blocks.blocks.values() if isinstance(block, image_components)]
    # The Batch tab's file inputs hand over paths, unread; its gallery only shows the previews
    # the handler wrote (an output, never an input).
    inputs = {id(block) for dependency in blocks.fns.values() for block in dependency.inputs}
    files = [block for block in blocks.blocks.values() if isinstance(block, gr.File)]
    galleries = [block for block in blocks.blocks.values() if isinstance(block, gr.Gallery)]
    assert files and all(block.type == "filepath" for block in files)
    assert galleries and not any(id(block) in inputs or block.interactive for block in galleries)


def test_fallback_engine_shows_a_banner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ here: the engine falls back to OpenCV
    service = make_service(InpaintEngine(None, device="cpu"), tmp_path / "outputs")
    blocks = ui.build_ui(service, RepairOptions())
    banner = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "fallback-banner")
    assert "big-lama" in banner.value and "python -m lama download" in banner.value
    service.queue.shutdown()
