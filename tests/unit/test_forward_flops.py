"""tools/forward_flops.py: the count behind issue 15's floor for model time."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import forward_flops  # noqa: E402 - tools/ is put on sys.path first


@pytest.fixture(scope="module")
def fast():
    from lama.engine import InpaintEngine
    from lama.fastnet import FastGenerator
    from lama.fastpath import fold_batchnorm

    return FastGenerator(fold_batchnorm(InpaintEngine.with_random_weights(device="cpu", precision="fp32")
                                        .backend.generator))


def test_every_product_of_the_forward_falls_in_a_column_and_the_fused_1x1s_count(fast):
    """An operation outside the table's columns would be in its total but in no column; the fast
    path's 1x1 convolutions (addmm with cuBLASLt's ReLU) are unknown to FlopCounterMode by name."""
    ops = forward_flops.counted(fast, 128, 96)
    assert set(ops) <= {op for names in forward_flops.KINDS.values() for op in names}, ops
    assert ops["_addmm_activation"] > 0 and ops["convolution"] > 0 and ops["bmm"] > 0


def test_convolutions_grow_with_the_pixels_and_the_dft_products_faster(fast):
    """Twice the width and height: four times the convolutions' work; the dense DFT products
    grow with the pixels times the side, eight times here."""
    small, large = forward_flops.counted(fast, 128, 96), forward_flops.counted(fast, 256, 192)
    assert large["convolution"] == 4 * small["convolution"]
    dft = [ops["bmm"] + ops["baddbmm_"] for ops in (small, large)]
    assert 6 * dft[0] < dft[1] <= 8 * dft[0]


def test_the_dft_column_counts_all_four_products_of_every_fourier_unit(fast):
    """FlopCounterMode skips an operation it has no formula for (the in-place baddbmm that adds
    the inverse along H to the unit's input, once): the column must hold what the DFT matrices'
    shapes say the four products take, (M, K) times the columns each is applied to."""
    ops = forward_flops.counted(fast, 256, 192)
    forward_h, forward_w, inverse_w, inverse_h = fast.constants(24, 32).dft
    channels = fast._spectral_layers[0].w1.shape[0]
    rows, width = forward_h.shape[0] // 2, forward_w.shape[1] // 2
    per_unit = 2 * (forward_h.numel() * width * channels + (forward_w.numel() + inverse_w.numel()) * rows * channels
                    + inverse_h.numel() * width * channels)
    dft = sum(ops[name] for name in forward_flops.KINDS["DFT products"] if name in ops)
    assert dft == len(fast._spectral_layers) * per_unit
