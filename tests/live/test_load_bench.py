"""`python -m loadreport load`: the table and JSON against a live service, refusals, a stopped service.

A benchmark, not a timed test: nothing here asserts a speed. The live test runs the real
command against `python app.py` with the tiny checkpoint on the CPU, at tiny sizes and a few
requests per cell; a stub server answers with refusals to show they are counted, not fatal.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from support.benchmarks import RUN_TIMEOUT_S, run_loadreport, table
from support.liveserver import LiveServer
from support.nvml import FakeNvml
from loadreport import load
from loadreport.client import ServiceClient
from loadreport.collect import MonitorCollector
from loadreport.gpu_busy import LocalNvml, ServiceSamples
from loadreport.load_summary import add_capacity, gpu_busy_text, p95, summarize_cell

SIZES = ((96, 64), (160, 120))
NUMBER = r"\d+(?:\.\d+)?"


def run_load(*args: str) -> subprocess.CompletedProcess[str]:
    return run_loadreport("load", *args)


# ------------------------------------------------------------------ against the live service


@pytest.fixture(scope="module")
def live_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], str]:
    """The command's stdout and JSON against the live service, and the service's URL, stopped since."""
    folder = tmp_path_factory.mktemp("load-bench")
    with LiveServer.start(tiny_dir, folder / "service") as server:
        done = run_load("--url", server.base, "--sizes", ",".join(f"{w}x{h}" for w, h in SIZES),
                        "--clients", "2", "--requests", "3", "--warmup", "1", "--json", str(folder / "load.json"))
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads((folder / "load.json").read_text()), server.base


def test_the_table_has_every_cell_and_every_number_parses(live_run):
    stdout, _, _ = live_run
    assert "the same mask every time" in stdout and "a new shape's first runs" not in stdout
    rows = table(stdout)
    # --clients 2 still runs the 1-client cell first: it measures the model-only capacity.
    assert [(r["size"], r["settings"], r["clients"]) for r in rows] == [
        (f"{w}×{h}", settings, clients) for w, h in SIZES for settings in ("default", "original")
        for clients in ("1", "2")]
    stage_columns = [column for column in rows[0] if column.endswith(" ms") and not column.startswith("p")]
    assert {"decode ms", "queue ms", "infer ms", "encode ms", "total ms"} <= set(stage_columns)
    assert "save ms" not in stage_columns  # the result's file is written after the answer
    for row in rows:
        assert row["ok/sent"] == "3/3" and row["failures"] == "0"
        for column in ("req/s", "p50 ms", "p95 ms", "model-only req/s", *stage_columns):
            assert re.fullmatch(NUMBER, row[column]), (column, row[column])
        assert float(row["req/s"]) > 0 and float(row["p50 ms"]) <= float(row["p95 ms"])
        assert re.fullmatch(r"\d+%", row["share of model-only"])
        assert row["GPU busy"] == "n/a"  # the service runs on the CPU
    header = stdout[:stdout.index("|")]
    assert "1 / the median server `infer` of the 1-client cell" in header
    assert "n/a: the service runs on the CPU" in header


def test_the_json_holds_every_request_and_the_ratio_the_table_shows(live_run):
    stdout, run, _ = live_run
    assert run["tool"] == "python -m loadreport load" and run["health"]["model"]["device"] == "cpu"
    assert len(run["cells"]) == len(table(stdout)) == 8
    for cell, row in zip(run["cells"], table(stdout), strict=True):
        summary = cell["summary"]
        assert len(cell["requests"]) == summary["sent"] == 3 and cell["started_at"] > time.time() - RUN_TIMEOUT_S * 2
        assert all(r["status"] == 200 and r["server_timing"]["infer"] > 0 for r in cell["requests"])
        one_client = next(c for c in run["cells"] if (c["width"], c["settings"], c["clients"])
                          == (cell["width"], cell["settings"], 1))
        assert summary["model_only_per_s"] == pytest.approx(1 / one_client["summary"]["stage_medians_s"]["infer"])
        assert summary["capacity_ratio"] == pytest.approx(summary["requests_per_s"] / summary["model_only_per_s"])
        assert row["share of model-only"] == f"{summary['capacity_ratio'] * 100:.0f}%"
    assert [c["form"] for c in run["cells"]][:4] == [{}, {}, {"strategy": "original"}, {"strategy": "original"}]
    # The server says which strategy it used (X-Strategy): the one asked for, or its own default.
    used = {settings: {r["strategy"] for c in run["cells"] if c["settings"] == settings for r in c["requests"]}
            for settings in ("default", "original")}
    assert used["original"] == {"original"} and len(used["default"]) == 1 and None not in used["default"]


def test_a_stopped_service_is_one_line_and_exit_code_1(live_run, tmp_path):
    _, _, url = live_run
    done = run_load("--url", url, "--sizes", "96x64", "--requests", "1", "--json", str(tmp_path / "load.json"))
    assert done.returncode == 1 and done.stdout == ""
    assert re.fullmatch(rf"error: cannot reach {re.escape(url)}: .+\n", done.stderr), done.stderr
    assert not (tmp_path / "load.json").exists()


# ------------------------------------------------------------------ refusals, from a stub


class Refusing(http.server.BaseHTTPRequestHandler):
    """A service on the CPU whose every second repair is refused with 503 queue_full, Retry-After: 1."""

    repairs = 0

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self._answer(200, {"status": "ok", "model": {"name": "stub", "device": "cpu", "precision": "fp32"}})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        Refusing.repairs += 1
        if Refusing.repairs % 2:
            self._answer(200, {}, {"Server-Timing": "decode;dur=1, infer;dur=4, total;dur=6"})
        else:
            self._answer(503, {"error": {"code": "queue_full", "message": "the repair queue is full"}},
                         {"Retry-After": "1"})

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def refusing_service() -> Iterator[str]:
    Refusing.repairs = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_queue_full_refusals_are_counted_failures_and_the_client_waits_its_retry_after(refusing_service, tmp_path):
    done = run_load("--url", refusing_service, "--sizes", "96x64", "--settings", "default", "--clients", "1",
                    "--requests", "4", "--warmup", "0", "--json", str(tmp_path / "load.json"))
    assert done.returncode == 0, done.stderr
    (row,) = table(done.stdout)
    assert row["ok/sent"] == "2/4" and row["failures"] == "2× 503 queue_full"
    requests = json.loads((tmp_path / "load.json").read_text())["cells"][0]["requests"]
    assert [r["status"] for r in requests] == [200, 503, 200, 503]
    refused, following = requests[1], requests[2]
    assert refused["retry_after_s"] == 1
    assert following["start_s"] >= refused["start_s"] + refused["latency_s"] + 1


class Recording(Refusing):
    """A service on the CPU that answers every repair and keeps each request's body."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        Recording.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer(200, {}, {"Server-Timing": "decode;dur=1, infer;dur=4, total;dur=6"})


def load_against_recording(*args: str) -> subprocess.CompletedProcess[str]:
    """The load benchmark with `args` against a Recording service (its bodies emptied first)."""
    Recording.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return run_load("--url", f"http://127.0.0.1:{server.server_port}", "--settings", "default", *args)
    finally:
        server.shutdown()
        server.server_close()


def test_different_masks_go_round_in_turn_after_a_warm_up_with_the_first():
    done = load_against_recording("--sizes", "96x64", "--clients", "1,2", "--requests", "6", "--warmup", "1",
                                  "--masks", "3")
    assert done.returncode == 0, done.stderr
    assert "one of 3 different masks per size" in done.stdout
    assert "a new shape's first runs" in done.stdout, "the model-only figures say what they may include"
    masks = load.make_upload(96, 64, 0, load.MASK_COVERAGE, 3).mask_pngs
    assert len(set(masks)) == 3
    sent = [[turn for turn, mask in enumerate(masks) if mask in body] for body in Recording.bodies]
    assert all(len(found) == 1 for found in sent)
    turns = [found[0] for found in sent]
    # The warm-up, then the 1-client cell in order, then two clients sharing the turns.
    assert turns[:7] == [0, 0, 1, 2, 0, 1, 2]
    assert sorted(turns[7:]) == [0, 0, 1, 1, 2, 2]


def test_an_object_mask_is_one_blob_over_a_part_of_the_rows_and_the_header_says_so():
    done = load_against_recording("--sizes", "320x240", "--clients", "1", "--requests", "2", "--warmup", "0",
                                  "--mask-shape", "object")
    assert done.returncode == 0, done.stderr
    assert "a PNG mask of one object (an ellipse) over 8% of it" in done.stdout
    (mask_png,) = load.make_upload(320, 240, 0, load.MASK_COVERAGE, shape="object").mask_pngs
    assert all(mask_png in body for body in Recording.bodies) and len(Recording.bodies) == 2
    mask = cv2.imdecode(np.frombuffer(mask_png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert cv2.connectedComponents(mask)[0] == 2  # the background and one object
    assert 0.07 < np.count_nonzero(mask) / mask.size < 0.09
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows[-1] - rows[0] < 0.5 * mask.shape[0]


# ------------------------------------------------------------------ the parts


def test_options_always_include_the_one_client_cell_and_refuse_nonsense(capsys):
    assert load.parse_args(["--url", "http://x", "--clients", "16,4"]).clients == [1, 4, 16]
    assert load.parse_args(["--url", "http://x", "--sizes", "640X480"]).sizes == [(640, 480)]
    for bad in (["--sizes", "640"], ["--clients", "0"], ["--settings", "fast"], ["--requests", "0"],
                ["--duration", "5", "--requests", "3"], ["--masks", "0"]):
        with pytest.raises(SystemExit):
            load.parse_args(["--url", "http://x", *bad])
        assert "error:" in capsys.readouterr().err


def test_throughput_counts_answered_repairs_from_the_first_request_sent_to_the_last_answer():
    records = [{"start_s": 1.0, "latency_s": 0.5, "status": 200, "server_timing": {"infer": 0.2}, "error_code": None},
               {"start_s": 1.5, "latency_s": 1.5, "status": 200, "server_timing": {"infer": 0.4}, "error_code": None},
               {"start_s": 2.0, "latency_s": 0.1, "status": 503, "server_timing": {}, "error_code": "queue_full"},
               {"start_s": 2.1, "latency_s": 9.0, "status": None, "server_timing": {}, "error_code": None}]
    summary = summarize_cell(records, {0: 0.5})
    assert summary["wall_s"] == pytest.approx(10.1) and summary["requests_per_s"] == pytest.approx(2 / 10.1)
    assert summary["failures"] == {"503 queue_full": 1, "no answer": 1}
    assert summary["stage_medians_s"] == {"infer": pytest.approx(0.3)} and summary["latency_p50_s"] == 1.0
    cells = [{"width": 8, "height": 8, "settings": "default", "clients": clients,
              "summary": summarize_cell(records, {})} for clients in (1, 4)]
    add_capacity(cells)
    assert cells[1]["summary"]["model_only_per_s"] == pytest.approx(1 / 0.3)
    assert cells[1]["summary"]["capacity_ratio"] == pytest.approx(2 / 10.1 * 0.3)
    assert p95([1.0]) == 1.0 and p95([]) is None and p95([float(v) for v in range(101)]) == pytest.approx(95)


def test_the_gpu_busy_share_from_the_service_s_samples_covers_the_stretch_only():
    samples: list[dict[str, Any]] = []

    def monitor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"now": time.time(), "interval_s": 0.01, "samples": samples, "requests": []})

    with ServiceClient("http://service", transport=httpx.MockTransport(monitor)) as client:
        collector = MonitorCollector(client)
        collector.first_poll()
        meter = ServiceSamples(collector, gpu_index=0)
        meter.begin()
        began = time.time()
        samples[:] = [{"ts": began + offset, "gpu": [{"index": 0, "utilization_ratio": ratio}]}
                      for offset, ratio in ((-5, 0.0), (0.02, 0.6), (0.04, 0.8), (30, 0.0))]
        time.sleep(0.05)
        assert meter.end() == {0: pytest.approx(0.7)}  # the samples before and long after are not the stretch's


def test_nvml_on_this_machine_gives_each_gpu_its_own_busy_share_and_the_table_shows_each():
    """Replicas behind a balancer on one box, one per GPU: the benchmark shows every GPU's share."""
    meter = LocalNvml(FakeNvml(), [0, 1])
    meter.begin()
    time.sleep(0.35)  # a few of the 0.1 s polls
    busy = meter.end()
    assert busy == {0: pytest.approx(0.87), 1: pytest.approx(0.05)}
    assert "each of its 2 GPUs" in meter.source
    summary = summarize_cell([], busy)
    assert summary["gpu_busy_ratio"] is None and summary["gpu_busy_by_index"] == {"0": busy[0], "1": busy[1]}
    assert gpu_busy_text(summary) == "GPU0 87%, GPU1 5%"
    assert gpu_busy_text(summarize_cell([], {0: 0.5})) == "50%" and gpu_busy_text(summarize_cell([], {})) == "n/a"
