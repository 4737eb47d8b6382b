"""The editor's repair as a Gradio API endpoint, for gradio_client.

The page's own Repair event names files by path in its event data, which Gradio's clients
cannot send; this endpoint takes the two files as a Gradio client uploads them and runs the
very same server path (EditorBackend.repair: the upload folder, lama.imageio's gate,
RepairService's queue, the saved file published into the UI cache), in the same Gradio
queue and concurrency group as the page, less the preview and the repaired rectangle that
only the page draws. Scripts that need no Gradio have the HTTP API
(POST /api/v1/inpaint); this one exists so that the UI's path can be driven and measured
without a browser (tools/ui_bench.py --client gradio).

    import httpx
    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/", auth=("user", "pass"),  # auth: only with --auth
                    ssl_verify=httpx.create_ssl_context())
    path = client.predict(handle_file("photo.jpg"), handle_file("mask.png"), api_name="/repair")

`ssl_verify`: gradio_client opens a new HTTP client for each of its requests (each upload, the
queue's join, the event stream, the download) and httpx builds a new TLS context for each,
loading the CA bundle, even for an http:// server; given one context (httpx's default one, so
certificates are checked as by default) they all share it. That was most of what this path
cost beyond the HTTP API; what remains is gradio_client's (its requests and the 50 ms at which
it polls for the answer), while the server's Gradio queue adds a few milliseconds: the
measurements are in docs/EDITOR.md. With `download_files=False` the client returns the result's
FileData (its "url") instead of downloading it, for a caller that fetches the bytes itself
(tools/ui_bench.py, like the API's answer).

The endpoint returns the file the service saved, published into Gradio's cache folder:
Gradio serves it from there as it is (no copy, no hash).

Access is the page's: with --auth, Gradio's routes (upload, queue, files) need the login
session (webui/ui_guard.py), which gradio_client gets from `auth`; without --auth the page,
and so this endpoint, is open to whoever reaches the server.

No `from __future__ import annotations` here: Gradio reads the handler's type hints as
objects to describe the endpoint.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from service.pipeline import RepairOptions
from webui.editor import EditorBackend

API_NAME = "repair"
UNSTORED = ("the repair succeeded but the server could not store its result (its disk is full); "
            "free space and try again, or use POST /api/v1/inpaint, which sends the result in its answer")


def _as_dict(file: Any) -> Any:
    """The file as the backend reads it ({"path": ...}); Gradio hands it over as a dict or as FileData."""
    return file.model_dump() if isinstance(file, FileData) else file


def repair_endpoint(backend: EditorBackend, defaults: RepairOptions) -> Callable[..., FileData]:
    """The handler for gr.api: the defaults are the page's (the server's configured options)."""

    def repair(photo: FileData, mask: FileData, strategy: str = defaults.strategy, dilate: int = defaults.dilate,
               feather: int = defaults.feather, mask_threshold: int = defaults.mask_threshold) -> FileData:
        """Repair `photo` where `mask` is set (the same size; values above mask_threshold are repaired);
        returns the repaired image, the very file the service saved, named after the photo."""
        photo, mask = _as_dict(photo), _as_dict(mask)
        name = (photo.get("orig_name") or Path(str(photo.get("path"))).name) if isinstance(photo, dict) else None
        # Without the preview and the repaired rectangle, which only the page draws.
        answer = backend.repair({"photo": photo, "mask": mask, "name": name}, strategy, dilate, feather,
                                mask_threshold=mask_threshold, for_page=False)
        if "error" in answer:
            raise gr.Error(answer["error"], print_exception=False)
        result = answer["result"]
        if result.get("unsaved"):
            raise gr.Error(UNSTORED, print_exception=False)
        return FileData(path=result["image"]["path"], orig_name=result["name"])

    return repair
