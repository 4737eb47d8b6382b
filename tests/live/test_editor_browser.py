"""The editor (webui/editor.py, webui/static/) in real Chromium against the real server: one
test per behaviour of issue 13, the races included (painting while the photo uploads or a
repair runs, a double click, an error, the server killed mid-repair).

One server and one browser for the module (a new page per test); the killed-server test
starts a server of its own. What the canvas shows is read from its pixels (a 2-D canvas,
device scale 1: canvas pixels are page pixels), where the photo is from the fit the design
promises (checked once, in test_the_canvas_fills_the_width_and_fits_the_photo).
"""

from __future__ import annotations

import io
import json
import math
import re
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Route, expect

from support.browser import (CANVAS, PHOTO_INPUT, STROKE, Placement, chromium, distance_to_segment, drag, make_photo,
                             wait_until_interactive)
from support.liveserver import LiveServer
from support.photos import RED_AS_GREEN
from support.reliability import record

SIZE = (480, 360)  # the test photo: width, height
MAX_PIXELS = 2_500_000  # the module's server: a photo over it is caught at upload
TOLERANCE = 12  # colour levels between what the canvas shows and what is expected
UPLOAD = "**/gradio_api/upload*"
JOIN = "**/gradio_api/queue/join*"
REPORT_WITHIN_S = 10  # the issue: an unreachable server is reported within 10 s


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("editor-server")
    config = folder / "limits.yaml"
    config.write_text(f"max_pixels: {MAX_PIXELS}\n")
    with LiveServer.start(tiny_dir, folder, "--config", str(config), "--dilate", "0", "--feather", "0") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def new_page(browser: Browser, url: str, **options) -> Page:
    context = browser.new_context(**({"viewport": {"width": 1280, "height": 900}, "device_scale_factor": 1} | options))
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    expect(page.locator(CANVAS)).to_be_attached()
    wait_until_interactive(page)
    return page


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    page = new_page(browser, server.base)
    yield page
    page.context.close()


@pytest.fixture
def photo(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "photo.png"
    return path, make_photo(path, SIZE)


# ---------------------------------------------------------------- helpers

def status(page: Page):
    return page.locator("#editor .status")


def next_frame(page: Page) -> None:
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def fitted(page: Page, size: tuple[int, int] = SIZE) -> Placement:
    """Where a photo of `size` is drawn when the view fits it: centred, as large as fits."""
    box = page.locator(CANVAS).bounding_box()
    scale = min(box["width"] / size[0], box["height"] / size[1])
    return Placement(box["x"], box["y"], (box["width"] - size[0] * scale) / 2, (box["height"] - size[1] * scale) / 2,
                     scale)


def open_photo(page: Page, path: Path, size: tuple[int, int] = SIZE) -> Placement:
    page.locator(PHOTO_INPUT).set_input_files(path)
    expect(status(page)).to_contain_text("Paint over what should go")
    next_frame(page)
    return fitted(page, size)


def shown(page: Page, x: float, y: float) -> np.ndarray:
    """The canvas's pixel at (x, y), canvas pixels."""
    script = """([x, y]) => Array.from(document.querySelector('#editor canvas').getContext('2d')
                  .getImageData(x, y, 1, 1).data.slice(0, 3))"""
    return np.array(page.evaluate(script, [int(x), int(y)]))


def shown_at(page: Page, placement: Placement, point: tuple[float, float]) -> np.ndarray:
    return shown(page, *placement.canvas_xy(point))


def overlaid(page: Page, placement: Placement, point: tuple[int, int], under: np.ndarray) -> bool:
    """Whether the canvas shows translucent magenta over `under` (the picture's pixel) at `point`."""
    expected = (under[point[1], point[0]].astype(int) + (255, 0, 255)) / 2
    return bool(np.abs(shown_at(page, placement, point) - expected).max() <= TOLERANCE)


def shows(page: Page, placement: Placement, point: tuple[int, int], picture: np.ndarray) -> bool:
    """Whether the canvas shows `picture`'s own pixel (nothing over it) at `point`."""
    return bool(np.abs(shown_at(page, placement, point) - picture[point[1], point[0]]).max() <= TOLERANCE)


def middle(start: tuple[int, int], end: tuple[int, int]) -> tuple[int, int]:
    return (start[0] + end[0]) // 2, (start[1] + end[1]) // 2


def set_brush(page: Page, size: int) -> None:
    page.get_by_label("Brush size (px)").fill(str(size))
    page.get_by_label("Brush size (px)").press("Enter")


def menu(page: Page, item: str) -> None:
    page.locator("#editor summary", has_text="More").click()
    page.locator("#editor .menu").get_by_role("button", name=item).click()


def repaired(page: Page, results: int = 1) -> None:
    """Wait until the page shows its `results`-th result."""
    try:
        expect(page.locator("#editor .history button")).to_have_count(results + 1, timeout=30_000)
    except AssertionError as error:  # what the page said instead is what tells why
        raise AssertionError(f"{error}\nthe editor's status line: {status(page).inner_text()!r}") from None
    expect(page.locator("#result img")).to_be_visible()
    expect(status(page)).to_contain_text("Repaired")
    # The wait is known once the result is on screen, two frames after the history shows it (and
    # the status line says "Repaired" from the repair before): the page sets it last.
    expect(page.locator("#result")).to_have_attribute("data-waited-ms", re.compile(r"\d+"))


def outputs(server: LiveServer) -> int:
    return len(list((server.folder / "outputs").rglob("*.png")))


def uploaded_files(server: LiveServer) -> set[Path]:
    """What the page has uploaded to the UI cache (the editor's published results left out)."""
    cache = server.folder / "cache"
    return {file for file in cache.rglob("*") if file.is_file() and not file.is_relative_to(cache / "editor")
            and not file.name.startswith(".")}


def logged_repairs(server: LiveServer) -> int:
    path = server.folder / "logs" / "requests.jsonl"
    return sum(1 for line in path.read_text().splitlines() if json.loads(line).get("status") == 200) \
        if path.exists() else 0


def download(page: Page, click) -> np.ndarray:
    with page.expect_download() as downloading:
        click()
    image = cv2.imdecode(np.fromfile(downloading.value.path(), np.uint8), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def download_result(page: Page) -> np.ndarray:
    return download(page, lambda: page.locator("#result a[download]").click())


class Held:
    """Requests matching a pattern are held (not sent) until release(); `which` picks them by
    their order among the matching requests (0 = the first)."""

    def __init__(self, page: Page, pattern: str, which: set[int]):
        self.page, self.pattern, self.which = page, pattern, which
        self.routes: list[Route] = []
        self.seen = 0
        page.route(pattern, self._route)

    def _route(self, route: Route) -> None:
        self.seen += 1
        if self.seen - 1 in self.which:
            self.routes.append(route)
        else:
            route.continue_()

    def wait(self, count: int = 1) -> None:
        deadline = time.monotonic() + 20
        while len(self.routes) < count:
            assert time.monotonic() < deadline, f"no request to {self.pattern} was held"
            self.page.wait_for_timeout(50)

    def release(self) -> None:
        for route in self.routes:
            route.continue_()
        self.routes.clear()
        self.page.unroute(self.pattern)


# ---------------------------------------------------------------- 1. speed: what travels

def test_the_photo_is_uploaded_once_and_a_repair_sends_only_its_mask(page: Page, server: LiveServer, tmp_path: Path):
    size = (2000, 1200)  # over the preview's long side
    path = tmp_path / "big.jpg"
    picture = make_photo(path, size)
    before = uploaded_files(server)
    placement = open_photo(page, path, size)
    set_brush(page, 60)
    start, end = (600, 560), (1400, 640)
    for attempt in (1, 2):
        drag(page, placement, (start[0], start[1] + 100 * attempt), (end[0], end[1] + 100 * attempt))
        clicked = time.monotonic()
        page.locator("#repair").click()
        repaired(page, attempt)
        waited_s = time.monotonic() - clicked

        # The page's time is what the user waited: click to result on screen, in parts.
        line = page.locator("#result .waited").inner_text()
        assert re.fullmatch(r"Waited [\d.]+ s: upload [\d.]+ · queue [\d.]+ · model [\d.]+ · save [\d.]+ · "
                            r"transfer [\d.]+", line), line
        shown_s = float(page.locator("#result").get_attribute("data-waited-ms")) / 1000
        parts = [float(value) for value in re.findall(r"(?:upload|queue|model|save|transfer) ([\d.]+)", line)]
        assert abs(sum(parts) - shown_s) < 0.05 and 0 < shown_s <= waited_s, (line, waited_s)

    uploads = sorted((file.name, file.stat().st_size) for file in uploaded_files(server) - before)
    assert [name for name, _ in uploads] == ["big.jpg", "mask.png", "mask.png"], uploads  # the photo once
    assert uploads[0][1] == path.stat().st_size and max(size for _, size in uploads[1:]) < 5_000  # 1-bit masks

    # The download is the very file the service saved under outputs/; the page shows a preview.
    newest = max((server.folder / "outputs").rglob("*.png"), key=lambda file: file.stat().st_mtime)
    href = page.locator("#result a[download]").get_attribute("href")
    assert page.request.get(href).body() == newest.read_bytes()
    natural = page.locator("#result img").evaluate("(image) => [image.naturalWidth, image.naturalHeight]")
    assert natural == [1600, 960]
    assert page.locator("#result a[download]").get_attribute("download") == "big_repaired.png"
    # The canvas shows the result at full resolution: the stroke's magenta is gone, the photo
    # elsewhere untouched.
    next_frame(page)
    assert not overlaid(page, placement, (1000, 700), picture)
    assert shows(page, placement, (200, 200), picture)


def test_a_photo_named_with_spaces_and_signs_is_repaired_and_downloads(page: Page, server: LiveServer,
                                                                       tmp_path: Path):
    """Gradio serves an upload under its own name, which URLs carry encoded (a space as %20): the
    page's links to what the server published must not be cut from the encoded URL's length."""
    path = tmp_path / "Ferien #2, 100% Zürich.png"
    picture = make_photo(path, SIZE)
    placement = open_photo(page, path)
    set_brush(page, 50)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    # Named after the photo, as service.storage names results (ASCII: the name travels in headers too).
    assert page.locator("#result a[download]").get_attribute("download") == "Ferien_2_100_Zurich_repaired.png"
    result = download_result(page)
    distance = distance_to_segment(result.shape[:2], *STROKE)
    assert (result != picture).any(axis=2)[distance <= 19].mean() > 0.9, "the download is not the repaired photo"


def test_the_server_records_what_the_user_waited(page: Page, server: LiveServer, photo):
    """The request log and the Resources tab get the page's wait (click to result on screen),
    not only the server's stages."""
    path, _ = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    shown_s = float(page.locator("#result").get_attribute("data-waited-ms")) / 1000
    log = server.folder / "logs" / "requests.jsonl"
    deadline = time.monotonic() + 10
    while not (amended := [json.loads(line) for line in log.read_text().splitlines() if '"amends"' in line]):
        assert time.monotonic() < deadline, "the page's wait never reached the request log"
        time.sleep(0.1)
    record = next(json.loads(line) for line in log.read_text().splitlines()
                  if json.loads(line).get("id") == amended[-1]["amends"])
    waited = amended[-1]["waited"]
    assert abs(waited["total"] - shown_s) < 0.002 and waited["total"] >= record["timings"]["total"]
    assert 0 <= waited["upload"] and 0 <= waited["transfer"] and waited["upload"] + waited["transfer"] < waited["total"]
    # The Resources tab reads the same records from memory (GET /api/v1/monitor serves them too).
    records = page.request.get(server.url("/api/v1/monitor")).json()["requests"]
    assert next(rec for rec in records if rec["id"] == record["id"])["waited"] == waited


# ---------------------------------------------------------------- 2. never lose work

def test_strokes_painted_while_the_photo_uploads_are_kept(page: Page, photo):
    path, picture = photo
    held = Held(page, UPLOAD, {0})  # the photo's upload
    placement = open_photo(page, path)
    held.wait()
    set_brush(page, 50)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    expect(page.locator("#repair")).to_be_disabled()
    page.wait_for_timeout(300)
    assert overlaid(page, placement, middle(*STROKE), picture)
    held.release()
    repaired(page)
    result = download_result(page)
    distance = distance_to_segment(result.shape[:2], *STROKE)
    changed = (result != picture).any(axis=2)
    assert changed[distance <= 19].mean() > 0.9, "the stroke painted during the upload was not repaired"
    assert not changed[distance > 31].any()


def test_strokes_painted_while_a_repair_runs_are_kept(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    set_brush(page, 30)
    first, second = ((60, 60), (160, 60)), ((60, 300), (160, 300))
    drag(page, placement, *first)
    held = Held(page, JOIN, {0})
    page.locator("#repair").click()
    held.wait()
    drag(page, placement, *second)  # while the repair runs
    held.release()
    repaired(page)
    next_frame(page)
    assert overlaid(page, placement, middle(*second), picture), "the stroke painted during the repair is gone"
    assert not overlaid(page, placement, middle(*first), picture), "the repaired stroke is still painted"
    result = download_result(page)
    assert (result[290:311, 60:161] == picture[290:311, 60:161]).all(), "the later stroke was repaired too early"


def test_strokes_painted_while_the_result_loads_are_kept(page: Page, photo):
    """The answer is in, its preview and rectangle are still on their way: a stroke painted
    then is neither lost nor taken for one the repair used up."""
    path, picture = photo
    placement = open_photo(page, path)
    set_brush(page, 30)
    first, second = ((60, 60), (160, 60)), ((60, 300), (160, 300))
    drag(page, placement, *first)
    held = Held(page, "**/preview.jpg", {0})
    page.locator("#repair").click()
    held.wait()
    drag(page, placement, *second)
    held.release()
    repaired(page)
    next_frame(page)
    assert overlaid(page, placement, middle(*second), picture), "the stroke painted while the result loaded is gone"
    assert not overlaid(page, placement, middle(*first), picture), "the repaired stroke is still painted"


def test_a_double_click_runs_one_repair(page: Page, server: LiveServer, photo):
    path, _ = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    before_files, before_logged = outputs(server), logged_repairs(server)
    page.locator("#repair").dblclick()
    page.keyboard.press("Enter")  # the shortcut cannot start a second one either
    repaired(page)
    page.wait_for_timeout(1500)  # time for a second job to show up, if there were one
    assert outputs(server) - before_files == 1
    assert logged_repairs(server) - before_logged == 1
    expect(page.locator("#repair")).to_be_enabled()


def test_an_error_keeps_the_last_result_and_says_what_happened(page: Page, server: LiveServer, photo):
    path, picture = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    result_src = page.locator("#result img").get_attribute("src")

    drag(page, placement, (60, 300), (160, 300))

    def mask_expires(route: Route) -> None:
        # The mask upload is gone by the time the repair runs: the server refuses the repair.
        event = json.loads(route.request.post_data)["event_data"]
        Path(event["mask"]["path"]).unlink()
        route.continue_()

    page.route(JOIN, mask_expires)
    page.locator("#repair").click()
    expect(status(page)).to_contain_text("mask upload is no longer on the server")
    assert status(page).get_attribute("data-kind") == "error"
    assert page.locator("#result img").get_attribute("src") == result_src, "the last result left the page"
    expect(page.locator("[data-testid='toast-body']")).to_have_count(0)
    assert overlaid(page, placement, (110, 300), picture), "the strokes of the failed repair are gone"
    expect(page.locator("#repair")).to_be_enabled()


def test_a_repair_gradio_refuses_before_the_handler_keeps_the_last_result(page: Page, photo):
    """Gradio's queue full (its answer to /queue/join) shows as Gradio's toast only: the editor
    notices it, ends the wait and says so in its own line."""
    path, picture = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    result_src = page.locator("#result img").get_attribute("src")
    drag(page, placement, (60, 300), (160, 300))
    page.route(JOIN, lambda route: route.fulfill(status=503, content_type="application/json",
                                                 body=json.dumps({"detail": "Queue is full."})))
    page.locator("#repair").click()
    expect(status(page)).to_contain_text("The server refused the repair")
    assert page.locator("#result img").get_attribute("src") == result_src
    assert overlaid(page, placement, (110, 300), picture)
    expect(page.locator("#repair")).to_be_enabled()


def test_a_photo_the_server_no_longer_has_is_uploaded_again(page: Page, server: LiveServer, photo):
    """Uploads expire; the page still has the photo: it uploads it again and the repair goes on."""
    path, _ = photo
    uploads = []
    page.on("request", lambda request: uploads.append(request.url) if "/gradio_api/upload" in request.url else None)
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    joins = []

    def expired_once(route: Route) -> None:
        body = json.loads(route.request.post_data)
        joins.append(body["event_data"]["photo"]["path"])
        if len(joins) == 1:  # as if the sweep had removed it (and the server had forgotten it)
            body["event_data"]["photo"]["path"] = str(server.folder / "cache" / "expired" / "photo.png")
            return route.continue_(post_data=json.dumps(body))
        route.continue_()

    page.route(JOIN, expired_once)
    page.locator("#repair").click()
    repaired(page)
    assert len(joins) == 2 and joins[0] == joins[1]
    assert len(uploads) == 3, uploads  # the photo, the mask, the photo again (the mask is still there)

def seconds_until_a_hang_is_reported(page: Page, server: LiveServer) -> float:
    """Stops the server (SIGSTOP) until the page says it does not answer (failing after
    REPORT_WITHIN_S), wakes it up again; the seconds the page took to say so."""
    server.process.send_signal(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        expect(status(page)).to_contain_text("The server is not answering (no answer for 6 s)",
                                             timeout=REPORT_WITHIN_S * 1000)
        return time.monotonic() - stopped
    finally:
        server.process.send_signal(signal.SIGCONT)


def test_a_hung_server_is_reported_within_10_s(page: Page, server: LiveServer, photo):
    """The server stops answering anything (SIGSTOP) while a repair runs: the page's pings of
    /livez time out and it says so; when the server wakes up, its late answer is ignored."""
    path, picture = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    held = Held(page, JOIN, {0})
    page.locator("#repair").click()
    held.wait()
    held.release()
    reported_s = seconds_until_a_hang_is_reported(page, server)
    assert reported_s < REPORT_WITHIN_S
    record("Faults: server hung mid-repair (SIGSTOP; the editor in Chromium)", "the editor says so after",
           f"{reported_s:.1f} s", f"< {REPORT_WITHIN_S} s")
    expect(page.locator("#repair")).to_be_enabled()
    page.wait_for_timeout(2000)  # the woken server's answer arrives meanwhile: the page ignores it
    expect(page.locator("#result img")).to_have_count(0)
    assert overlaid(page, placement, middle(*STROKE), picture), "the strokes were lost"

def test_a_server_that_hangs_during_the_uploads_is_reported_within_10_s(page: Page, server: LiveServer, photo):
    """The server stops answering while the mask is on its way: the wait is watched from the
    click, not only once the uploads are done."""
    path, picture = photo
    with page.expect_response(UPLOAD):  # the photo's upload: the next one is the mask's
        placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    held = Held(page, UPLOAD, {0})
    page.locator("#repair").click()
    held.wait()
    assert seconds_until_a_hang_is_reported(page, server) < REPORT_WITHIN_S
    expect(page.locator("#repair")).to_be_enabled()
    held.release()  # the mask arrives after all: the page does not start the abandoned repair
    page.wait_for_timeout(1500)
    expect(page.locator("#result img")).to_have_count(0)
    assert overlaid(page, placement, middle(*STROKE), picture), "the strokes were lost"


def test_one_slow_answer_to_a_ping_does_not_abandon_the_repair(page: Page, photo):
    """A busy machine may answer /livez late once: only a server silent for 6 s is reported."""
    path, _ = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    pings = Held(page, "**/livez", {0})  # the first ping gets no answer: it times out after 3 s
    join = Held(page, JOIN, {0})
    page.locator("#repair").click()
    join.wait()
    pings.wait()
    page.wait_for_timeout(4000)  # past the first ping's timeout; the next one was answered
    expect(status(page)).not_to_contain_text("not answering")
    join.release()
    repaired(page)
    pings.routes.clear()  # the page gave up on that request long ago: nothing to answer
    page.unroute("**/livez")


def test_history_steps_back_and_forth_and_reruns_the_last_mask(page: Page, server: LiveServer, photo):
    path, _ = photo
    placement = open_photo(page, path)
    previews = []
    for attempt, stroke in enumerate((STROKE, ((60, 300), (160, 300))), start=1):
        drag(page, placement, *stroke)
        page.locator("#repair").click()
        repaired(page, attempt)
        previews.append(page.locator("#result img").get_attribute("src"))

    page.keyboard.press("Control+z")  # no strokes left: steps back one result
    expect(page.locator("#result img")).to_have_attribute("src", previews[0])
    page.keyboard.press("Control+Shift+z")
    expect(page.locator("#result img")).to_have_attribute("src", previews[1])
    page.locator("#editor .history button").first.click()  # the original
    expect(page.locator("#result img")).to_have_count(0)

    uploads = []
    page.on("request", lambda request: uploads.append(request.url) if "/gradio_api/upload" in request.url else None)
    before = logged_repairs(server)
    menu(page, "Rerun last mask")
    repaired(page, 3)
    assert logged_repairs(server) == before + 1 and not uploads, "rerunning uploaded the mask again"


def test_clearing_strokes_and_removing_the_photo_are_separate_undoable_actions(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    drag(page, placement, *STROKE)
    point = middle(*STROKE)
    assert overlaid(page, placement, point, picture)

    menu(page, "Clear strokes")
    next_frame(page)
    assert shows(page, placement, point, picture), "Clear strokes left the strokes"
    page.keyboard.press("Control+z")
    next_frame(page)
    assert overlaid(page, placement, point, picture), "Undo did not bring the strokes back"

    menu(page, "Remove photo")
    expect(page.locator("#editor .drop")).to_be_visible()
    expect(status(page)).to_contain_text("Photo removed")
    status(page).get_by_role("button", name="Undo").click()
    expect(page.locator("#editor .drop")).to_be_hidden()
    next_frame(page)
    assert overlaid(page, placement, point, picture), "the photo came back without its strokes"


# ---------------------------------------------------------------- 3. painting

def test_the_canvas_fills_the_width_and_fits_the_photo(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    canvas, editor = page.locator(CANVAS).bounding_box(), page.locator("#editor .lama-editor").bounding_box()
    assert abs(canvas["width"] - editor["width"]) <= 1 and canvas["width"] >= 0.9 * 1280
    # The photo touches two opposite sides: fitted, centred, the whole of it on screen.
    assert placement.top == 0 or placement.left == 0
    assert placement.scale >= 1.6  # the window's height (900 px) less the tools: not a thumbnail
    for point in ((0, 0), (479, 0), (0, 359), (479, 359), (240, 180)):
        assert shows(page, placement, point, picture), point
    outside = shown(page, placement.left - 5, placement.top + 10) if placement.left > 5 else \
        shown(page, placement.left + 10, placement.top - 5)
    assert (outside == 0).all(), "the canvas draws something outside the photo"


def test_wheel_zoom_space_drag_pan_and_escape(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    point = (120, 90)
    x, y = placement.page_xy(point)
    page.mouse.move(x, y)
    page.mouse.wheel(0, -400)
    expect(page.locator("#editor .badge")).to_contain_text("Zoom")
    zoom = int(re.search(r"(\d+) %", page.locator("#editor .badge").inner_text()).group(1))
    assert zoom > placement.scale * 100 * 1.5
    next_frame(page)
    box = page.locator(CANVAS).bounding_box()
    under_cursor = shown(page, x - box["x"], y - box["y"])
    assert np.abs(under_cursor - picture[point[1], point[0]]).max() <= TOLERANCE, "the zoom moved the photo's pixel"

    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(x + 100, y + 60, steps=5)
    page.mouse.up()
    page.keyboard.up(" ")
    next_frame(page)
    moved = shown(page, x + 100 - box["x"], y + 60 - box["y"])
    assert np.abs(moved - picture[point[1], point[0]]).max() <= TOLERANCE, "space-drag did not pan"

    page.keyboard.press("Escape")
    expect(page.locator("#editor .badge")).to_be_hidden()
    next_frame(page)
    assert shows(page, placement, (0, 0), picture) and shows(page, placement, (479, 359), picture)
    menu(page, "Download mask")
    expect(status(page)).to_contain_text("The mask is empty")  # panning painted nothing


def test_pinch_zooms_on_a_touch_screen(browser: Browser, server: LiveServer, photo):
    path, picture = photo
    page = new_page(browser, server.base, has_touch=True)
    try:
        placement = open_photo(page, path)
        cx, cy = placement.page_xy((240, 180))
        cdp = page.context.new_cdp_session(page)

        def touch(kind: str, points: list[tuple[float, float]]) -> None:
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
                {"x": px, "y": py, "id": index} for index, (px, py) in enumerate(points)]})

        touch("touchStart", [(cx - 30, cy), (cx + 30, cy)])
        for spread in range(40, 160, 10):
            touch("touchMove", [(cx - spread, cy), (cx + spread, cy)])
        touch("touchEnd", [])
        # The badge is drawn on the next animation frame: on a loaded machine it may still show
        # an earlier step of the pinch when first read.
        page.wait_for_function("""(least) => Number((/Zoom (\\d+) %/.exec(
            document.querySelector('#editor .badge').textContent) || [0, 0])[1]) > least""",
                               arg=placement.scale * 100 * 3)
        menu(page, "Download mask")
        expect(status(page)).to_contain_text("The mask is empty")  # two fingers zoom, they do not paint
    finally:
        page.context.close()


def test_brush_size_is_shown_relative_to_the_photo_and_changed_with_brackets(page: Page, photo, tmp_path: Path):
    path, picture = photo
    placement = open_photo(page, path)
    size = page.get_by_label("Brush size (px)")
    expect(size).to_have_value("12")  # 2.5 % of the long side
    page.keyboard.press("]")
    expect(size).to_have_value("15")
    page.keyboard.press("[")
    page.keyboard.press("[")
    expect(size).to_have_value("10")
    set_brush(page, 40)
    drag(page, placement, (100, 200), (300, 200))
    next_frame(page)
    assert overlaid(page, placement, (200, 218), picture) and not overlaid(page, placement, (200, 224), picture)

    make_photo(tmp_path / "large.jpg", (2000, 1000))
    open_photo(page, tmp_path / "large.jpg", (2000, 1000))
    expect(size).to_have_value("50")


def test_the_eraser_removes_what_the_brush_painted(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    set_brush(page, 30)
    drag(page, placement, (100, 200), (300, 200))
    page.keyboard.press("e")
    expect(page.get_by_role("button", name="Eraser")).to_have_attribute("aria-pressed", "true")
    drag(page, placement, (200, 150), (200, 250))
    next_frame(page)
    assert shows(page, placement, (200, 200), picture), "the eraser left the stroke"
    assert overlaid(page, placement, (120, 200), picture) and overlaid(page, placement, (280, 200), picture)


def test_ctrl_z_and_ctrl_shift_z_undo_and_redo_strokes(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    drag(page, placement, (100, 100), (300, 100))
    drag(page, placement, (100, 250), (300, 250))
    page.keyboard.press("Control+z")
    next_frame(page)
    assert overlaid(page, placement, (200, 100), picture) and shows(page, placement, (200, 250), picture)
    page.keyboard.press("Control+z")
    next_frame(page)
    assert shows(page, placement, (200, 100), picture)
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Meta+Shift+z")  # Cmd on a Mac
    next_frame(page)
    assert overlaid(page, placement, (200, 100), picture) and overlaid(page, placement, (200, 250), picture)


def test_holding_c_compares_with_the_original(page: Page, photo):
    path, picture = photo
    placement = open_photo(page, path)
    set_brush(page, 50)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    point = middle(*STROKE)
    next_frame(page)
    assert not shows(page, placement, point, picture), "the canvas does not show the result"
    page.keyboard.down("c")
    expect(page.locator("#editor .badge")).to_have_text("Original")
    next_frame(page)
    assert shows(page, placement, point, picture), "holding C does not show the original"
    page.keyboard.up("c")
    expect(page.locator("#editor .badge")).to_be_hidden()
    next_frame(page)
    assert not shows(page, placement, point, picture)


def test_question_mark_shows_the_shortcuts(page: Page):
    help_ = page.locator("#editor .help")
    expect(help_).to_be_hidden()
    page.keyboard.press("?")
    expect(help_).to_be_visible()
    for shortcut in ("[ and ]", "Ctrl+Z", "Ctrl+Shift+Z", "hold C", "Space + drag", "Esc", "wheel"):
        expect(help_).to_contain_text(shortcut)
    page.keyboard.press("Escape")
    expect(help_).to_be_hidden()


def test_repair_when_a_stroke_ends(page: Page, server: LiveServer, photo):
    path, _ = photo
    placement = open_photo(page, path)
    page.locator("#editor summary", has_text="More").click()
    page.get_by_label("Repair when a stroke ends").check()
    page.locator("#editor summary", has_text="More").click()
    before = logged_repairs(server)
    drag(page, placement, *STROKE)
    repaired(page)  # no click on Repair
    assert logged_repairs(server) == before + 1


# ---------------------------------------------------------------- 4. masks

def test_a_mask_file_of_any_size_is_resized_to_the_photo_and_thresholded(page: Page, photo, tmp_path: Path):
    path, picture = photo
    placement = open_photo(page, path)
    mask = np.zeros((180, 240), np.uint8)  # half the photo's size
    mask[40:80, 50:100] = 255  # photo pixels 80..160 × 100..200
    mask[120:160, 150:200] = 100  # grey: under the default threshold
    cv2.imwrite(str(tmp_path / "mask.jpg"), mask, [cv2.IMWRITE_JPEG_QUALITY, 90])

    def upload_mask() -> None:
        page.locator("#editor summary", has_text="More").click()
        with page.expect_file_chooser() as chooser:
            page.locator("#editor .menu").get_by_role("button", name="Upload mask…").click()
        chooser.value.set_files(tmp_path / "mask.jpg")

    upload_mask()
    expect(status(page)).to_contain_text("resized from 240×180, threshold 127")
    next_frame(page)
    assert overlaid(page, placement, (150, 120), picture)
    assert shows(page, placement, (350, 280), picture) and shows(page, placement, (60, 60), picture)

    page.locator("#editor summary", has_text="More").click()
    page.locator("#editor .mask-threshold").fill("90")
    page.locator("#editor summary", has_text="More").click()
    upload_mask()
    expect(status(page)).to_contain_text("threshold 90")
    next_frame(page)
    assert overlaid(page, placement, (350, 280), picture) and overlaid(page, placement, (150, 120), picture)


def test_the_mask_downloads_and_inverts(page: Page, photo):
    path, _ = photo
    placement = open_photo(page, path)
    set_brush(page, 40)
    drag(page, placement, *STROKE)

    def download_mask() -> np.ndarray:
        page.locator("#editor summary", has_text="More").click()
        return download(page, lambda: page.locator("#editor .menu").get_by_role("button", name="Download mask").click())

    painted = download_mask()
    assert painted.shape == (360, 480) and set(np.unique(painted)) == {0, 255}
    distance = distance_to_segment(painted.shape, *STROKE)
    assert (painted[distance < 17] == 255).all() and (painted[distance > 23] == 0).all()
    menu(page, "Invert mask")
    inverted = download_mask()
    assert (inverted == 255 - painted).mean() > 0.999  # all but rounding on the stroke's soft edge


# ---------------------------------------------------------------- 5. uploads

def test_a_file_that_is_not_an_image_is_refused_at_once(page: Page, tmp_path: Path):
    fake = tmp_path / "holiday.png"
    fake.write_text("these are my holiday notes, not a picture\n")
    uploads = []
    page.on("request", lambda request: uploads.append(request.url) if "/gradio_api/upload" in request.url else None)
    started = time.monotonic()
    page.locator(PHOTO_INPUT).set_input_files(fake)
    expect(status(page)).to_contain_text("“holiday.png” is not an image", timeout=2_000)
    refused_s = time.monotonic() - started
    assert refused_s < 2
    assert status(page).get_attribute("data-kind") == "error" and not uploads
    record("Malformed input: a text file named .png given to the editor as the photo", "refused in the page, "
           "nothing uploaded, after", f"{refused_s:.2f} s", "< 2 s")
    expect(page.locator("#editor .drop")).to_be_visible()


@pytest.mark.parametrize("fmt", ["GIF", "AVIF"])
def test_a_photo_the_browser_shows_but_the_server_does_not_decode_is_sent_as_png(page: Page, server: LiveServer,
                                                                                 tmp_path: Path, fmt: str):
    path = tmp_path / f"scan.{fmt.lower()}"
    Image.fromarray(make_photo(size=SIZE)).save(path, fmt)
    before = uploaded_files(server)
    placement = open_photo(page, path)
    expect(status(page)).to_contain_text(f"scan.{fmt.lower()}: 480×360, converted from {fmt} to PNG")
    set_brush(page, 50)
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    # The PNG copy went up, not the original (Gradio's cache keeps one file per content: the mask
    # may be one an earlier test sent).
    assert "scan.png" in {file.name for file in uploaded_files(server) - before}
    assert not [file for file in uploaded_files(server) if file.suffix in (".gif", ".avif")]
    assert page.locator("#result a[download]").get_attribute("download") == "scan_repaired.png"


def test_an_iphone_photo_chromium_cannot_open_is_named_with_what_to_do(page: Page, tmp_path: Path):
    """HEIC: Safari decodes it (and the editor then converts it), Chromium does not."""
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 4096)
    page.locator(PHOTO_INPUT).set_input_files(heic)
    expect(status(page)).to_contain_text("“IMG_0001.HEIC” is a HEIC photo, which this browser cannot open: "
                                         "save it as JPEG", timeout=5_000)
    assert status(page).get_attribute("data-kind") == "error"


def test_a_photo_over_the_limits_is_offered_as_a_downscaled_copy(page: Page, tmp_path: Path):
    size = (2400, 1500)  # 3.6 MP: over the module's server's MAX_PIXELS
    scale = math.sqrt(MAX_PIXELS / (size[0] * size[1]))
    copy = f"{math.floor(size[0] * scale)}×{math.floor(size[1] * scale)}"  # 2000×1250
    make_photo(tmp_path / "huge.png", size)
    page.locator(PHOTO_INPUT).set_input_files(tmp_path / "huge.png")
    expect(status(page)).to_contain_text("“huge.png” is 2400×1500, 3.6 MP (at most 2.5 MP)")
    expect(page.locator("#editor .drop")).to_be_visible()  # nothing to paint on yet
    status(page).get_by_role("button", name=f"Repair a downscaled copy ({copy})").click()
    expect(status(page)).to_contain_text(f"{copy}, a downscaled copy of huge.png")
    placement = fitted(page, tuple(int(n) for n in copy.split("×")))
    drag(page, placement, (500, 400), (800, 420))
    page.locator("#repair").click()
    repaired(page)
    expect(page.locator("#result")).to_contain_text(copy)


def test_exif_orientation_is_applied_and_said(page: Page, tmp_path: Path):
    picture = make_photo(None, (200, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show it rotated 90° clockwise
    Image.fromarray(picture).save(tmp_path / "turned.jpg", quality=95, exif=exif)
    page.locator(PHOTO_INPUT).set_input_files(tmp_path / "turned.jpg")
    expect(status(page)).to_contain_text("turned.jpg: 120×200, turned upright as the camera recorded it "
                                         "(EXIF orientation 6)")
    placement = fitted(page, (120, 200))
    upright = np.rot90(picture, -1)
    next_frame(page)
    sun = (99, 162)  # top right in the file, bottom right once upright
    assert np.abs(shown_at(page, placement, sun) - upright[sun[1], sun[0]]).max() <= 20
    drag(page, placement, (20, 100), (100, 100))
    page.locator("#repair").click()
    repaired(page)
    expect(page.locator("#result")).to_contain_text("120×200")  # the server turned it the same way


def test_a_photo_with_a_colour_profile_shows_its_repair_in_the_same_colours(page: Page, tmp_path: Path):
    """The browser draws a photo through its ICC profile (an iPhone's Display P3); the repaired
    rectangle must go through it too, or the rectangle shows, its untouched rim and all. The
    profile here shows red as green: any rectangle drawn without it stands out at once."""
    picture = make_photo(size=SIZE)
    Image.fromarray(picture).save(tmp_path / "profiled.jpg", quality=95, icc_profile=RED_AS_GREEN)
    placement = open_photo(page, tmp_path / "profiled.jpg")
    next_frame(page)
    assert np.abs(shown_at(page, placement, (240, 60)) - picture[60, 240][[1, 0, 2]]).max() <= TOLERANCE
    set_brush(page, 20)
    (x0, y0), (x1, y1) = STROKE
    # Beside the stroke: untouched by the repair, inside its rectangle (the painted box grown).
    rim = [(x, round(y0 + (y1 - y0) * (x - x0) / (x1 - x0)) + side) for x in range(180, 310, 10) for side in (-23, 23)]
    before = [shown_at(page, placement, point) for point in rim]
    drag(page, placement, *STROKE)
    page.locator("#repair").click()
    repaired(page)
    next_frame(page)
    differences = [int(np.abs(shown_at(page, placement, point) - seen).max()) for point, seen in zip(rim, before)]
    assert max(differences) <= TOLERANCE, differences


# ---------------------------------------------------------------- 6. small screens

def test_a_phone_screen_shows_the_photo_the_tools_and_repair_without_scrolling(browser: Browser, server: LiveServer,
                                                                              photo):
    path, _ = photo
    page = new_page(browser, server.base, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                    is_mobile=True, has_touch=True)
    try:
        open_photo(page, path)
        for target in (page.locator(CANVAS), page.locator("#repair"), page.get_by_role("button", name="Brush"),
                       page.get_by_role("button", name="Eraser"), page.get_by_label("Brush size (px)"),
                       page.get_by_role("button", name="Undo"), page.locator("#editor summary", has_text="More")):
            box = target.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] >= 0 \
                and box["y"] + box["height"] <= 844, f"{target} is at {box}"
        assert page.locator(CANVAS).bounding_box()["height"] >= 200
        assert page.evaluate("() => window.scrollY") == 0
        page.locator("#repair").tap()
        expect(status(page)).to_contain_text("Paint over what should be removed first")
    finally:
        page.context.close()


# ---------------------------------------------------------------- the server goes away (its own server)

def test_a_server_killed_mid_repair_is_reported_within_10_s(browser: Browser, tiny_dir: Path, tmp_path: Path, photo):
    path, picture = photo
    with LiveServer.start(tiny_dir, tmp_path / "doomed", "--dilate", "0", "--feather", "0") as doomed:
        page = new_page(browser, doomed.base)
        try:
            placement = open_photo(page, path)
            drag(page, placement, *STROKE)
            page.locator("#repair").click()
            repaired(page)
            result_src = page.locator("#result img").get_attribute("src")
            drag(page, placement, (60, 300), (160, 300))

            held = Held(page, JOIN, {0})
            page.locator("#repair").click()
            held.wait()
            held.release()  # the repair reaches the server...
            doomed.process.kill()  # ...which dies with it
            killed = time.monotonic()
            expect(status(page)).to_contain_text("The server is not answering", timeout=REPORT_WITHIN_S * 1000)
            reported_s = time.monotonic() - killed
            assert reported_s < REPORT_WITHIN_S
            record("Faults: server killed mid-repair (the editor in Chromium)", "the editor says so after; the last "
                   "result and the strokes stay", f"{reported_s:.1f} s; yes", f"< {REPORT_WITHIN_S} s; yes")
            assert page.locator("#result img").get_attribute("src") == result_src
            assert overlaid(page, placement, (110, 300), picture), "the strokes were lost with the server"
            expect(page.locator("#repair")).to_be_enabled()

            # Repair clicked while the server is gone: said as quickly, in the same words.
            page.evaluate("() => { document.querySelector('#editor .status-text').textContent = ''; }")  # seen anew
            clicked = time.monotonic()
            page.locator("#repair").click()
            expect(status(page)).to_contain_text("The server is not answering", timeout=REPORT_WITHIN_S * 1000)
            assert time.monotonic() - clicked < REPORT_WITHIN_S
            assert page.locator("#result img").get_attribute("src") == result_src
            assert overlaid(page, placement, (110, 300), picture)
            expect(page.locator("#repair")).to_be_enabled()
        finally:
            page.context.close()



# ---------------------------------------------------------------- the Batch tab (issue 16)

def test_a_batch_repairs_many_photos_with_the_editor_s_mask_and_downloads_one_zip(page: Page, server: LiveServer,
                                                                                   photo, tmp_path: Path):
    path, _ = photo
    placement = open_photo(page, path)
    set_brush(page, 40)
    drag(page, placement, *STROKE)
    menu(page, "Use mask for a batch")
    expect(page.locator("#batch-tab")).to_be_visible()  # the tab opens with the editor's mask in it
    expect(page.locator("#batch-masks")).to_contain_text("photo-mask")

    same, larger = make_photo(tmp_path / "same.png"), make_photo(tmp_path / "larger.jpg", (960, 720), quality=95)
    (tmp_path / "notes.png").write_text("not a picture")
    page.locator("#batch-photos input[type=file]").set_input_files(
        [tmp_path / "same.png", tmp_path / "notes.png", tmp_path / "larger.jpg"])
    expect(page.locator("#batch-photos").get_by_role("row")).to_have_count(3)
    # Every text the page shows while the batch runs, however briefly (the progress bar's among them).
    page.evaluate("""() => { window.seen = new Set();
        new MutationObserver(() => window.seen.add(document.querySelector('#batch-tab').innerText))
          .observe(document.querySelector('#batch-tab'), {subtree: true, childList: true, characterData: true}); }""")
    page.locator("#batch-run").click()
    expect(page.locator("#batch-status")).to_contain_text("2 of 3 repaired, 1 not", timeout=60_000)
    seen = "\n".join(page.evaluate("() => [...window.seen]"))
    assert re.search(r"\b[12]/3 photos\b", seen), "no progress bar was shown while the batch ran"

    expect(page.locator("#batch-gallery img")).to_have_count(2)
    expect(page.locator("#batch-problems")).to_contain_text("notes.png")
    expect(page.locator("#batch-problems")).to_contain_text("not an image")
    href = page.locator("#batch-zip a[href*='repaired.zip']").first.get_attribute("href")
    archive = zipfile.ZipFile(io.BytesIO(page.request.get(href).body()))
    assert archive.namelist() == ["same_repaired.png", "larger_repaired.png"]
    for name, picture, scale in (("same_repaired.png", same, 1), ("larger_repaired.png", larger, 2)):
        result = cv2.cvtColor(cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR),
                              cv2.COLOR_BGR2RGB)
        original = picture if scale == 1 else cv2.cvtColor(cv2.imread(str(tmp_path / "larger.jpg")), cv2.COLOR_BGR2RGB)
        changed = (result != original).any(axis=2)
        distance = distance_to_segment(changed.shape, *[(x * scale, y * scale) for x, y in STROKE])
        assert changed[distance <= 15 * scale].mean() > 0.9, name  # the editor's stroke, resized to the photo
        assert not changed[distance > 25 * scale].any(), name


def test_a_running_batch_stops_at_its_stop_button_with_what_it_repaired_zipped(page: Page, tmp_path: Path):
    size = (1400, 1000)  # within the module server's MAX_PIXELS: each photo takes a while on the CPU
    paths = []
    for index in range(12):
        paths.append(tmp_path / f"photo{index:02d}.jpg")
        make_photo(paths[-1], size)
    mask = np.zeros(size[::-1], np.uint8)
    mask[300:500, 200:900] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-photos input[type=file]").set_input_files(paths)
    page.locator("#batch-masks input[type=file]").set_input_files(tmp_path / "mask.png")
    expect(page.locator("#batch-photos").get_by_role("row")).to_have_count(12)
    page.locator("#batch-run").click()
    # Any count short of 12: where photos finish fast the page skips counts (a CI run showed 2, 4, 6,
    # ... 12), so "1 of 12" may never show.
    expect(page.locator("#batch-status")).to_contain_text(re.compile(r"\b(?:[1-9]|1[01]) of 12 repaired"),
                                                          timeout=60_000)
    page.locator("#batch-stop").click()
    expect(page.locator("#batch-status")).to_contain_text("Stopped: ", timeout=60_000)
    repaired = int(re.search(r"Stopped: (\d+) of 12", page.locator("#batch-status").inner_text()).group(1))
    assert 1 <= repaired < 12
    href = page.locator("#batch-zip a[href*='repaired.zip']").first.get_attribute("href")
    names = zipfile.ZipFile(io.BytesIO(page.request.get(href).body())).namelist()
    assert names == [f"photo{index:02d}_repaired.png" for index in range(repaired)]

