"""report.md and its plots, from a run's data (the same dict that is written as data.json).

Only formatting happens here: every figure comes from loadreport.analysis. Units are
decimal (GB = 1e9 bytes), as nvidia-smi's neighbours and the seed's report write them.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server, and no GUI toolkit needed
import matplotlib.pyplot as plt  # noqa: E402

from loadreport.analysis import Timeline, gpu_index_of  # noqa: E402
from loadreport.tables import markdown_table  # noqa: E402

NO_GPU = "n/a (no GPU)"
PLOTS = {"gpu": "gpu.png", "cpu": "cpu.png", "memory": "memory.png"}
PHASE_COLOURS = {"small": "#cfe2f3", "medium": "#9fc5e8", "large": "#6fa8dc", "stream": "#d9ead3",
                 "oversized": "#fce5cd", "simultaneous": "#f4cccc"}


# ------------------------------------------------------------------ numbers as text


def size(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    sign = "+" if signed and value >= 0 else ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{sign}{value / scale:.2f} {unit}"
    return f"{sign}{value:.0f} B"


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def percent(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100 if ratio else value:.0f}%"


def rate(value: float | None) -> str:
    return "n/a" if value is None else f"{size(value, signed=True)}/h"


# ------------------------------------------------------------------ report.md


def markdown(run: dict[str, Any]) -> str:
    summary = run["summary"]
    machine = summary["machine"]
    options = run["options"]
    lines = [
        f"# Resource report: {machine['model'] or 'model n/a'} on {machine['gpu_name'] or machine['device']}",
        "",
        f"Produced by `{run['tool']}` against {run['url']} on {run['date']} "
        f"({'quick mode' if options['quick'] else 'full protocol'}); every number below comes from this run "
        "(`data.json` beside this file holds them all, with the raw requests and samples).",
        "",
    ]
    if run.get("interrupted"):
        lines += [f"**The run was interrupted during `{run['interrupted']}`; later phases are missing.**", ""]
    lines += _machine(run, machine) + _gpu(summary) + _cpu(summary) + _disk(summary)
    lines += _stream(summary["stream"]) + _faults(summary["faults"]) + _seed(summary) + _health(run) + _plots()
    return "\n".join(lines) + "\n"


def _machine(run: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    options, server = run["options"], run["server"]
    gpu = machine["gpu_name"] or NO_GPU
    if machine["gpu_memory_total_bytes"]:
        gpu += f", {size(machine['gpu_memory_total_bytes'])}"
    rows = [
        ["GPU", gpu],
        ["GPU driver", (machine["gpu_driver"] or "not reported") if machine["gpu_name"] else NO_GPU],
        ["CPU (logical cores)", str(machine["cpu_count"] or "n/a")],
        ["RAM", size(machine["memory_total_bytes"])
         + (f" (cgroup limit {size(machine['cgroup_memory_limit_bytes'])})"
            if machine["cgroup_memory_limit_bytes"] else "")],
        ["torch device / precision", f"{machine['device']} / {machine['precision']}"],
        ["model", f"{machine['model']} ({machine['model_source']})"],
        ["repair strategy (service default)", str(run["summary"]["strategy"] or "n/a")],
        ["date (UTC)", run["date"]],
        ["service", run["url"]],
        ["server sampling interval", seconds(server["interval_s"])],
        ["samples / request records collected", f"{len(server['samples'])} / {len(server['requests'])}"],
        ["protocol", f"{options['runs']} runs per class; stream {options['stream_count']} × every "
                     f"{options['stream_interval']:g} s; {options['simultaneous']} simultaneous large requests"],
    ]
    return ["## Machine", ""] + markdown_table(["", ""], rows) + [""]


def _class_label(c: dict[str, Any]) -> str:
    return f"{c['class']} {c['width']}×{c['height']}" if c["width"] else c["class"]


def _gpu(summary: dict[str, Any]) -> list[str]:
    rows = []
    for c in summary["classes"]:
        gpu = c["gpu"]
        rows.append([
            _class_label(c), percent(c["mask_fraction"], ratio=True), f"{c['ok']}/{c['runs']}",
            size(gpu["memory_used_peak_bytes"]) if gpu else NO_GPU,
            size(gpu["torch_allocated_peak_bytes"]) if gpu else NO_GPU,
            percent(gpu["utilization_peak_ratio"], ratio=True) if gpu else NO_GPU,
            seconds(c["latency_mean_s"]), seconds(c["infer_mean_s"]),
        ])
    return ["## GPU per image class", ""] + markdown_table(
        ["class", "mask", "ok/runs", "peak GPU memory (NVML used)", "peak torch allocated",
         "peak GPU utilization", "mean latency (client)", "mean infer (server)"], rows) + [
        "", "Peaks are over the server's samples during the class (and, for torch, each request's own "
        "peak); latency is the whole HTTP exchange, infer the server's `infer` stage (Server-Timing).", ""]


def _cpu(summary: dict[str, Any]) -> list[str]:
    rows = [[_class_label(c), percent(c["cpu_peak_core_percent"]),
             f"{percent(c['cpu_mean_percent'])} / {percent(c['cpu_peak_percent'])}",
             percent(c["process_cpu_peak_percent"]), size(c["rss_increment_bytes"], signed=True),
             size(c["rss_steady_bytes"]), str(c["samples"])] for c in summary["classes"]]
    return ["## CPU and memory per image class", ""] + markdown_table(
        ["class", "peak core", "overall CPU (mean / peak)", "service process CPU (peak; 100% = one core)",
         "RSS increment", "steady RSS", "samples"], rows) + [
        "", "RSS increment: the service's peak RSS during the class minus its RSS just before; "
        "steady RSS: the last sample after the class.", ""]


def _disk(summary: dict[str, Any]) -> list[str]:
    rows = [[_class_label(c), seconds(c["save_mean_s"]), seconds(c["save_max_s"]),
             size(c["file_size_mean_bytes"]), size(c["disk_write_bytes"])] for c in summary["classes"]]
    return ["## Disk", ""] + markdown_table(
        ["class", "mean write time (server `save`)", "max write time", "mean file size",
         "bytes written to the outputs device"], rows) + [""]


def _stream(stream: dict[str, Any] | None) -> list[str]:
    lines = ["## Steady stream: drift", ""]
    if stream is None:
        return lines + ["Not run.", ""]
    change = stream["latency_change_ratio"]
    rows = [
        ["requests (ok)", f"{stream['ok']}/{stream['count']}, one every {stream['interval_s']:g} s"],
        ["duration", seconds(stream["duration_s"])],
        ["first → last latency (client)", f"{seconds(stream['first_latency_s'])} → "
                                          f"{seconds(stream['last_latency_s'])}"
                                          + (f" ({change * 100:+.0f}%)" if change is not None else "")],
        ["first → last infer (server)", f"{seconds(stream['first_infer_s'])} → {seconds(stream['last_infer_s'])}"],
        ["RSS slope", f"{rate(stream['rss_slope_bytes_per_hour'])}: **{stream['rss_verdict']}**"],
        ["GPU memory slope", NO_GPU if stream["gpu_series"] is None else
         f"{rate(stream['gpu_slope_bytes_per_hour'])} ({stream['gpu_series']}): **{stream['gpu_verdict']}**"],
    ]
    return lines + markdown_table(["", ""], rows) + [
        "", f"Slopes are least-squares lines through the {stream['samples']} samples of the stream "
            f"({seconds(stream['sample_span_s'])}). A slope above {size(stream['threshold_bytes_per_hour'])}/h "
            f"is a leak; under {seconds(stream['min_span_s'])} of samples the verdict is inconclusive "
            "(the seed's protocol streams for 30 min).", ""]


def _faults(faults: dict[str, Any]) -> list[str]:
    rows = []
    if big := faults.get("oversized"):
        answer = f"HTTP {big['status']} {big['error_code'] or ''}".strip() if big["status"] else "no HTTP answer"
        rows.append([f"oversized upload {big['width']}×{big['height']} ({size(big['upload_bytes'])})",
                     f"{answer} in {seconds(big['latency_s'])}: “{big['error_message'] or 'no message'}”"
                     + ("" if big["clear_refusal"] else " (not a clear 4xx refusal)"),
                     _yes_no(big["survived"])])
    if burst := faults.get("simultaneous"):
        statuses = ", ".join(str(s) if s is not None else "no answer" for s in burst["statuses"])
        what = (f"{burst['ok']}/{burst['count']} repaired; statuses {statuses}; latencies "
                f"{seconds(min(burst['latencies_s']))} to {seconds(max(burst['latencies_s']))}")
        if burst["out_of_memory"]:
            what += f"; {burst['out_of_memory']} out of GPU memory"
        if burst["server_errors"]:
            what += f"; {burst['server_errors']} answered 5xx"
        for error in burst["errors"]:
            what += f"; #{error['index']}: {error['code'] or 'error'}: {error['message'] or 'no message'}"
        rows.append([f"{burst['count']} simultaneous {burst['width']}×{burst['height']}", what,
                     _yes_no(burst["survived"])])
    return ["## Fault cases", ""] + (markdown_table(["case", "what happened", "service survived"], rows)
                                     if rows else ["Not run."]) + [""]


# The field report this project grew from (FFT NPainting LaMa WebUI on an NVIDIA A10):
# per class, the mean repair time and the GPU memory in use, as its operators measured
# them by hand; and 1 of 5 simultaneous large requests failed with CUDA out of memory.
SEED_A10 = {"small": (4.7, 4.2e9), "medium": (12.3, 6.8e9), "large": (38.1, 11.6e9)}
SEED_SIMULTANEOUS_FAILED = 1


def _seed(summary: dict[str, Any]) -> list[str]:
    rows = []
    for c in summary["classes"]:
        if c["class"] not in SEED_A10:
            continue
        seed_s, seed_bytes = SEED_A10[c["class"]]
        memory = c["gpu"]["memory_used_peak_bytes"] if c["gpu"] else None
        rows.append([
            _class_label(c), f"{seed_s:.1f} s", seconds(c["latency_mean_s"]),
            f"{seed_s / c['latency_mean_s']:.0f}× faster" if c["latency_mean_s"] else "n/a",
            size(seed_bytes), size(memory) if memory is not None else NO_GPU,
        ])
    burst = summary["faults"]["simultaneous"]
    rows.append([f"{burst['count']} simultaneous {burst['width']}×{burst['height']}",
                 f"{SEED_SIMULTANEOUS_FAILED} of 5 failed (CUDA out of memory; the seed sent 5)",
                 f"{burst['count'] - burst['ok']} of {burst['count']} failed", "", "", ""])
    return ["## Compared with the seed report (NVIDIA A10, measured by hand)", ""] + markdown_table(
        ["class", "seed: mean time", "this run: mean latency", "", "seed: GPU memory", "this run: peak GPU memory"],
        rows) + ["", "The seed's figures are quoted from its field report; this run's come from the tables above. "
                 "Different GPUs and model builds: read it as the order of magnitude the service changed, "
                 "not as a like-for-like benchmark.", ""]


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "**no**"


def _health(run: dict[str, Any]) -> list[str]:
    rows = [[check["after"], str(check["status"]) if check["status"] else f"no answer ({check['error']})",
             check["service_status"] or "n/a", seconds(check["seconds"])] for check in run["health_checks"]]
    return ["## /healthz after each phase", ""] + markdown_table(["after", "HTTP", "status", "answered in"],
                                                                 rows) + [""]


def _plots() -> list[str]:
    return ["## Over time", "", "Shaded: the phases; ticks at the bottom: each request's start (red ×: not 200).",
            "", f"![GPU memory and utilization]({PLOTS['gpu']})", "", f"![CPU]({PLOTS['cpu']})", "",
            f"![service RSS]({PLOTS['memory']})", ""]


# ------------------------------------------------------------------ plots


def plots(run: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by file name: GPU memory/utilization, CPU, RSS over the run, phases and requests marked."""
    server = run["server"]
    samples, offset = server["samples"], server["clock_offset_s"]
    origin = min([p["start"] + offset for p in run["phases"]] + [s["ts"] for s in samples[:1]], default=0.0)
    times = [s["ts"] - origin for s in samples]
    end = max(times + [(p["end"] or p["start"]) + offset - origin for p in run["phases"]], default=1.0)
    timeline = Timeline(samples, [], offset, server["interval_s"] or 0.0, gpu_index_of(run["health_start"]))
    out = {}

    figure, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    gpus = [timeline.gpu(s) for s in samples]
    if any(g is not None for g in gpus) or any(s.get("torch") for s in samples):
        _series(axes[0], times, [g.get("memory_used_bytes") if g else None for g in gpus], "NVML memory used", 1e9)
        _series(axes[0], times, [(s.get("torch") or {}).get("memory_reserved_bytes") for s in samples],
                "torch reserved", 1e9)
        _series(axes[0], times, [(s.get("torch") or {}).get("memory_allocated_bytes") for s in samples],
                "torch allocated", 1e9)
        _series(axes[1], times, [g.get("utilization_ratio") if g else None for g in gpus], "GPU utilization", 0.01)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, NO_GPU, ha="center", va="center", transform=ax.transAxes, fontsize=14)
            ax.set_yticks([])
    axes[0].set_ylabel("GPU memory (GB)")
    axes[1].set_ylabel("GPU utilization (%)")
    out[PLOTS["gpu"]] = _finish(figure, axes, run, origin, end)

    figure, axes = plt.subplots(1, 1, figsize=(10, 4))
    _series(axes, times, [s.get("cpu_percent") for s in samples], "overall CPU", 1)
    _series(axes, times, [s.get("cpu_peak_core_percent") for s in samples], "peak core", 1)
    _series(axes, times, [s.get("process_cpu_percent") for s in samples], "service process (100 = 1 core)", 1)
    axes.set_ylabel("CPU (%)")
    out[PLOTS["cpu"]] = _finish(figure, [axes], run, origin, end)

    figure, axes = plt.subplots(1, 1, figsize=(10, 4))
    _series(axes, times, [s.get("process_rss_bytes") for s in samples], "service RSS", 1e9)
    axes.set_ylabel("RSS (GB)")
    out[PLOTS["memory"]] = _finish(figure, [axes], run, origin, end)
    return out


def _series(ax: Any, times: list[float], values: list[float | None], label: str, scale: float) -> None:
    points = [(t, v / scale) for t, v in zip(times, values, strict=True) if isinstance(v, (int, float))]
    if points:
        ax.plot(*zip(*points, strict=True), label=label, linewidth=1.2)


def _finish(figure: Any, axes: Any, run: dict[str, Any], origin: float, end: float) -> bytes:
    """Phase spans, request ticks, legend and labels; the figure as PNG bytes."""
    offset = run["server"]["clock_offset_s"]
    for ax in axes:
        for phase in run["phases"]:
            # Not `start`/`end`: `end` is where the time axis stops (the last sample), not a phase's.
            phase_start = phase["start"] + offset - origin
            phase_end = (phase["end"] or phase["start"]) + offset - origin
            ax.axvspan(phase_start, max(phase_end, phase_start + 0.05),
                       color=PHASE_COLOURS.get(phase["name"], "#eeeeee"), alpha=0.6, label=phase["name"], zorder=0)
        ok = [r["start"] + offset - origin for r in run["requests"] if r["status"] == 200]
        failed = [r["start"] + offset - origin for r in run["requests"] if r["status"] != 200]
        ax.plot(ok, [0.02] * len(ok), "|", color="black", markersize=10, transform=ax.get_xaxis_transform())
        ax.plot(failed, [0.04] * len(failed), "x", color="red", transform=ax.get_xaxis_transform())
        ax.set_xlim(0, max(end, 1.0))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    axes[-1].set_xlabel("seconds since the run began")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
