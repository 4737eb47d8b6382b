"""lama.fallback: Telea inpainting as the weight-free default."""

from __future__ import annotations

import numpy as np
import pytest

from lama.fallback import telea_inpaint


def gray_with_black_square() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((64, 64, 3), 128, np.uint8)
    image[24:40, 24:40] = 0
    mask = np.zeros((64, 64), np.uint8)
    mask[24:40, 24:40] = 255
    return image, mask


def test_masked_square_is_filled_from_its_surroundings():
    image, mask = gray_with_black_square()
    result = telea_inpaint(image, mask)
    assert result.shape == (64, 64, 3) and result.dtype == np.uint8
    inside = result[24:40, 24:40].astype(int)
    assert np.abs(inside - 128).max() <= 3  # was 0 (black); now the surrounding gray


def test_pixels_outside_the_mask_are_untouched():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    mask = np.zeros((48, 40), np.uint8)
    mask[10:20, 5:30] = 1  # any nonzero value means fill
    result = telea_inpaint(image, mask, radius=3)
    keep = mask == 0
    np.testing.assert_array_equal(result[keep], image[keep])
    assert not np.array_equal(result[~keep], image[~keep])


def test_channels_are_filled_independently_so_rgb_stays_rgb():
    image = np.zeros((32, 32, 3), np.uint8)
    image[...] = (200, 40, 10)  # red-ish: a BGR mix-up would come back blue-ish
    image[12:20, 12:20] = 0
    mask = np.zeros((32, 32), bool)
    mask[12:20, 12:20] = True
    filled = telea_inpaint(image, mask)[16, 16].astype(int)
    assert np.abs(filled - [200, 40, 10]).max() <= 3


def test_input_is_not_modified():
    image, mask = gray_with_black_square()
    before = image.copy()
    telea_inpaint(image, mask)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    ("image", "mask"),
    [
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)),
        (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8)),
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8)),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8)),
    ],
    ids=["gray", "rgba", "float", "mask-shape"],
)
def test_wrong_inputs_are_refused(image, mask):
    with pytest.raises(ValueError):
        telea_inpaint(image, mask)


def test_works_on_a_cropped_view():
    # The engine's crop strategy passes slices of a larger image, which are not contiguous.
    image, mask = gray_with_black_square()
    big = np.zeros((100, 100, 3), np.uint8)
    big[10:74, 20:84] = image
    view = big[10:74, 20:84]
    assert not view.flags["C_CONTIGUOUS"]
    result = telea_inpaint(view, mask)
    assert np.abs(result[24:40, 24:40].astype(int) - 128).max() <= 3
