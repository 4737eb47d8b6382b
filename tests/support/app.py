"""The in-process app (app.build_app behind a TestClient), the uploads and answers of the API,
as the service tests build and read them."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import app  # noqa: F401 - the entry point's environment defaults (no analytics) before gradio loads
from webui.compose import build_app
from webui.settings import load_settings, parse_args

WAIT_S = 60  # upper bound for start-up and warm-up; normally a few seconds
FAST_S = 1.0  # "well under a second" for every refusal
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
TIMING_STAGES = ("decode", "queue", "infer", "encode")
LOCAL_BASE = "http://127.0.0.1"


# ------------------------------------------------------------------ images


def make_case(width=96, height=72, box=(20, 24, 44, 56), seed=0):
    """A random RGB image (so that any repair visibly changes pixels) and a rectangle mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 255
    return image, mask


def encode(array, ext=".png"):
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(ext, array)
    assert ok
    return data.tobytes()


def decode(data):
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the response body is not an image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def upload(image, mask, **fields):
    """httpx keyword arguments for a multipart repair request."""
    files = {}
    if image is not None:
        files["image"] = ("photo.png", image if isinstance(image, bytes) else encode(image), "image/png")
    if mask is not None:
        files["mask"] = ("mask.png", mask if isinstance(mask, bytes) else encode(mask), "image/png")
    return {"files": files, "data": {key: str(value) for key, value in fields.items()}}


def png_header_only(width, height):
    """A valid PNG signature and IHDR declaring width×height, followed by a 1×1 image's data."""
    tiny = encode(np.zeros((1, 1), np.uint8))
    chunk = b"IHDR" + struct.pack(">II", width, height) + tiny[24:29]
    return tiny[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + tiny[33:]


def gif_bytes():
    buffer = io.BytesIO()
    Image.fromarray(make_case()[0]).save(buffer, "GIF")
    return buffer.getvalue()


# ------------------------------------------------------------------ responses


def error_of(response, status, code):
    """Assert the documented error shape and return the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]["message"]


def server_timing(response):
    stages = {}
    for part in response.headers["server-timing"].split(","):
        name, _, duration = part.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


def metric(text, name, **labels):
    """The value of one sample in Prometheus text, parsed by the client library's parser."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def output_files(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def wait_until(condition, timeout=WAIT_S, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.01)


def saves_written(client):
    """Once the files of the API's answered repairs are written (the service writes them after the answers)."""
    wait_until(lambda: service_of(client).saves_pending == 0, 10, what="the answered repairs' files written")


def saved_file(outputs, response, timeout=10):
    """The file an API repair's answer names in X-Saved-As, under `outputs`, once written: the
    service writes it just after the answer."""
    path = Path(outputs) / response.headers["x-saved-as"]
    wait_until(path.is_file, timeout, what=f"{path.name} written")
    return path


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    response = call(*args, **kwargs)
    return response, time.perf_counter() - started


# ------------------------------------------------------------------ apps


def make_settings(tiny_dir, folder, *flags, **overrides):
    """Settings as `python app.py --model tiny --device cpu ...` reads them, plus overrides.

    Secrets come only from `flags`: LAMA_API_TOKEN / LAMA_AUTH in the caller's environment
    must not protect the apps under test.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LAMA_API_TOKEN", raising=False)
        patch.delenv("LAMA_AUTH", raising=False)
        settings = load_settings(parse_args(
            ["--model", str(tiny_dir), "--device", "cpu", "--outputs-dir", str(folder / "outputs"),
             "--logs-dir", str(folder / "logs"), "--ui-cache-dir", str(folder / "cache"), *flags]))
    return dataclasses.replace(settings, **overrides)


@contextlib.contextmanager
def serve(settings, wait_ready=True):
    """The app as build_app returns it, behind a TestClient; waits for the warm-up."""
    # As a client on the same machine: bound to loopback, the app answers only to loopback Host names.
    with TestClient(build_app(settings), base_url=LOCAL_BASE) as client:
        if wait_ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, what="/readyz 200")
        yield client


def service_of(client):
    return client.app.state.service


def repair(client, image, mask, **fields):
    return client.post("/api/v1/inpaint", **upload(image, mask, **fields))


def block_worker(service):
    """Occupy the GPU worker with a job until the returned event is set."""
    release, running = threading.Event(), threading.Event()
    service.queue.submit(lambda: running.set() or release.wait(WAIT_S))
    assert running.wait(WAIT_S)
    return release
