"""The resident memory (RSS) of a process after each step of what the server's start-up does, and
the seconds each step took alone:
importing torch, CUDA's context, cuDNN, cuFFT and cuBLAS at first use, big-lama loaded on the
fast path, one forward weighed call by call, the warm-up, its pinned transfer buffers given back,
Gradio imported, the heap trimmed; then what backs it (tools/rss_map.py).

    python tools/rss_steps.py [--model models/big-lama.safetensors] [--variant NAME]

`--variant`: one of tools/pipeline_probe.py's variants, switched on before the model loads
(`unfused-convs`: what the fused convolutions' execution plans hold).

Issue 15 asks for 1 GB at rest: this says how much of it the CUDA libraries take before the
service holds anything of its own. Needs a CUDA GPU; prints, never asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lama import heap  # noqa: E402 - torch-free
from pipeline_probe import VARIANTS  # noqa: E402 - tools/, this script's folder, is first on sys.path


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def heap_mb() -> str:
    """The C heap as glibc counts it (lama.heap.usage): allocated and held free; "" elsewhere."""
    counted = heap.usage()
    return "" if counted is None else f"heap in use {counted[0] / 2**20:5.0f} MB, free {counted[1] / 2**20:5.0f} MB"


def pinned_mb() -> str:
    """torch's page-locked host blocks (in use and cached), once CUDA is up."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return ""
    from lama.device import Device

    return f"pinned {(Device.resolve('cuda').pinned_host_bytes() or 0) / 2**20:4.0f} MB"


_last_step_at = time.perf_counter()


def heaviest_first_calls(engine, top: int = 12) -> None:
    """One eager forward of the fast path's network at the warm-up's first size, each torch
    operation and Triton launch synchronised and weighed for the C heap and RSS it added; prints
    the heaviest: what the warm-up's first run adds at once (docs/BENCHMARKS.md), call by call,
    the first call of each kind of operation loading what the CUDA libraries keep for it."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from lama import kernels
    from lama.engine import WARMUP_SIZES

    weighed: list[tuple[float, float, str]] = []

    def weigh(name: str, call):
        heap_before, rss_before = heap.usage()[0], rss_mb()
        result = call()
        torch.cuda.synchronize()
        weighed.append(((heap.usage()[0] - heap_before) / 2**20, rss_mb() - rss_before, name))
        return result

    class Weigh(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return weigh(str(func), lambda: func(*args, **(kwargs or {})))

    launch = kernels._launch
    kernels._launch = lambda kernel, grid, *args, **options: weigh(
        f"triton {kernel.__name__}", lambda: launch(kernel, grid, *args, **options))
    width, height = WARMUP_SIZES[0]
    backend = engine.backend
    x = torch.rand((1, 4, *backend.padded_size(height, width)), device="cuda", dtype=backend.network.dtype)
    try:
        with torch.inference_mode(), Weigh():
            backend.network(x)
    finally:
        kernels._launch = launch
    total_heap, total_rss = sum(w[0] for w in weighed), sum(w[1] for w in weighed)
    print(f"    {len(weighed)} calls: heap {total_heap:+.0f} MB, RSS {total_rss:+.0f} MB; the heaviest:")
    for heap_mb_, rss_mb_, name in sorted(weighed, reverse=True)[:top]:
        print(f"    heap {heap_mb_:+7.1f} MB  RSS {rss_mb_:+7.1f} MB  {name}")


def note(step: str) -> None:
    global _last_step_at
    now = time.perf_counter()
    print(f"{step:24s} {rss_mb():7.0f} MB {now - _last_step_at:7.2f} s  {heap_mb()}  {pinned_mb()}", flush=True)
    _last_step_at = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/big-lama.safetensors")
    parser.add_argument("--variant", choices=VARIANTS, default="base")
    args = parser.parse_args()
    # The server's kernel cache, where app.py would put it: the warm-up step then times a
    # restart's warm-up, not the first build of every kernel.
    from webui.settings import load_settings, parse_args

    os.environ.setdefault("TRITON_CACHE_DIR", str(Path(load_settings(parse_args([])).kernel_cache_dir).resolve()))
    note("python")
    import cv2  # noqa: F401 - the step is the import
    import numpy  # noqa: F401
    note("numpy and OpenCV")
    import torch
    note("torch imported")
    torch.cuda.device_count()
    note("CUDA driver")
    torch.zeros(1, device="cuda")
    note("CUDA context")
    x = torch.randn(1, 64, 256, 256, device="cuda", dtype=torch.half)
    torch.nn.functional.conv2d(x, torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.half))
    torch.cuda.synchronize()
    note("cuDNN")
    torch.fft.rfft2(x.float())
    torch.cuda.synchronize()
    note("cuFFT")
    square = torch.randn(512, 512, device="cuda", dtype=torch.half)
    square @ square
    torch.cuda.synchronize()
    note("cuBLAS")
    # The fused convolutions the fast path runs through cuDNN (lama.fastnet): each new shape gets
    # an execution plan of its own, built at its first call and kept.
    for channels, side in ((64, 256), (128, 192), (256, 128)):
        x = torch.randn(1, channels, side, side, device="cuda", dtype=torch.half).contiguous(
            memory_format=torch.channels_last)
        weight = torch.randn(channels, channels, 3, 3, device="cuda", dtype=torch.half).contiguous(
            memory_format=torch.channels_last)
        bias = torch.randn(channels, device="cuda", dtype=torch.half)
        torch.cudnn_convolution_relu(x, weight, bias, (1, 1), (1, 1), (1, 1), 1)
        torch.cudnn_convolution_add_relu(x, weight, x, 1.0, bias, (1, 1), (1, 1), (1, 1), 1)
        torch.cuda.synchronize()
        note(f"fused convs {channels}×{side}²")
    VARIANTS[args.variant]()
    from lama.engine import WARMUP_SIZES, InpaintEngine
    engine = InpaintEngine(args.model, "cuda", "auto")
    note("model loaded")
    heaviest_first_calls(engine)
    note("a forward op by op")
    # The warm-up's sizes one at a time, so that each one's share shows (the server warms them in
    # one call, which fits its memory model to all of them; here the first size alone fits it).
    for width, height in WARMUP_SIZES:
        engine.warmup(((width, height),))
        note(f"warm-up {width}×{height}")
    engine.device.release_pinned_host_memory()
    note("pinned blocks given back")
    import gradio  # noqa: F401
    note("gradio imported")
    heap.release_free_heap()
    note("heap trimmed")
    subprocess.run([sys.executable, str(ROOT / "tools" / "rss_map.py"), str(os.getpid()), "--top", "20"], check=False)


if __name__ == "__main__":
    main()
