"""A folder of photos through `python -m lama inpaint`'s batch (lama.batch.run), against the same
photos one after another, in one process:

    python tools/cli_batch_bench.py [--model PATH|random] [--device auto] [--sizes 1280x960,2560x1920]
                                    [--photos N]

For each size, N photo-like JPEGs (quality 92) and one PNG brush-stroke mask over 8 % of them are
written to a temporary folder; after one unmeasured photo, the folder is repaired

  * one photo after another: each photo read, repaired, then encoded and written, the three
    stages timed apart (what the batch did before its stages overlapped);
  * by lama.batch.run, as the CLI runs it (the CLI's default settings: strategy crop, no dilation
    or feathering).

Printed per size: photos per second each way, their ratio, each stage's median, and the model's
own rate (1 / the median `infer` stage): what the device could take if reading and writing cost
nothing. `--model random` is full-size big-lama with random weights (what the GPU box measures
with); by default the service's model. The numbers belong to the machine they ran on.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lama import batch, parallel
from lama.bench import source_commit
from lama.cli import service_model
from lama.engine import InpaintEngine
from loadreport import images

SIZES = ((1280, 960), (2560, 1920))
PHOTOS = 40
MASK_COVERAGE = 0.08  # the load benchmark's


def folder_jobs(root: Path, width: int, height: int, photos: int) -> list[batch.Job]:
    (root / "photos").mkdir()
    for index in range(photos):
        (root / "photos" / f"photo{index:03d}.jpg").write_bytes(images.jpeg(images.photo(width, height, index)))
    (root / "mask.png").write_bytes(images.png(images.stroke_mask(width, height, MASK_COVERAGE)))
    return batch.plan(root / "photos", root / "mask.png", root / "out")


def one_after_another(engine: InpaintEngine, jobs: list[batch.Job], settings: batch.Settings) -> dict[str, list[float]]:
    """Each stage's seconds per photo, the photos done in turn."""
    read_mask = batch.imageio.read_mask
    seconds: dict[str, list[float]] = {"read": [], "repair": [], "infer": [], "write": []}
    for job in jobs:
        started = time.perf_counter()
        photo, fill = batch.read_one(job, read_mask, settings)
        read = time.perf_counter()
        timings: dict[str, float] = {}
        repaired = engine.inpaint(photo.pixels, fill, strategy=settings.strategy, dilate=settings.dilate,
                                  feather=settings.feather, timings=timings)
        repair = time.perf_counter()
        batch.write_one(job, photo.source, repaired, settings)
        seconds["read"].append(read - started)
        seconds["repair"].append(repair - read)
        seconds["infer"].append(timings["infer"])
        seconds["write"].append(time.perf_counter() - repair)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a checkpoint, or 'random' (default: the service's model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    parser.add_argument("--photos", type=int, default=PHOTOS)
    args = parser.parse_args()
    if args.model == "random":
        engine = InpaintEngine.with_random_weights(device=args.device)
    else:
        engine = InpaintEngine(args.model or service_model(), device=args.device)
    settings = batch.Settings()
    print(f"commit {source_commit()}, model {engine.describe()['name']} on {engine.device}, "
          f"{parallel.cores()} cores; {args.photos} photos per size (JPEG), one stroke mask over "
          f"{MASK_COVERAGE:.0%}, the CLI's default settings; medians ms")
    print("| size | one after another, photos/s | lama.batch.run, photos/s | ratio | read ms | repair ms "
          "| write ms | model's own rate, photos/s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.lower().split("x"))
        with tempfile.TemporaryDirectory() as folder:
            jobs = folder_jobs(Path(folder), width, height, args.photos + 1)
            one_after_another(engine, jobs[:1], settings)  # the first of a size: kernels, graphs
            started = time.perf_counter()
            seconds = one_after_another(engine, jobs[1:], settings)
            serial_rate = args.photos / (time.perf_counter() - started)
            for job in jobs[1:]:
                job.output.unlink()
            started = time.perf_counter()
            summary = batch.run(lambda: engine, jobs[1:], settings)
            overlapped_rate = len(summary.done) / (time.perf_counter() - started)
            assert len(summary.done) == args.photos, summary.lines()
        medians = {stage: statistics.median(values) for stage, values in seconds.items()}
        print(f"| {width}×{height} | {serial_rate:.1f} | {overlapped_rate:.1f} | {overlapped_rate / serial_rate:.2f} "
              f"| {medians['read'] * 1000:.1f} | {medians['repair'] * 1000:.1f} | {medians['write'] * 1000:.1f} "
              f"| {1 / medians['infer']:.1f} |")


if __name__ == "__main__":
    main()
