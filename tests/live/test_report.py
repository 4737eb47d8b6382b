"""`python -m loadreport` (the resource report): its pure parts, and the whole command against a live service.

The live test starts `python app.py` on 127.0.0.1 with the tiny checkpoint on the CPU and
runs the report in --quick mode as an operator would, over real HTTP, then checks that
report.md says what data.json holds. The `fast` preset bounds what the model sees to
1280 px, so the 2560×1920 class costs a CPU seconds rather than tens of seconds.
A GPU run is simulated from samples shaped like the sampler's, so the GPU columns and
plots are exercised on machines without one.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from lama import imageio
from support.liveserver import LiveServer, free_port
from loadreport import render as report_render
from loadreport import report
from loadreport.analysis import (
    LEAK_THRESHOLD_BYTES_PER_HOUR,
    MIN_DRIFT_SPAN_S,
    Timeline,
    drift_verdict,
    least_squares_slope,
    summarize,
    summarize_stream,
)
from loadreport.client import ServiceClient, parse_server_timing
from loadreport.files import write_atomic
from loadreport.images import jpeg, photo, stroke_mask
from loadreport.workload import CLASSES, OVERSIZED, make_upload

ROOT = Path(report.__file__).resolve().parents[1]
WAIT_S = 60
REPORT_TIMEOUT_S = 150
SECTIONS = ("## Machine", "## GPU per image class", "## CPU and memory per image class", "## Disk",
            "## Steady stream: drift", "## Fault cases", "## Compared with the seed report (NVIDIA A10, measured by hand)",
            "## /healthz after each phase", "## Over time")
MB = 1e6


# ------------------------------------------------------------------ the workload's images


@pytest.mark.parametrize("image_class", CLASSES + (OVERSIZED,), ids=lambda c: c.name)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stroke_masks_cover_the_target_share_within_one_percent(image_class, seed):
    mask = stroke_mask(image_class.width, image_class.height, image_class.coverage, seed)
    assert mask.shape == (image_class.height, image_class.width) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}  # hard edges: the server counts exactly these pixels
    assert abs(np.count_nonzero(mask) / mask.size - image_class.coverage) <= 0.01
    # Strokes, not one blob: several separate pieces or one long thin one.
    pieces, _ = cv2.connectedComponents(mask)
    _, _, width, height = cv2.boundingRect(mask)
    assert pieces - 1 > 1 or width * height > 3 * np.count_nonzero(mask)


def test_stroke_masks_are_deterministic():
    assert np.array_equal(stroke_mask(640, 480, 0.05, 3), stroke_mask(640, 480, 0.05, 3))
    assert not np.array_equal(stroke_mask(640, 480, 0.05, 3), stroke_mask(640, 480, 0.05, 4))


def test_an_upload_decodes_to_the_class_size_and_its_mask_share():
    upload = make_upload(CLASSES[0])
    image = imageio.decode_image(upload.image_png)
    mask = imageio.decode_mask(upload.mask_png)
    assert image.shape == (480, 640, 3) and mask.shape == (480, 640)
    assert np.count_nonzero(mask) / mask.size == pytest.approx(upload.mask_fraction)
    assert image.std() > 20  # a picture, not a flat colour


def test_photos_are_deterministic_and_a_jpeg_of_one_is_photo_sized():
    picture = photo(1280, 960, seed=2)
    assert picture.shape == (960, 1280, 3) and picture.dtype == np.uint8
    assert np.array_equal(picture, photo(1280, 960, seed=2)) and not np.array_equal(picture, photo(1280, 960, 3))
    decoded = imageio.decode_image(jpeg(picture))
    assert decoded.shape == (960, 1280, 3)
    assert np.abs(decoded.astype(int) - picture[..., ::-1]).mean() < 4  # quality 92: close to the pixels
    # Detail at every scale, like a photo: neither a flat picture (a few KB) nor noise (~8 bits a pixel).
    assert 0.5 < len(jpeg(picture)) * 8 / picture[..., 0].size < 4


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "data.json"
    write_atomic(target, b"old")
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_an_upload_is_one_multipart_post_with_the_token_and_only_the_form_fields_given():
    seen: list[httpx.Request] = []

    def service(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"png", headers={"Server-Timing": "infer;dur=4"})

    with ServiceClient("http://service", "secret", httpx.MockTransport(service)) as client:
        exchange = client.inpaint(b"\xff\xd8jpeg", b"\x89PNG-mask", "image/jpeg", {"strategy": "original"})
        client.get_json("/healthz")
    assert exchange.status == 200 and exchange.headers["server-timing"] == "infer;dur=4"
    upload, probe = seen
    body = upload.read()
    assert upload.url.path == "/api/v1/inpaint" and upload.headers["authorization"] == "Bearer secret"
    assert b'name="image"; filename="image.jpeg"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8jpeg\r\n' in body
    assert b'name="mask"; filename="mask.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG-mask\r\n' in body
    assert body.count(b'form-data; name="') == 3 and b'name="strategy"\r\n\r\noriginal\r\n' in body
    assert "authorization" not in probe.headers  # the token is for /api/v1/* only


def test_no_answer_is_an_exchange_without_a_status_not_an_exception():
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with ServiceClient("http://service", transport=httpx.MockTransport(refused)) as client:
        exchange = client.get_json("/healthz")
    assert (exchange.status, exchange.transport_error) == (None, "[Errno 111] Connection refused")
    assert exchange.error_fields() == ("no_response", "[Errno 111] Connection refused")
    with ServiceClient("http://service", transport=httpx.MockTransport(slow)) as client:
        assert client.get_json("/healthz").transport_error == "no answer within 10 s"


# ------------------------------------------------------------------ parsing and statistics


@pytest.mark.parametrize("header, expected", [
    ("decode;dur=12.5, queue;dur=0.0, infer;dur=1500", {"decode": 0.0125, "queue": 0.0, "infer": 1.5}),
    ('infer;desc="model";dur=40', {"infer": 0.04}),
    ("cache, save;dur=2", {"save": 0.002}),  # no duration: nothing to report
    ("infer;dur=abc, save;dur=3", {"save": 0.003}),
    ("", {}),
    (None, {}),
])
def test_server_timing_parsing(header, expected):
    assert parse_server_timing(header) == pytest.approx(expected)


def test_least_squares_slope():
    assert least_squares_slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert least_squares_slope([(0, 0), (1, 1), (2, 0), (3, 1)]) == pytest.approx(0.2)
    assert least_squares_slope([(1, 1)]) is None
    assert least_squares_slope([(1, 1), (1, 2)]) is None


def stream_samples(minutes: float, leak_per_hour: float, gpu_leak_per_hour: float = 0.0) -> list[dict[str, Any]]:
    """1 Hz samples of a service serving one request every 30 s: RSS jumps 300 MB during each
    request (the sawtooth a healthy service shows) on top of a steady drift, if any."""
    start = 1_800_000_000.0
    samples = []
    for second in range(int(minutes * 60)):
        busy = second % 30 < 3
        hours = second / 3600
        samples.append({
            "ts": start + second,
            "process_rss_bytes": 600 * MB + (300 * MB if busy else 0) + leak_per_hour * hours,
            "gpu": [{"index": 0, "name": "NVIDIA A10", "memory_used_bytes": 4e9 + gpu_leak_per_hour * hours,
                     "memory_total_bytes": 24e9, "utilization_ratio": 0.9 if busy else 0.0}],
            "torch": None,
        })
    return samples


def stream_phase(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "stream", "kind": "stream", "interval_s": 30.0, "completed": True,
            "start": samples[0]["ts"] - 0.5, "end": samples[-1]["ts"] - 1}


@pytest.mark.parametrize("rss_leak, gpu_leak, rss_verdict, gpu_verdict", [
    (0.0, 0.0, "no leak", "no leak"),
    (440 * MB, 0.0, "leak", "no leak"),  # one 1280×960 image kept per request, every 30 s
    (0.0, 300 * MB, "no leak", "leak"),
    (50 * MB, 0.0, "no leak", "no leak"),  # under the threshold
])
def test_drift_verdicts_over_a_30_minute_stream(rss_leak, gpu_leak, rss_verdict, gpu_verdict):
    samples = stream_samples(30, rss_leak, gpu_leak)
    timeline = Timeline(samples, [], offset_s=0.0, interval_s=1.0, gpu_index=0)
    stream = summarize_stream(timeline, stream_phase(samples), [])
    assert stream["rss_verdict"] == rss_verdict and stream["gpu_verdict"] == gpu_verdict
    assert stream["rss_slope_bytes_per_hour"] == pytest.approx(rss_leak, abs=30 * MB)
    assert stream["gpu_slope_bytes_per_hour"] == pytest.approx(gpu_leak, abs=1 * MB)
    assert stream["gpu_series"] == "NVML memory used"
    assert stream["threshold_bytes_per_hour"] == LEAK_THRESHOLD_BYTES_PER_HOUR


def test_drift_is_inconclusive_on_a_short_stream_and_na_without_a_gpu():
    samples = stream_samples(MIN_DRIFT_SPAN_S / 60 / 2, 10_000 * MB)
    stream = summarize_stream(Timeline(samples, [], 0.0, 1.0, gpu_index=None), stream_phase(samples), [])
    assert stream["rss_verdict"] == "inconclusive"
    assert stream["gpu_series"] is None and stream["gpu_verdict"] is None
    assert drift_verdict(None, 3600) == "inconclusive"


def test_default_out_names_the_date_and_the_host():
    now = report.datetime.datetime(2026, 5, 1, 12, 0)
    assert report.default_out("http://gpu-box.example:7860", now) == Path("reports/2026-05-01-gpu-box.example")
    assert report.default_out("http://127.0.0.1:7860", now).name.startswith("2026-05-01-")
    assert report.default_out("http://127.0.0.1:7860", now).name != "2026-05-01-127.0.0.1"  # the machine's name


def test_quick_defaults_give_way_to_explicit_options():
    args = report.parse_args(["--url", "http://x", "--quick", "--runs", "4"])
    assert (args.runs, args.stream_count, args.stream_interval) == (4, *list(report.QUICK.values())[1:])
    args = report.parse_args(["--url", "http://x"])
    assert (args.runs, args.stream_count, args.stream_interval) == tuple(report.FULL.values())


# ------------------------------------------------------------------ a GPU run, simulated


def simulated_gpu_run() -> dict[str, Any]:
    """A run as data.json holds it, from a service on cuda:0 whose samples carry NVML and torch readings."""
    start = 1_800_000_000.0
    samples, phases, requests, records = [], [], [], []
    for second in range(40):
        samples.append({"ts": start + second, "cpu_percent": 20.0, "cpu_percent_per_core": [20.0] * 8,
                        "cpu_peak_core_percent": 90.0, "process_cpu_percent": 100.0,
                        "process_rss_bytes": 2e9 + (second % 3) * MB, "system_memory_total_bytes": 64e9,
                        "disk_write_bytes": 1e9 + second * MB, "cgroup_memory_limit_bytes": None,
                        "gpu": [{"index": 0, "name": "NVIDIA A10", "memory_used_bytes": 4e9 + second * 1e8,
                                 "memory_total_bytes": 24e9, "utilization_ratio": 0.5, "driver_version": "550.54"}],
                        "torch": {"memory_allocated_bytes": 1e9, "memory_reserved_bytes": 3e9,
                                  "max_memory_allocated_bytes": 2e9}})
    for number, (name, kind) in enumerate([("small", "class"), ("medium", "class"), ("large", "class"),
                                          ("stream", "stream"), ("oversized", "fault"),
                                          ("simultaneous", "fault")]):
        phase = {"name": name, "kind": kind, "start": start + 5 * number + 0.5, "end": start + 5 * number + 4,
                 "completed": True, **({"interval_s": 1.0} if kind == "stream" else {})}
        phases.append(phase)
        width, height = {"small": (640, 480), "oversized": (5120, 3840)}.get(name, (2560, 1920))
        count = 5 if name == "simultaneous" else 1 if name == "oversized" else 2
        for index in range(count):
            status = 413 if name == "oversized" else 503 if name == "simultaneous" and index == 4 else 200
            requests.append({"phase": name, "index": index, "class": name, "width": width, "height": height,
                             "mask_fraction": 0.08, "upload_bytes": 10 * MB, "start": phase["start"] + index,
                             "latency_s": 0.5 + index, "status": status,
                             "response_bytes": 5 * MB if status == 200 else None,
                             "server_timing": {"infer": 0.25, "total": 0.3} if status == 200 else {},
                             "saved_as": None, "error_code": {413: "image_too_large", 503: "out_of_memory"}.get(status),
                             "error_message": "the GPU ran out of memory" if status == 503 else
                             "image is 5120×3840" if status == 413 else None})
            records.append({"id": f"{name}{index}", "ts": phase["start"] + index + 0.4, "width": width,
                            "height": height, "strategy": "crop", "peak_gpu_bytes": 7e9 if name == "large" else 1e9,
                            "timings": {"infer": 0.25, "save": 0.01, "total": 0.3}})
    run = {"tool": "python -m loadreport", "url": "http://gpu-box:7860", "date": "2026-05-01 12:00 UTC", "interrupted": None,
           "options": {"quick": True, "runs": 2, "stream_count": 2, "stream_interval": 1.0, "simultaneous": 5},
           "health_start": {"status": "ok", "model": {"name": "big-lama", "device": "cuda:0", "precision": "fp16",
                                                      "source": "safetensors"}},
           "phases": phases, "requests": requests,
           "health_checks": [{"after": p["name"], "ok": True, "status": 200, "service_status": "ok",
                              "seconds": 0.01, "error": None} for p in phases],
           "server": {"interval_s": 1.0, "clock_offset_s": 0.0, "poll_errors": [], "samples": samples,
                      "requests": records}}
    run["summary"] = summarize(run)
    return run


def test_a_gpu_run_fills_the_gpu_columns():
    run = simulated_gpu_run()
    summary = run["summary"]
    large = next(c for c in summary["classes"] if c["class"] == "large")
    assert large["gpu"]["torch_allocated_peak_bytes"] == 7e9  # the request's own peak beats the samples'
    assert large["gpu"]["memory_used_peak_bytes"] == 4e9 + 15 * 1e8  # the sample just after the phase
    assert large["gpu"]["utilization_peak_ratio"] == 0.5
    assert summary["machine"]["gpu_name"] == "NVIDIA A10" and summary["machine"]["gpu_driver"] == "550.54"
    burst = summary["faults"]["simultaneous"]
    assert burst["ok"] == 4 and burst["out_of_memory"] == 1 and burst["server_errors"] == 1

    text = report_render.markdown(run)
    assert "n/a (no GPU)" not in text
    assert "| large 2560×1920 | 8% | 2/2 | 5.50 GB | 7.00 GB | 50% |" in text
    assert "1 out of GPU memory" in text and "#4: out_of_memory" in text
    assert "| GPU driver | 550.54 |" in text
    for name, png in report_render.plots(run).items():
        assert png.startswith(b"\x89PNG"), name


def test_the_seed_comparison_puts_each_class_beside_the_a10_figures():
    run = simulated_gpu_run()
    text = section(report_render.markdown(run), "## Compared with the seed report")
    large = next(c for c in run["summary"]["classes"] if c["class"] == "large")
    row = table_row(text, "large 2560×1920")
    assert row.startswith("| large 2560×1920 | 38.1 s | ")
    assert f"| {38.1 / large['latency_mean_s']:.0f}× faster | 11.60 GB | 5.50 GB |" in row
    assert "| 1 of 5 failed (CUDA out of memory; the seed sent 5) | 1 of 5 failed |" in table_row(
        text, "5 simultaneous 2560×1920")


# ------------------------------------------------------------------ against a live service


def python_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def live_service(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # The fast preset caps what the model sees at 1280 px: the large class stays quick on a CPU.
    with LiveServer.start(tiny_dir, tmp_path_factory.mktemp("report-service"), "--preset", "fast",
                          "--monitor-interval", "0.5") as server:
        yield server.base


def run_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadreport", *args], cwd=ROOT, env=python_env(),
                          capture_output=True, text=True, timeout=REPORT_TIMEOUT_S)


@pytest.fixture(scope="module")
def quick_report(live_service: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("report") / "quick"
    done = run_report("--url", live_service, "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{out / 'report.md'} (the service survived every phase)"
    return out, json.loads((out / "data.json").read_text())


def table_row(text: str, first_cell: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"one row for {first_cell!r} expected in:\n{text}"
    return rows[0]


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_quick_report_runs_every_phase_against_the_live_service(quick_report):
    out, data = quick_report
    text = (out / "report.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == list(SECTIONS)
    assert not list(out.glob(".*.tmp"))

    assert [phase["name"] for phase in data["phases"]] == ["small", "medium", "large", "stream", "oversized",
                                                           "simultaneous"]
    assert all(phase["completed"] for phase in data["phases"])
    summary = data["summary"]
    for image_class, summary_class in zip(CLASSES, summary["classes"], strict=True):
        requests = [r for r in data["requests"] if r["phase"] == image_class.name]
        assert len(requests) == data["options"]["runs"] == summary_class["runs"] == 2
        assert all(r["status"] == 200 and r["width"] == image_class.width for r in requests)
        assert abs(summary_class["mask_fraction"] - image_class.coverage) <= 0.01
        assert all({"infer", "total"} <= set(r["server_timing"]) for r in requests)
        assert summary_class["server_records"] == 2 and summary_class["samples"] >= 1
        assert summary_class["save_mean_s"] > 0  # from the server's records: the file is written after the answer
        label = f"{image_class.name} {image_class.width}×{image_class.height}"
        gpu_row = table_row(section(text, "## GPU per image class"), label)
        assert gpu_row.split(" | ")[2:6] == ["2/2", "n/a (no GPU)", "n/a (no GPU)", "n/a (no GPU)"]
        assert report_render.seconds(summary_class["latency_mean_s"]) in gpu_row
        assert report_render.seconds(summary_class["infer_mean_s"]) in gpu_row
        cpu_row = table_row(section(text, "## CPU and memory per image class"), label)
        assert report_render.size(summary_class["rss_steady_bytes"]) in cpu_row
        assert report_render.size(summary_class["rss_increment_bytes"], signed=True) in cpu_row
        disk_row = table_row(section(text, "## Disk"), label)
        assert report_render.size(summary_class["file_size_mean_bytes"]) in disk_row
        assert report_render.seconds(summary_class["save_mean_s"]) in disk_row

    stream = summary["stream"]
    assert stream["count"] == stream["ok"] == report.QUICK["stream_count"]
    drift = section(text, "## Steady stream: drift")
    assert f"**{stream['rss_verdict']}**" in table_row(drift, "RSS slope")
    assert table_row(drift, "GPU memory slope") == "| GPU memory slope | n/a (no GPU) |"
    assert f"A slope above {report_render.size(stream['threshold_bytes_per_hour'])}/h is a leak" in drift

    faults = summary["faults"]
    assert faults["oversized"]["status"] == 413 and faults["oversized"]["clear_refusal"]
    assert "5120×3840" in faults["oversized"]["error_message"]
    assert faults["simultaneous"]["statuses"] == [200] * 5
    fault_text = section(text, "## Fault cases")
    assert "HTTP 413 image_too_large" in fault_text and "5/5 repaired; statuses 200, 200, 200, 200, 200" in fault_text
    assert fault_text.count("| yes |") == 2

    assert summary["survived_all"] and len(data["health_checks"]) == 6
    machine = section(text, "## Machine")
    assert table_row(machine, "GPU") == "| GPU | n/a (no GPU) |"
    assert table_row(machine, "torch device / precision") == "| torch device / precision | cpu / fp32 |"
    assert table_row(machine, "CPU (logical cores)") == f"| CPU (logical cores) | {os.cpu_count()} |"
    assert data["server"]["samples"] and data["server"]["poll_errors"] == []
    # Every request of the run, refusals included, was recorded by the server too.
    assert len(data["server"]["requests"]) == len(data["requests"]) == 3 * 2 + 3 + 1 + 5


def test_quick_report_plots_are_images(quick_report):
    out, _ = quick_report
    for name in ("gpu.png", "cpu.png", "memory.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 600
        assert f"]({name})" in (out / "report.md").read_text()


def test_a_report_re_renders_from_its_data_json(quick_report, tmp_path):
    out, _ = quick_report
    done = run_report("--from-data", str(out / "data.json"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()
    assert {p.name for p in tmp_path.glob("*.png")} == {p.name for p in out.glob("*.png")}
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    refused = run_report("--from-data", str(broken))
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "not the data.json" in refused.stderr


def test_unreachable_url_is_one_line_and_a_failure(tmp_path):
    port = free_port()  # nothing listens on it
    done = run_report("--url", f"http://127.0.0.1:{port}", "--quick", "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert re.fullmatch(rf"error: cannot reach http://127\.0\.0\.1:{port}: .+\n", done.stderr), done.stderr
    assert not (tmp_path / "out").exists()


def test_a_server_that_is_not_this_service_is_refused(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run_report("--url", f"http://127.0.0.1:{server.server_port}", "--out", str(tmp_path / "out"))
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode != 0
    assert re.fullmatch(r"error: .*/healthz answered HTTP 404 .*is this the inpainting service\?\n", done.stderr)


def test_every_plot_s_time_axis_reaches_the_last_sample(monkeypatch):
    """The phases end before the samples do (the stream of samples outlives the last phase); the
    axis must still show the last sample, not stop where the last phase ended."""
    run = simulated_gpu_run()
    last_sample_s = run["server"]["samples"][-1]["ts"] - run["phases"][0]["start"]
    last_phase_end_s = run["phases"][-1]["end"] - run["phases"][0]["start"]
    assert last_sample_s > last_phase_end_s + 5  # the case the test is about
    limits = []
    close = report_render.plt.close
    monkeypatch.setattr(report_render.plt, "close",
                        lambda figure: (limits.extend(ax.get_xlim()[1] for ax in figure.axes), close(figure)))
    report_render.plots(run)
    assert limits and min(limits) >= last_sample_s
