"""The UI against the HTTP API, same photo, same mask, same server.

    python tools/ui_bench.py                       # starts app.py with the tiny test checkpoint on the CPU
    python tools/ui_bench.py --model models/big-lama --device cuda
    python tools/ui_bench.py --url http://127.0.0.1:7860
    python tools/ui_bench.py --client gradio --url http://127.0.0.1:7860   # no browser: the GPU box

For each size, a photo-like picture (lama.synthetic) saved as JPEG (quality 92) and its
brush-stroke mask as a PNG are repaired:
- by the API: POST /api/v1/inpaint with both files, timed from the request to the last byte
  of the repaired PNG;
- by the UI, with --client browser (the default): the editor in Chromium; the photo given to
  #editor's file input once, then per repair the mask given to the editor's "Upload mask" and
  #repair clicked; the time is the one the page shows, from the click to the result on screen
  (upload, queue, model, save and transfer). After each repair the editor steps back to the
  original (Undo) so that every repair starts from the same picture. Needs Debian's chromium
  (/usr/bin/chromium) and the test extras (playwright);
- by the UI, with --client gradio: the UI's server path without a browser. gradio_client
  uploads the photo and the mask and joins Gradio's queue for /repair (the editor's handler,
  webui/client_api.py), which answers with the saved file's URL; the repaired PNG is then
  fetched like the API's answer (its bytes read over a kept-alive connection); timed from the
  call to the last byte. The Client is built as webui/client_api.py recommends: one TLS
  context for all its requests (gradio_client opens a new HTTP client, and httpx a new TLS
  context, for each of them, even over plain http; docs/EDITOR.md has the cost). With
  --gradio-defaults it is built with gradio_client's defaults instead (a TLS context per
  request, the result downloaded into a folder; timed to the file on disk): what the
  recommended options save. Needs only gradio_client (a dependency of gradio);
- by the UI, with --client stream: the same server path spoken as the page's own JavaScript
  client speaks it, over one kept-alive connection and in one Gradio session (a page's): both
  files uploaded in one request, the queue joined, its event stream read as the events arrive,
  the result fetched. gradio_client looks for the answer every 50 ms (docs/EDITOR.md); a browser
  does not, and neither does this. gradio_client still reads the server's config and names the
  endpoint's index.
API and UI repairs alternate, so that both see the same load on a shared machine. Prints
both medians, their ratio (the issue's targets: UI within 1.5× of the API in the browser on
a 2-core CPU box, within 1.2× through gradio_client on the GPU box), and what each path adds
to the model's own time (the API's Server-Timing; the page's timing line, or the request
record's for gradio_client).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from lama import imageio
from lama.synthetic import synthetic_case

ROOT = Path(__file__).resolve().parents[1]
# The tests' helpers: one launcher of app.py and one way to start Chromium for tools and tests alike.
sys.path.insert(0, str(ROOT / "tests"))
from support.paths import tiny_model  # noqa: E402
SIZES = ((1280, 960), (4000, 3000))
REPAIR_TIMEOUT_MS = 300_000


@contextlib.contextmanager
def server(model: Path, device: str, folder: Path) -> Iterator[str]:
    """app.py on a free port with its folders under `folder`, until the block ends: the tests'
    own launcher (tests/support/liveserver.py), the later --device winning over its cpu."""
    from support.liveserver import LiveServer

    with LiveServer.start(model, folder, "--device", device) as live:
        yield live.url("")


def write_case(folder: Path, width: int, height: int) -> tuple[Path, Path]:
    image, mask = synthetic_case(width, height)
    photo, mask_path = folder / f"photo-{width}x{height}.jpg", folder / f"mask-{width}x{height}.png"
    imageio.write_image_atomic(photo, image, quality=92)
    imageio.write_image_atomic(mask_path, mask)
    return photo, mask_path


def model_s(server_timing: str) -> float:
    """The model's stages (preprocess, infer, postprocess) from the API's Server-Timing header."""
    stages = dict(item.split(";dur=") for item in server_timing.replace(" ", "").split(","))
    return sum(float(stages.get(stage, 0)) for stage in ("preprocess", "infer", "postprocess")) / 1000


class RepairPath(Protocol):
    line: str  # what to print beside the figures: the page's last timing line

    def repair(self) -> tuple[float, float]:
        """(seconds the client waited for one repair, the model's share of them)."""


class ApiPath:
    line = ""

    def __init__(self, url: str, photo: Path, mask: Path, token: str | None = None):
        self.url = url
        self.files = {"image": (photo.name, photo.read_bytes(), "image/jpeg"),
                      "mask": (mask.name, mask.read_bytes(), "image/png")}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=REPAIR_TIMEOUT_MS / 1000, headers=headers)

    def repair(self) -> tuple[float, float]:
        """(seconds from the request to the last byte of the result, the model's share)."""
        started = time.perf_counter()
        response = self.client.post(f"{self.url}/api/v1/inpaint", files=self.files)
        response.read()
        waited = time.perf_counter() - started
        response.raise_for_status()
        return waited, model_s(response.headers["Server-Timing"])


def connect_gradio(url: str, auth: tuple[str, str] | None, downloads: Path | None = None) -> Any:
    """A gradio_client Client as webui/client_api.py recommends: one TLS context (httpx's default
    one) for all its requests, and the result's URL rather than a download. With `downloads`:
    gradio_client's defaults, the result downloaded into that folder."""
    from gradio_client import Client

    if downloads is not None:
        return Client(url, auth=auth, verbose=False, download_files=str(downloads))
    return Client(url, auth=auth, verbose=False, ssl_verify=httpx.create_ssl_context(), download_files=False)


class GradioClientPath:
    """The UI's server path through gradio_client: one Client (its config read once, as a page
    loads once), per repair both files uploaded, the queue joined, the result's bytes fetched
    (or, with a Client that downloads, the file downloaded)."""

    line = ""

    def __init__(self, client: Any, url: str, photo: Path, mask: Path, token: str | None = None):
        from gradio_client import handle_file

        self.client, self.url, self.token = client, url, token
        self.files = handle_file(str(photo)), handle_file(str(mask))
        # The result's URL is fetched as the API's answer is read: over one kept-alive connection
        # (with the Client's login cookies, when the server has --auth).
        self.http = httpx.Client(timeout=REPAIR_TIMEOUT_MS / 1000, cookies=client.cookies)

    def repair(self) -> tuple[float, float]:
        """(seconds from the call to the last byte of the repaired file, the model's share from the request record)."""
        since = time.time()
        started = time.perf_counter()
        result = self.client.predict(*self.files, api_name="/repair")
        # A FileData dict (the Client does not download) or the downloaded file's path.
        size = (len(self.http.get(result["url"]).raise_for_status().content) if isinstance(result, dict)
                else Path(result).stat().st_size)
        waited = time.perf_counter() - started
        if not size:
            raise SystemExit(f"the repaired file is empty: {result}")
        return waited, self._model_s(since)

    def _model_s(self, since: float) -> float:
        """The model's stages of the newest repair recorded since `since` (GET /api/v1/monitor)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        records = httpx.get(f"{self.url}/api/v1/monitor", params={"since": since}, headers=headers,
                            timeout=30).raise_for_status().json()["requests"]
        timings = [record["timings"] for record in records if record.get("status") == 200][-1]
        return sum(timings.get(stage, 0.0) for stage in ("preprocess", "infer", "postprocess"))


class QueueStreamPath(GradioClientPath):
    """The UI's server path as the page's JavaScript client drives it: Gradio's upload route, the
    queue's join, then its event stream read as it arrives (no polling), and the result fetched,
    all over one kept-alive connection, in one Gradio session, as one page's repairs are (a new
    session costs Gradio a copy of every component's state at its first join: most of the join's
    time). The Client is used for its config only."""

    def __init__(self, client: Any, url: str, photo: Path, mask: Path, token: str | None = None):
        super().__init__(client, url, photo, mask, token)
        self.session = uuid.uuid4().hex
        self.uploads = [("files", (path.name, path.read_bytes())) for path in (photo, mask)]
        self.fn_index = client._infer_fn_index("/repair", None)
        # The options after the two files: the endpoint's defaults (the page's), as gradio_client sends them.
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/repair"]["parameters"]
        self.options = [parameter["parameter_default"] for parameter in parameters[2:]]

    def repair(self) -> tuple[float, float]:
        """(seconds from the uploads' start to the last byte of the repaired file, the model's share)."""
        since = time.time()
        started = time.perf_counter()
        paths = self.http.post(self.client.upload_url, files=self.uploads).raise_for_status().json()
        files = [{"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}
                 for path, (_, (name, _)) in zip(paths, self.uploads, strict=True)]
        joined = self.http.post(self.client.sse_data_url, json={
            "data": [*files, *self.options], "fn_index": self.fn_index, "session_hash": self.session})
        event = joined.raise_for_status().json()["event_id"]
        result = self._completed(event)
        size = len(self.http.get(result["url"]).raise_for_status().content)
        waited = time.perf_counter() - started
        if not size:
            raise SystemExit(f"the repaired file is empty: {result}")
        return waited, self._model_s(since)

    def _completed(self, event: str) -> dict[str, Any]:
        """The output of `event`'s process_completed message, read from the session's event stream."""
        with self.http.stream("GET", self.client.sse_url, params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event and message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise SystemExit(f"the repair failed: {message.get('output')}")
                    return message["output"]["data"][0]
        raise SystemExit("the event stream ended before the repair completed")


class PagePath:
    def __init__(self, page: Any, url: str, photo: Path, mask: Path):
        self.page, self.mask = page, mask
        page.goto(url)
        page.locator("#editor input[type=file]").set_input_files(photo)
        page.wait_for_function("() => document.querySelector('#editor .status').textContent.includes('Paint over')",
                               timeout=REPAIR_TIMEOUT_MS)
        self.line = ""

    def repair(self) -> tuple[float, float]:
        """(seconds from the click to the result on screen, as the page shows it; the model's share)."""
        page = self.page
        if page.locator("#result img").count():
            page.keyboard.press("Control+z")  # back to the original: every repair starts from the same picture
            page.wait_for_function("() => !document.querySelector('#result img')")
        page.locator("#editor summary", has_text="More").click()
        with page.expect_file_chooser() as chooser:
            page.get_by_role("button", name="Upload mask…").click()
        chooser.value.set_files(self.mask)
        page.wait_for_function("() => document.querySelector('#editor .status').textContent.includes('loaded')")
        page.locator("#repair").click()
        page.wait_for_function("() => document.querySelector('#result')?.dataset.waitedMs", timeout=REPAIR_TIMEOUT_MS)
        self.line = page.locator("#result .waited").inner_text()
        model = float(self.line.split("model ")[1].split(" ")[0])
        return float(page.locator("#result").get_attribute("data-waited-ms")) / 1000, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start app.py)")
    parser.add_argument("--client", choices=("browser", "gradio", "stream"), default="browser",
                        help="how the UI is driven: the editor in Chromium, its server path through gradio_client, "
                             "or that path as the page's client speaks it (the event stream read, not polled)")
    parser.add_argument("--gradio-defaults", action="store_true",
                        help="with --client gradio: the Client with gradio_client's defaults, not the recommended options")
    parser.add_argument("--model", type=Path, default=tiny_model(), help=f"default: {tiny_model()}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="repairs per size and path, after one to warm up")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES), help="e.g. 1280x960,4000x3000")
    parser.add_argument("--api-token", default=os.environ.get("LAMA_API_TOKEN"), help="the server's, if it has one")
    parser.add_argument("--auth", default=os.environ.get("LAMA_AUTH"), help="USER:PASS, the server's --auth (gradio)")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as scratch, contextlib.ExitStack() as stack:
        folder = Path(scratch)
        url = args.url or stack.enter_context(server(args.model, args.device, folder))
        if args.client == "browser":
            page = stack.enter_context(browser_page())
            ui_name = "UI (Chromium)"

            def ui_path(photo: Path, mask: Path) -> RepairPath:
                return PagePath(page, url, photo, mask)
        else:
            from gradio_client import __version__

            auth = tuple(args.auth.split(":", 1)) if args.auth else None
            client = connect_gradio(url, auth, folder / "downloads" if args.gradio_defaults else None)
            path_class = QueueStreamPath if args.client == "stream" else GradioClientPath
            ui_name = (f"UI (Gradio's queue, its event stream read as the page does; config by gradio_client {__version__})"
                       if args.client == "stream" else
                       f"UI (gradio_client {__version__}{', its defaults' if args.gradio_defaults else ''})")

            def ui_path(photo: Path, mask: Path) -> RepairPath:
                return path_class(client, url, photo, mask, args.api_token)

        print(f"server {url} · {os.cpu_count()} CPU cores · {ui_name} · medians of {args.repeats} after one warm-up, "
              "API and UI repairs alternating (both see the same load)")
        # Milliseconds: on the GPU box the API answers 1280×960 in about 30.
        print(f"{'size':>10}  {'API ms':>8}  {'UI ms':>8}  {'UI/API':>6}  {'API-model ms':>12}  {'UI-model ms':>11}"
              + ("  the page's last timing line" if args.client == "browser" else ""))
        for width, height in sizes:
            photo, mask = write_case(folder, width, height)
            api, ui = ApiPath(url, photo, mask, args.api_token), ui_path(photo, mask)
            api_runs, ui_runs = [], []
            for attempt in range(args.repeats + 1):  # the first of each warms up
                api_runs.append(api.repair())
                ui_runs.append(ui.repair())
            api_total = statistics.median(total for total, _ in api_runs[1:])
            ui_total = statistics.median(total for total, _ in ui_runs[1:])
            # What each path adds to the model's own time: the part the UI's design changes.
            api_rest = statistics.median(total - model for total, model in api_runs[1:])
            ui_rest = statistics.median(total - model for total, model in ui_runs[1:])
            print(f"{width}×{height:<5}  {api_total * 1000:8.1f}  {ui_total * 1000:8.1f}  {ui_total / api_total:6.2f}  "
                  f"{api_rest * 1000:12.1f}  {ui_rest * 1000:11.1f}  {ui.line}".rstrip(), flush=True)


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A Chromium page, as the browser tests start it (imported here: the gradio client needs no
    browser, and the GPU box has no Playwright)."""
    from support.browser import chromium

    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(60_000)
        yield page


if __name__ == "__main__":
    main()
