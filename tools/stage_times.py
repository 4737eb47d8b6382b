"""CPU time of each stage of one repair inside the engine, as the service runs it by default
(strategy crop, dilate 4, feather 4, the mask binarized first), at the sizes people send:

    python tools/stage_times.py [--model DIR] [--runs N] [--sizes 640x480,1280x960,2560x1920]
    python tools/stage_times.py --postprocess [--masks strokes,object] ...   # around the model run

`--postprocess` times what the service does around the model run, each step alone: ahead of it
(while the model runs) the feather ramp and the PNG segments of the rows the repair leaves alone;
after it the compose and the rest of the PNG encoding, and for comparison the whole encoding with
nothing ahead. On the load benchmark's pictures (a photo-like image, brush strokes over 8 % of it:
a longer mask edge than lama.synthetic's blobs) and, with `--masks strokes,object`, on one object
painted over (loadreport.images.object_mask: an ellipse over 8 % of the picture).
torch's idle threads are made to
sleep rather than spin after the model (OMP_WAIT_POLICY=PASSIVE, unless set), so that, as on a GPU
box, the postprocessing has the cores to itself.

To compare with older code, point PYTHONPATH at a checkout of it (without --postprocess the script
only uses InpaintEngine(model, device), inpaint(..., timings=) and masks.binarize, which it always
had; --postprocess needs the service.upload of 2026-12-05 or later):

    mkdir /tmp/before && git archive <commit> lama service | tar -x -C /tmp/before
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

from lama import imageio, masks
from lama.bench import source_commit
from lama.engine import InpaintEngine
from lama.stages import Stage
from lama.synthetic import synthetic_case
from loadreport import images
from service.upload import Decoded, RepairOptions, compose_and_encode, encode_ahead

# The tests' helpers: where the test fixtures are (tests/support/paths.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.paths import tiny_model  # noqa: E402

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


AROUND_THE_MODEL = ("ramp", "PNG ahead", "compose", "encode after", "encode, nothing ahead", "rows changed %")


def postprocess_medians(engine: InpaintEngine, width: int, height: int, runs: int,
                        mask_kind: str = "strokes") -> dict[str, float]:
    """The steps around the model run as the service does them after the engine's `prepare` and
    `run_models` (service.upload: a PNG result, the photo composed in place), each timed alone."""
    image = images.photo(width, height)
    mask = masks.binarize(images.MASK_SHAPES[mask_kind](width, height, LOAD_MASK_COVERAGE), masks.DEFAULT_THRESHOLD)
    options = RepairOptions(dilate=4, feather=4)
    samples: dict[str, list[float]] = {step: [] for step in AROUND_THE_MODEL}
    for run in range(runs + 1):
        decoded = Decoded(image.copy(), mask, owned=True, mask_threshold=masks.DEFAULT_THRESHOLD)
        job = engine.prepare(decoded.image, mask, "crop", 4)
        outputs = engine.run_models(job)
        started = time.perf_counter()
        engine.feather_ahead(job, 4)
        ramp = time.perf_counter()
        encode_ahead(decoded, job, options, {})
        ahead = time.perf_counter()
        after: dict[str, float] = {}
        repaired, _, _ = compose_and_encode(engine, decoded, job, outputs, options, after)
        alone = time.perf_counter()
        imageio.encode_image(repaired, "png")
        if run:  # the first is the warm run
            box = job.region.box
            for step, seconds in (("ramp", ramp - started), ("PNG ahead", ahead - ramp),
                                  ("compose", after[Stage.POSTPROCESS]), ("encode after", after[Stage.ENCODE]),
                                  ("encode, nothing ahead", time.perf_counter() - alone)):
                samples[step].append(seconds * 1000)
            samples["rows changed %"].append(100 * (box.bottom - box.top) / height)
    return {step: statistics.median(values) for step, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(tiny_model()))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="640x480,1280x960,2560x1920")
    parser.add_argument("--postprocess", action="store_true",
                        help="the steps around the model run (ahead of it and after it), each alone")
    parser.add_argument("--masks", default="strokes", help=f"with --postprocess: of {', '.join(images.MASK_SHAPES)}")
    args = parser.parse_args()
    engine = InpaintEngine(args.model, device="cpu")
    print(f"engine code at commit {source_commit()}, model {engine.describe()['name']} on the CPU, "
          f"{os.cpu_count()} cores; strategy crop, dilate 4, feather 4; median ms of {args.runs}")
    columns = ("mask", *AROUND_THE_MODEL) if args.postprocess else (*STAGES, "total")
    print("| size | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.split("x"))
        for mask_kind in args.masks.split(",") if args.postprocess else [None]:
            if mask_kind is None:
                medians = stage_medians(engine, width, height, args.runs)
            else:
                medians = {"mask": mask_kind, **postprocess_medians(engine, width, height, args.runs, mask_kind)}
            print(f"| {width}×{height} | " + " | ".join(
                medians[column] if isinstance(medians[column], str) else f"{medians[column]:.{0 if '%' in column else 1}f}"
                for column in columns) + " |")


if __name__ == "__main__":
    main()
