"""Issue 15, item 3: what each way of overlapping the pipeline buys, measured on the real server.

    python tools/pipeline_probe.py serve VARIANT [app.py flags...]   # the server, one option switched on
    python tools/pipeline_probe.py summary RUN.json...               # one table over the load runs

`bash tools/gpu_soak.sh OUT pipeline` runs the whole comparison on the GPU box: for each variant
it starts the server with `serve`, runs the load benchmark (python -m loadreport load) against
it, records the server's RSS and threads after the load, stops it, and prints `summary`.

The variants are switched on here, in the probe's process, so that the service's code carries
no experiment: `serve` changes what a variant needs, then runs app.py's main as it is.
- base: the service as it is (simplejpeg decoding, a CUDA stream per GPU worker with pinned
  uploads, Gradio's queue polling every 5 ms: earlier runs of this probe measured those best
  and the service adopted them; GPU workers as configured).
- opencv-codecs: uploads decoded by OpenCV, as before item 4: what the codec change buys.
- gil-switch-1ms, gil-switch-0.2ms: CPython's GIL switch interval (5 ms) shortened: how long the
  GPU workers wait to take the GIL back between their torch calls while request threads run Python.
- graphs-to-2560 (and with gil-switch-1ms): CUDA graphs for model inputs up to 2560×1920 instead
  of 1536×1536, so that 2560×1920 runs as one launch instead of hundreds.
The number of GPU workers (several jobs' transfers overlapping one GPU's model runs) is app.py's
--gpu-workers flag, which gpu_soak.sh passes per variant.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# ------------------------------------------------------------------ the variants


def base() -> None:
    """Nothing changed."""


def opencv_codecs() -> None:
    """Every upload decoded by OpenCV (imagecodecs' array shape withheld, as before item 4)."""
    import dataclasses

    from lama import imageio

    check = imageio._check
    imageio._check = lambda data, limits: dataclasses.replace(check(data, limits), shape=None)


def gil_switch(seconds: float) -> Callable[[], None]:
    """A thread waiting for the GIL gets it after `seconds` instead of CPython's 5 ms: each of the
    dozens of torch calls a GPU worker makes per repair gives the GIL up and must take it back,
    and with every request thread running Python, each take can wait the whole interval."""

    def switch() -> None:
        sys.setswitchinterval(seconds)

    return switch


def graphs_to_2560() -> None:
    """CUDA graphs up to 2560×1920 model inputs (lama.fastpath.GRAPH_MAX_PIXELS is 1536²): one
    launch instead of hundreds, each of which an eager run takes the GIL for, beside the
    request threads."""
    from lama import fastpath

    fastpath.GRAPH_MAX_PIXELS = 2560 * 1920


def both(*variants: Callable[[], None]) -> Callable[[], None]:
    def combined() -> None:
        for variant in variants:
            variant()

    return combined


VARIANTS = {"base": base, "opencv-codecs": opencv_codecs,
            "gil-switch-1ms": gil_switch(0.001), "gil-switch-0.2ms": gil_switch(0.0002),
            "graphs-to-2560": graphs_to_2560, "graphs-to-2560-gil-switch-1ms": both(graphs_to_2560, gil_switch(0.001))}


# ------------------------------------------------------------------ the summary


def summary(paths: list[Path]) -> str:
    """One row per variant and cell: throughput, latency, GPU busy, share of model-only, and
    throughput against the base run's same cell. Each run's .proc file (beside its JSON, written
    by gpu_soak.sh) adds the server's RSS and threads after its load."""
    runs = [(path, json.loads(path.read_text())) for path in paths]
    base_rate = {_cell_key(cell): cell["summary"]["requests_per_s"]
                 for path, run in runs if path.stem == "base" for cell in run["cells"]}
    lines = ["| variant | size | clients | req/s | vs base | p50 ms | infer ms | GPU busy | share of model-only |"
             " RSS after, MB | threads after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path, run in runs:
        name, process = path.stem, _proc(path.with_suffix(".proc"))
        for cell in run["cells"]:
            figures = cell["summary"]
            rate, reference = figures["requests_per_s"], base_rate.get(_cell_key(cell))
            infer = figures["stage_medians_s"].get("infer")
            busy, share = figures.get("gpu_busy_ratio"), figures.get("capacity_ratio")
            lines.append(" | ".join([
                f"| {name}", f"{cell['width']}×{cell['height']} {cell['settings']}", str(cell["clients"]),
                f"{rate:.1f}", f"{rate / reference:.2f}×" if reference else "–",
                _ms(figures.get("latency_p50_s")), _ms(infer), _percent(busy), _percent(share),
                process.get("rss_mb", "–"), process.get("threads", "–")]) + " |")
    return "\n".join(lines)


def _cell_key(cell: dict[str, Any]) -> tuple:
    return cell["width"], cell["height"], cell["settings"], cell["clients"]


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f}"


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.0%}"


def _proc(path: Path) -> dict[str, str]:
    """The server's `VmRSS:` and `Threads:` from /proc/PID/status, as gpu_soak.sh saved them."""
    text = path.read_text() if path.exists() else ""
    rss, threads = re.search(r"VmRSS:\s*(\d+)", text), re.search(r"Threads:\s*(\d+)", text)
    return {**({"rss_mb": f"{int(rss.group(1)) / 1024:.0f}"} if rss else {}),
            **({"threads": threads.group(1)} if threads else {})}


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "serve" and argv[1] in VARIANTS:
        VARIANTS[argv[1]]()
        import app

        app.main(argv[2:])
    elif len(argv) >= 2 and argv[0] == "summary":
        print(summary([Path(path) for path in argv[1:]]))
    else:
        raise SystemExit(f"usage: pipeline_probe.py serve {{{'|'.join(VARIANTS)}}} [app.py flags...]\n"
                         "       pipeline_probe.py summary RUN.json...")


if __name__ == "__main__":
    main(sys.argv[1:])
