"""Gradio's queue polls less often than Gradio's default, and keeps no traffic summary (webui/ui.py
says why): set on the queue the UI runs, through attributes Gradio does not document, so an upgrade
that renames them must fail here rather than quietly bring back the 1 ms polling or a pandas table
made after every event. And the UI is laid out without the FastAPI apps Gradio would build and throw
away (webui/gradio_import.py)."""

import gradio as gr
import pytest

from lama.engine import InpaintEngine
from service.pipeline import RepairOptions
from support.service import repair_service
from webui import ui
from webui.gradio_import import without_interim_apps


@pytest.fixture
def blocks(tmp_path, monkeypatch, tiny_dir) -> gr.Blocks:
    """The UI as the server builds it."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    with repair_service(InpaintEngine(tiny_dir, device="cpu"), tmp_path / "outputs") as service:
        return ui.build_ui(service, RepairOptions())


def test_the_ui_s_queue_polls_every_5_and_50_ms(blocks):
    default = gr.Blocks().queue()._queue
    assert default.sleep_when_free < ui.QUEUE_POLL_S, "Gradio's own polling is what this changes"
    queue = blocks._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (ui.QUEUE_POLL_S, ui.PROGRESS_POLL_S)


def test_the_ui_s_queue_remembers_one_event_and_summarises_none(blocks):
    record = {"time": 0.0, "status": "success", "process_time": 0.02, "function": "repair", "session_hash": "s"}
    default = gr.Blocks().queue()._queue
    default.events_recorded = 1
    assert default.compute_analytics_summary([record])["functions"], "Gradio's own queue summarises every event"
    queue = blocks._queue
    queue.events_recorded = 1_000_000  # as after a long day's events
    assert queue.compute_analytics_summary([record] * 3) == {"functions": {}}
    assert queue.ANALYTICS_MAX_EVENTS == 1


def test_the_ui_keeps_the_state_of_its_latest_sessions_only(blocks):
    """Gradio copies the page's components for each session at its first event and, by default,
    keeps 10,000 of them (about 95 kB each here: tools/ui_session_cost.py); the app made from the
    UI keeps the latest ui.UI_SESSIONS, the least recently used dropped first."""
    sessions = gr.routes.App.create_app(blocks).state_holder
    assert sessions.capacity == ui.UI_SESSIONS < 10_000
    for index in range(ui.UI_SESSIONS + 3):
        sessions[f"page-{index}"]  # what Gradio does at each event of a session
    sessions["page-3"]  # active again: the most recently used
    sessions[f"page-{ui.UI_SESSIONS + 3}"]
    assert len(sessions.session_data) == ui.UI_SESSIONS
    assert "page-3" in sessions and "page-4" not in sessions and "page-0" not in sessions


@pytest.fixture
def apps_made(monkeypatch) -> list[gr.Blocks]:
    """The Blocks each FastAPI app Gradio builds from here on is made for, in order."""
    made, create_app = [], gr.routes.App.create_app

    def counted(blocks, *args, **kwargs):
        made.append(blocks)
        return create_app(blocks, *args, **kwargs)

    monkeypatch.setattr(gr.routes.App, "create_app", staticmethod(counted))
    return made


def test_laying_out_the_ui_builds_one_app_the_one_gradio_s_queue_uses(tmp_path, monkeypatch, tiny_dir, apps_made):
    with gr.Blocks() as plain:
        gr.Markdown("a")
    plain.queue()
    assert apps_made == [plain] * 3, "Gradio's own Blocks build an app when made, when laid out and when queued"
    apps_made.clear()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    with repair_service(InpaintEngine(tiny_dir, device="cpu"), tmp_path / "outputs") as service:
        blocks = ui.build_ui(service, RepairOptions())
    assert apps_made == [blocks]
    assert isinstance(blocks.app, gr.routes.App) and blocks.app.get_blocks() is blocks


def test_apps_are_built_again_after_a_layout_that_failed(apps_made):
    with pytest.raises(RuntimeError), without_interim_apps():
        raise RuntimeError("a component could not be made")
    gr.Blocks().queue()
    assert len(apps_made) == 2
