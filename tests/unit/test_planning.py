"""The crop strategy's boxes on a ladder of sides (lama.planning, `snap`): what the GPU fast
path's per-shape graphs need for repairs of different masks to share shapes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lama import masks
from lama.engine import InpaintEngine
from lama.masks import Box
from lama.planning import HDSettings, plan, snapped_boxes, snapped_side
from loadreport import images


def test_the_ladder_holds_every_side_with_little_more_and_few_values():
    for side in range(1, 4097):
        snapped = snapped_side(side)
        assert snapped >= side and snapped % 8 == 0, "holds the side; the model's padding has nothing to add"
        assert snapped < side + max(64, side / 4), side
    assert len({snapped_side(side) for side in range(1, 4097)}) == 20
    assert [snapped_side(side) for side in (600, 1000, 1900, 2500)] == [640, 1024, 2048, 2560]


@st.composite
def boxes_in_an_image(draw):
    height, width = draw(st.integers(1, 900)), draw(st.integers(1, 900))
    boxes = []
    for _ in range(draw(st.integers(1, 5))):
        top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        boxes.append(Box(top, left, draw(st.integers(top + 1, height)), draw(st.integers(left + 1, width))))
    merged = masks.merge_overlapping(np.array(boxes, np.int64)).tolist()
    return (height, width), sorted(Box(*box) for box in merged)


@settings(max_examples=200, deadline=None)
@given(case=boxes_in_an_image())
def test_snapped_boxes_hold_the_boxes_within_the_image_on_the_ladder_and_apart(case):
    shape, boxes = case
    snapped = snapped_boxes(boxes, shape)
    for box in boxes:
        assert any(box.intersection(outer) == box for outer in snapped), "every region keeps its context"
    for box in snapped:
        assert 0 <= box.top < box.bottom <= shape[0] and 0 <= box.left < box.right <= shape[1]
        for side, image_side in zip(box.shape, shape, strict=True):
            assert side in (snapped_side(side), image_side), "a ladder side, or the whole image's"
    for index, box in enumerate(snapped):
        assert all(box.intersection(other) is None for other in snapped[index + 1:]), "no pixel repaired twice"


def test_no_boxes_snap_to_no_boxes():
    assert snapped_boxes([], (480, 640)) == []


def test_different_masks_share_shapes_when_snapped():
    """64 people's masks (brush strokes over 1 % of a 1280×960 photo): without the ladder nearly
    every crop has a shape of its own, with it they share a few, and each snapped box holds the
    unsnapped one."""
    hd = HDSettings()
    runs = 0
    exact_shapes, snapped_shapes = set(), set()
    for seed in range(64):
        region = masks.RegionMask.of(images.stroke_mask(1280, 960, 0.01, seed) > 0).dilated(4)
        exact, snapped = plan(region, "crop", hd), plan(region, "crop", hd, snap=True)
        runs += len(exact)
        exact_shapes |= {run.model_shape for run in exact}
        snapped_shapes |= {run.model_shape for run in snapped}
        for run in exact:
            assert any(run.box.intersection(outer.box) == run.box for outer in snapped)
    assert len(exact_shapes) > runs * 0.9
    assert len(snapped_shapes) * 3 <= len(exact_shapes), (len(snapped_shapes), len(exact_shapes))
    assert all(side in (snapped_side(side), whole) for shape in snapped_shapes
               for side, whole in zip(shape, (960, 1280), strict=True))


@pytest.fixture(scope="module")
def snapping_engine(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="cpu", hd=HDSettings(crop_trigger=48, crop_margin=8))
    engine.backend.prefers_few_shapes = True  # as the fast path's; the CPU's reference path does not
    return engine


def test_an_engine_whose_backend_prefers_few_shapes_plans_and_estimates_snapped_crops(snapping_engine):
    mask = np.zeros((300, 400), bool)
    mask[100:130, 50:90] = True
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    job = snapping_engine.prepare(image, mask, "crop")
    assert [run.model_shape for run in job.runs] == [(64, 64)], "the 46×56 crop grows to the ladder's 64×64"
    assert snapping_engine.model_input_shapes(mask, "crop") == [(64, 64)]
    assert snapping_engine.peak_model_pixels(mask, "crop") == 64 * 64, "what admission budgets is what runs"
    result = snapping_engine.compose(job, snapping_engine.run_models(job))
    assert np.array_equal(result[~mask], image[~mask]), "more context, and still only the mask repaired"
    assert not math.isclose(float(np.abs(result[mask].astype(int) - image[mask]).mean()), 0.0)
