"""From raw observations to the numbers in the report's tables; pure functions, no I/O.

Every figure in report.md is computed here from what the run recorded (client requests,
server samples and request records, health checks), so the report can be regenerated
from data.json and nothing in it is typed in by hand.

Windows: a server sample at time t describes the interval before t (CPU percentages are
averages since the previous sample), so a phase owns the samples in
(start, end + one interval], on the server's clock.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The stream's verdict: growth faster than this is a leak. One leaked 1280×960 RGB image
# per request at the seed's rate (one request per 30 s) is ~440 MB/h; allocator noise on a
# healthy service fits to a few MB/h over the seed's 30 minutes.
LEAK_THRESHOLD_BYTES_PER_HOUR = 100e6
# Below this the slope is mostly the noise of a few samples extrapolated to an hour.
MIN_DRIFT_SPAN_S = 60.0


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The slope of the least-squares line through (x, y) points; None without two distinct x."""
    try:
        return statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope
    except statistics.StatisticsError:  # fewer than two points, or every x the same
        return None


def drift_verdict(slope_per_hour: float | None, span_s: float,
                  threshold: float = LEAK_THRESHOLD_BYTES_PER_HOUR) -> str:
    """'leak', 'no leak', or 'inconclusive' when there is too little to fit a trend to."""
    if slope_per_hour is None or span_s < MIN_DRIFT_SPAN_S:
        return "inconclusive"
    return "leak" if slope_per_hour > threshold else "no leak"


@dataclass
class Timeline:
    """The server's observations, and the client's phases mapped onto the server's clock."""

    samples: list[dict[str, Any]]
    records: list[dict[str, Any]]
    offset_s: float  # server clock minus client clock
    interval_s: float
    gpu_index: int | None  # the engine's GPU; None when the service runs on the CPU

    def window(self, phase: dict[str, Any]) -> list[dict[str, Any]]:
        start, end = self.server_span(phase)
        return [s for s in self.samples if start < s["ts"] <= end + self.interval_s]

    def before(self, phase: dict[str, Any]) -> dict[str, Any] | None:
        """The last sample taken before the phase began: its resting state."""
        start, _ = self.server_span(phase)
        earlier = [s for s in self.samples if s["ts"] <= start]
        return earlier[-1] if earlier else None

    def server_span(self, phase: dict[str, Any]) -> tuple[float, float]:
        return phase["start"] + self.offset_s, (phase["end"] or phase["start"]) + self.offset_s

    def records_of(self, phase: dict[str, Any], width: int, height: int) -> list[dict[str, Any]]:
        """The server's records of this phase's requests (matched by time and size; a margin for clocks)."""
        start, end = self.server_span(phase)
        return [r for r in self.records if start - 1 <= (r.get("ts") or 0) <= end + 1
                and r.get("width") == width and r.get("height") == height]

    def gpu(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        """The engine's GPU in a sample's NVML list (the only one when a single GPU is visible)."""
        gpus = sample.get("gpu") or []
        if self.gpu_index is None or not gpus:
            return None
        if len(gpus) == 1:
            return gpus[0]
        return next((g for g in gpus if g.get("index") == self.gpu_index), None)


def _values(items: Iterable[dict[str, Any] | None], key: str) -> list[float]:
    return [item[key] for item in items if item is not None and isinstance(item.get(key), (int, float))]


def _peak(items: Iterable[dict[str, Any] | None], key: str) -> float | None:
    values = _values(items, key)
    return max(values) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def gpu_index_of(health: dict[str, Any]) -> int | None:
    """'cuda:1' -> 1, 'cuda' -> 0, anything else (the CPU) -> None."""
    device = str((health.get("model") or {}).get("device") or "")
    if not device.startswith("cuda"):
        return None
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def summarize_class(timeline: Timeline, phase: dict[str, Any], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """GPU, CPU, memory, disk and latency of one image class."""
    ok = [r for r in requests if r["status"] == 200]
    window = timeline.window(phase)
    before = timeline.before(phase) or (window[0] if window else None)
    records = timeline.records_of(phase, requests[0]["width"], requests[0]["height"]) if requests else []
    saves = [r["timings"]["save"] for r in records if "save" in (r.get("timings") or {})]
    summary: dict[str, Any] = {
        "class": phase["name"], "completed": phase["completed"], "runs": len(requests), "ok": len(ok),
        "statuses": dict(Counter(str(r["status"]) for r in requests)),
        "width": requests[0]["width"] if requests else None, "height": requests[0]["height"] if requests else None,
        "mask_fraction": requests[0]["mask_fraction"] if requests else None,
        "samples": len(window), "server_records": len(records),
        "latency_mean_s": _mean([r["latency_s"] for r in ok]),
        "latency_max_s": max((r["latency_s"] for r in ok), default=None),
        "infer_mean_s": _mean([r["server_timing"]["infer"] for r in ok if "infer" in r["server_timing"]]),
        "server_total_mean_s": _mean([r["server_timing"]["total"] for r in ok if "total" in r["server_timing"]]),
        "cpu_peak_core_percent": _peak(window, "cpu_peak_core_percent"),
        "cpu_mean_percent": _mean(_values(window, "cpu_percent")),
        "cpu_peak_percent": _peak(window, "cpu_percent"),
        "process_cpu_peak_percent": _peak(window, "process_cpu_percent"),
        "rss_before_bytes": before.get("process_rss_bytes") if before else None,
        "rss_peak_bytes": _peak(window, "process_rss_bytes"),
        "rss_steady_bytes": window[-1].get("process_rss_bytes") if window else None,
        # From the server's records: a repair's file is written after its answer, whose Server-Timing lacks it.
        "save_mean_s": _mean(saves),
        "save_max_s": max(saves, default=None),
        "file_size_mean_bytes": _mean([r["response_bytes"] for r in ok]),
        "disk_write_bytes": _difference(window[-1].get("disk_write_bytes") if window else None,
                                        before.get("disk_write_bytes") if before else None),
        "gpu": None,
    }
    summary["rss_increment_bytes"] = _difference(summary["rss_peak_bytes"], summary["rss_before_bytes"])
    if timeline.gpu_index is not None:
        gpus = [timeline.gpu(s) for s in window]
        torch_peaks = _values((s.get("torch") for s in window), "max_memory_allocated_bytes")
        torch_peaks += _values(records, "peak_gpu_bytes")  # exact: the service resets the peak per request
        summary["gpu"] = {
            "memory_used_peak_bytes": _peak(gpus, "memory_used_bytes"),
            "memory_total_bytes": _peak(gpus, "memory_total_bytes"),
            "torch_allocated_peak_bytes": max(torch_peaks) if torch_peaks else None,
            "utilization_peak_ratio": _peak(gpus, "utilization_ratio"),
        }
    return summary


def summarize_stream(timeline: Timeline, phase: dict[str, Any], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Drift over the steady stream: first vs last latency, and RSS / GPU memory slopes per hour."""
    ok = [r for r in requests if r["status"] == 200]
    window = timeline.window(phase)
    span_s = window[-1]["ts"] - window[0]["ts"] if len(window) > 1 else 0.0
    rss = [(s["ts"] / 3600, s["process_rss_bytes"]) for s in window
           if isinstance(s.get("process_rss_bytes"), (int, float))]
    rss_slope = least_squares_slope(rss)
    summary: dict[str, Any] = {
        "completed": phase["completed"], "count": len(requests), "ok": len(ok), "interval_s": phase["interval_s"],
        "duration_s": (phase["end"] or phase["start"]) - phase["start"], "samples": len(window),
        "sample_span_s": span_s,
        "first_latency_s": ok[0]["latency_s"] if ok else None, "last_latency_s": ok[-1]["latency_s"] if ok else None,
        "first_infer_s": ok[0]["server_timing"].get("infer") if ok else None,
        "last_infer_s": ok[-1]["server_timing"].get("infer") if ok else None,
        "threshold_bytes_per_hour": LEAK_THRESHOLD_BYTES_PER_HOUR, "min_span_s": MIN_DRIFT_SPAN_S,
        "rss_slope_bytes_per_hour": rss_slope, "rss_verdict": drift_verdict(rss_slope, span_s),
        "gpu_series": None, "gpu_slope_bytes_per_hour": None, "gpu_verdict": None,
    }
    first, last = summary["first_latency_s"], summary["last_latency_s"]
    summary["latency_change_ratio"] = last / first - 1 if first and last is not None else None
    if timeline.gpu_index is not None:
        # NVML sees the whole card (what an operator's nvidia-smi shows); without NVML,
        # torch's reserved memory is what this process holds.
        nvml = [(s["ts"] / 3600, gpu["memory_used_bytes"]) for s in window
                if (gpu := timeline.gpu(s)) and isinstance(gpu.get("memory_used_bytes"), (int, float))]
        held = [(s["ts"] / 3600, s["torch"]["memory_reserved_bytes"]) for s in window
                if s.get("torch") and isinstance(s["torch"].get("memory_reserved_bytes"), (int, float))]
        series, points = ("NVML memory used", nvml) if nvml else ("torch memory reserved", held)
        slope = least_squares_slope(points)
        summary.update(gpu_series=series, gpu_slope_bytes_per_hour=slope, gpu_verdict=drift_verdict(slope, span_s))
    return summary


def summarize_faults(requests: list[dict[str, Any]], health_checks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the oversized upload and the burst of simultaneous large requests did to the service."""
    survived = {check["after"]: check["ok"] for check in health_checks}
    faults: dict[str, Any] = {}
    oversized = [r for r in requests if r["phase"] == "oversized"]
    if oversized:
        r = oversized[0]
        faults["oversized"] = {
            "width": r["width"], "height": r["height"], "upload_bytes": r["upload_bytes"], "status": r["status"],
            "error_code": r["error_code"], "error_message": r["error_message"], "latency_s": r["latency_s"],
            "clear_refusal": r["status"] is not None and 400 <= r["status"] < 500 and bool(r["error_message"]),
            "survived": survived.get("oversized"),
        }
    burst = sorted((r for r in requests if r["phase"] == "simultaneous"), key=lambda r: r["index"])
    if burst:
        faults["simultaneous"] = {
            "count": len(burst), "width": burst[0]["width"], "height": burst[0]["height"],
            "statuses": [r["status"] for r in burst],
            "latencies_s": [r["latency_s"] for r in burst],
            "errors": [{"index": r["index"], "status": r["status"], "code": r["error_code"],
                        "message": r["error_message"]} for r in burst if r["status"] != 200],
            "ok": sum(r["status"] == 200 for r in burst),
            "out_of_memory": sum(r["error_code"] == "out_of_memory"
                                 or "out of memory" in (r["error_message"] or "").lower() for r in burst),
            "server_errors": sum(r["status"] is not None and r["status"] >= 500 for r in burst),
            "no_answer": sum(r["status"] is None for r in burst),
            "survived": survived.get("simultaneous"),
        }
    return faults


def machine_info(health: dict[str, Any], samples: list[dict[str, Any]], timeline: Timeline) -> dict[str, Any]:
    """The box the service ran on, from its own /healthz and samples (not the client's machine)."""
    latest = samples[-1] if samples else {}
    gpu = next((g for s in reversed(samples) if (g := timeline.gpu(s))), None)
    model = health.get("model") or {}
    return {
        "gpu_name": (gpu or {}).get("name") or (health.get("gpu") or {}).get("name"),
        "gpu_memory_total_bytes": (gpu or {}).get("memory_total_bytes")
        or (health.get("gpu") or {}).get("memory_total_bytes"),
        "gpu_driver": (gpu or {}).get("driver_version") or latest.get("driver_version"),
        "cpu_count": len(latest["cpu_percent_per_core"]) if latest.get("cpu_percent_per_core") else None,
        "memory_total_bytes": latest.get("system_memory_total_bytes"),
        "cgroup_memory_limit_bytes": latest.get("cgroup_memory_limit_bytes"),
        "device": model.get("device"), "precision": model.get("precision"),
        "model": model.get("name"), "model_source": model.get("source"),
    }


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """All summaries of a run as data.json holds it (phases, requests, server observations)."""
    server = run["server"]
    timeline = Timeline(server["samples"], server["requests"], server["clock_offset_s"], server["interval_s"] or 0.0,
                        gpu_index_of(run["health_start"]))
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for request in sorted(run["requests"], key=lambda r: (r["start"], r["index"])):
        by_phase.setdefault(request["phase"], []).append(request)
    phases = {phase["name"]: phase for phase in run["phases"]}
    strategies = Counter(r.get("strategy") for r in server["requests"] if r.get("strategy"))
    return {
        "machine": machine_info(run["health_start"], server["samples"], timeline),
        "strategy": strategies.most_common(1)[0][0] if strategies else None,
        "classes": [summarize_class(timeline, phase, by_phase.get(phase["name"], []))
                    for phase in run["phases"] if phase["kind"] == "class"],
        "stream": summarize_stream(timeline, phases["stream"], by_phase.get("stream", []))
        if "stream" in phases else None,
        "faults": summarize_faults(run["requests"], run["health_checks"]),
        "survived_all": all(check["ok"] for check in run["health_checks"]),
    }
