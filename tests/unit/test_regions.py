"""The engine refines and feathers a mask on windows around its bounding box (lama.masks.RegionMask)
so that only the masked region costs CPU time; these check that each windowed result is exactly
the whole-frame function's, wherever the mask lies (touching the image's borders included)."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lama import masks, parallel
from lama.masks import Box, RegionMask


@st.composite
def sparse_masks(draw):
    """A mask of a few rectangles and specks somewhere in an image, possibly at its borders."""
    height, width = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = np.zeros((height, width), bool)
    for _ in range(draw(st.integers(1, 4))):
        top, left = rng.integers(0, height), rng.integers(0, width)
        mask[top: top + rng.integers(1, 12), left: left + rng.integers(1, 12)] = True
    mask |= rng.random((height, width)) < draw(st.sampled_from([0.0, 0.002, 0.02]))
    return mask


def region(mask: np.ndarray) -> RegionMask:
    found = RegionMask.of(mask)
    assert found is not None
    return found


@settings(max_examples=100, deadline=None)
@given(mask=sparse_masks(), corners=st.tuples(*[st.integers(0, 70)] * 4))
def test_a_region_over_any_window_is_the_masks_pixels_there(mask, corners):
    """Windows around the box (bordered in one pass), across it and beside it."""
    top, bottom = sorted(corners[:2])
    left, right = sorted(corners[2:])
    window = Box(min(top, mask.shape[0] - 1), min(left, mask.shape[1] - 1),
                 max(1, min(bottom, mask.shape[0])), max(1, min(right, mask.shape[1])))
    if window.top >= window.bottom or window.left >= window.right:
        return
    assert np.array_equal(region(mask).over(window), mask[window.slices])
    grown = region(mask).box.grown(3, mask.shape)
    assert np.array_equal(region(mask).over(grown), mask[grown.slices])


@pytest.mark.parametrize("dtype, value", [(bool, True), (np.uint8, 255), (np.uint8, 1), (np.float32, 0.5)])
def test_dilating_a_mask_of_any_type_gives_a_boolean_mask(dtype, value):
    mask = np.zeros((20, 30), dtype)
    mask[10, 15] = value
    dilated = masks.dilate(mask, 2)
    assert dilated.dtype == bool and dilated.sum() == 13 and dilated[10, 13] and not dilated[9, 13]


@settings(max_examples=60, deadline=None)
@given(mask=sparse_masks(), pixels=st.sampled_from([0, 1, 3, 8, 9, 20]))
def test_a_dilated_region_is_the_dilated_mask(mask, pixels):
    assert np.array_equal(region(mask).dilated(pixels).over(Box(0, 0, *mask.shape)), masks.dilate(mask, pixels))


@settings(max_examples=100, deadline=None)
@given(mask=sparse_masks(), pixels=st.integers(0, 9), strips=st.sampled_from([1, 2, 5, 64]))
def test_a_regions_feather_ramp_is_where_the_masks_weights_lie_between_0_and_1(mask, pixels, strips):
    """Whether the box is computed whole or in strips (each grown by the ramp's width: a strip
    as low as two ramps, so that pixels near a strip's edge find unmasked ones in the next)."""
    found = region(mask)
    whole = masks.feather_weights(mask, pixels)
    assert not whole[~mask].any(), "outside the mask every weight is 0, so outside the box too"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masks, "MIN_STRIP_PIXELS", 1)
        patch.setattr(parallel, "cores", lambda: strips)
        rows, cols, weights = found.feather_ramp(pixels)
    ramp = np.zeros(found.box.shape, bool)
    ramp[rows, cols] = True
    expected = whole[found.box.slices]
    assert np.array_equal(ramp, (expected > 0) & (expected < 1))
    assert np.array_equal(weights, expected[rows, cols])


@settings(max_examples=60, deadline=None)
@given(mask=sparse_masks(), margin=st.sampled_from([0, 1, 4, 8, 30]))
def test_a_regions_crop_boxes_are_the_masks(mask, margin):
    assert region(mask).region_boxes(margin) == masks.region_boxes(mask, margin)


def test_the_box_is_the_tight_bounding_box_and_an_empty_mask_has_none():
    mask = np.zeros((30, 40), bool)
    assert RegionMask.of(mask) is None
    mask[5, 7] = mask[20, 31] = True
    found = RegionMask.of(mask)
    assert found.box == Box(5, 7, 21, 32) and found.shape == (30, 40)
    assert np.array_equal(found.over(Box(0, 0, 30, 40)), mask)
    assert np.array_equal(found.over(Box(18, 30, 25, 35)), mask[18:25, 30:35])


@pytest.mark.parametrize("box, pixels, expected", [
    (Box(5, 5, 10, 10), 3, Box(2, 2, 13, 13)),
    (Box(0, 1, 4, 40), 3, Box(0, 0, 7, 40)),  # clipped to the 20×40 image
])
def test_a_grown_box_stays_in_the_image(box, pixels, expected):
    assert box.grown(pixels, (20, 40)) == expected


@st.composite
def photo_masks(draw):
    """Brush strokes, blobs and specks on images up to 240 px a side, the margins' scale."""
    height, width = draw(st.integers(1, 240)), draw(st.integers(1, 240))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = np.zeros((height, width), np.uint8)
    for _ in range(draw(st.integers(0, 5))):
        start, end = rng.integers(0, (width, height), size=(2, 2))
        cv2.line(mask, tuple(map(int, start)), tuple(map(int, end)), 1, int(rng.integers(1, 20)))
    mask = mask.astype(bool) | (rng.random((height, width)) < draw(st.sampled_from([0.0, 0.001, 0.01])))
    return mask


@settings(max_examples=150, deadline=None)
@given(mask=photo_masks(), margin=st.sampled_from([8, 9, 15, 16, 17, 23, 31, 32, 33, 64, 128]))
def test_grouping_on_the_coarse_grid_finds_the_full_resolution_boxes(mask, margin):
    """The 8×8 grid only groups regions whose grown boxes overlap: the merged boxes are those of
    the full-resolution grouping (itself checked against the one-by-one merge in
    tests/live/test_bounded_work.py), at every margin the grid is used for."""
    full = masks._dilated_groups(mask, margin)
    expected = sorted(Box(*box) for box in masks.merge_overlapping(full).tolist()) if len(full) else []
    assert masks.region_boxes(mask, margin) == expected
