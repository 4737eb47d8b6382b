"""An experiment, kept only for the commit that measured it: the backend's repair with everything
around the model (the padding, the network's input, the composite, the conversion to uint8 and the
overflow check) captured in the network's CUDA graph, against the backend's repair as it is, at
the load benchmark's inputs (a photo, brush strokes over 8 %, the crop strategy's model input):
alone, beside a thread running pure Python, and beside one calling numpy and OpenCV as a request's
thread does. Wall-clock medians, ms. Needs a CUDA GPU; prints, never asserts.

    python tools/whole_repair_probe.py
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lama import masks  # noqa: E402
from lama.bench import source_commit  # noqa: E402
from lama.engine import InpaintEngine  # noqa: E402
from lama.kernels import nonfinite_flag  # noqa: E402
from lama.reference import _symmetric_index, _to_device, composite, to_uint8  # noqa: E402
from loadreport import images  # noqa: E402


def wall_median_ms(run: Callable[[], object], runs: int) -> float:
    samples = []
    for index in range(runs + 3):
        torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        torch.cuda.synchronize()
        if index >= 3:
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def whole_repair_graph(backend, rgb: np.ndarray, mask: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """backend.repair for inputs of this shape, everything on the GPU one graph's replay."""
    device = backend.device.torch
    height, width = mask.shape
    padded_height, padded_width = backend.padded_size(height, width)
    rows = _symmetric_index(height, padded_height, device)
    cols = _symmetric_index(width, padded_width, device)

    def on_device(pixels: torch.Tensor, holes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.index_select(0, rows).index_select(1, cols).permute(2, 0, 1)[None].float().div_(255)
        m = holes.index_select(0, rows).index_select(1, cols)[None, None].float()
        predicted = backend.network(torch.cat((x * (1 - m), m), dim=1).half())
        return to_uint8(composite(x, m, predicted, (height, width))), nonfinite_flag(predicted)

    static_pixels, static_holes = _to_device(rgb, device).clone(), _to_device(mask, device).clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            on_device(static_pixels, static_holes)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out, static_flag = on_device(static_pixels, static_holes)

    def repair(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), backend.device.worker_stream():
            static_pixels.copy_(_to_device(rgb, device))
            static_holes.copy_(_to_device(mask, device))
            graph.replay()
            out, flag = static_out.clone(), static_flag.clone()
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            host_flag = torch.empty((), dtype=flag.dtype, pin_memory=True)
            host_flag.copy_(flag, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            if float(host_flag) != 0:
                raise RuntimeError("fp16 overflowed: this probe has no fallback")
            return host.numpy()

    return repair


def main() -> None:
    engine = InpaintEngine.with_random_weights(device="cuda")
    engine.warmup()
    backend = engine.backend
    stop = threading.Event()

    def pure_python() -> None:
        while not stop.is_set():
            sum(range(200))

    def numpy_and_opencv() -> None:
        plane = np.zeros((480, 640), np.uint8)
        while not stop.is_set():
            cv2.dilate(plane, None)
            np.count_nonzero(plane)
            sum(range(50))

    print(f"at commit {source_commit()}, {torch.cuda.get_device_name()}; wall-clock medians, ms")
    print("| size | model input | same output | repair | whole graph | repair, Python thread | whole graph, "
          "Python thread | repair, numpy/OpenCV thread | whole graph, numpy/OpenCV thread |")
    print("|---" * 9 + "|")
    for width, height in ((640, 480), (1280, 960), (2560, 1920)):
        image = images.photo(width, height)
        mask = masks.binarize(images.stroke_mask(width, height, 0.08), masks.DEFAULT_THRESHOLD)
        rgb, holes = engine.prepare(image, mask, "crop", 4).inputs[0]
        for _ in range(3):  # the shape's graph captured at its second sighting
            backend.repair(rgb, holes)
        with torch.inference_mode():
            whole = whole_repair_graph(backend, rgb, holes)
        cells = [f"{rgb.shape[1]}×{rgb.shape[0]}", str(np.array_equal(whole(rgb, holes), backend.repair(rgb, holes))),
                 f"{wall_median_ms(lambda: backend.repair(rgb, holes), 40):.2f}",
                 f"{wall_median_ms(lambda: whole(rgb, holes), 40):.2f}"]
        for beside in (pure_python, numpy_and_opencv):
            stop.clear()
            thread = threading.Thread(target=beside)
            thread.start()
            cells += [f"{wall_median_ms(lambda: backend.repair(rgb, holes), 15):.2f}",
                      f"{wall_median_ms(lambda: whole(rgb, holes), 15):.2f}"]
            stop.set()
            thread.join()
        print(f"| {width}×{height} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
