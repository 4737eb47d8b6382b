"""What a CPU worker process (service.cpu_workers) holds after repairs, and once it has idled:

    python tools/worker_rss.py [--size 2560x1920] [--repairs 6] [--model DIR]

One real worker, as the server starts it; the load benchmark's upload (a JPEG photo, a PNG stroke
mask) prepared and finished through it --repairs times, the model run in this process (the tiny
test checkpoint on the CPU by default: the worker's memory does not depend on the model). Prints
the worker's RSS before, right after the repairs and after it has idled past its heap trim
(service.cpu_workers.IDLE_TRIM_S), with the arena bound its environment gave it. An operator's
MALLOC_ARENA_MAX, if set, reaches the worker as it would from the server.

To compare with older code, point PYTHONPATH at an archive of its lama/ and service/ (the script
uses CpuWorkers, WorkerConfig, Worker.prepare/finish and InpaintEngine.run_inputs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psutil

from lama.bench import source_commit
from lama.engine import InpaintEngine
from lama.imageio import ImageLimits
from loadreport.load import make_upload
from service import cpu_workers
from service.cpu_workers import CpuWorkers, WorkerConfig
from service.upload import RepairOptions

# The tests' helpers: where the test fixtures are (tests/support/paths.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.paths import tiny_model  # noqa: E402

MB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2560x1920")
    parser.add_argument("--repairs", type=int, default=6)
    parser.add_argument("--model", default=str(tiny_model()))
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.split("x"))
    engine = InpaintEngine(args.model, device="cpu")
    workers = CpuWorkers(1, WorkerConfig(engine.hd, engine.backend.prefers_few_shapes, ImageLimits(), 2))
    workers.start()
    try:
        worker = workers.pick()
        process = psutil.Process(worker.process.pid)

        def rss_mb() -> float:
            return process.memory_info().rss / MB

        upload = make_upload(width, height, 3, 0.08)
        options = RepairOptions(dilate=4, feather=4)
        time.sleep(cpu_workers.IDLE_TRIM_S * 1.5)
        before = rss_mb()
        for _ in range(args.repairs):
            prepared = worker.prepare(upload.image_jpeg, upload.mask_png, "photo.jpg", options)
            worker.finish(prepared, engine.run_inputs(prepared.inputs))
        after = rss_mb()
        time.sleep(cpu_workers.IDLE_TRIM_S * 2.5)
        idle = rss_mb()
        arenas = process.environ().get("MALLOC_ARENA_MAX", "glibc's default")
    finally:
        workers.stop()
    print(f"service code at commit {source_commit()}; one CPU worker (2 threads, MALLOC_ARENA_MAX {arenas}); "
          f"{args.repairs} repairs of a {width}×{height} JPEG photo with a stroke mask")
    print("| worker RSS, MB | before | after the repairs | idle |")
    print("|---|---|---|---|")
    print(f"| | {before:.0f} | {after:.0f} | {idle:.0f} |")


if __name__ == "__main__":
    main()
