"""The seed's measurement protocol, driven over HTTP: image classes, a steady stream, faults.

Images come from loadreport.images (the same pixels on every machine) and are encoded as PNG
before the clock starts, so the timeline holds only the service's work. Every request becomes a
plain dict for data.json; phases are separated by one sampling interval so that each phase owns
the server samples taken during it (a sample's CPU figure covers the interval before its
timestamp).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2

from loadreport import images
from loadreport.client import ServiceClient, parse_server_timing


@dataclass(frozen=True)
class ImageClass:
    """One of the seed's picture sizes with the share of it a user paints over."""

    name: str
    width: int
    height: int
    coverage: float  # target mask fraction
    seed: int
    # Drawn at this class's size and scaled up: as photo-like, and generating a 20 MP
    # picture directly takes seconds of the report's time for a request that is refused.
    upscaled_from: ImageClass | None = None


CLASSES = (
    ImageClass("small", 640, 480, 0.05, 1),
    ImageClass("medium", 1280, 960, 0.12, 2),
    ImageClass("large", 2560, 1920, 0.08, 3),
)
OVERSIZED = ImageClass("oversized", 5120, 3840, 0.08, 4, upscaled_from=CLASSES[2])
SIMULTANEOUS = 5


@dataclass(frozen=True)
class Upload:
    image_class: ImageClass
    image_png: bytes
    mask_png: bytes
    mask_fraction: float


def make_upload(image_class: ImageClass) -> Upload:
    """The class's photo-like picture and stroke mask, PNG-encoded (lossless: the same pixels everywhere)."""
    c = image_class
    drawn = c.upscaled_from or c
    image = images.photo(drawn.width, drawn.height, drawn.seed)
    if drawn is not c:
        image = cv2.resize(image, (c.width, c.height), interpolation=cv2.INTER_LINEAR)
    mask = images.stroke_mask(c.width, c.height, c.coverage, c.seed)
    return Upload(c, images.png(image), images.png(mask), cv2.countNonZero(mask) / mask.size)


class Workload:
    """Runs the phases in order and keeps what happened: phases, requests, health checks.

    `settle_s` is the pause before each phase (one sampling interval); `on_phase` is told
    each phase's name as it starts, for progress lines.
    """

    def __init__(self, client: ServiceClient, settle_s: float, on_phase: Callable[[str], None] = lambda _: None):
        self.client = client
        self.settle_s = settle_s
        self.on_phase = on_phase
        self.phases: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.health_checks: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # requests arrive from several threads in the burst

    # ------------------------------------------------------------------ the protocol

    def run_class(self, upload: Upload, runs: int) -> None:
        """`runs` repairs of one class, one after another (the seed's per-size measurement)."""
        with self._phase(upload.image_class.name, "class"):
            for index in range(runs):
                self._repair(upload, upload.image_class.name, index)

    def run_stream(self, upload: Upload, count: int, interval_s: float) -> None:
        """One repair every `interval_s`, on a fixed schedule: a slow answer does not stretch the stream."""
        with self._phase("stream", "stream", interval_s=interval_s):
            started = time.monotonic()
            for index in range(count):
                time.sleep(max(0.0, started + index * interval_s - time.monotonic()))
                self._repair(upload, "stream", index)

    def run_oversized(self, upload: Upload) -> None:
        """An upload past the service's pixel limit: the service should refuse it clearly (4xx)."""
        with self._phase("oversized", "fault"):
            self._repair(upload, "oversized", 0)

    def run_simultaneous(self, upload: Upload, count: int = SIMULTANEOUS) -> None:
        """`count` large repairs released at the same instant (the seed's burst that hit CUDA OOM)."""
        with self._phase("simultaneous", "fault"):
            barrier = threading.Barrier(count)

            def one(index: int) -> None:
                barrier.wait()
                self._repair(upload, "simultaneous", index)

            threads = [threading.Thread(target=one, args=(i,), name=f"burst-{i}") for i in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------------ bookkeeping

    @contextlib.contextmanager
    def _phase(self, name: str, kind: str, **extra: Any) -> Iterator[None]:
        """Times a phase and checks /healthz after it, also when it is cut short (Ctrl-C)."""
        time.sleep(self.settle_s)
        self.on_phase(name)
        record = {"name": name, "kind": kind, **extra, "start": time.time(), "end": None, "completed": False}
        self.phases.append(record)
        try:
            yield
            record["completed"] = True
        finally:
            record["end"] = time.time()
            self._check_health(name)

    def _check_health(self, after: str) -> None:
        """Does the service still answer /healthz? Recorded after every phase."""
        exchange = self.client.get_json("/healthz")
        body = exchange.json()
        check = {"after": after, "ts": time.time(), "status": exchange.status, "seconds": exchange.seconds,
                 "ok": exchange.status == 200, "service_status": body.get("status") if isinstance(body, dict) else None,
                 "error": exchange.transport_error}
        self.health_checks.append(check)

    def _repair(self, upload: Upload, phase: str, index: int) -> None:
        """One repair over HTTP, recorded whatever came back (a refusal or no answer is data)."""
        started = time.time()
        exchange = self.client.inpaint(upload.image_png, upload.mask_png)
        code, message = (None, None) if exchange.status == 200 else exchange.error_fields()
        c = upload.image_class
        record = {
            "phase": phase, "index": index, "class": c.name, "width": c.width, "height": c.height,
            "mask_fraction": upload.mask_fraction, "upload_bytes": len(upload.image_png) + len(upload.mask_png),
            "start": started, "latency_s": exchange.seconds, "status": exchange.status,
            "response_bytes": len(exchange.body) if exchange.status == 200 else None,
            "server_timing": parse_server_timing(exchange.headers.get("server-timing")),
            "saved_as": exchange.headers.get("x-saved-as"), "error_code": code, "error_message": message,
        }
        with self._lock:
            self.requests.append(record)
