"""The API as a stranger meets it on a live server: a client no one here wrote (schemathesis)
finds no 5xx and no answer that breaks /openapi.json, /docs renders with the internet cut off,
and the UI's footer does not point at Gradio's empty API page."""

from __future__ import annotations

import subprocess
import sys
import threading
from urllib.parse import urlsplit

from support.browser import chromium
from support.liveserver import LiveServer

# Per operation: enough to cover each route's refusals, and the whole run stays well under 90 s here.
SCHEMATHESIS_EXAMPLES = 25
SCHEMATHESIS_TIMEOUT_S = 240
TOKEN = "schemathesis-token"


# ------------------------------------------------------------------ a client no one here wrote


def test_schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_document(tiny_dir, tmp_path):
    # With a token: schemathesis also checks that every route refuses requests without it (ignored_auth).
    with LiveServer.start(tiny_dir, tmp_path, env={"LAMA_API_TOKEN": TOKEN}) as server:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", server.url("/openapi.json"),
             "--header", f"Authorization: Bearer {TOKEN}", "--checks", "all",
             # "Valid" requests by the schema carry random bytes as the image, which the server
             # rightly refuses (400): no schema can say "a decodable PNG".
             "--exclude-checks", "positive_data_acceptance",
             "--max-examples", str(SCHEMATHESIS_EXAMPLES), "--workers", "1", "--no-shrink"],
            capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT_S, cwd=tmp_path)
        assert server.alive(), server.log_tail()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]


# ------------------------------------------------------------------ offline, in a browser


def test_docs_render_with_no_internet_and_the_ui_links_to_them(tiny_dir, tmp_path):
    with LiveServer.start(tiny_dir, tmp_path) as server, chromium() as browser:
        page = browser.new_page()
        outside: list[str] = []
        lock = threading.Lock()

        def only_this_server(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:  # what a machine without internet does to it
                with lock:
                    outside.append(route.request.url)
                route.abort("internetdisconnected")

        page.route("**/*", only_this_server)
        page.goto(server.url("/docs"))
        operations = page.locator(".swagger-ui .opblock-summary-path")
        operations.first.wait_for(timeout=20_000)
        shown = set(operations.all_inner_texts())
        assert {"/api/v1/inpaint", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/result"} <= \
            {text.replace("\u200b", "") for text in shown}
        assert not [url for url in outside if not url.startswith("data:")], outside

        page.goto(server.url("/"))
        page.locator("footer").wait_for(timeout=30_000)
        assert page.get_by_text("Use via API").count() == 0  # Gradio's page lists only the UI's private events
        assert page.get_by_role("link", name="the HTTP API").get_attribute("href") == "/docs"
