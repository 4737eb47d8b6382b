"""The web page in real Chromium, against the real server started as a user would.

Driven through the element ids of the design (../shared/DESIGN.md) alone: upload a photo
through #editor's file input, paint a stroke with the mouse on #editor's canvas, click
#repair, download the result from #result and check with numpy that it differs from the
photo only along the stroke. The editor's own behaviours: tests/live/test_editor_browser.py.
Set LAMA_UPDATE_SCREENSHOT=1 to refresh docs/images/ui.png (the README's screenshot).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from support.browser import (PHOTO_INPUT, STROKE, Placement, canvas_screenshot, chromium, distance_to_segment, drag,
                     make_photo, photo_on_canvas, wait_until_interactive)
from support.liveserver import LiveServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "ui.png"
PHOTO_SIZE = (480, 360)  # width, height
BRUSH_PX = 50  # the brush's diameter, typed into the editor's size field
BRUSH_RADIUS_PX = BRUSH_PX // 2
MARGIN_PX = 6  # anti-aliasing and the rounding of canvas coordinates
OVERLAY_TOLERANCE = 12  # colour levels: blending, scaling and screenshot rounding


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tiny_dir, tmp_path_factory.mktemp("server"), "--dilate", "0", "--feather", "0") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server.base)
    expect(page.locator("#editor")).to_be_visible()
    wait_until_interactive(page)
    yield page
    context.close()


# ---------------------------------------------------------------- helpers

def upload(page: Page, path: Path) -> Placement:
    """Give the editor's file input a photo (what a click or a drop does) and wait until it is drawn."""
    page.locator(PHOTO_INPUT).set_input_files(path)
    placement = photo_on_canvas(page, PHOTO_SIZE)
    assert placement, "the uploaded photo never appeared on the editor's canvas"
    return placement


def paint(page: Page, placement: Placement, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Choose the brush at BRUSH_PX, then drag it from `start` to `end` (photo pixels)."""
    page.get_by_role("button", name="Brush", exact=True).click()
    page.get_by_label("Brush size (px)").fill(str(BRUSH_PX))
    page.get_by_label("Brush size (px)").press("Enter")
    drag(page, placement, start, end)


def expect_translucent_overlay(page: Page, placement: Placement, point: tuple[int, int], before: np.ndarray) -> None:
    """The stroke shows at `point` as half-transparent magenta over the photo's colour there."""
    expected = (before.astype(int) + (255, 0, 255)) / 2
    x, y = placement.canvas_xy(point)
    shown = canvas_screenshot(page)[0][y, x].astype(int)
    assert np.abs(shown - expected).max() <= OVERLAY_TOLERANCE, \
        f"the stroke shows as {shown} over {before}; expected about {expected} (translucent magenta)"


# ---------------------------------------------------------------- the tests

def test_errors_show_as_readable_messages(page: Page, tmp_path: Path):
    page.locator("#repair").click()
    expect(page.locator("#editor")).to_contain_text("Upload a photo first")

    make_photo(tmp_path / "photo.png")
    upload(page, tmp_path / "photo.png")
    page.locator("#repair").click()
    expect(page.locator("#editor")).to_contain_text("Paint over what should be removed first")
    expect(page.locator("#result img")).to_have_count(0)


def test_paint_repair_and_fetch_the_result(page: Page, tmp_path: Path):
    photo = make_photo(tmp_path / "photo.png")
    placement = upload(page, tmp_path / "photo.png")
    start, end = STROKE
    middle = ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
    x, y = placement.canvas_xy(middle)
    before = canvas_screenshot(page)[0][y, x]
    paint(page, placement, start, end)
    expect_translucent_overlay(page, placement, middle, before)

    page.locator("#repair").click()
    expect(page.locator("#result img")).to_be_visible()
    expect(page.locator("#result")).to_contain_text(re.compile(r"480×360 · \d+ ms on CPU"))
    with page.expect_download() as download:  # as a user downloads it
        page.locator("#result").get_by_role("link", name=re.compile("Download")).click()
    assert download.value.suggested_filename == "photo_repaired.png", download.value.suggested_filename
    result = cv2.imdecode(np.fromfile(download.value.path(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert result is not None and result.shape == photo.shape, "the result is not the photo's size"
    result = cv2.cvtColor(result, cv2.COLOR_BGR2RGB)

    changed = (result != photo).any(axis=2)
    distance = distance_to_segment(changed.shape, start, end)
    stray = changed & (distance > BRUSH_RADIUS_PX + MARGIN_PX)
    assert not stray.any(), f"{stray.sum()} pixels changed away from the stroke, e.g. at (y, x) {np.argwhere(stray)[0]}"
    core = distance <= BRUSH_RADIUS_PX - MARGIN_PX
    assert changed[core].mean() > 0.9, f"only {changed[core].mean():.0%} of the stroke's core was repaired"

    screenshot = page.screenshot(full_page=True)
    if os.environ.get("LAMA_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(screenshot)


def test_resources_tab_plots_what_the_service_measured(page: Page, tmp_path: Path):
    """After a repair, the Resources tab draws the sampler's CPU and memory lines, the
    request's latency points (the user's wait among them) and its row in the table; the GPU
    plots draw lines or say why not."""
    make_photo(tmp_path / "photo.png")
    placement = upload(page, tmp_path / "photo.png")
    paint(page, placement, *STROKE)
    page.locator("#repair").click()
    expect(page.locator("#result img")).to_be_visible()

    page.get_by_role("tab", name="Resources").click()
    for plot in ("#plot-cpu", "#plot-rss"):
        expect(page.locator(f"{plot} g.mark-line.role-mark path").first).to_be_attached()
    expect(page.locator("#plot-latency g.mark-symbol.role-mark path")).not_to_have_count(0)
    expect(page.locator("#requests-table")).to_contain_text("480×360")
    # The user's wait, as the page reported it, beside the server's stages.
    expect(page.locator("#plot-latency")).to_contain_text("waited (editor)")
    expect(page.locator("#requests-table")).to_contain_text("waited ms")
    gpu_lines = page.locator("#plot-gpu-memory g.mark-line.role-mark path")
    no_gpu = page.locator("#gpu-note").get_by_text("no GPU: NVML not available")
    expect(gpu_lines.first.or_(no_gpu)).to_be_visible()
    if no_gpu.is_visible():  # one line instead of two empty charts
        expect(page.locator("#plot-gpu-memory")).to_be_hidden()
        expect(page.locator("#plot-gpu-utilization")).to_be_hidden()
    expect(page.locator("#plot-cpu")).not_to_contain_text("no GPU")

    # Back on the Repair tab the result is still there, and the photo on the canvas.
    page.get_by_role("tab", name="Repair").click()
    expect(page.locator("#result img")).to_be_visible()
    assert photo_on_canvas(page, PHOTO_SIZE), "the photo left the canvas while the Resources tab was open"
