"""The HD strategies as a plan: which boxes of an image the model repairs, and at what size.

Decided from the refined mask's geometry and the settings alone (no pixels, no torch), so that
the service's memory admission knows what a job will run before it runs, and the engine then
runs exactly that plan: the estimate and the work cannot drift apart.

- original: the whole image in one run;
- resize: the whole image scaled down so that its long side is at most `resize_limit`;
- crop: above `crop_trigger`, each masked region with `crop_margin` of context, one run each.
Whatever the strategy, no run makes the model see a side longer than `max_side`: a larger box
is scaled down for it (and the repair scaled back up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from lama.masks import Box, RegionMask

STRATEGIES = ("original", "resize", "crop")


@dataclass(frozen=True)
class HDSettings:
    """When and how large images are handled; defaults as in the well-known LaMa tools."""

    crop_trigger: int = 800  # crop only when the long side exceeds this
    crop_margin: int = 128  # context around each masked region
    resize_limit: int = 1280  # resize: long side the model sees at most
    # Whatever the strategy, the model never runs on a longer side than this: larger
    # inputs are downscaled for it and the repair upscaled into the mask. It bounds the
    # GPU memory of one job (the service's presets set it); None means no bound.
    max_side: int | None = None


class Run(NamedTuple):
    """One model run: the box of the image it repairs and the (height, width) the model sees."""

    box: Box
    model_shape: tuple[int, int]

    @property
    def scaled(self) -> bool:
        return self.model_shape != self.box.shape


def plan(mask: RegionMask, strategy: str, hd: HDSettings) -> list[Run]:
    """The runs that repair `mask` (refined: binarized and dilated) with `strategy`, in order.
    Crops run one after another, so a job's peak memory is its largest run's."""
    whole = Box(0, 0, *mask.shape)
    long_side = max(mask.shape)
    if strategy == "resize" and long_side > hd.resize_limit:
        return [Run(whole, scaled_shape(mask.shape, min(hd.resize_limit, hd.max_side or long_side)))]
    boxes = mask.region_boxes(hd.crop_margin) if strategy == "crop" and long_side > hd.crop_trigger else [whole]
    return [whole_run(box, hd) for box in boxes]


def peak_pixels(runs: list[Run]) -> int:
    """The largest model input of a plan, in pixels (0 for none): what its GPU memory follows."""
    return max((height * width for height, width in (run.model_shape for run in runs)), default=0)


def whole_run(box: Box, hd: HDSettings) -> Run:
    """`box` repaired in one run, scaled down when it exceeds max_side."""
    shape = box.shape
    if hd.max_side and max(shape) > hd.max_side:
        return Run(box, scaled_shape(shape, hd.max_side))
    return Run(box, shape)


def scaled_shape(shape: tuple[int, int], limit: int) -> tuple[int, int]:
    """(height, width) of `shape` scaled so that its long side is `limit`, at least 1×1."""
    height, width = shape
    scale = limit / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))
