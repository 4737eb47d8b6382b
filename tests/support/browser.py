"""What the real-Chromium tests share: the browser, a photo to repair, and where the editor
draws it (tests/live/test_ui_browser.py, tests/live/test_editor_browser.py, tools/ui_bench.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CANVAS = "#editor canvas"
PHOTO_INPUT = "#editor input[type=file]"
# Where a red object lies in make_photo's picture at its default size (photo pixels): the
# brush is dragged from one end to the other.
STROKE = ((150, 170), (330, 190))


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        # A failure, not a skip: CI installs Debian's chromium, and a skipped UI test proves nothing.
        raise AssertionError(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def make_photo(path: Path | None = None, size: tuple[int, int] = (480, 360), quality: int = 92) -> np.ndarray:
    """A photo-like RGB scene (width, height = `size`): sky, sun, grassy hills, and a red
    object across STROKE (scaled with the size) for the brush to remove. Saturated
    everywhere, so that it stands out from the editor's grey surroundings. Written to `path`
    (PNG or JPEG by its suffix) when given."""
    width, height = size
    sx, sy = width / 480, height / 360
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = (150 + 18 * np.sin(xx / sx / 70) + 8 * np.sin(xx / sx / 23)) * sy
    sky = yy < horizon
    grass = cv2.resize(rng.random((max(2, height // 40), max(2, width // 40))).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    hue = np.where(sky, 108 - 6 * yy / height, 42 + 14 * grass)
    saturation = np.where(sky, 0.45 + 0.4 * yy / height, 0.65 + 0.2 * grass)
    value = np.where(sky, 0.95 - 0.2 * yy / height, 0.45 + 0.25 * grass)
    hsv = np.dstack([hue, np.clip(saturation, 0, 1) * 255, np.clip(value, 0.35, 1) * 255]).astype(np.uint8)
    rgb = np.ascontiguousarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    cv2.circle(rgb, (round(390 * sx), round(60 * sy)), round(26 * min(sx, sy)), (250, 205, 70), -1, cv2.LINE_AA)
    (x0, y0), (x1, y1) = STROKE
    angle = np.degrees(np.arctan2((y1 - y0) * sy, (x1 - x0) * sx))
    centre = (round((x0 + x1) / 2 * sx), round((y0 + y1) / 2 * sy))
    cv2.ellipse(rgb, centre, (round(80 * sx), round(11 * sy)), angle, 0, 360, (200, 35, 40), -1, cv2.LINE_AA)
    if path is not None:
        options = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), options)
    return rgb


def wait_until_interactive(page: Page) -> None:
    """Wait until the editor takes the pointer: for a moment after the editor is on the page,
    Gradio covers the whole app with its translucent loading overlay, which a hand would
    wait for and which swallows a drag, a wheel or a touch that comes too early (on a loaded
    machine, for a second or more)."""
    page.wait_for_function("""() => {
        const editor = document.querySelector('#editor');
        const box = editor && editor.getBoundingClientRect();
        if (!box || !box.width) return false;
        const x = box.x + box.width / 2, y = Math.min(box.y + box.height / 2, window.innerHeight - 1);
        const hit = document.elementFromPoint(x, Math.max(0, y));
        return !!hit && editor.contains(hit);
    }""")


@dataclass(frozen=True)
class Placement:
    """Where the photo is drawn: the canvas's top-left on the page, the photo's top-left
    in the canvas (both in page pixels) and page pixels per photo pixel."""

    canvas_x: float
    canvas_y: float
    left: float
    top: float
    scale: float

    def page_xy(self, point: tuple[float, float]) -> tuple[float, float]:
        return (self.canvas_x + self.left + (point[0] + 0.5) * self.scale,
                self.canvas_y + self.top + (point[1] + 0.5) * self.scale)

    def canvas_xy(self, point: tuple[float, float]) -> tuple[int, int]:
        return (int(self.left + (point[0] + 0.5) * self.scale), int(self.top + (point[1] + 0.5) * self.scale))


def canvas_screenshot(page: Page) -> tuple[np.ndarray, dict]:
    """The editor's canvas as RGB pixels (what the screen shows), and its box on the page."""
    canvas = page.locator(CANVAS)
    shot = cv2.imdecode(np.frombuffer(canvas.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(shot, cv2.COLOR_BGR2RGB), canvas.bounding_box()


def photo_on_canvas(page: Page, size: tuple[int, int], timeout_s: float = 10) -> Placement | None:
    """Where a photo of `size` is drawn on the canvas, once it is: the largest saturated
    region with the photo's aspect ratio."""
    width, height = size
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


def distance_to_segment(shape: tuple[int, int], start: tuple[int, int], end: tuple[int, int]) -> np.ndarray:
    """Each pixel's distance (px) to the segment start-end."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))


def drag(page: Page, placement: Placement, start: tuple[float, float], end: tuple[float, float],
         steps: int = 20) -> None:
    """Drag the mouse from `start` to `end` (photo pixels) in small steps, as a hand would."""
    page.mouse.move(*placement.page_xy(start))
    page.mouse.down()
    page.mouse.move(*placement.page_xy(end), steps=steps)
    page.mouse.up()
