"""The HD strategies as a plan: which boxes of an image the model repairs, and at what size.

Decided from the refined mask's geometry and the settings alone (no pixels, no torch), so that
the service's memory admission knows what a job will run before it runs, and the engine then
runs exactly that plan: the estimate and the work cannot drift apart.

- original: the whole image in one run;
- resize: the whole image scaled down so that its long side is at most `resize_limit`;
- crop: above `crop_trigger`, each masked region with `crop_margin` of context, one run each.
Whatever the strategy, no run makes the model see a side longer than `max_side`: a larger box
is scaled down for it (and the repair scaled back up).

A crop's box follows the user's mask, so nearly every repair would give the model a shape of
its own; a backend that prepares work per input shape (the GPU fast path's CUDA graphs and its
per-size DFT matrices) would then prepare for every request and reuse nothing. With
`snap` the crop boxes grow, with more of the image around them, to sides on a coarse ladder
(`snapped_side`), so that repairs of different masks share a few shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lama.masks import Box, RegionMask, merge_overlapping

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


def plan(mask: RegionMask, strategy: str, hd: HDSettings, snap: bool = False) -> list[Run]:
    """The runs that repair `mask` (refined: binarized and dilated) with `strategy`, in order.
    Crops run one after another, so a job's peak memory is its largest run's. `snap`: crop
    boxes on the ladder of sides (see the module's docstring)."""
    whole = Box(0, 0, *mask.shape)
    long_side = max(mask.shape)
    if strategy == "resize" and long_side > hd.resize_limit:
        return [Run(whole, scaled_shape(mask.shape, min(hd.resize_limit, hd.max_side or long_side)))]
    if strategy != "crop" or long_side <= hd.crop_trigger:
        return [whole_run(whole, hd)]
    boxes = mask.region_boxes(hd.crop_margin)
    return [whole_run(box, hd) for box in (snapped_boxes(boxes, mask.shape) if snap else boxes)]


# Crop sides are multiples of SNAP_MIN_STEP up to 8 times it, then of an eighth of the power of
# two they reach: a side grows by less than 64 px or a quarter of itself, whichever is more, and
# the sides up to 4096 are 20 values (multiples of 8, as the model's padding wants).
SNAP_MIN_STEP = 64


def snapped_side(side: int) -> int:
    """The smallest side on the ladder that holds `side`: 64, 128, …, 512, 640, 768, 896, 1024,
    1280, …, 2048, 2560, …"""
    step = max(SNAP_MIN_STEP, 2 ** (math.ceil(math.log2(max(side, 1))) - 3))
    return -(-side // step) * step


def snapped_boxes(boxes: list[Box], shape: tuple[int, int]) -> list[Box]:
    """Each box grown to ladder sides (`snapped_side`; the image's own side where that is
    shorter), about its centre and kept within the image, in (top, left) order. Grown boxes that
    overlap are merged and grown again, so that no masked pixel is repaired twice."""
    while boxes:
        grown = [_snapped(box, shape) for box in boxes]
        merged = sorted(Box(*box) for box in merge_overlapping(np.array(grown, np.int64)).tolist())
        if merged == sorted(grown):
            return merged
        boxes = merged
    return []


def _snapped(box: Box, shape: tuple[int, int]) -> Box:
    top, bottom = _snapped_span(box.top, box.bottom, shape[0])
    left, right = _snapped_span(box.left, box.right, shape[1])
    return Box(top, left, bottom, right)


def _snapped_span(start: int, stop: int, size: int) -> tuple[int, int]:
    length = min(snapped_side(stop - start), size)
    first = min(max(0, start - (length - (stop - start)) // 2), size - length)
    return first, first + length


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
