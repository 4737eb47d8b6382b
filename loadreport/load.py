"""python -m loadreport load: throughput and latency of a running service under concurrent clients.

    python -m loadreport load --url http://HOST:PORT [--sizes 640x480,1280x960,2560x1920]
                              [--clients 1,4,16] [--settings default,original]
                              [--duration S | --requests N] [--warmup N] [--json PATH]

Real HTTP, as people upload: a JPEG photo (quality 92) with a PNG brush-stroke mask. For each
size and settings, a few warm-up repairs (the first of a new size may compile or capture
kernels on the server), then one cell per number of clients: that many threads, each with its
own connection, sending the next repair as soon as the last is answered, for --duration
seconds or --requests repairs in all. The 1-client cell always runs first: its median `infer`
stage defines the model-only capacity the other cells are compared with (load_summary.py).

Out come a Markdown header and table on stdout (for docs/BENCHMARKS.md) and, with --json,
every request and figure of the run. Progress goes to stderr. The token for /api/v1/* comes
from --api-token or LAMA_API_TOKEN.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loadreport import images
from loadreport.client import Exchange, ReportError, ServiceClient, parse_server_timing
from loadreport.files import write_atomic
from loadreport.gpu_busy import BusyMeter, busy_meter
from loadreport.load_summary import add_capacity, markdown, summarize_cell

COMMAND = "python -m loadreport load"
SETTINGS: dict[str, dict[str, str]] = {"default": {}, "original": {"strategy": "original"}}
SIZES = ((640, 480), (1280, 960), (2560, 1920))
CLIENTS = (1, 4, 16)
DURATION_S = 10.0
WARMUP = 2
MASK_COVERAGE = 0.08  # between the report's classes (5 to 12 %): a few objects painted over
MAX_BACKOFF_S = 5.0  # the longest a client honours a Retry-After: a cell is seconds long
Item = TypeVar("Item")


@dataclass(frozen=True)
class Upload:
    width: int
    height: int
    image_jpeg: bytes
    mask_pngs: tuple[bytes, ...]  # sent in turn; the first is the warm-up's

    @property
    def mask_png(self) -> bytes:
        return self.mask_pngs[0]


# Seeds of an upload's further masks lie this far apart: other strokes, so other boxes.
MASK_SEED_STEP = 7919


def make_upload(width: int, height: int, seed: int, coverage: float, masks: int = 1,
                shape: str = "strokes") -> Upload:
    """A photo and `masks` different masks over it (the first from `seed` itself), of `shape`
    (loadreport.images.MASK_SHAPES: brush strokes, or one object painted over)."""
    picture = images.photo(width, height, seed)
    draw = images.MASK_SHAPES[shape]
    return Upload(width, height, images.jpeg(picture),
                  tuple(images.png(draw(width, height, coverage, seed + MASK_SEED_STEP * turn)) for turn in range(masks)))


# ------------------------------------------------------------------ options


def size_arg(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (expected WIDTHxHEIGHT, e.g. 1280x960)")
    return int(width), int(height)


def listed(parse: Callable[[str], Item]) -> Callable[[str], list[Item]]:
    """An argparse type for a comma-separated list of `parse`'s values."""
    def parse_list(text: str) -> list[Item]:
        return [parse(item.strip()) for item in text.split(",") if item.strip()]
    return parse_list


def _clients(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a number of clients: {text!r}")
    return int(text)


def _setting(text: str) -> str:
    if text not in SETTINGS:
        raise argparse.ArgumentTypeError(f"unknown settings {text!r} (known: {', '.join(SETTINGS)})")
    return text


def add_service_arguments(parser: argparse.ArgumentParser, sizes: tuple[tuple[int, int], ...], sizes_are: str) -> None:
    """--url, --sizes (`sizes` by default) and --api-token, as both benchmarks take them."""
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:7860")
    parser.add_argument("--sizes", type=listed(size_arg), default=list(sizes), metavar="WxH,...",
                        help=f"{sizes_are} (default: {','.join(f'{width}x{height}' for width, height in sizes)})")
    parser.add_argument("--api-token", default=os.environ.get("LAMA_API_TOKEN"),
                        help="Bearer token for /api/v1/* (default: $LAMA_API_TOKEN)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Throughput of a running inpainting service: "
                                     "a Markdown table on stdout, everything with --json")
    add_service_arguments(parser, SIZES, "picture sizes")
    parser.add_argument("--clients", type=listed(_clients), default=list(CLIENTS), metavar="N,...",
                        help="simultaneous clients per cell (default: 1,4,16); 1 is always run first: "
                             "it measures the model-only capacity")
    parser.add_argument("--settings", type=listed(_setting), default=list(SETTINGS), metavar="NAME,...",
                        help="default (no form fields: the server's defaults) and/or original (strategy=original)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--duration", type=float, default=DURATION_S, metavar="S",
                        help=f"seconds of load per cell (default: {DURATION_S:g})")
    budget.add_argument("--requests", type=int, metavar="N", help="repairs per cell, shared by its clients")
    parser.add_argument("--warmup", type=int, default=WARMUP, metavar="N",
                        help=f"unmeasured repairs per size and settings before its cells (default: {WARMUP})")
    parser.add_argument("--mask-coverage", type=float, default=MASK_COVERAGE, metavar="SHARE",
                        help=f"share of the picture painted over (default: {MASK_COVERAGE:g})")
    parser.add_argument("--mask-shape", choices=list(images.MASK_SHAPES), default="strokes",
                        help="brush strokes spread over the picture (default), or one object painted over "
                             "(an ellipse: its box is a part of the picture's rows)")
    parser.add_argument("--masks", type=int, default=1, metavar="N",
                        help="different masks per size, sent in turn (default: 1, every request the same). "
                             "People's masks differ, and with them the boxes the crop strategy repairs: the "
                             "model's input shapes. The warm-up sends the first only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every request and figure here")
    args = parser.parse_args(argv)
    if not (args.sizes and args.clients and args.settings):
        parser.error("--sizes, --clients and --settings need at least one value each")
    if args.duration <= 0 or (args.requests is not None and args.requests < 1) or args.warmup < 0:
        parser.error("--duration must be positive, --requests at least 1, --warmup not negative")
    if not 0 < args.mask_coverage < 1:
        parser.error("--mask-coverage must be between 0 and 1")
    if args.masks < 1:
        parser.error("--masks must be at least 1")
    args.clients = sorted(set(args.clients) | {1})
    return args


# ------------------------------------------------------------------ one cell


class Cell:
    """`clients` users, each on its own connection, sending `upload` back to back until the budget is spent."""

    def __init__(self, url: str, token: str | None, upload: Upload, form: Mapping[str, str], clients: int,
                 requests: int | None, duration_s: float):
        self.url = url
        self.token = token
        self.upload = upload
        self.form = form
        self.clients = clients
        self.requests = requests
        self.duration_s = duration_s
        self._records: list[dict[str, Any]] = []
        self._tickets = itertools.count()
        self._mask_turns = itertools.count()  # shared by the clients: the masks go round in order
        self._lock = threading.Lock()
        self.started_at = 0.0  # unix time: to find the cell in the server's logs
        self._started = 0.0  # perf_counter: the requests' start_s count from it

    def run(self) -> list[dict[str, Any]]:
        ready = threading.Barrier(self.clients + 1)
        threads = [threading.Thread(target=self._client, args=(number, ready), name=f"load-client-{number}",
                                    daemon=True) for number in range(self.clients)]
        for thread in threads:
            thread.start()
        self.started_at, self._started = time.time(), time.perf_counter()
        ready.wait()
        for thread in threads:
            thread.join()
        return sorted(self._records, key=lambda record: record["start_s"])

    def _remaining_s(self) -> float:
        return self._started + self.duration_s - time.perf_counter()

    def _another(self) -> bool:
        if self.requests is not None:
            with self._lock:
                return next(self._tickets) < self.requests
        return self._remaining_s() > 0

    def _client(self, number: int, ready: threading.Barrier) -> None:
        with ServiceClient(self.url, self.token) as client:
            ready.wait()
            while self._another():
                masks = self.upload.mask_pngs
                with self._lock:
                    mask = masks[next(self._mask_turns) % len(masks)]
                sent = time.perf_counter() - self._started
                exchange = client.inpaint(self.upload.image_jpeg, mask, "image/jpeg", self.form)
                record = _record(number, sent, exchange)
                with self._lock:
                    self._records.append(record)
                if exchange.status is None:
                    return  # no server to talk to: more attempts would only count refused connections
                if record["retry_after_s"] is not None:
                    wait_s = min(record["retry_after_s"], MAX_BACKOFF_S)
                    time.sleep(wait_s if self.requests is not None else max(0.0, min(wait_s, self._remaining_s())))


def _record(client: int, sent_s: float, exchange: Exchange) -> dict[str, Any]:
    code, message = (None, None) if exchange.status == 200 else exchange.error_fields()
    retry_after = exchange.headers.get("retry-after", "") if exchange.status == 503 else ""
    return {"client": client, "start_s": sent_s, "latency_s": exchange.seconds, "status": exchange.status,
            "server_timing": parse_server_timing(exchange.headers.get("server-timing")),
            "strategy": exchange.headers.get("x-strategy"), "error_code": code, "error_message": message,
            "retry_after_s": float(retry_after) if retry_after.isdigit() else None}


# ------------------------------------------------------------------ the run


@contextlib.contextmanager
def measured_service(url: str, token: str | None, run: dict[str, Any]) -> Iterator[tuple[ServiceClient, BusyMeter]]:
    """A client of the service at `url` and the meter of its GPU's busy share, both noted in `run`
    (the service's /healthz, where the share is read)."""
    with ServiceClient(url, token) as service:
        run["health"] = service.health()
        meter = busy_meter(service, run["health"])
        run["gpu_busy_source"] = meter.source
        yield service, meter


def measure(args: argparse.Namespace, run: dict[str, Any]) -> None:
    """Fills `run` cell by cell, so that an interrupted run keeps the cells it finished."""
    with measured_service(args.url, args.api_token, run) as (service, meter):
        for index, (width, height) in enumerate(args.sizes):
            progress(f"generating the {width}×{height} upload")
            upload = make_upload(width, height, index, args.mask_coverage, args.masks, args.mask_shape)
            for settings in args.settings:
                run["interrupted"] = f"during the warm-up of {width}×{height} {settings}"
                warm_up(service, upload, SETTINGS[settings], args.warmup)
                for clients in args.clients:
                    run["interrupted"] = f"during {cell_name(width, height, settings, clients)}"
                    cell = measure_cell(service, meter, upload, settings, clients, args)
                    run["cells"].append(cell)
                    if cell["requests"] and all(record["status"] is None for record in cell["requests"]):
                        raise ReportError(f"lost {service.base_url}: {cell['requests'][0]['error_message']}")
        run["interrupted"] = None


def warm_up(service: ServiceClient, upload: Upload, form: Mapping[str, str], count: int) -> None:
    for _ in range(count):
        exchange = service.inpaint(upload.image_jpeg, upload.mask_png, "image/jpeg", form)
        if exchange.status is None:
            raise ReportError(f"lost {service.base_url} during the warm-up: {exchange.transport_error}")


def measure_cell(service: ServiceClient, meter: BusyMeter, upload: Upload, settings: str, clients: int,
                 args: argparse.Namespace) -> dict[str, Any]:
    meter.begin()
    cell = Cell(service.base_url, service.token, upload, SETTINGS[settings], clients, args.requests, args.duration)
    records = cell.run()
    summary = summarize_cell(records, meter.end())
    progress(f"{cell_name(upload.width, upload.height, settings, clients)}: "
             f"{summary['ok']}/{summary['sent']} repaired in {summary['wall_s']:.1f} s")
    return {"width": upload.width, "height": upload.height, "settings": settings, "form": SETTINGS[settings],
            "clients": clients, "started_at": cell.started_at,
            "upload_bytes": {"image": len(upload.image_jpeg), "mask": len(upload.mask_png)},
            "requests": records, "summary": summary}


def cell_name(width: int, height: int, settings: str, clients: int) -> str:
    return f"{width}×{height} {settings}, {clients} client{'s' if clients > 1 else ''}"


def progress(line: str) -> None:
    print(f"loadreport load: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    date = datetime.datetime.now(datetime.timezone.utc)
    run: dict[str, Any] = {
        "tool": COMMAND, "url": args.url.rstrip("/"), "date": f"{date:%Y-%m-%d %H:%M} UTC",
        "client_host": socket.gethostname(), "interrupted": None, "health": {}, "gpu_busy_source": None,
        "options": {"sizes": args.sizes, "clients": args.clients, "settings": args.settings,
                    "duration_s": None if args.requests else args.duration, "requests": args.requests,
                    "warmup": args.warmup, "mask_coverage": args.mask_coverage, "mask_shape": args.mask_shape,
                    "masks": args.masks,
                    "jpeg_quality": images.JPEG_QUALITY},
        "cells": [],
    }
    error = None
    try:
        measure(args, run)
    except ReportError as failure:
        error = str(failure)
    except KeyboardInterrupt:
        progress(f"interrupted {run['interrupted']}: writing what was measured")
    if not run["cells"]:
        print(f"error: {error or 'interrupted before the first cell'}", file=sys.stderr)
        return 1
    add_capacity(run["cells"])
    print(markdown(run), end="")
    if args.json:
        try:
            write_atomic(args.json, json.dumps(run, indent=1).encode())
        except OSError as failure:
            error = error or f"cannot write {args.json}: {failure.strerror or failure}"
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
