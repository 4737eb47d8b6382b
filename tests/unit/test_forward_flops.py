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
    dft = [ops["bmm"] + ops.get("baddbmm", 0) for ops in (small, large)]
    assert 6 * dft[0] < dft[1] <= 8 * dft[0]
