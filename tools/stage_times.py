"""CPU time of each stage of one repair inside the engine, as the service runs it by default
(strategy crop, dilate 4, feather 4, the mask binarized first), at the sizes people send:

    python tools/stage_times.py [--model DIR] [--runs N] [--sizes 640x480,1280x960,2560x1920]

To compare with older code, point PYTHONPATH at a checkout of it (the script only uses
InpaintEngine(model, device), inpaint(..., timings=) and masks.binarize, which it always had):

    mkdir /tmp/before && git archive <commit> lama | tar -x -C /tmp/before
    LAMA_COMMIT=<commit> PYTHONPATH=/tmp/before python tools/stage_times.py

On the CPU with the tiny test checkpoint ($LAMA_FIXTURES/tiny-lama) by default, so that the
model's share stays small and the pre- and postprocessing show; "infer" includes the model runs.
The images and ~10 % brush-stroke masks are lama.synthetic's. Medians of --runs after one warm run;
the numbers belong to the machine they ran on and are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from lama import masks
from lama.bench import source_commit
from lama.engine import InpaintEngine
from lama.synthetic import synthetic_case

STAGES = ("preprocess", "infer", "postprocess")


def stage_medians(engine: InpaintEngine, width: int, height: int, runs: int) -> dict[str, float]:
    image, mask = synthetic_case(width, height)
    mask = masks.binarize(mask, masks.DEFAULT_THRESHOLD)
    samples: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    for run in range(runs + 1):
        timings: dict[str, float] = {}
        started = time.perf_counter()
        engine.inpaint(image, mask, strategy="crop", dilate=4, feather=4, timings=timings)
        timings["total"] = time.perf_counter() - started
        if run:  # the first is the warm run
            for stage, values in samples.items():
                values.append(timings[stage] * 1000)
    return {stage: statistics.median(values) for stage, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(os.environ.get("LAMA_FIXTURES", "tests/fixtures"), "tiny-lama"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="640x480,1280x960,2560x1920")
    args = parser.parse_args()
    engine = InpaintEngine(args.model, device="cpu")
    print(f"engine code at commit {source_commit()}, model {engine.describe()['name']} on the CPU, "
          f"{os.cpu_count()} cores; strategy crop, dilate 4, feather 4; median ms of {args.runs}")
    print("| size | preprocess | infer | postprocess | total |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.split("x"))
        medians = stage_medians(engine, width, height, args.runs)
        print(f"| {width}×{height} | " + " | ".join(f"{medians[stage]:.1f}" for stage in (*STAGES, "total")) + " |")


if __name__ == "__main__":
    main()
