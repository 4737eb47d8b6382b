"""Issue 12, the UI's side: Gradio's routes as an attacker reaches them.

webui/ui_guard.py decides before Gradio reads a request body: with --auth every route but the
login page and its static files needs the session, failed logins are throttled per address,
the component server is closed when the page has no server function, the file route serves
local files only, and uploads stop while the UI cache holds its quota. webui/ui_cache.py: the
service only adopts a cache folder it created or an empty one. The editor's files go through
lama.imageio's gate (webui/editor.py). Each attack is sent to a live `python app.py` and its
answer, time and the server's memory are asserted; the guard's rules are also checked
in-process, where "before the body is read" can be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from support.liveserver import ROOT, LiveServer
from support.reliability import record
from support.app import encode, make_case
from webui import ui_cache
from webui.ui_guard import LoginThrottle, UIGuard

MB = 2**20
FAST_S = 1.0  # refused from headers or sizes: well under a second
RSS_BOUND = 100 * MB
USER, PASSWORD = "ann", "pw-" + "3c9e71d2" * 3


def reset_peak_rss(server: LiveServer) -> int:
    """Reset the process's RSS high-water mark (Linux: clear_refs 5) and return its settled RSS,
    so that peak_rss() afterwards shows what the next requests cost."""
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")
    return server.settled_rss()


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - started


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of zeros: 160 kB that decode to width×height bytes (13000²: 169 MB,
    and Gradio's ImageEditor converted each layer to RGBA: 676 MB a layer)."""
    row, compressor = b"\0" * (width + 1), zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))


# ------------------------------------------------------------------ the login throttle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_after_the_free_failures_each_attempt_waits_twice_as_long():
    clock = Clock()
    throttle = LoginThrottle(free_failures=5, base_delay_s=1, max_delay_s=8, clock=clock)
    for _ in range(4):
        assert throttle.wait_s("10.0.0.1") == 0
        throttle.attempt("10.0.0.1")
    waits = []
    for _ in range(6):
        clock.now += throttle.wait_s("10.0.0.1")  # wait as told, then fail again
        throttle.attempt("10.0.0.1")
        waits.append(throttle.wait_s("10.0.0.1"))
    assert waits == [1, 2, 4, 8, 8, 8]
    assert throttle.wait_s("10.0.0.2") == 0  # per address


def test_attempts_count_until_they_succeed_and_a_success_forgets_the_address():
    clock = Clock()
    throttle = LoginThrottle(free_failures=2, clock=clock)
    throttle.attempt("a")
    throttle.attempt("a")  # two in flight at once: the third must wait already
    assert throttle.wait_s("a") > 0
    throttle.succeeded("a")
    assert throttle.wait_s("a") == 0 and len(throttle) == 0


def test_the_throttle_remembers_a_bounded_number_of_addresses():
    throttle = LoginThrottle(max_clients=100)
    for index in range(10_000):
        throttle.attempt(f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}")
    assert len(throttle) == 100


# ------------------------------------------------------------------ the guard, in-process


class FakeGradio:
    """What the guard reads of Gradio's App."""

    def __init__(self, auth: bool = False, server_functions: bool = False):
        self.auth = {USER: PASSWORD} if auth else None
        self.cookie_id, self.tokens = "cid", {"good-token": USER}
        block = type("Block", (), {"server_fns": [print] if server_functions else []})()
        self._blocks = type("Blocks", (), {"blocks": {1: block}})()

    def get_blocks(self):
        return self._blocks


def call_guard(guard: UIGuard, gradio_app: FakeGradio, method: str, path: str,
               headers: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """(status, body, whether anything read the request body) of one request through `guard`."""
    read = []

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"x", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "app": gradio_app,
             "client": ("10.1.2.3", 5000), "query_string": b"",
             "headers": [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()]}
    asyncio.run(guard(scope, receive, send))
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], body, bool(read)


async def reads_the_body(scope, receive, send):
    """The inner app: Gradio reading the body, then answering 200."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def make_guard(tmp_path: Path, cache_max_bytes: int = 0, cache_fresh_s: float = 0.0) -> UIGuard:
    """By default the cache folder is counted at every upload, as ui_cache.CacheUsage does once a
    count is cache_fresh_s old."""
    return UIGuard(reads_the_body, cache_dir=tmp_path, upload_max_bytes=MB, cache_max_bytes=cache_max_bytes,
                   throttle=LoginThrottle(), cache_fresh_s=cache_fresh_s)


def test_the_component_server_is_closed_unread_unless_the_page_has_a_server_function(tmp_path):
    guard = make_guard(tmp_path)
    assert call_guard(guard, FakeGradio(), "POST", "/gradio_api/component_server") == (404, b"Not Found", False)
    assert call_guard(make_guard(tmp_path), FakeGradio(server_functions=True), "POST",
                      "/gradio_api/component_server/")[0] == 200


def test_the_file_route_serves_no_remote_url(tmp_path):
    for route in ("/gradio_api/file=", "/gradio_api/file/"):
        for url in ("https://example.com/a.png", "HTTP://169.254.169.254/latest"):
            status, _, read = call_guard(make_guard(tmp_path), FakeGradio(), "GET", route + url)
            assert (status, read) == (404, False), route + url
    assert call_guard(make_guard(tmp_path), FakeGradio(), "GET", "/gradio_api/file=/tmp/x.png")[0] == 200


def test_with_auth_only_the_login_page_and_its_files_answer_without_a_session(tmp_path):
    app = FakeGradio(auth=True)
    for path in ("/gradio_api/heartbeat/abc", "/gradio_api/cancel", "/gradio_api/startup-events", "/config",
                 "/gradio_api/upload", "/gradio_api/queue/join", "/monitoring/key", "/gradio_api/file=/tmp/x"):
        assert call_guard(make_guard(tmp_path), app, "POST", path)[::2] == (401, False), path
    for path in ("/", "/assets/index.js", "/static/fonts/a.woff2", "/theme.css", "/favicon.ico"):
        assert call_guard(make_guard(tmp_path), app, "GET", path)[0] == 200, path
    for cookie in ("access-token-cid=good-token", "access-token-unsecure-cid=good-token"):
        assert call_guard(make_guard(tmp_path), app, "POST", "/gradio_api/cancel", {"Cookie": cookie})[0] == 200
    assert call_guard(make_guard(tmp_path), app, "POST", "/gradio_api/cancel",
                      {"Cookie": "access-token-cid=forged"})[0] == 401


def test_uploads_stop_unread_while_the_cache_holds_its_quota(tmp_path):
    (tmp_path / "held").write_bytes(b"x" * (3 * MB))
    guard = make_guard(tmp_path, cache_max_bytes=4 * MB)
    status, body, read = call_guard(guard, FakeGradio(), "POST", "/gradio_api/upload",
                                    {"Content-Length": str(2 * MB)})
    assert (status, read) == (507, False) and b"3 of 4 MB" in body
    assert call_guard(guard, FakeGradio(), "POST", "/gradio_api/upload", {"Content-Length": str(MB // 2)})[0] == 200
    # Undeclared (chunked): counted as a file at the limit, 1 MB here.
    assert call_guard(guard, FakeGradio(), "POST", "/gradio_api/upload")[0] == 200
    (tmp_path / "more").write_bytes(b"x" * (MB // 2))
    assert call_guard(guard, FakeGradio(), "POST", "/gradio_api/upload")[0] == 507


def test_one_count_of_the_cache_serves_the_quota_for_a_while_and_uploads_since_count_on_top(tmp_path):
    """The folder is walked once per cache_fresh_s, not at every upload (tools/ui_upload_cost.py:
    44 ms an upload at 10,000 files when it was); what was admitted since counts until a walk
    sees it, so the quota never counts less than the folder holds."""
    (tmp_path / "held").write_bytes(b"x" * (2 * MB))
    now, limit = [0.0], 3 * MB + MB // 2
    usage = ui_cache.CacheUsage(tmp_path, fresh_s=1.0, clock=lambda: now[0])
    assert usage.admit(MB, limit) == (True, 2 * MB)
    assert usage.admit(MB, limit) == (False, 3 * MB), "an upload being received counts"
    usage.received(MB)  # the fake "Gradio" writes nothing: as an upload that failed
    (tmp_path / "behind").write_bytes(b"x" * MB)
    assert usage.admit(MB // 2, limit) == (True, 3 * MB), "counted from the walk of 0 s, plus the upload"
    usage.received(MB // 2)
    now[0] = 1.0  # the count is stale: walked again, what the folder holds, and nothing admitted before
    assert usage.admit(MB // 2, limit) == (True, 3 * MB)
    (tmp_path / "behind").unlink()
    now[0] = 1.5
    assert usage.admit(MB, limit) == (False, 3 * MB + MB // 2), "the walk of 1 s plus the upload being received"
    now[0] = 2.0
    assert usage.admit(MB, limit) == (True, 2 * MB + MB // 2)


# ------------------------------------------------------------------ a live server with --auth


def gradio_routes() -> list[tuple[str, str]]:
    """(method, path) of every route Gradio's app has, path parameters filled in."""
    with gr.Blocks() as blocks:
        gr.Markdown("routes")
    pending, routes = list(gr.routes.App.create_app(blocks).routes), []
    while pending:
        route = pending.pop()
        if isinstance(route, (APIRoute, Route)):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            routes += [(method, path) for method in sorted(route.methods or ["GET"])]
        elif hasattr(route, "original_router"):  # FastAPI includes /gradio_api's router lazily
            pending += route.original_router.routes
    return sorted(set(routes))


PUBLIC = re.compile(r"/|/login/?|/theme\.css|/favicon\.ico|/(assets|static)/.*")
# Answered by the HTTP API before Gradio (its schema, beside /docs): not Gradio's to guard.
API_OWN = {"/openapi.json"}


@pytest.fixture(scope="module")
def authed(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("authed")
    with LiveServer.start(tiny_dir, folder, "--auth", f"{USER}:{PASSWORD}") as server:
        yield server


@contextlib.contextmanager
def logged_in(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert client.post("/login", data={"username": USER, "password": PASSWORD}).json() == {"success": True}
        yield client


def test_with_auth_every_gradio_route_but_the_login_page_needs_the_session(authed):
    routes = [(method, path) for method, path in gradio_routes()
              if not PUBLIC.fullmatch(path) and path not in API_OWN]
    assert len(routes) > 40 and ("POST", "/gradio_api/cancel") in routes
    assert ("GET", "/gradio_api/heartbeat/x") in routes
    answered, slowest = [], 0.0
    with httpx.Client(base_url=authed.base, timeout=10) as anyone:
        for method, path in routes:
            response, seconds = timed(anyone.request, method, path)
            slowest = max(slowest, seconds)
            if response.status_code != 401:
                answered.append((method, path, response.status_code))
        for path in ("/", "/theme.css"):
            assert anyone.get(path).status_code == 200, path  # the login form and what it loads
        for path in ("/healthz", "/livez", "/readyz", "/metrics"):
            assert anyone.get(path).status_code == 200, path  # probes and scrapers stay open
    assert answered == []
    assert slowest < FAST_S
    # Logged in, the same routes answer as Gradio does.
    with logged_in(authed) as user:
        assert user.get("/config").status_code == 200
        assert user.post("/gradio_api/upload", files={"files": ("a.png", encode(make_case()[0]))}).status_code == 200
        assert user.post("/gradio_api/cancel", json={"session_hash": "s", "fn_index": 0,
                                                     "event_id": "e"}).status_code != 401
    record("Security: UI routes without the login (--auth)", f"Gradio routes ({len(routes)} method × path, "
           "cancel and heartbeat among them) that answered anything but 401 without the session",
           f"0 of {len(routes)}; slowest refusal {slowest * 1000:.0f} ms", "0 (the page, /login and its static "
           "files excepted); < 1 s")


def test_failed_logins_are_throttled_per_address(authed):
    with httpx.Client(base_url=authed.base, timeout=10) as guesser:
        def guess(password: str) -> httpx.Response:
            return guesser.post("/login", data={"username": USER, "password": password})

        started = time.monotonic()
        answers = [guess(f"guess-{index}").status_code for index in range(5)]
        throttled, seconds = timed(guess, PASSWORD)  # even the right password: the address waits
        assert answers == [400] * 5
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1", throttled.text
        assert "Too many failed logins" in throttled.text and seconds < FAST_S
        retry_afters = []
        for _ in range(2):  # wait as told, guess wrong again: the wait doubles
            time.sleep(int(throttled.headers["retry-after"]))
            assert guess("wrong").status_code == 400
            throttled = guess("wrong")
            assert throttled.status_code == 429
            retry_afters.append(int(throttled.headers["retry-after"]))
        wrong_answered = 5 + len(retry_afters)
        elapsed = time.monotonic() - started
        assert retry_afters == [2, 4]
        time.sleep(4)
        assert guess(PASSWORD).json() == {"success": True}  # after the wait, the right one gets in
        assert guess("wrong-again").status_code == 400  # and the slate is clean
    record("Security: login throttling", f"passwords checked from one address in {elapsed:.0f} s of guessing "
           "(each refusal 429 with Retry-After)", f"{wrong_answered} (waits 1, 2, 4 s after the 5th)",
           "5 free, then a wait that doubles (was 124 guesses/s)")


# ------------------------------------------------------------------ a live server without --auth


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    """Per-file limit 1 MB, UI cache quota 3 MB, cache files expire after 3 s."""
    folder = tmp_path_factory.mktemp("ui")
    config = folder / "small.yaml"
    config.write_text("max_upload_mb: 1\nui_cache_max_mb: 3\nui_cache_max_age_s: 3\n")
    with LiveServer.start(tiny_dir, folder, "--config", str(config)) as server:
        yield server


def editor_id(client: httpx.Client) -> int:
    components = client.get("/config").json()["components"]
    return next(c["id"] for c in components if c.get("props", {}).get("elem_id") == "editor")


def test_a_png_bomb_through_the_ui_is_refused_from_its_header(server):
    """Issue 12: a 13000² PNG bomb cost 3.5 GB and 22 s in Gradio's ImageEditor before the size
    message. The editor's first look at an uploaded photo (its prepare function) goes through
    lama.imageio's gate, as its repair does."""
    bomb = png_bomb(13000, 13000)
    with httpx.Client(base_url=server.base, timeout=30) as client:
        uploaded = client.post("/gradio_api/upload", files={"files": ("bomb.png", bomb, "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        before = reset_peak_rss(server)
        answer, seconds = timed(client.post, "/gradio_api/component_server", json={
            "data": {"path": uploaded.json()[0]}, "fn_name": "prepare", "component_id": editor_id(client),
            "session_hash": "bomb"})
        growth = server.peak_rss() - before
    assert answer.status_code == 200 and "13000×13000" in answer.json()["error"], answer.text
    assert seconds < FAST_S and growth < RSS_BOUND
    record("Security: PNG bomb through the UI", f"a {len(bomb) // 1024} kB 13000×13000 PNG uploaded to the "
           "editor: answer, time, RSS growth", f"refused (13000×13000); {seconds * 1000:.0f} ms; "
           f"{growth / MB:.0f} MB", "refused from its header; < 1 s; < 100 MB (was 22 s, +3.5 GB)")


def test_accept_blobs_holds_nothing(server):
    """Issue 12: accept_blobs kept client-keyed blobs for good (a 1-byte blob with index
    100000000 held 763 MB). The page offers no such function: refused, nothing held."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        component = editor_id(client)
        before = reset_peak_rss(server)
        answers, slowest = [], 0.0
        for index, size in [(100_000_000, 1)] + [(index, 900 * 1024) for index in range(10)]:
            response, seconds = timed(client.post, "/gradio_api/component_server", data={
                "data": json.dumps({"type": "layer", "index": index, "id": f"key-{index}"}),
                "fn_name": "accept_blobs", "component_id": str(component), "session_hash": "blobs"},
                files={"files": ("blob", b"x" * size)})
            answers.append(response.status_code)
            slowest = max(slowest, seconds)
        growth = server.peak_rss() - before
        held = server.settled_rss() - before
    assert set(answers) == {404}, answers
    assert slowest < FAST_S and growth < RSS_BOUND
    record("Security: accept_blobs", "11 blobs (one 1 byte at index 100000000, ten of 0.9 MB): answers, "
           "slowest, RSS growth (peak; held after)", f"11 × 404; {slowest * 1000:.0f} ms; {growth / MB:.0f} MB; "
           f"{held / MB:.0f} MB", "refused; < 1 s; < 100 MB (was +763 MB held for good)")


def test_gradio_s_traffic_page_is_off(server):
    """The service has its monitor; Gradio's page summarised every event in a pandas table (webui/ui.py)."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert client.get("/monitoring/summary").status_code == 403
        assert client.get("/monitoring/any-key").status_code == 403


def test_the_file_route_fetches_no_url(server):
    with httpx.Client(base_url=server.base, timeout=30) as client:
        response, seconds = timed(client.get, "/gradio_api/file=https://example.com/photo.png")
    assert response.status_code == 404 and seconds < FAST_S


def test_ui_uploads_stop_at_the_cache_quota_until_the_sweep_frees_it(server):
    """Issue 12: the UI's upload route took 100 MB per file (twice the API's limit) and 950 MB
    in 14 s. Here: 1 MB per file, 3 MB for the whole cache, files expire after 3 s."""
    cache = server.folder / "cache"
    with httpx.Client(base_url=server.base, timeout=30) as client:
        too_big, big_s = timed(client.post, "/gradio_api/upload",
                               files={"files": ("big.png", b"\0" * (MB + 4096), "image/png")})
        assert too_big.status_code == 413 and big_s < FAST_S, too_big.text
        deadline = time.monotonic() + 15  # what earlier tests uploaded expires first
        while ui_cache.size_bytes(cache) > 64 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = reset_peak_rss(server)
        answers, slowest_refusal, started = [], 0.0, time.monotonic()
        for index in range(12):  # distinct contents: Gradio stores each in a folder of its own
            response, seconds = timed(client.post, "/gradio_api/upload",
                                      files={"files": (f"{index}.png", bytes([index]) * (900 * 1024), "image/png")})
            answers.append(response)
            if response.status_code != 200:
                slowest_refusal = max(slowest_refusal, seconds)
        flood_s = time.monotonic() - started
        growth = server.peak_rss() - before
        held = ui_cache.size_bytes(cache)
        accepted = sum(response.status_code == 200 for response in answers)
        refused = [response for response in answers if response.status_code != 200]
        assert 2 <= accepted <= 3 and len(refused) == len(answers) - accepted
        assert all(response.status_code == 507 and response.headers["retry-after"] == "60" and
                   "space for uploads is full" in response.text for response in refused), refused[0].text
        assert held <= 3 * MB + 64 * 1024
        assert slowest_refusal < FAST_S and growth < RSS_BOUND
        # The files expire (3 s) and the sweep removes them: room again.
        deadline = time.monotonic() + 15
        while ui_cache.size_bytes(cache) > MB and time.monotonic() < deadline:
            time.sleep(0.2)
        again = client.post("/gradio_api/upload", files={"files": ("again.png", b"a" * (900 * 1024), "image/png")})
        assert again.status_code == 200, again.text
    record("Security: UI upload quota", f"12 uploads of 0.9 MB in {flood_s:.1f} s with a 3 MB quota: accepted, "
           "refused, cache held, slowest refusal, RSS growth",
           f"{accepted}; {len(refused)} × 507 with Retry-After; {held / MB:.1f} MB; {slowest_refusal * 1000:.0f} ms; "
           f"{growth / MB:.0f} MB", "≤ quota; 507; < 1 s; < 100 MB (was 950 MB in 14 s)")
    record("Security: UI upload per file", "a file of 1 MB + 4 kB with a 1 MB limit", f"413 in {big_s * 1000:.0f} ms",
           "413 at the API's per-file limit (was twice it); < 1 s")


# ------------------------------------------------------------------ the cache folder


def test_the_service_refuses_to_adopt_a_folder_holding_other_files(tiny_dir, tmp_path):
    shared = tmp_path / "shared"
    (shared / "reports").mkdir(parents=True)
    theirs = shared / "reports" / "q3.pdf"
    theirs.write_bytes(b"%PDF someone else's")
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "--model", str(tiny_dir), "--device", "cpu",
                             "--outputs-dir", str(tmp_path / "outputs"), "--logs-dir", str(tmp_path / "logs"),
                             "--ui-cache-dir", str(shared), "--port", "1"],
                            capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("error: --ui-cache-dir") and "reports/q3.pdf" in error_lines[0]
    assert theirs.read_bytes() == b"%PDF someone else's" and not (shared / ui_cache.MARKER).exists()
    record("Security: foreign UI cache folder", "python app.py --ui-cache-dir on a folder holding another's file",
           f"exit 1 with one line in {seconds:.1f} s; the file untouched", "refused before serving; nothing deleted")
