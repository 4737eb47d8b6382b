"""The load benchmark's figures and its Markdown, from what the cells recorded; no I/O.

A cell is one size × one set of form fields × a number of simultaneous clients. Its
throughput counts answered repairs (HTTP 200) over the cell's wall time, from the first
request sent to the last answer received; latencies are the client's, around the whole
HTTP exchange; stage times are the server's own (Server-Timing).

The model-only capacity of a size and settings is 1 / the median server `infer` stage of
its 1-client cell: the repairs per second the GPU could serve if decoding, planning,
queueing, encoding and saving cost nothing. The last column divides each cell's
throughput by it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping
from typing import Any

from loadreport.tables import markdown_table

NOT_MEASURED = "n/a"


def p95(values: list[float]) -> float | None:
    """The 95th percentile, interpolated between the two nearest values."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def failure(record: dict[str, Any]) -> str:
    """'503 queue_full', '413 image_too_large', 'no answer'."""
    if record["status"] is None:
        return "no answer"
    return f"{record['status']} {record['error_code'] or ''}".strip()


def summarize_cell(records: list[dict[str, Any]], gpu_busy: Mapping[int, float]) -> dict[str, Any]:
    """`gpu_busy`: the busy share of each GPU watched, by index (the meter's)."""
    ok = [r for r in records if r["status"] == 200]
    first_sent = min((r["start_s"] for r in records), default=0.0)
    wall_s = max((r["start_s"] + r["latency_s"] for r in records), default=0.0) - first_sent
    stages: dict[str, list[float]] = {}  # in the server's order: the first answer's
    for record in ok:
        for stage, seconds in record["server_timing"].items():
            stages.setdefault(stage, []).append(seconds)
    latencies = [r["latency_s"] for r in ok]
    return {
        "sent": len(records), "ok": len(ok), "failures": dict(Counter(failure(r) for r in records if r not in ok)),
        "wall_s": wall_s, "requests_per_s": len(ok) / wall_s if wall_s else 0.0,
        "latency_p50_s": statistics.median(latencies) if latencies else None, "latency_p95_s": p95(latencies),
        "stage_medians_s": {stage: statistics.median(values) for stage, values in stages.items()},
        # The one GPU's share where one was watched (the service's); each GPU's where several were.
        "gpu_busy_ratio": next(iter(gpu_busy.values())) if len(gpu_busy) == 1 else None,
        "gpu_busy_by_index": {str(index): ratio for index, ratio in sorted(gpu_busy.items())},
    }


def add_capacity(cells: list[dict[str, Any]]) -> None:
    """Each cell's model-only capacity (from the 1-client cell of its size and settings) and its share of it."""
    infer_s = {(c["width"], c["height"], c["settings"]): c["summary"]["stage_medians_s"].get("infer")
               for c in cells if c["clients"] == 1}
    for cell in cells:
        infer = infer_s.get((cell["width"], cell["height"], cell["settings"]))
        summary = cell["summary"]
        summary["model_only_per_s"] = 1 / infer if infer else None
        summary["capacity_ratio"] = summary["requests_per_s"] * infer if infer else None


def _milliseconds(seconds: float | None) -> str:
    if seconds is None:
        return NOT_MEASURED
    return f"{seconds * 1000:.1f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


def _rate(per_s: float | None) -> str:
    if per_s is None:
        return NOT_MEASURED
    return f"{per_s:.1f}" if per_s >= 10 else f"{per_s:.2f}"


def _share(ratio: float | None) -> str:
    return NOT_MEASURED if ratio is None else f"{ratio * 100:.0f}%"


def gpu_busy_text(summary: dict[str, Any]) -> str:
    """'85%' for one GPU, 'GPU0 85%, GPU1 80%' for several."""
    by_index = summary.get("gpu_busy_by_index") or {}
    if len(by_index) < 2:
        return _share(summary["gpu_busy_ratio"])
    return ", ".join(f"GPU{index} {_share(ratio)}" for index, ratio in by_index.items())


MASK_SHAPE_NAMES = {"strokes": "brush-stroke mask", "object": "mask of one object (an ellipse)"}


def _masks_note(masks: int) -> str:
    return (f", one of {masks} different masks per size in turn (the warm-up's the first)" if masks > 1
            else ", the same mask every time")


def markdown(run: dict[str, Any]) -> str:
    """The header that says what was measured and how, then one table row per cell."""
    options, health = run["options"], run["health"]
    model = health.get("model") or {}
    gpu = (health.get("gpu") or {}).get("name")
    budget = (f"{options['requests']} repairs shared by the clients" if options["requests"]
              else f"{options['duration_s']:g} s of load")
    lines = [
        f"Load benchmark (`{run['tool']}`) against {run['url']} on {run['date']}: {model.get('name')} on "
        f"{model.get('device')}{f' ({gpu})' if gpu else ''}, {model.get('precision')}.",
        "",
        f"- Uploads: a photo-like JPEG (quality {options['jpeg_quality']}) and a PNG "
        f"{MASK_SHAPE_NAMES[options.get('mask_shape', 'strokes')]} over "
        f"{options['mask_coverage'] * 100:.0f}% of it{_masks_note(options.get('masks', 1))}. "
        "Settings `default`: no form fields (the server's defaults); `original`: strategy=original.",
        f"- Each cell: {budget}, each client (its own connection) sending its next repair as soon as the last "
        f"is answered; {options['warmup']} unmeasured warm-up repairs per size and settings first. req/s counts "
        "HTTP 200s; a refusal (503 queue_full: the client waits its Retry-After) or no answer is a failure.",
        "- p50/p95: the client's latency around the whole HTTP exchange. Stage columns: the medians of the "
        "server's Server-Timing, ms.",
        f"- GPU busy: the share of the cell during which the GPU (each GPU, where several were watched) ran a "
        f"kernel ({run['gpu_busy_source']}).",
        "- Model-only req/s: 1 / the median server `infer` of the 1-client cell of the same size and settings, "
        "what the model's device (the GPU) could serve if the rest of the pipeline cost nothing; the last column "
        "is req/s divided by it.",
    ]
    if options.get("masks", 1) > 1:
        lines.append("- With different masks that median may include a new shape's first runs (the model's "
                     "input follows the mask): the model-only figures are then a lower bound of the GPU's.")
    if run.get("interrupted"):
        lines.append(f"- **Interrupted: {run['interrupted']}; the cells after it are missing.**")
    stages = list(dict.fromkeys(stage for cell in run["cells"] for stage in cell["summary"]["stage_medians_s"]))
    header = ["size", "settings", "clients", "ok/sent", "failures", "req/s", "p50 ms", "p95 ms",
              *(f"{stage} ms" for stage in stages), "GPU busy", "model-only req/s", "share of model-only"]
    rows = []
    for cell in run["cells"]:
        s = cell["summary"]
        failures = ", ".join(f"{count}× {what}" for what, count in s["failures"].items()) or "0"
        row = [f"{cell['width']}×{cell['height']}", cell["settings"], str(cell["clients"]), f"{s['ok']}/{s['sent']}",
               failures, _rate(s["requests_per_s"]), _milliseconds(s["latency_p50_s"]),
               _milliseconds(s["latency_p95_s"]), *(_milliseconds(s["stage_medians_s"].get(stage)) for stage in stages),
               gpu_busy_text(s), _rate(s["model_only_per_s"]), _share(s["capacity_ratio"])]
        rows.append(row)
    return "\n".join(lines + [""] + markdown_table(header, rows)) + "\n"
