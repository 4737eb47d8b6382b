"""`python -m lama bench`: what one repair costs at the sizes users send.

Per size it reports the end-to-end time (PNG bytes in -> PNG bytes out: decode, engine,
encode, as the service does it; the input PNGs written by OpenCV, as uploads are), the
model's time inside those same runs (padded tensor in, prediction out, the device
synchronized before and after) and the codecs', and the peak GPU memory of the model run.
Times are spreads over the runs: min, median and max. A part is timed inside the very run
whose whole it is part of, so no end-to-end time comes out below its parts (timed in
separate loops, the model's median once came out above the end-to-end one: other runs,
other clocks). With a reference it also reports the relative error of the fast path
against an fp32 copy of the same weights, and the speed-up of the model alone over it.
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

import cv2
import numpy as np
import torch

from lama import imageio, parallel
from lama.units import format_bytes
from lama.device import Device
from lama.engine import InpaintEngine
from lama.synthetic import synthetic_case


@dataclass(frozen=True)
class Spread:
    """Milliseconds over the timed runs."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, seconds: list[float]) -> Spread:
        ms = [value * 1000 for value in seconds]
        return cls(min(ms), statistics.median(ms), max(ms))

    def __str__(self) -> str:
        return f"{self.median:.1f} ({self.min:.1f}–{self.max:.1f})"


@dataclass
class SizeResult:
    width: int
    height: int
    end_to_end_ms: Spread
    model_ms: Spread | None  # inside the end-to-end runs; None for the OpenCV fallback
    decode_ms: Spread  # image and mask, inside the end-to-end runs
    encode_ms: Spread
    peak_gpu_mem_bytes: int | None
    # With a reference (the plain fp32 eager path of the same weights, same device), each
    # model alone in a loop of its own, the same way:
    model_alone_ms: float | None = None  # median
    reference_ms: float | None = None  # median
    reference_peak_gpu_mem_bytes: int | None = None
    rel_error: float | None = None  # ‖fast − fp32‖ / ‖fp32‖ on the same input

    @property
    def speedup(self) -> float | None:
        return self.reference_ms / self.model_alone_ms if self.reference_ms and self.model_alone_ms else None


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


def _timed_with_peak(run: Callable[[], object], runs: int, warmup: int, device: Device
                     ) -> tuple[float, int | None]:
    """Median ms of `run` and, on CUDA, the peak memory it needs above what was held before
    its first call (warm-up included: a CUDA graph's pool is allocated when it is captured)."""
    timings: list[float] = []

    def warm_then_timed() -> None:
        _median_ms(run, warmup, device.synchronize)
        timings.append(_median_ms(run, runs, device.synchronize))

    device.free_cache()
    peak = device.peak_above_baseline(warm_then_timed)
    return timings[0], peak


@contextlib.contextmanager
def _timing_the_model(engine: InpaintEngine, seconds: list[float]) -> Iterator[None]:
    """Each model run of `engine` appends its time to `seconds`, the device synchronized
    before and after it, for as long as the context lasts (the backend's repair runs its steps
    one by one meanwhile: the fast path's whole-repair graph has no network call to time)."""
    backend, synchronize = engine.backend, engine.device.synchronize
    run_model = backend.run_model

    def timed(net_input: torch.Tensor) -> torch.Tensor:
        synchronize()
        started = time.perf_counter()
        output = run_model(net_input)
        synchronize()
        seconds.append(time.perf_counter() - started)
        return output

    backend.run_model = timed
    try:
        with backend.stepwise():
            yield
    finally:
        backend.run_model = run_model


def bench_size(engine: InpaintEngine, width: int, height: int, runs: int, warmup: int,
               reference: InpaintEngine | None) -> SizeResult:
    image, mask = synthetic_case(width, height)
    png_image, png_mask = foreign_png(image), foreign_png(mask)
    model_loaded = engine.backend.model_loaded
    stages: dict[str, list[float]] = {"end_to_end": [], "model": [], "decode": [], "encode": []}

    def end_to_end() -> None:
        engine.device.synchronize()
        started = time.perf_counter()
        decoded = imageio.decode_image_and_mask(png_image, png_mask)
        decoded_at = time.perf_counter()
        repaired = engine.inpaint(*decoded, strategy="original")  # back on the CPU: synchronized
        encode_at = time.perf_counter()
        imageio.encode_image(repaired)
        ended = time.perf_counter()
        stages["decode"].append(decoded_at - started)
        stages["encode"].append(ended - encode_at)
        stages["end_to_end"].append(ended - started)

    with _timing_the_model(engine, stages["model"]) if model_loaded else contextlib.nullcontext():
        for _ in range(warmup):
            end_to_end()
        for values in stages.values():
            values.clear()
        for _ in range(runs):
            end_to_end()
    result = SizeResult(width, height, Spread.of(stages["end_to_end"]),
                        Spread.of(stages["model"]) if model_loaded else None,
                        Spread.of(stages["decode"]), Spread.of(stages["encode"]), None)
    if not model_loaded:
        return result

    with torch.inference_mode():
        net_input = engine.backend.model_input(image, mask > 0)[2]

    def model_only() -> torch.Tensor:
        with torch.inference_mode():
            return engine.backend.run_model(net_input)

    # The model alone: the peak memory of its run, and what the reference is compared with.
    model_alone_ms, result.peak_gpu_mem_bytes = _timed_with_peak(model_only, runs, warmup, engine.device)
    if reference is not None:
        result.model_alone_ms = model_alone_ms
        _compare(result, engine, reference, image, mask > 0, net_input, runs, warmup)
    return result


def foreign_png(pixels: np.ndarray) -> bytes:
    """PNG bytes as another program would write them (OpenCV's encoder), not ours: the
    service decodes its own PNGs in parallel (lama.png), uploads from browsers and editors
    on one core, and the benchmark must time the uploads people send."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def codec_timings(sizes: list[tuple[int, int]], runs: int) -> list[dict[str, float]]:
    """The CPU codecs alone (ms, median of `runs` after one warm run) and PNG sizes, per size.

    The inputs are the end-to-end benchmark's: synthetic_case's image and mask, as our own
    PNGs (which the service decodes on all cores) and as OpenCV writes them (an upload from
    elsewhere, decoded on one core); cv2.imencode alone is the encoder the service had before.
    """
    def median(run: Callable[[], object]) -> float:
        run()  # first-call allocations and lazy imports are not what a request pays
        return _median_ms(run, runs, lambda: None)

    rows = []
    for width, height in sizes:
        image, mask = synthetic_case(width, height)
        ours, ours_mask, foreign = imageio.encode_image(image), imageio.encode_image(mask), foreign_png(image)
        rows.append({
            "size": f"{width}x{height}",
            "decode_image_ms": median(lambda: imageio.decode_image(ours)),
            "decode_foreign_png_ms": median(lambda: imageio.decode_image(foreign)),
            "decode_mask_ms": median(lambda: imageio.decode_mask(ours_mask)),
            "decode_both_ms": median(lambda: imageio.decode_image_and_mask(ours, ours_mask)),
            "encode_png_ms": median(lambda: imageio.encode_image(image)),
            "opencv_encode_ms": median(lambda: foreign_png(image)),
            "png_bytes": len(ours),
            "opencv_png_bytes": len(foreign),
            "mask_png_bytes": len(ours_mask),
        })
    return rows


def format_codec_lines(rows: list[dict[str, float]], runs: int) -> str:
    lines = [f"cores: {parallel.cores()} usable of {os.cpu_count()} (PNG threads {parallel.cores()}, "
             f"OpenCV threads {cv2.getNumThreads()}); median of {runs}"]
    for row in rows:
        lines.append(f"{row['size']}: decode image {row['decode_image_ms']:.1f} ms "
                     f"(an OpenCV-written PNG {row['decode_foreign_png_ms']:.1f} ms), "
                     f"decode mask {row['decode_mask_ms']:.1f} ms, "
                     f"image and mask together {row['decode_both_ms']:.1f} ms, "
                     f"encode PNG {row['encode_png_ms']:.1f} ms (cv2.imencode {row['opencv_encode_ms']:.1f} ms); "
                     f"PNG {row['png_bytes']:,} bytes (OpenCV's {row['opencv_png_bytes']:,}), "
                     f"mask PNG {row['mask_png_bytes']:,} bytes")
    return "\n".join(lines)


def _compare(result: SizeResult, engine: InpaintEngine, reference: InpaintEngine, image: np.ndarray,
             mask: np.ndarray, net_input: torch.Tensor, runs: int, warmup: int) -> None:
    """Fill the reference columns: its time and memory, and the fast path's error against it."""
    with torch.inference_mode():
        exact_input = reference.backend.model_input(image, mask)[2]

    def reference_only() -> torch.Tensor:
        with torch.inference_mode():
            return reference.backend.run_model(exact_input)

    result.reference_ms, result.reference_peak_gpu_mem_bytes = _timed_with_peak(
        reference_only, runs, warmup, reference.device)
    with torch.inference_mode(), strict_fp32():
        fast = engine.backend.run_model(net_input).float()
        exact = reference.backend.run_model(exact_input)
    result.rel_error = float(torch.linalg.vector_norm(fast - exact) / torch.linalg.vector_norm(exact))


def run_bench(engine: InpaintEngine, sizes: list[tuple[int, int]], runs: int, warmup: int,
              reference: InpaintEngine | None = None) -> list[SizeResult]:
    return [bench_size(engine, w, h, runs, warmup, reference) for w, h in sizes]


def format_table(engine: InpaintEngine, results: list[SizeResult]) -> str:
    info = engine.describe()
    gpu = engine.device.gpu_name()
    lines = [
        f"model: {info['name']} ({info['source']}), device: {info['device']}{f' ({gpu})' if gpu else ''}, "
        f"precision: {info['precision']}, "
        f"fast path: {'on' if info.get('fast_path') else 'off'}, torch {torch.__version__}",
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit: {source_commit()}",
        "",
    ]
    with_reference = any(r.reference_ms is not None for r in results)
    header = ["size", "end-to-end ms (PNG in -> PNG out)", "of which model ms", "of which decode ms",
              "of which encode ms", "peak GPU memory"]
    if with_reference:
        header += ["model alone ms", "fp32 eager ms", "speed-up", "fp32 eager peak", "rel. error vs fp32"]
    lines += ["median (min–max) of each; the parts are timed inside the same runs as the whole", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        row = [f"{r.width}×{r.height}", str(r.end_to_end_ms), str(r.model_ms or "n/a"), str(r.decode_ms),
               str(r.encode_ms), _memory(r.peak_gpu_mem_bytes)]
        if with_reference:
            row += [f"{r.model_alone_ms:.1f}", f"{r.reference_ms:.1f}", f"{r.speedup:.2f}×",
                    _memory(r.reference_peak_gpu_mem_bytes), f"{r.rel_error:.2e}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)



def source_commit(checkout: str | os.PathLike[str] | None = None) -> str:
    """The commit benchmarked: $LAMA_COMMIT (for copies without .git), else git's HEAD; with
    `checkout`, that other checkout's HEAD (a tool comparing it with this code)."""
    if checkout is None and os.environ.get("LAMA_COMMIT"):
        return os.environ["LAMA_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=checkout or os.path.dirname(__file__), timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def results_json(engine: InpaintEngine, results: list[SizeResult]) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": source_commit(),
        "engine": engine.describe(),
        "torch": torch.__version__,
        "gpu": engine.device.gpu_name(),
        "results": [{**asdict(r), "speedup": r.speedup} for r in results],
    }


def _memory(value: int | None) -> str:
    return format_bytes(value) if value is not None else "n/a"
