"""The service's decode stage on the load benchmark's uploads, in one quiet process:

    python tools/decode_times.py [--model DIR] [--runs N] [--sizes 640x480,1280x960,2560x1920] [--pause-ms MS]

The load benchmark's server reports a `decode` stage (both uploads decoded, the mask binarized,
refined and planned in its own thread while the photo decodes: RepairService.decode). This times
the same call on the same uploads (loadreport.load's JPEG photo and PNG stroke mask, seeded as
the benchmark seeds them) with nothing else running, and its two halves alone: the photo's
decode, and the mask's chain (decode, binarize, plan at the server's default settings). Where
the server's stage takes longer than this, the time goes to running beside other threads, not to
the work itself.

The plan needs an engine: the tiny test checkpoint ($LAMA_FIXTURES/tiny-lama) on the CPU by
default, whose plans are the reference path's (the GPU's fast path snaps crops to a ladder of
sizes, a few pixels' difference). Medians of --runs after one warm run, ms; printed, never asserted.

`--pause-ms`: sleep that long before each timed call. A server's decodes do not follow each other
as this loop's do: one client's next upload comes after its round trip, and in between the cores
that decoded have had nothing to do. The pause puts that back, to tell what idle cores cost the
next call (their clocks, their caches) from what the server's own threads do.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The tests' helpers: where the test fixtures are (tests/support/paths.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lama import imageio, masks  # noqa: E402
from lama.bench import source_commit  # noqa: E402
from lama.engine import InpaintEngine  # noqa: E402
from loadreport.load import MASK_COVERAGE, make_upload  # noqa: E402
from monitor.metrics import ServiceMetrics  # noqa: E402
from service.jobs import JobQueue  # noqa: E402
from service.pipeline import RepairOptions, RepairService  # noqa: E402
from service.storage import OutputStore  # noqa: E402
from webui.errors import status_of  # noqa: E402
from webui.settings import load_settings, parse_args  # noqa: E402
from support.paths import tiny_model  # noqa: E402

PARTS = ("photo", "mask chain", "decode stage")


def median_ms(run: Callable[[], object], runs: int, pause_s: float) -> float:
    run()  # warm: pools started, code paths loaded
    times = []
    for _ in range(runs):
        time.sleep(pause_s)
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def part_medians(service: RepairService, options: RepairOptions, width: int, height: int, seed: int,
                 runs: int, pause_s: float) -> dict[str, float]:
    upload = make_upload(width, height, seed, MASK_COVERAGE)
    photo, mask = upload.image_jpeg, upload.mask_png

    def mask_chain() -> object:
        binary = masks.binarize(imageio.decode_mask(mask, service.limits), options.mask_threshold)
        return service.engine.plan_mask(binary, options.strategy, options.dilate, shape=(height, width))

    return {"photo": median_ms(lambda: imageio.decode_photo(photo, service.limits), runs, pause_s),
            "mask chain": median_ms(mask_chain, runs, pause_s),
            "decode stage": median_ms(lambda: service.decode(photo, mask, options=options), runs, pause_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(tiny_model()))
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--sizes", default="640x480,1280x960,2560x1920")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="sleep before each timed call (default 0)")
    args = parser.parse_args()
    defaults = load_settings(parse_args([]))
    options = RepairOptions(dilate=defaults.dilate, feather=defaults.feather)
    queue = JobQueue(1)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth, model_loaded=lambda: 1.0, gpu_available=lambda: 0.0)
    with tempfile.TemporaryDirectory() as outputs:
        service = RepairService(InpaintEngine(args.model, device="cpu"), OutputStore(Path(outputs)), queue, metrics,
                                status_of=status_of)
        try:
            print(f"commit {source_commit()}, {os.cpu_count()} cores; the load benchmark's uploads (JPEG photo, "
                  f"PNG stroke mask over {MASK_COVERAGE:.0%}), strategy {options.strategy}, dilate {options.dilate}; "
                  f"median ms of {args.runs}, one call at a time"
                  + (f", {args.pause_ms:g} ms apart" if args.pause_ms else ""))
            print("| size | " + " | ".join(PARTS) + " |")
            print("|---" * (len(PARTS) + 1) + "|")
            # Seeded by the size's place in the list, as python -m loadreport load seeds its uploads.
            for seed, size in enumerate(args.sizes.split(",")):
                width, height = (int(side) for side in size.split("x"))
                medians = part_medians(service, options, width, height, seed, args.runs, args.pause_ms / 1000)
                print(f"| {width}×{height} | " + " | ".join(f"{medians[part]:.1f}" for part in PARTS) + " |", flush=True)
        finally:
            queue.shutdown()


if __name__ == "__main__":
    main()
