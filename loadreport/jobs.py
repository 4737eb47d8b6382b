"""python -m loadreport jobs: how fast a running service works through a script's batch of jobs.

    python -m loadreport jobs --url http://HOST:PORT [--sizes 1280x960,2560x1920] [--jobs N]
                              [--masks N] [--warmup N]

As the README's script does with a folder, over one connection: N jobs submitted one after another
(POST /api/v1/jobs: the load benchmark's JPEG photo and PNG brush-stroke mask, no form fields, so
the server's default settings), then each polled in turn until it is final and its result fetched;
a submission refused because the pending jobs are at the server's bound waits for the oldest one.
Per size, after a few unmeasured repairs (the first of a size may compile or capture kernels):
jobs done per second from the first submission to the last result fetched, the submissions' median
time, the failures, the medians of the stages the jobs' records give, and the GPU's busy share over
the batch. A Markdown table on stdout; progress on stderr. The token for /api/v1/* comes from
--api-token or LAMA_API_TOKEN.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections import Counter, deque
from typing import Any

from loadreport.client import Exchange, ReportError, ServiceClient
from loadreport.gpu_busy import BusyMeter
from loadreport.load import MASK_COVERAGE, WARMUP, add_service_arguments, make_upload, measured_service, warm_up
from loadreport.load_summary import gpu_busy_text
from loadreport.tables import markdown_table

COMMAND = "python -m loadreport jobs"
JOBS_PATH = "/api/v1/jobs"
SIZES = ((1280, 960), (2560, 1920))
JOBS = 100
POLL_S = 0.02  # between two looks at a pending job
STAGES = ("decode", "queue", "preprocess", "infer", "postprocess", "encode", "save", "total")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description="A script's batch of jobs against a running "
                                     "inpainting service: a Markdown table on stdout")
    add_service_arguments(parser, SIZES, "picture sizes, a batch each")
    parser.add_argument("--jobs", type=int, default=JOBS, metavar="N", help=f"jobs per batch (default: {JOBS})")
    parser.add_argument("--masks", type=int, default=1, metavar="N",
                        help="different masks per size, sent in turn (default: 1, every job the same)")
    parser.add_argument("--warmup", type=int, default=WARMUP, metavar="N",
                        help=f"unmeasured repairs per size before its batch (default: {WARMUP})")
    args = parser.parse_args(argv)
    if not args.sizes or args.jobs < 1 or args.masks < 1 or args.warmup < 0:
        parser.error("--sizes needs a value, --jobs and --masks must be at least 1, --warmup not negative")
    return args


def run_batch(service: ServiceClient, meter: BusyMeter, image_jpeg: bytes, mask_pngs: tuple[bytes, ...],
              jobs: int) -> dict[str, Any]:
    """Submits `jobs` jobs, then waits for each in turn and fetches its result: the batch's figures.
    A submission refused because the server's pending jobs are at their bound (503 queue_full) is
    sent again once the oldest pending job is done and fetched, as a script keeping the server's
    queue full would."""
    meter.begin()
    started = time.perf_counter()
    pending: deque[str] = deque()  # the accepted jobs' URLs, oldest first
    submit_s: list[float] = []
    outcomes: Counter[str] = Counter()
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}

    def settle_oldest() -> None:
        status = _final(service, pending.popleft())
        if status.get("status") != "done":
            outcomes[f"job {status.get('status')}: {(status.get('error') or {}).get('code')}"] += 1
            return
        result = service.request("GET", status["result_url"])
        outcomes["done" if result.status == 200 else f"result {result.status}"] += 1
        for stage in STAGES:
            if stage in status["timings"]:
                stages[stage].append(status["timings"][stage])

    resent = 0
    for number in range(jobs):
        files = {"image": ("photo.jpg", image_jpeg, "image/jpeg"),
                 "mask": ("mask.png", mask_pngs[number % len(mask_pngs)], "image/png")}
        while True:
            exchange = service.request("POST", JOBS_PATH, files=files)
            submit_s.append(exchange.seconds)
            if not (exchange.status == 503 and exchange.error_fields()[0] == "queue_full" and pending):
                break
            settle_oldest()  # a place frees as the oldest is done
            resent += 1
        if exchange.status == 202:
            pending.append(exchange.json()["url"])
        else:
            outcomes[_refusal(exchange)] += 1
    while pending:
        settle_oldest()
    wall_s = time.perf_counter() - started
    busy = meter.end()
    return {"jobs": jobs, "done": outcomes.pop("done", 0), "failures": dict(outcomes), "resent": resent,
            "wall_s": wall_s, "submit_p50_s": statistics.median(submit_s),
            "stage_medians_s": {stage: statistics.median(values) for stage, values in stages.items() if values},
            "gpu_busy_ratio": next(iter(busy.values())) if len(busy) == 1 else None,
            "gpu_busy_by_index": {str(index): ratio for index, ratio in sorted(busy.items())}}


def _final(service: ServiceClient, url: str) -> dict[str, Any]:
    """The job's status once it is done or failed (or what the server answered instead)."""
    while True:
        exchange = service.request("GET", url)
        status = exchange.json() if exchange.status == 200 else None
        if not isinstance(status, dict):
            return {"status": f"unreadable (HTTP {exchange.status})"}
        if status.get("status") not in ("queued", "running"):
            return status
        time.sleep(POLL_S)


def _refusal(exchange: Exchange) -> str:
    code, _ = exchange.error_fields()
    return f"submit {exchange.status or 'no answer'} {code or ''}".strip()


def markdown(run: dict[str, Any]) -> str:
    model = run["health"].get("model") or {}
    gpu = (run["health"].get("gpu") or {}).get("name")
    lines = [
        f"Batch jobs (`{COMMAND}`) against {run['url']} on {run['date']}: {model.get('name')} on "
        f"{model.get('device')}{f' ({gpu})' if gpu else ''}, {model.get('precision')}.",
        "",
        f"- Each batch: {run['jobs']} jobs submitted one after another over one connection (a JPEG photo and a "
        f"PNG brush-stroke mask over {MASK_COVERAGE * 100:.0f}% of it, the server's default settings), then each "
        f"polled every {POLL_S * 1000:.0f} ms until final and its result fetched; {run['warmup']} unmeasured "
        f"repair{'' if run['warmup'] == 1 else 's'} per size first. A submission refused with 503 queue_full "
        "(the server's pending jobs at their bound) is sent again once the oldest pending job is done and "
        "fetched (resent).",
        "- jobs/s: jobs done over the batch's wall time, first submission to last result. Stage columns: the "
        "medians of the done jobs' records, ms.",
        f"- GPU busy: the share of the batch during which the GPU ran a kernel ({run['gpu_busy_source']}).",
    ]
    header = ["size", "done/jobs", "failures", "resent", "jobs/s", "submit p50 ms",
              *(f"{stage} ms" for stage in STAGES), "GPU busy"]
    rows = []
    for batch in run["batches"]:
        failures = ", ".join(f"{count}× {what}" for what, count in batch["failures"].items()) or "0"
        rows.append([f"{batch['width']}×{batch['height']}", f"{batch['done']}/{batch['jobs']}", failures,
                     str(batch["resent"]), f"{batch['done'] / batch['wall_s']:.1f}", f"{batch['submit_p50_s'] * 1000:.1f}",
                     *(_ms(batch["stage_medians_s"].get(stage)) for stage in STAGES), gpu_busy_text(batch)])
    return "\n".join(lines + [""] + markdown_table(header, rows)) + "\n"


def progress(line: str) -> None:
    print(f"loadreport jobs: {line}", file=sys.stderr, flush=True)


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    date = datetime.datetime.now(datetime.timezone.utc)
    run: dict[str, Any] = {"url": args.url.rstrip("/"), "date": f"{date:%Y-%m-%d %H:%M} UTC", "jobs": args.jobs,
                           "warmup": args.warmup, "batches": []}
    try:
        with measured_service(args.url, args.api_token, run) as (service, meter):
            for index, (width, height) in enumerate(args.sizes):
                progress(f"generating the {width}×{height} upload")
                upload = make_upload(width, height, index, MASK_COVERAGE, args.masks)
                warm_up(service, upload, {}, args.warmup)
                batch = run_batch(service, meter, upload.image_jpeg, upload.mask_pngs, args.jobs)
                run["batches"].append({"width": width, "height": height, **batch})
                progress(f"{width}×{height}: {batch['done']}/{args.jobs} jobs done in {batch['wall_s']:.1f} s")
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(markdown(run), end="")
    return 0
