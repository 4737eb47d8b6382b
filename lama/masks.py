"""Mask geometry: refinement before repair and the regions the crop strategy works on.

Masks here are boolean H×W arrays (True = repair). Everything is OpenCV and numpy on the CPU:
these are cheap next to the model and keep the engine free of image-processing detail.
The cost of each function grows with the array's size, not with the mask's shape or the
dilation asked for: both come from users, and must not buy minutes of a worker.

A mask covers a few percent of a photo, so the engine keeps it as a RegionMask (its bounding
box's pixels) and runs these functions on windows around that box: refining, planning and
pasting then cost the masked region's size, not the image's.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import cv2
import numpy as np

from lama import parallel

log = logging.getLogger(__name__)

# Up to this radius a kernel dilation is cheaper than a distance transform (its cost grows
# with the kernel's area; the transform's does not depend on the radius at all).
KERNEL_DILATION_MAX_PX = 8
# Merging the crop strategy's boxes compares each box with all others (quadratic): past this
# many, which needs a margin far below the default for images within the pixel limit, the
# regions are repaired as one.
MAX_MERGED_BOXES = 10_000
# The feather ramp is computed in horizontal strips of at least this many of the box's pixels
# (each task costs the pool tens of microseconds, and its strip `pixels + 1` rows more on each side).
MIN_STRIP_PIXELS = 256 * 1024


class Box(NamedTuple):
    """A half-open pixel rectangle: rows top..bottom-1, columns left..right-1."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def grown(self, pixels: int, shape: tuple[int, int]) -> Box:
        """This box and `pixels` more on every side, within an image of `shape` (height, width)."""
        return Box(max(0, self.top - pixels), max(0, self.left - pixels),
                   min(shape[0], self.bottom + pixels), min(shape[1], self.right + pixels))

    def shifted(self, top: int, left: int) -> Box:
        """This box moved down by `top` and right by `left` (from a window's coordinates to the image's)."""
        return Box(self.top + top, self.left + left, self.bottom + top, self.right + left)

    def within(self, outer: Box) -> tuple[slice, slice]:
        """The slices of this box inside an array that holds `outer` (which must contain it)."""
        return (slice(self.top - outer.top, self.bottom - outer.top),
                slice(self.left - outer.left, self.right - outer.left))

    def intersection(self, other: Box) -> Box | None:
        box = Box(max(self.top, other.top), max(self.left, other.left),
                  min(self.bottom, other.bottom), min(self.right, other.right))
        return box if box.top < box.bottom and box.left < box.right else None


class Ramp(NamedTuple):
    """Where a region's feather weight lies strictly between 0 and 1 (RegionMask.feather_ramp)."""

    rows: np.ndarray  # in the region box's coordinates
    cols: np.ndarray
    weights: np.ndarray  # float32, the repair's share there


class RegionMask(NamedTuple):
    """A boolean mask of an image of `shape` kept as the pixels of `box`: nothing outside it is masked."""

    shape: tuple[int, int]  # the whole image's (height, width)
    box: Box
    pixels: np.ndarray  # bool, box.shape

    @classmethod
    def of(cls, mask: np.ndarray) -> RegionMask | None:
        """The region of a boolean H×W mask; None when nothing is masked. One integer pass over
        the mask (finding its bounding box) is all this costs at the image's size."""
        x, y, width, height = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
        if width == 0:
            return None
        box = Box(y, x, y + height, x + width)
        return cls(mask.shape, box, mask[box.slices])

    def over(self, window: Box) -> np.ndarray:
        """The mask over any `window` of the image, as a new boolean array of the window's shape."""
        common = self.box.intersection(window)
        if common == self.box:
            # The usual case (a window around the box): the box bordered with unmasked pixels, in one pass.
            return cv2.copyMakeBorder(self.pixels.view(np.uint8), self.box.top - window.top,
                                      window.bottom - self.box.bottom, self.box.left - window.left,
                                      window.right - self.box.right, cv2.BORDER_CONSTANT, value=0).view(bool)
        out = np.zeros(window.shape, bool)
        if common is not None:
            out[common.within(window)] = self.pixels[common.within(self.box)]
        return out

    def dilated(self, pixels: int) -> RegionMask:
        """`dilate` on the region alone: the disc of `pixels` cannot reach further than the box grown by it."""
        if pixels <= 0:
            return self
        window = self.box.grown(pixels, self.shape)
        return RegionMask(self.shape, window, dilate(self.over(window), pixels))

    def feather_ramp(self, pixels: int) -> Ramp:
        """Where `feather_weights` of the whole mask lies strictly between 0 and 1 (the ramp along
        the mask's edges) within `box`: (rows, columns) in the box's coordinates and the weights
        there (float32); everywhere else in the box the weight is 0 (unmasked) or 1.

        A weight below 1 means an unmasked pixel within cap = pixels + 1 (in the chessboard
        metric, which the distance transform's steps never undercut), and the shortest chain of
        steps to it stays inside the two pixels' bounding box. So the distances below the cap
        are the full-frame ones when computed on any window that holds `cap` more rows and
        columns around the pixels asked for: on the box grown by the cap, and on each horizontal
        strip of it grown by the cap again, which is how the box is cut to be computed on
        lama.parallel's pool (OpenCV's distance transform runs on one core and releases the
        GIL; it was most of a large repair's postprocessing). Only the ramp's pixels get a
        weight: it is a thin band (a few percent of the box), and weighing the whole box in
        float arithmetic cost more than the distance transform itself.
        """
        if pixels <= 0:
            empty = np.empty(0, np.intp)
            return Ramp(empty, empty, np.empty(0, np.float32))
        cap = pixels + 1
        window = self.box.grown(cap, self.shape)
        masked = self.over(window).view(np.uint8)
        inside = self.box.within(window)
        top, bottom = inside[0].start, inside[0].stop
        count = max(1, min(parallel.cores(), self.box.area // MIN_STRIP_PIXELS, (bottom - top) // (2 * cap)))
        edges = np.linspace(top, bottom, count + 1).astype(int)
        below_cap = float(np.nextafter(np.float32(cap), np.float32(0)))

        def strip(rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            first, last = rows  # window rows of the box; computed with `cap` more on each side
            low, high = max(0, first - cap), min(masked.shape[0], last + cap)
            distance = _edge_distance(masked[low:high])[first - low:last - low, inside[1]]
            # 0 < distance < cap (a masked pixel's distance is at least 1).
            points = cv2.findNonZero(cv2.inRange(distance, 0.5, below_cap))
            if points is None:
                return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.float32)
            cols, strip_rows = points.reshape(-1, 2).T.astype(np.intp)
            return strip_rows + (first - top), cols, distance[strip_rows, cols] / np.float32(cap)

        found = parallel.run_all(strip, list(zip(edges[:-1], edges[1:], strict=True)))
        return Ramp(*(np.concatenate(part) for part in zip(*found, strict=True)))

    def region_boxes(self, margin: int) -> list[Box]:
        """`region_boxes` of the whole mask, computed on the box grown by margin + 1: each region's
        grown shape and the row and column put back fit in it, so no box is clipped by the window."""
        window = self.box.grown(margin + 1, self.shape)
        return [box.shifted(window.top, window.left) for box in region_boxes(self.over(window), margin)]


DEFAULT_THRESHOLD = 127  # what the service, the UI and the CLI use unless told otherwise
MAX_THRESHOLD = 254  # 255 would repair nothing


def binarize(mask: np.ndarray, threshold: int = 0) -> np.ndarray:
    """Values above `threshold` mean "repair"; a boolean mask is already decided.

    0 is the official pipeline's rule (any nonzero value, so anti-aliased edges count). People's
    masks are rarely that clean: a JPEG mask has no exact zeros, a soft brush fades out over many
    levels, so the service's default is the midpoint (DEFAULT_THRESHOLD).
    """
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W or H×W×C, got an array of shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    return mask > threshold


def resized(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """`mask` stretched to height×width by nearest neighbour (itself when it has that size):
    every value is one the mask had, so thresholding afterwards decides as it would have on
    the original, with no interpolated grey edge for it to judge."""
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask.view(np.uint8) if mask.dtype == bool else mask, (width, height),
                      interpolation=cv2.INTER_NEAREST).astype(mask.dtype, copy=False)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow the mask by a Euclidean disc of radius `pixels`: a pixel joins the mask when a
    masked pixel lies within that distance (dx² + dy² <= pixels²), so corners stay round.

    Users paint tightly around an object; its halo and shadow sit just outside the
    stroke, and LaMa copies whatever is left at the border into the hole.
    """
    if pixels <= 0:
        return mask
    if pixels <= KERNEL_DILATION_MAX_PX:
        # On the mask as bytes of 0 and 1, whose maximum is a boolean mask again: no pass to
        # convert it there and back (each as large as the mask's box).
        binary = np.ascontiguousarray(mask if mask.dtype == bool else mask != 0)
        return cv2.dilate(binary.view(np.uint8), disc(pixels)).view(bool)
    # Distance of every pixel to the nearest masked one: exact Euclidean (OpenCV's
    # DIST_MASK_PRECISE), one linear pass whatever the radius. Distances are square roots of
    # integers, so the threshold halfway to the next integer square is safe from rounding.
    distance = cv2.distanceTransform(np.logical_not(mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= np.float32(np.sqrt(pixels * pixels + 0.5))


def disc(radius: int) -> np.ndarray:
    """The (2·radius + 1)² kernel of the offsets within `radius`: dx² + dy² <= radius²."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.uint8)


def feather_weights(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Blend weight of the repaired pixels: 0 outside the mask, rising to 1 over `pixels` inside.

    The ramp lies inside the mask so that pixels outside it stay bit-identical; a pixel
    at distance d from the nearest unmasked pixel gets d / (pixels + 1), capped at 1.
    """
    if pixels <= 0:
        return mask.astype(np.float32)
    distance = _edge_distance(mask)
    return np.minimum(distance / np.float32(pixels + 1), np.float32(1), out=distance)


def _edge_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each masked pixel to the nearest unmasked one (float32; 0 on unmasked pixels).
    The image border is not a mask edge (there is nothing outside to blend with), so a mask
    covering everything gets no ramp."""
    return cv2.distanceTransform(mask.astype(np.uint8, copy=False).view(np.uint8), cv2.DIST_L2, 5)


def region_boxes(mask: np.ndarray, margin: int) -> list[Box]:
    """Boxes around each connected masked region, grown by `margin` and clipped to the image.

    Boxes that overlap after growing are merged, so each pixel is repaired once and a
    mask of many specks does not turn into many model runs: the result is the boxes merged
    until no two share a pixel (a merged box may reach further boxes: those join it too),
    in (top, left) order.

    A mask of a million specks must not mean a million boxes to compare, and a photo's mask
    must not cost a full-resolution dilation and labelling (the largest CPU cost of a crop
    repair's planning), so regions are grouped first on a coarse grid of GROUP_BLOCK_PX blocks
    (`_grouped_boxes`) where the margin allows it, at full resolution otherwise
    (`_dilated_groups`). Either way a group only joins regions whose grown boxes overlap, so the
    merge that follows (`merge_overlapping`) ends where merging the regions one by one would.
    At most H·W / margin² groups remain.
    """
    if margin >= GROUP_BLOCK_PX:
        boxes = _grown(_grouped_boxes(mask, margin), margin, mask.shape)
    else:
        boxes = _dilated_groups(mask, margin)
    return sorted(Box(*box) for box in merge_overlapping(boxes).tolist()) if len(boxes) else []


# The coarse grid's block side: 8 bools are one 64-bit word, so a block row is tested at once.
GROUP_BLOCK_PX = 8


def _grouped_boxes(mask: np.ndarray, margin: int) -> np.ndarray:
    """The tight boxes (N×4: top, left, bottom, right) of groups of masked pixels whose grown
    boxes overlap, found on a grid of 8×8 blocks; needs margin >= 8.

    A block is occupied when any of its pixels is masked. Occupied blocks within `reach` blocks
    of each other (a square dilation on the grid, then an 8-connected labelling) hold pixels
    less than (2·reach + 2)·8 apart on each axis, which reach keeps within 2·margin + 1: their
    regions' grown boxes overlap, so grouping them decides nothing the merge would not. Each
    group's box is exact: the extents of its blocks' masked pixels, which one pass over the
    mask as 64-bit words finds (a block row is one word; OR-ing a block's eight words gives
    its occupied columns, one byte each).
    """
    block = GROUP_BLOCK_PX
    height, width = mask.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.zeros((rows * block, cols * block), bool)
    padded[:height, :width] = mask
    words = padded.view(np.uint64).reshape(rows, block, cols)  # [block row, row in block, block column]
    row_used = words != 0
    # Byte k of a word is column k of its block row whatever the byte order: a view of the same bytes.
    column_used = np.bitwise_or.reduce(words, axis=1).view(np.uint8).reshape(rows, cols, block) != 0
    occupied = row_used.any(axis=1)
    if not occupied.any():
        return np.empty((0, 4), np.int64)
    reach = (2 * margin + 1 - 2 * block) // (2 * block)
    grid = occupied.view(np.uint8)
    if reach > 0:
        grid = cv2.dilate(grid, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    _count, labels = cv2.connectedComponents(grid, connectivity=8)
    block_top, block_left = np.nonzero(occupied)
    label = labels[block_top, block_left]
    used_rows, used_cols = row_used[block_top, :, block_left], column_used[block_top, block_left]
    tops = block_top * block + used_rows.argmax(axis=1)
    bottoms = block_top * block + block - used_rows[:, ::-1].argmax(axis=1)
    lefts = block_left * block + used_cols.argmax(axis=1)
    rights = block_left * block + block - used_cols[:, ::-1].argmax(axis=1)
    groups = np.unique(label)
    return np.stack([_per_label(np.minimum, tops, label, groups), _per_label(np.minimum, lefts, label, groups),
                     _per_label(np.maximum, bottoms, label, groups), _per_label(np.maximum, rights, label, groups)],
                    axis=1)


def _per_label(reduce: np.ufunc, values: np.ndarray, label: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`reduce` (np.minimum or np.maximum) of `values` per label, for the labels in `groups`."""
    out = np.full(groups.max() + 1, values.max() if reduce is np.minimum else values.min(), np.int64)
    reduce.at(out, label, values)
    return out[groups]


def _grown(boxes: np.ndarray, margin: int, shape: tuple[int, int]) -> np.ndarray:
    """Boxes (N×4) grown by `margin` on every side, clipped to an image of `shape`."""
    top, left, bottom, right = boxes.T
    return np.stack([np.maximum(0, top - margin), np.maximum(0, left - margin),
                     np.minimum(shape[0], bottom + margin), np.minimum(shape[1], right + margin)], axis=1)


def _dilated_groups(mask: np.ndarray, margin: int) -> np.ndarray:
    """The grown boxes (N×4) of groups of regions whose grown boxes overlap, at full resolution:
    each region dilated by the square of offsets -margin..margin-1 fills its grown box less the
    last row and column, and two such shapes that touch (8-connected) belong to boxes that
    overlap. The touching shapes are labelled together; each label's bounding box, the row and
    column put back, is the grown box of its group."""
    height, width = mask.shape
    regions = mask.astype(np.uint8)
    if margin > 0:
        # OpenCV's dilate reads offsets -anchor..size-1-anchor: anchor margin-1 gives -margin..margin-1.
        regions = cv2.dilate(regions, np.ones((2 * margin, 2 * margin), np.uint8), anchor=(margin - 1, margin - 1))
    reach = 1 if margin > 0 else 0  # the row and column the dilation leaves out
    count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(regions, connectivity=8)
    del _labels, regions  # each as large as the image: not kept while merging
    x, y, w, h = stats[1:count, :4].astype(np.int64).T
    return np.stack([y, x, np.minimum(height, y + h + reach), np.minimum(width, x + w + reach)], axis=1)


def merge_overlapping(boxes: np.ndarray) -> np.ndarray:
    """Boxes (N×4 rows of top, left, bottom, right; half-open) merged until no two share a
    pixel, each the bounding box of the boxes it absorbed; in no particular order.

    That end state does not depend on the order of the merges. A box takes in every box it
    overlaps at once and is looked at again, since the union may reach further boxes; every
    look either removes a box or settles one, so there are fewer than 2·N looks, each one
    vectorised over the N boxes.
    """
    if len(boxes) > MAX_MERGED_BOXES:
        log.warning("a mask has %d separate regions to crop, more than %d: repairing them as one region",
                    len(boxes), MAX_MERGED_BOXES)
        return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])[None]
    tops, lefts, bottoms, rights = (boxes[:, side].copy() for side in range(4))
    alive = np.ones(len(boxes), bool)
    pending = list(range(len(boxes)))
    while pending:
        box = pending.pop()
        if not alive[box]:
            continue
        hits = alive & (tops < bottoms[box]) & (tops[box] < bottoms) & (lefts < rights[box]) & (lefts[box] < rights)
        if hits.sum() == 1:
            continue  # only itself: settled, until a growing box takes it in
        tops[box], lefts[box] = tops[hits].min(), lefts[hits].min()
        bottoms[box], rights[box] = bottoms[hits].max(), rights[hits].max()
        alive[hits] = False
        alive[box] = True
        pending.append(box)
    return np.stack([tops, lefts, bottoms, rights], axis=1)[alive]
