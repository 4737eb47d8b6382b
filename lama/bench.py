"""`python -m lama bench`: what one repair costs at the sizes users send.

Per size it reports the model-only median (padded tensor in, prediction out, device
synchronized), the end-to-end median (PNG bytes in -> PNG bytes out: decode, engine,
encode, as the service does it) and the peak GPU memory of the model run. With fp16 on
CUDA it also reports the relative error against an fp32 copy of the same weights.
Numbers are printed, never asserted: timings belong to the machine they ran on.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lama import imageio
from lama.synthetic import synthetic_case
from lama.engine import InpaintEngine


@dataclass
class SizeResult:
    width: int
    height: int
    model_ms: float
    end_to_end_ms: float
    peak_gpu_mem_bytes: int | None
    fp16_rel_error: float | None


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'640x480,1280x960' -> [(640, 480), (1280, 960)]."""
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad size {item!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
        if width < 1 or height < 1:
            raise ValueError(f"bad size {item!r}: width and height must be positive")
        sizes.append((width, height))
    return sizes


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """True fp32 for a reference: no TF32 (cuDNN allows it for convolutions by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _median_ms(run: Callable[[], object], runs: int, synchronize: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_size(engine: InpaintEngine, width: int, height: int, runs: int, warmup: int,
               reference: InpaintEngine | None) -> SizeResult:
    image, mask = synthetic_case(width, height)
    is_cuda = engine.device.type == "cuda"
    synchronize = (lambda: torch.cuda.synchronize(engine.device)) if is_cuda else (lambda: None)
    png_image, png_mask = imageio.encode_image(image), imageio.encode_image(mask)

    def end_to_end() -> bytes:
        repaired = engine.inpaint(imageio.decode_image(png_image), imageio.decode_mask(png_mask),
                                  strategy="original")
        return imageio.encode_image(repaired)

    if engine.generator is None:
        _median_ms(end_to_end, warmup, synchronize)
        return SizeResult(width, height, float("nan"), _median_ms(end_to_end, runs, synchronize), None, None)

    with torch.inference_mode():
        _, _, net_input = engine.model_input(image, mask > 0)

    def model_only() -> torch.Tensor:
        with torch.inference_mode():
            return engine.generator(net_input)

    _median_ms(model_only, warmup, synchronize)
    if is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(engine.device)
        baseline = torch.cuda.memory_allocated(engine.device)
    model_ms = _median_ms(model_only, runs, synchronize)
    peak = torch.cuda.max_memory_allocated(engine.device) - baseline if is_cuda else None
    _median_ms(end_to_end, warmup, synchronize)
    end_to_end_ms = _median_ms(end_to_end, runs, synchronize)

    rel_error = None
    if reference is not None:
        with torch.inference_mode(), strict_fp32():
            fast = engine.generator(net_input).float()
            exact = reference.generator(reference.model_input(image, mask > 0)[2])
        rel_error = float(torch.linalg.vector_norm(fast - exact) / torch.linalg.vector_norm(exact))
    return SizeResult(width, height, model_ms, end_to_end_ms, peak, rel_error)


def run_bench(engine: InpaintEngine, sizes: list[tuple[int, int]], runs: int, warmup: int,
              reference: InpaintEngine | None = None) -> list[SizeResult]:
    return [bench_size(engine, w, h, runs, warmup, reference) for w, h in sizes]


def format_table(engine: InpaintEngine, results: list[SizeResult]) -> str:
    info = engine.describe()
    device = info["device"]
    if engine.device.type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name(engine.device)})"
    lines = [
        f"model: {info['name']} ({info['source']}), device: {device}, precision: {info['precision']}, "
        f"torch {torch.__version__}",
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit: {source_commit()}",
        "| size | model ms (median) | end-to-end ms (PNG in -> PNG out) | peak GPU memory | fp16 vs fp32 rel. error |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        peak = f"{r.peak_gpu_mem_bytes / 2**30:.2f} GiB" if r.peak_gpu_mem_bytes is not None else "n/a"
        error = f"{r.fp16_rel_error:.2e}" if r.fp16_rel_error is not None else "n/a"
        lines.append(f"| {r.width}×{r.height} | {r.model_ms:.1f} | {r.end_to_end_ms:.1f} | {peak} | {error} |")
    return "\n".join(lines)


def source_commit() -> str:
    """The commit benchmarked: $LAMA_COMMIT (for copies without .git), else git's HEAD."""
    if os.environ.get("LAMA_COMMIT"):
        return os.environ["LAMA_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__), timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def results_json(engine: InpaintEngine, results: list[SizeResult]) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": source_commit(),
        "engine": engine.describe(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else None,
        "results": [asdict(r) for r in results],
    }
