"""Gradio's queue polls less often than Gradio's default (webui/ui.py says why): set on the queue
the UI runs, through attributes Gradio does not document, so an upgrade that renames them must
fail here rather than quietly bring back the 1 ms polling."""

import gradio as gr

from lama.engine import InpaintEngine
from service.pipeline import RepairOptions
from support.service import repair_service
from webui import ui


def test_the_ui_s_queue_polls_every_5_and_50_ms(tmp_path, monkeypatch, tiny_dir):
    default = gr.Blocks().queue()._queue
    assert default.sleep_when_free < ui.QUEUE_POLL_S, "Gradio's own polling is what this changes"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    with repair_service(InpaintEngine(tiny_dir, device="cpu"), tmp_path / "outputs") as service:
        queue = ui.build_ui(service, RepairOptions())._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (ui.QUEUE_POLL_S, ui.PROGRESS_POLL_S)
