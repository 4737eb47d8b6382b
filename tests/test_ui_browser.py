"""The web page in real Chromium, against the real server started as a user would.

Upload a photo into the editor, paint a stroke with the mouse, click Repair, download the
result and check with numpy that it differs from the photo only along the stroke.
Set LAMA_UPDATE_SCREENSHOT=1 to refresh docs/images/ui.png (the README's screenshot).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "docs" / "images" / "ui.png"
STARTUP_TIMEOUT_S = 90
PHOTO_SIZE = (480, 360)  # width, height
# Gradio's brush with default_size="auto" paints with a radius of 25 image pixels; the
# margin covers anti-aliasing and the rounding of canvas coordinates.
BRUSH_RADIUS_PX = 25
MARGIN_PX = 6
STROKE = ((150, 170), (330, 190))  # photo pixels: the brush is dragged from one to the other
UPLOAD_ATTEMPTS = 3
OVERLAY_TOLERANCE = 12  # colour levels: blending, scaling and screenshot rounding


@dataclass(frozen=True)
class Placement:
    """Where the photo is drawn: the canvas's top-left on the page, the photo's top-left
    in the canvas (both in page pixels) and page pixels per photo pixel."""

    canvas_x: float
    canvas_y: float
    left: int
    top: int
    scale: float

    def page_xy(self, point: tuple[int, int]) -> tuple[float, float]:
        return (self.canvas_x + self.left + (point[0] + 0.5) * self.scale,
                self.canvas_y + self.top + (point[1] + 0.5) * self.scale)

    def canvas_yx(self, point: tuple[int, int]) -> tuple[int, int]:
        return (round(self.top + (point[1] + 0.5) * self.scale), round(self.left + (point[0] + 0.5) * self.scale))


# ---------------------------------------------------------------- the server and the browser

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"the server was not ready within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("server")
    port = free_port()
    log_path = work / "server.log"
    command = [sys.executable, "app.py", "--model", str(tiny_dir), "--device", "cpu", "--port", str(port),
               "--outputs-dir", str(work / "outputs"), "--logs-dir", str(work / "logs"),
               "--ui-cache-dir", str(work / "gradio"), "--dilate", "0", "--feather", "0"]
    env = os.environ | {"GRADIO_TEMP_DIR": str(work / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        # A failure, not a skip: CI installs Debian's chromium, and a skipped UI test proves nothing.
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server)
    expect(page.locator("#editor")).to_be_visible()
    yield page
    context.close()


# ---------------------------------------------------------------- helpers

def make_photo(path: Path) -> np.ndarray:
    """A photo-like RGB scene: sky, sun, grassy hills, and a red object across STROKE for
    the brush to remove. Saturated everywhere, so that it stands out from the editor's
    white and grey surroundings in a screenshot."""
    width, height = PHOTO_SIZE
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = 150 + 18 * np.sin(xx / 70) + 8 * np.sin(xx / 23)
    sky = yy < horizon
    grass = cv2.resize(rng.random((height // 40, width // 40)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    hue = np.where(sky, 108 - 6 * yy / height, 42 + 14 * grass)
    saturation = np.where(sky, 0.45 + 0.4 * yy / height, 0.65 + 0.2 * grass)
    value = np.where(sky, 0.95 - 0.2 * yy / height, 0.45 + 0.25 * grass)
    hsv = np.dstack([hue, np.clip(saturation, 0, 1) * 255, np.clip(value, 0.35, 1) * 255]).astype(np.uint8)
    rgb = np.ascontiguousarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    cv2.circle(rgb, (390, 60), 26, (250, 205, 70), -1, cv2.LINE_AA)
    (x0, y0), (x1, y1) = STROKE
    angle = np.degrees(np.arctan2(y1 - y0, x1 - x0))
    cv2.ellipse(rgb, ((x0 + x1) // 2, (y0 + y1) // 2), (80, 11), angle, 0, 360, (200, 35, 40), -1, cv2.LINE_AA)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def canvas_screenshot(page: Page) -> tuple[np.ndarray, dict]:
    """The editor's canvas as RGB pixels, and its box on the page. The canvas is WebGL:
    a screenshot is the way to see what it shows."""
    canvas = page.locator("#editor .pixi-target canvas")
    shot = cv2.imdecode(np.frombuffer(canvas.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(shot, cv2.COLOR_BGR2RGB), canvas.bounding_box()


def photo_on_canvas(page: Page, timeout_s: float) -> Placement | None:
    """Where the photo is drawn on the canvas, once it is: the largest saturated region
    (the toolbar's icons are small) with the photo's aspect ratio."""
    width, height = PHOTO_SIZE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shot, box = canvas_screenshot(page)
        saturated = (shot.max(axis=2).astype(int) - shot.min(axis=2) > 40).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(saturated)
        if count > 1:
            left, top, w, h, _ = stats[1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])]
            if w > 100 and abs(w / h - width / height) < 0.02:
                return Placement(box["x"], box["y"], int(left), int(top), w / width)
        time.sleep(0.1)
    return None


def upload(page: Page, path: Path) -> Placement:
    """Give the editor's file input a photo (what a click or a drop does) and wait until it is drawn."""
    expect(page.locator("#editor .pixi-target canvas")).to_be_visible()
    for _ in range(UPLOAD_ATTEMPTS):
        page.locator("#editor input[type=file]").set_input_files(path)
        # Gradio drops, without a word, an image that arrives in the instant between the
        # canvas appearing and the editor being ready (no DOM sign tells them apart):
        # a person never drops a file that fast, so the test simply gives it again.
        placement = photo_on_canvas(page, timeout_s=5)
        if placement:
            return placement
    pytest.fail(f"the uploaded photo never appeared on the editor's canvas ({UPLOAD_ATTEMPTS} attempts)")


def paint(page: Page, placement: Placement, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Drag the brush from `start` to `end` (photo pixels) in small steps, as a hand would."""
    page.get_by_role("button", name="Brush", exact=True).click()
    page.mouse.move(*placement.page_xy(start))
    page.mouse.down()
    page.mouse.move(*placement.page_xy(end), steps=20)
    page.mouse.up()


def expect_translucent_overlay(page: Page, placement: Placement, point: tuple[int, int], before: np.ndarray) -> None:
    """The stroke shows at `point` as half-transparent magenta over the photo's colour there."""
    expected = (before.astype(int) + (255, 0, 255)) / 2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        shown = canvas_screenshot(page)[0][placement.canvas_yx(point)].astype(int)
        if np.abs(shown - expected).max() <= OVERLAY_TOLERANCE:
            return
        time.sleep(0.1)
    pytest.fail(f"the stroke shows as {shown} over {before}; expected about {expected} (translucent magenta)")


def distance_to_segment(shape: tuple[int, int], start: tuple[int, int], end: tuple[int, int]) -> np.ndarray:
    """Each pixel's distance (px) to the segment start-end."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))


def expect_toast(page: Page, text: str) -> None:
    toast = page.get_by_test_id("toast-text").filter(has_text=text)
    expect(toast).to_be_visible()
    page.get_by_test_id("toast-close").first.click()


# ---------------------------------------------------------------- the tests

def test_errors_show_as_readable_messages(page: Page, tmp_path: Path):
    page.locator("#repair").click()
    expect_toast(page, "Upload a photo first")

    make_photo(tmp_path / "photo.png")
    upload(page, tmp_path / "photo.png")
    page.locator("#repair").click()
    expect_toast(page, "Paint over what should be removed first")
    expect(page.locator("#result img")).to_have_count(0)


def test_paint_repair_and_fetch_the_result(page: Page, tmp_path: Path):
    photo = make_photo(tmp_path / "photo.png")
    placement = upload(page, tmp_path / "photo.png")
    start, end = STROKE
    middle = ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
    before = canvas_screenshot(page)[0][placement.canvas_yx(middle)]
    paint(page, placement, start, end)
    expect_translucent_overlay(page, placement, middle, before)

    page.locator("#repair").click()
    expect(page.locator("#result img")).to_be_visible()
    expect(page.locator("#summary")).to_contain_text(re.compile(r"480×360 · \d+ ms on CPU"))
    with page.expect_download() as download:  # as a user downloads it
        page.locator("#result").get_by_role("button", name="Download").click()
    assert download.value.suggested_filename.endswith(".png"), download.value.suggested_filename
    result = cv2.imdecode(np.fromfile(download.value.path(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert result is not None and result.shape == photo.shape, "the result is not the photo's size"
    result = cv2.cvtColor(result, cv2.COLOR_BGR2RGB)

    changed = (result != photo).any(axis=2)
    distance = distance_to_segment(changed.shape, start, end)
    stray = changed & (distance > BRUSH_RADIUS_PX + MARGIN_PX)
    assert not stray.any(), f"{stray.sum()} pixels changed away from the stroke, e.g. at (y, x) {np.argwhere(stray)[0]}"
    core = distance <= BRUSH_RADIUS_PX - MARGIN_PX
    assert changed[core].mean() > 0.9, f"only {changed[core].mean():.0%} of the stroke's core was repaired"

    expect(page.locator("#comparison img").first).to_be_visible()
    screenshot = page.screenshot(full_page=True)
    if os.environ.get("LAMA_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(screenshot)


def test_resources_tab_plots_what_the_service_measured(page: Page, tmp_path: Path):
    """After a repair, the Resources tab draws the sampler's CPU and memory lines, the
    request's latency points and its row in the table; the GPU plots draw lines or say why not."""
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
    gpu_lines = page.locator("#plot-gpu-memory g.mark-line.role-mark path")
    no_gpu = page.locator("#plot-gpu-memory").get_by_text("no GPU: NVML not available")
    expect(gpu_lines.first.or_(no_gpu)).to_be_visible()
    expect(page.locator("#plot-cpu")).not_to_contain_text("no GPU")

    # Back on the Repair tab the result is still there.
    page.get_by_role("tab", name="Repair").click()
    expect(page.locator("#result img")).to_be_visible()
