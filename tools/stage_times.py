"""CPU time of each stage of one repair inside the engine, as the service runs it by default
(strategy crop, dilate 4, feather 4, the mask binarized first), at the sizes people send:

    python tools/stage_times.py [--model DIR] [--runs N] [--sizes 640x480,1280x960,2560x1920]
    python tools/stage_times.py --postprocess ...   # the service's two postprocessing steps apart

`--postprocess` times the postprocessing as the service runs it: the feather ramp (computed while
the model runs) and the compose after the model, each alone, on the load benchmark's pictures
(a photo-like image, brush strokes over 8 % of it: a longer mask edge than lama.synthetic's blobs).
torch's idle threads are made to
sleep rather than spin after the model (OMP_WAIT_POLICY=PASSIVE, unless set), so that, as on a GPU
box, the postprocessing has the cores to itself.

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
import sys
import time

if "--postprocess" in sys.argv:  # before torch loads (lama.engine loads it with the model)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lama import masks
from lama.bench import source_commit
from lama.engine import InpaintEngine
from lama.synthetic import synthetic_case
from loadreport import images

STAGES = ("preprocess", "infer", "postprocess")
LOAD_MASK_COVERAGE = 0.08  # the load benchmark's


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


def postprocess_medians(engine: InpaintEngine, width: int, height: int, runs: int) -> dict[str, float]:
    """The feather ramp and the compose, as the service runs them after the engine's `prepare`
    and `run_models`, each timed alone."""
    image = images.photo(width, height)
    mask = masks.binarize(images.stroke_mask(width, height, LOAD_MASK_COVERAGE), masks.DEFAULT_THRESHOLD)
    samples: dict[str, list[float]] = {"ramp": [], "compose": [], "ramp pixels": []}
    for run in range(runs + 1):
        job = engine.prepare(image.copy(), mask, "crop", 4)  # composed in place
        outputs = engine.run_models(job)
        started = time.perf_counter()
        engine.feather_ahead(job, 4)
        ramp = time.perf_counter()
        engine.compose(job, outputs, 4, in_place=True)
        if run:  # the first is the warm run
            samples["ramp"].append((ramp - started) * 1000)
            samples["compose"].append((time.perf_counter() - ramp) * 1000)
            samples["ramp pixels"].append(len(job.ramps[4][0]))
    return {step: statistics.median(values) for step, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(os.environ.get("LAMA_FIXTURES", "tests/fixtures"), "tiny-lama"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="640x480,1280x960,2560x1920")
    parser.add_argument("--postprocess", action="store_true", help="the feather ramp and the compose, each alone")
    args = parser.parse_args()
    engine = InpaintEngine(args.model, device="cpu")
    measure, columns = (postprocess_medians, ("ramp", "compose", "ramp pixels")) if args.postprocess else \
        (stage_medians, (*STAGES, "total"))
    print(f"engine code at commit {source_commit()}, model {engine.describe()['name']} on the CPU, "
          f"{os.cpu_count()} cores; strategy crop, dilate 4, feather 4; median ms of {args.runs}")
    print("| size | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.split("x"))
        medians = measure(engine, width, height, args.runs)
        print(f"| {width}×{height} | " + " | ".join(f"{medians[column]:.{0 if 'pixels' in column else 1}f}"
                                                   for column in columns) + " |")


if __name__ == "__main__":
    main()
