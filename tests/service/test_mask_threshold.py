"""mask_threshold: which mask values mean "repair", the same in the engine's masks module, the
HTTP API, the settings and the CLI. The default (127) keeps a JPEG mask's ringing and a soft
brush's faint fringe out of the repair; 0 is the official pipeline's rule (any nonzero value)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from webui.settings import load_settings, parse_args
from lama import masks
from support.app import decode, encode, error_of, make_case, repair
from support.cli import run_lama as run_cli

BOX = (20, 24, 44, 56)  # make_case's rectangle: top, left, bottom, right
FRINGE = 40  # a soft brush's fade: far below the default threshold, above 0


def soft_mask() -> np.ndarray:
    """make_case's rectangle at 255 inside an 8 px band of faint paint."""
    _, mask = make_case(box=BOX)
    top, left, bottom, right = BOX
    soft = np.zeros_like(mask)
    soft[top - 8:bottom + 8, left - 8:right + 8] = FRINGE
    return np.maximum(soft, mask)


def changed(result: np.ndarray, image: np.ndarray) -> np.ndarray:
    return (result != image).any(axis=2)


def test_binarize_keeps_values_above_the_threshold_and_boolean_masks_as_they_are():
    values = np.array([[0, 1, 126, 127, 128, 255]], np.uint8)
    assert masks.binarize(values).tolist() == [[False, True, True, True, True, True]]  # the official rule
    assert masks.binarize(values, 127).tolist() == [[False, False, False, False, True, True]]
    assert masks.binarize(values, masks.MAX_THRESHOLD).tolist() == [[False] * 5 + [True]]
    decided = np.array([[True, False]])
    assert masks.binarize(decided, 200) is decided


def test_the_api_default_leaves_a_faint_fringe_alone_and_zero_repairs_it(client):
    image, _ = make_case(box=BOX)
    mask = soft_mask()
    core = np.zeros(mask.shape, bool)
    core[BOX[0]:BOX[2], BOX[1]:BOX[3]] = True

    default = decode(repair(client, image, mask, dilate=0, feather=0).content)
    assert not changed(default, image)[~core].any()  # the fringe is photo, untouched
    assert changed(default, image)[core].mean() > 0.9

    official = decode(repair(client, image, mask, dilate=0, feather=0, mask_threshold=0).content)
    fringe = (mask == FRINGE)
    assert changed(official, image)[fringe].mean() > 0.9
    assert not changed(official, image)[mask == 0].any()


def test_a_jpeg_mask_repairs_about_its_stroke_by_default(client):
    image, _ = make_case()
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.line(mask, (10, 60), (85, 12), 255, thickness=9, lineType=cv2.LINE_AA)  # a brush stroke
    ok, jpeg_mask = cv2.imencode(".jpg", mask, [cv2.IMWRITE_JPEG_QUALITY, 80])  # as an editor saves it
    assert ok
    stroke_share = (mask > 127).mean()
    default = changed(decode(repair(client, image, jpeg_mask.tobytes(), dilate=0, feather=0).content), image)
    official = changed(decode(repair(client, image, jpeg_mask.tobytes(), dilate=0, feather=0,
                                     mask_threshold=0).content), image)
    # JPEG's ringing leaves faint values all around the stroke: the official rule repairs them too.
    assert abs(default.mean() - stroke_share) < 0.02
    assert official.mean() > 1.5 * default.mean()


@pytest.mark.parametrize("value", [-1, 255, 1000])
def test_a_threshold_out_of_range_is_refused(client, value):
    image, mask = make_case()
    message = error_of(repair(client, image, mask, mask_threshold=value), 422, "invalid_option")
    assert "mask_threshold must be between 0 and 254" in message


def test_the_setting_is_checked_at_start_up():
    with pytest.raises(SystemExit, match="mask_threshold must be a whole number from 0 to 254"):
        load_settings(parse_args(["--mask-threshold", "255"]))


def test_the_cli_thresholds_at_127_unless_told(tmp_path, tiny_dir):
    image, _ = make_case(box=BOX)
    mask = soft_mask()
    (tmp_path / "a.png").write_bytes(encode(image))
    (tmp_path / "m.png").write_bytes(encode(mask))

    def cli_result(*flags: str) -> np.ndarray:
        out = tmp_path / f"out{len(flags)}.png"
        done = run_cli("inpaint", "--model", tiny_dir, "--image", tmp_path / "a.png", "--mask", tmp_path / "m.png",
                       "--output", out, "--device", "cpu", *flags)
        assert done.returncode == 0, done.stderr
        return cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)

    fringe = mask == FRINGE
    assert not changed(cli_result(), image)[fringe].any()
    assert changed(cli_result("--mask-threshold", "0"), image)[fringe].mean() > 0.9
    refused = run_cli("inpaint", "--model", tiny_dir, "--image", tmp_path / "a.png", "--mask", tmp_path / "m.png",
                      "--output", tmp_path / "x.png", "--mask-threshold", "300")
    assert refused.returncode == 2 and "must be from 0 to 254" in refused.stderr
