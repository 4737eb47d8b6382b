"""python -m loadreport: the seed's whole resource measurement, in one command.

    python -m loadreport --url http://HOST:PORT [--quick] [--out DIR] [--runs N]
                         [--stream-count N] [--stream-interval S] [--api-token T]

Against a running service, over real HTTP, as its users reach it:
  1. three image classes, 640×480 (mask ≈5%), 1280×960 (≈12%), 2560×1920 (≈8%), --runs each;
  2. a steady stream of 1280×960 repairs, one every --stream-interval seconds, --stream-count times;
  3. the fault cases: a 5120×3840 upload (past the pixel limit) and 5 (--simultaneous) simultaneous
     2560×1920 repairs;
  /healthz after every phase (did it survive?), and the server's own samples and request
  records from /api/v1/monitor throughout. Out come DIR/report.md with the seed's tables,
  gpu.png, cpu.png, memory.png, and data.json with every number and the raw observations.

The token for /api/v1/* comes from --api-token or LAMA_API_TOKEN (keeps it out of `ps`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from loadreport.analysis import summarize
from loadreport.client import ReportError, ServiceClient, is_loopback
from loadreport.collect import MonitorCollector
from loadreport.files import write_atomic
from loadreport.render import markdown, plots
from loadreport.workload import CLASSES, OVERSIZED, SIMULTANEOUS, Workload, make_upload

# The seed's protocol, and a quick pass that still runs every phase (CI, a smoke test).
FULL = {"runs": 10, "stream_count": 60, "stream_interval": 30.0}
QUICK = {"runs": 2, "stream_count": 3, "stream_interval": 0.5}
COMMAND = "python -m loadreport"
MAX_SETTLE_S = 5.0  # the pause between phases: one sampling interval, but never long


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND,
                                     description="Measure a running inpainting service: report.md, plots, data.json",
                                     epilog=f"The load benchmark: {COMMAND} load --help")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="the service, e.g. http://127.0.0.1:7860")
    source.add_argument("--from-data", type=Path, metavar="DATA_JSON",
                        help="re-render report.md and the plots from an earlier run's data.json (into --out, "
                             "default: beside it)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['runs']} runs per class and a {QUICK['stream_count']}-request stream "
                             f"{QUICK['stream_interval']:g} s apart (default: the seed's protocol, "
                             f"{FULL['runs']} runs and {FULL['stream_count']} requests every "
                             f"{FULL['stream_interval']:g} s)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<date>-<host>)")
    parser.add_argument("--runs", type=int, help="repairs per image class")
    parser.add_argument("--stream-count", type=int, help="requests in the steady stream")
    parser.add_argument("--stream-interval", type=float, help="seconds between stream requests")
    parser.add_argument("--simultaneous", type=int, default=SIMULTANEOUS,
                        help=f"large requests sent at once in the burst fault case (default: the seed's {SIMULTANEOUS})")
    parser.add_argument("--api-token", default=os.environ.get("LAMA_API_TOKEN"),
                        help="Bearer token for /api/v1/* (default: $LAMA_API_TOKEN)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.runs < 1 or args.stream_count < 1 or args.simultaneous < 1 or args.stream_interval < 0:
        parser.error("--runs, --stream-count and --simultaneous must be at least 1, --stream-interval not negative")
    return args


def default_out(url: str, now: datetime.datetime) -> Path:
    """reports/<date>-<host>: the service's host, or this machine's name when it is on loopback."""
    host = urllib.parse.urlsplit(url).hostname or "service"
    if is_loopback(url):
        host = socket.gethostname()
    return Path("reports") / f"{now:%Y-%m-%d}-{re.sub(r'[^A-Za-z0-9.-]+', '_', host)}"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the protocol; returns the run as data.json holds it (summaries included)."""
    with ServiceClient(args.url, args.api_token) as client:
        return run_protocol(client, args)


def run_protocol(client: ServiceClient, args: argparse.Namespace) -> dict[str, Any]:
    health = client.health()
    collector = MonitorCollector(client)
    collector.first_poll()
    progress("generating the test images")
    uploads = {c.name: make_upload(c) for c in CLASSES}
    oversized = make_upload(OVERSIZED)
    workload = Workload(client, min(collector.interval_s or 1.0, MAX_SETTLE_S),
                        on_phase=lambda name: progress(f"phase: {name}"))
    date = datetime.datetime.now(datetime.timezone.utc)
    interrupted = None
    collector.start()
    try:
        for image_class in CLASSES:
            workload.run_class(uploads[image_class.name], args.runs)
        workload.run_stream(uploads["medium"], args.stream_count, args.stream_interval)
        workload.run_oversized(oversized)
        workload.run_simultaneous(uploads["large"], args.simultaneous)
    except KeyboardInterrupt:
        interrupted = workload.phases[-1]["name"] if workload.phases else "the start"
        progress(f"interrupted during {interrupted}: writing what was measured")
    finally:
        collector.stop()
    run = {
        "tool": COMMAND, "url": client.base_url, "date": f"{date:%Y-%m-%d %H:%M} UTC",
        "client_host": socket.gethostname(), "interrupted": interrupted,
        "options": {"quick": args.quick, "runs": args.runs, "stream_count": args.stream_count,
                    "stream_interval": args.stream_interval, "simultaneous": args.simultaneous},
        "health_start": health, "phases": workload.phases, "requests": workload.requests,
        "health_checks": workload.health_checks,
        "server": {"interval_s": collector.interval_s, "clock_offset_s": collector.offset_s,
                   "poll_errors": collector.poll_errors, "samples": collector.samples,
                   "requests": collector.requests},
    }
    run["summary"] = summarize(run)
    return run


def write_report(run: dict[str, Any], out: Path) -> Path:
    """data.json and the plots first, report.md last: a report.md means the set is complete."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "data.json", json.dumps(run, indent=1).encode())
    for name, png in plots(run).items():
        write_atomic(out / name, png)
    return write_atomic(out / "report.md", markdown(run).encode())


def progress(line: str) -> None:
    print(f"loadreport: {line}", file=sys.stderr, flush=True)


def load_run(path: Path) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReportError(f"cannot read {path}: {error}") from None
    if not isinstance(run, dict) or "summary" not in run:
        raise ReportError(f"{path} is not the data.json of a resource report")
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_data:
        out = args.out or args.from_data.parent
    else:
        out = args.out or default_out(args.url, datetime.datetime.now(datetime.timezone.utc))
    try:
        run = load_run(args.from_data) if args.from_data else measure(args)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        path = write_report(run, out)
    except OSError as error:
        print(f"error: cannot write the report to {out}: {error.strerror or error}", file=sys.stderr)
        return 2
    survived = "survived every phase" if run["summary"]["survived_all"] else "did NOT survive every phase"
    print(f"{path} (the service {survived})")
    return 0
