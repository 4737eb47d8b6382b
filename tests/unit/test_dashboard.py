"""The Resources tab: its pure data shaping, its refresh, and its layout (no browser).

Samples are written by hand as monitor/records.py types them, so that each test
controls the numbers it checks; one test feeds the real Sampler through the same path.
Requests go through the real RequestLog, kept in memory.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import pandas as pd
import pytest

from monitor.requestlog import RequestLog
from monitor.sampler import Sampler
from webui import dashboard
from webui.dashboard import MAX_POINTS, NO_GPU, NO_SAMPLES, snapshot

NOW = 1_700_000_000.0
FIVE_MIN = dashboard.WINDOWS_S[dashboard.DEFAULT_WINDOW]
GB = 10**9


def sample(ts: float, gpus: int = 1, **fields: Any) -> dict[str, Any]:
    """A sample as the sampler writes it: one GPU using 3 GB of 80 at 25 %, torch holding 2.5 GB."""
    gpu = [{"index": index, "name": "NVIDIA H100", "utilization_ratio": 0.25, "memory_used_bytes": 3 * GB,
            "memory_total_bytes": 80 * GB, "memory_reserved_bytes": None, "temperature_celsius": 40,
            "power_watts": 120.0, "sm_clock_mhz": 1980} for index in range(gpus)]
    return {"ts": ts, "cpu_percent": 12.5, "cpu_percent_per_core": [50.0, 0.0], "cpu_peak_core_percent": 50.0,
            "process_cpu_percent": 101.0, "process_rss_bytes": int(1.5 * GB),
            "gpu": gpu or None,
            "torch": {"memory_allocated_bytes": 2 * GB, "memory_reserved_bytes": int(2.5 * GB),
                      "max_memory_allocated_bytes": 2 * GB} if gpus else None} | fields


def record(ts: float, status: int = 200, **fields: Any) -> dict[str, Any]:
    """A request record as the service writes it: 1280×960, every stage timed (seconds)."""
    timings = {"decode": 0.010, "queue": 0.002, "preprocess": 0.003, "infer": 0.0405, "postprocess": 0.002,
               "encode": 0.020, "save": 0.005, "total": 0.0825}
    return {"id": f"r{ts}", "ts": ts, "width": 1280, "height": 960, "mask_fraction": 0.12, "strategy": "crop",
            "device": "cuda:0", "precision": "fp16", "status": status, "error": None, "timings": timings,
            "peak_gpu_bytes": 2 * GB, "rss_bytes": int(1.5 * GB)} | fields


def series(frame: pd.DataFrame) -> dict[str, list[float]]:
    """{series: values, oldest first}: what each line of a plot shows."""
    return {name: list(group["value"]) for name, group in frame.groupby("series", sort=True)}


class FakeSampler:
    """Sampler.samples(since) over a fixed list, remembering what it was asked for."""

    def __init__(self, samples: list[dict[str, Any]]):
        self._samples = samples
        self.asked: list[float | None] = []

    def samples(self, since: float | None = None) -> list[dict[str, Any]]:
        self.asked.append(since)
        return [s for s in self._samples if since is None or s["ts"] > since]


def request_log(*records: dict[str, Any]) -> RequestLog:
    log = RequestLog(None)
    for rec in records:
        log.record(rec)
    return log


# ---------------------------------------------------------------- shaping

def test_only_the_window_is_shown_oldest_first():
    samples = [sample(NOW - 10), sample(NOW - FIVE_MIN - 1), sample(NOW - 200), sample(NOW + 5)]
    shot = snapshot(samples, [record(NOW - 400), record(NOW - 30)], NOW, FIVE_MIN)

    assert list(shot.cpu["minutes"].unique()) == [round(-200 / 60, 2), round(-10 / 60, 2)]
    assert list(shot.table.iloc[:, 0]) == [dashboard.clock(NOW - 30)]
    assert shot.latency["minutes"].eq(-0.5).all()


def test_gpu_memory_is_in_gb_per_gpu_beside_torch_reserved():
    shot = snapshot([sample(NOW - 2, gpus=2), sample(NOW - 1, gpus=2)], [], NOW, FIVE_MIN)
    assert series(shot.gpu_memory) == {"GPU 0 used (NVML)": [3.0, 3.0], "GPU 1 used (NVML)": [3.0, 3.0],
                                       "torch reserved": [2.5, 2.5]}
    assert shot.gpu_note is None


def test_ratios_become_percent_and_cpu_shows_overall_and_peak_core():
    shot = snapshot([sample(NOW - 1)], [], NOW, FIVE_MIN)
    assert series(shot.gpu_utilization) == {"GPU 0": [25.0]}
    assert series(shot.cpu) == {"overall": [12.5], "peak core": [50.0]}
    assert series(shot.rss) == {"process RSS": [1.5]}


def test_a_value_the_sampler_could_not_read_is_left_out_not_drawn_as_zero():
    unread = sample(NOW - 1)
    unread["gpu"][0]["utilization_ratio"] = None
    shot = snapshot([sample(NOW - 2), unread], [], NOW, FIVE_MIN)
    assert series(shot.gpu_utilization) == {"GPU 0": [25.0]}
    assert len(shot.gpu_memory) == 4  # memory was read both times


def test_without_a_gpu_the_gpu_plots_are_empty_and_say_why():
    shot = snapshot([sample(NOW - 2, gpus=0), sample(NOW - 1, gpus=0)], [], NOW, FIVE_MIN)
    assert shot.gpu_memory.empty and shot.gpu_utilization.empty
    assert shot.gpu_note == NO_GPU == "no GPU: NVML not available (or it sees no GPU)"
    assert series(shot.cpu) == {"overall": [12.5, 12.5], "peak core": [50.0, 50.0]}


def test_an_empty_window_gives_empty_plots_and_an_empty_table():
    shot = snapshot([], [], NOW, FIVE_MIN)
    assert shot.gpu_note == NO_SAMPLES
    for frame in (shot.gpu_memory, shot.gpu_utilization, shot.cpu, shot.rss, shot.latency, shot.table):
        assert frame.empty
    assert list(shot.table.columns) == dashboard.table_headers()


@pytest.mark.parametrize("samples", [[], [sample(NOW - 1)]], ids=["empty", "one sample"])
def test_frames_are_long_format_that_gradio_plots(samples):
    shot = snapshot(samples, [record(NOW - 1)] if samples else [], NOW, FIVE_MIN)
    plot = gr.LinePlot(x="minutes", y="value", color="series")
    for frame in (shot.gpu_memory, shot.cpu, shot.rss):
        assert plot.postprocess(frame).datatypes == {"time": "nominal", "minutes": "quantitative",
                                                     "series": "nominal", "value": "quantitative"}
    assert plot.postprocess(shot.latency).datatypes["request"] == "nominal"


def test_an_hour_of_samples_is_thinned_keeping_the_peak():
    window = dashboard.WINDOWS_S["last 60 min"]
    samples = [sample(NOW - age) for age in range(window)]
    samples[1234]["process_rss_bytes"] = 9 * GB  # one spike among 3600 samples
    shot = snapshot(samples, [], NOW, window)

    assert shot.rss["series"].value_counts().max() <= MAX_POINTS + 1
    assert shot.cpu["series"].value_counts().max() <= MAX_POINTS + 1
    assert shot.rss["value"].max() == 9.0
    assert shot.rss["minutes"].is_monotonic_increasing


def test_five_minutes_at_one_hertz_is_not_thinned():
    shot = snapshot([sample(NOW - age) for age in range(FIVE_MIN)], [], NOW, FIVE_MIN)
    assert len(shot.rss) == FIVE_MIN


def test_latency_shows_total_and_infer_in_ms_per_request():
    refused = record(NOW - 20, status=413, width=None, height=None, error="image: too large",
                     timings={"decode": 0.004, "total": 0.004})
    shot = snapshot([], [record(NOW - 60), refused], NOW, FIVE_MIN)

    assert series(shot.latency) == {"infer": [40.5], "total": [82.5, 4.0]}
    assert list(shot.latency["request"]) == ["1280×960 crop · 200", "1280×960 crop · 200", "undecoded crop · 413"]


def test_request_table_is_newest_first_in_ms_with_blanks_for_stages_not_reached():
    refused = record(NOW - 20, status=413, width=None, height=None, error="image: too large",
                     timings={"decode": 0.004, "total": 0.004})
    table = dashboard.request_table([record(NOW - 60), refused])

    assert list(table.columns[1:]) == ["size", "status", "decode ms", "queue ms", "preprocess ms", "infer ms",
                                       "postprocess ms", "encode ms", "save ms", "total ms", "waited ms", "error"]
    newest, oldest = table.to_dict("records")
    assert newest["size"] == "" and newest["status"] == "413" and newest["error"] == "image: too large"
    assert newest["decode ms"] == 4.0 and pd.isna(newest["infer ms"])
    assert oldest["size"] == "1280×960" and oldest["infer ms"] == 40.5 and oldest["total ms"] == 82.5
    assert pd.isna(oldest["waited ms"])  # no page reported a wait: an API request


def test_an_editor_repair_shows_the_user_s_wait_beside_the_server_s_time():
    log = request_log(record(NOW - 60), record(NOW - 30, id="ui"))
    assert log.amend("ui", {"total": 0.4104, "upload": 0.05, "transfer": 0.1})
    shot = snapshot([], log.recent(), NOW, FIVE_MIN)
    assert series(shot.latency) == {"infer": [40.5, 40.5], "total": [82.5, 82.5], "waited (editor)": [410.4]}
    newest, oldest = shot.table.to_dict("records")
    assert newest["waited ms"] == 410.4 and pd.isna(oldest["waited ms"])


def test_request_table_keeps_the_newest_rows():
    table = dashboard.request_table([record(NOW - age) for age in range(100)], limit=5)
    assert list(table.iloc[:, 0]) == [dashboard.clock(NOW - age) for age in range(5)]


def test_the_real_sampler_feeds_the_plots():
    sampler = Sampler(interval_s=0.05, ring_seconds=60, nvml=None)
    sampler.start()
    try:
        deadline = time.monotonic() + 5
        while len(sampler.samples()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        shot = snapshot(sampler.samples(), [], time.time(), FIVE_MIN)
    finally:
        sampler.stop()
    assert set(shot.cpu["series"]) == {"overall", "peak core"}
    assert shot.cpu["value"].between(0, 100).all()
    assert 0 < shot.rss["value"].min() < 1000  # GB: bytes were converted
    assert shot.gpu_note == NO_GPU  # nvml=None: no GPU sampling


# ---------------------------------------------------------------- refresh and layout

def test_refresh_reads_only_the_window_and_fills_every_output_in_order():
    sampler = FakeSampler([sample(NOW - age) for age in range(0, 1000, 10)])
    values = dashboard.refresh(sampler, request_log(record(NOW - 30)), "last 15 min", now=NOW)

    assert sampler.asked == [NOW - 900]
    note, *plots, table = values
    assert all(plot["x_lim"] == [-15, 0] and isinstance(plot["value"], pd.DataFrame) for plot in plots)
    gpu_memory, _, cpu, rss, latency = (plot["value"] for plot in plots)
    assert note["visible"] is False and plots[0]["visible"] is True and plots[1]["visible"] is True
    assert cpu["minutes"].min() >= -15 and len(rss) == 90  # 15 minutes of samples every 10 s
    assert len(latency) == 2 and len(table) == 1


def test_refresh_without_a_gpu_says_so_in_one_line_instead_of_two_empty_plots():
    note, gpu_memory, gpu_utilization, cpu, rss = dashboard.refresh(FakeSampler([sample(NOW - 1, gpus=0)]), None,
                                                                   "last 5 min", now=NOW)
    assert note == {"__type__": "update", "value": NO_GPU, "visible": True}
    assert gpu_memory["visible"] is False and gpu_utilization["visible"] is False
    assert "visible" not in cpu and "visible" not in rss and not cpu["value"].empty


def test_refresh_with_monitoring_off_shows_only_the_requests():
    latency, table = dashboard.refresh(None, request_log(record(NOW - 1)), "last 5 min", now=NOW)
    assert len(latency["value"]) == 2 and len(table) == 1


def build(sampler: Any, requests: Any) -> gr.Blocks:
    with gr.Blocks() as blocks:
        with gr.Tabs() as tabs:
            with gr.Tab("Repair"):
                gr.Markdown("repair")
            dashboard.build_resources_tab(tabs, sampler, requests)
    return blocks


def components(blocks: gr.Blocks) -> dict[str, Any]:
    return {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}


def test_layout_has_the_plots_the_table_and_an_idle_timer():
    blocks = build(FakeSampler([]), request_log())
    by_id = components(blocks)
    for elem_id in ("plot-gpu-memory", "plot-gpu-utilization", "plot-cpu", "plot-rss"):
        assert isinstance(by_id[elem_id], gr.LinePlot)
    assert isinstance(by_id["plot-latency"], gr.ScatterPlot)
    assert isinstance(by_id["requests-table"], gr.Dataframe)
    assert "monitoring-off" not in by_id
    (timer,) = [block for block in blocks.blocks.values() if isinstance(block, gr.Timer)]
    assert not timer.active  # the Repair tab is the one showing at first


def test_layout_with_monitoring_off_says_so():
    by_id = components(build(None, request_log()))
    assert "monitoring is off" in by_id["monitoring-off"].value.lower()
    assert "plot-cpu" not in by_id and "plot-latency" in by_id
