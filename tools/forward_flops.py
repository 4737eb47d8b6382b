"""The arithmetic of one big-lama forward as the fast path runs it: the matrix and convolution
operations' floating-point operations at each input size, by operation and by the fast path's
layer kinds, and the time they would take at a GPU's peak rate.

    python tools/forward_flops.py [--sizes 640x480,1280x960,2560x1920,4096x4096] [--peak-tflops 989]
                                  [--model-ms 3.5,8.6,31.4,102]

Counted, not run: the forward runs on fake tensors (torch's FakeTensorMode), so it needs neither
a GPU nor the seconds the CPU would take, and torch's FlopCounterMode counts each product
(2 per multiply-add). Elementwise passes, padding and reductions are left out: they are memory
traffic, not arithmetic. `--peak-tflops`: the GPU's dense fp16 tensor-core rate (989 for an H100
SXM, the same for an H200); `--model-ms`: measured model times (`python -m lama bench`), one per
size, to print the share of that rate they reach. Issue 15's floor for model time is this
arithmetic at peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, addmm_flop, baddbmm_flop, register_flop_formula

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lama.engine import InpaintEngine  # noqa: E402 - the project root is put on sys.path first
from lama.fastnet import FastGenerator  # noqa: E402
from lama.fastpath import fold_batchnorm  # noqa: E402

H100_DENSE_FP16_TFLOPS = 989.0
# The table's columns: the aten operations the fast path's products run as.
KINDS = {"convolutions": ("convolution",), "DFT products": ("bmm", "baddbmm", "baddbmm_"),
         "1x1 products": ("_addmm_activation", "addmm", "mm")}


# The fast path's 1x1 convolutions with their bias and ReLU in cuBLASLt's epilogue: an addmm that
# FlopCounterMode does not know by this name.
@register_flop_formula(torch.ops.aten._addmm_activation)
def _addmm_activation_flop(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
    return addmm_flop(self_shape, a_shape, b_shape)


# The Fourier unit's last product adds into its input in place; FlopCounterMode counts the
# out-of-place baddbmm only, and skips operations it has no formula for without a word.
@register_flop_formula(torch.ops.aten.baddbmm_)
def _baddbmm_in_place_flop(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
    return baddbmm_flop(self_shape, a_shape, b_shape)


def counted(fast: FastGenerator, width: int, height: int) -> dict[str, int]:
    """Operations of one forward at a width×height input, by aten operation."""
    with torch.inference_mode(), FakeTensorMode(allow_non_fake_inputs=True), \
            FlopCounterMode(display=False) as counter:
        fast(torch.empty(1, 4, height, width))
    return {str(op).removeprefix("aten."): count for op, count in counter.get_flop_counts()["Global"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="640x480,1280x960,2560x1920,4096x4096")
    parser.add_argument("--peak-tflops", type=float, default=H100_DENSE_FP16_TFLOPS)
    parser.add_argument("--model-ms", help="measured model ms, one per size, comma-separated")
    args = parser.parse_args()
    sizes = [tuple(map(int, size.split("x"))) for size in args.sizes.split(",")]
    measured = [float(ms) for ms in args.model_ms.split(",")] if args.model_ms else None
    if measured is not None and len(measured) != len(sizes):
        parser.error("--model-ms needs one time per size")

    engine = InpaintEngine.with_random_weights(device="cpu", precision="fp32")
    fast = FastGenerator(fold_batchnorm(engine.backend.generator))
    print(f"big-lama (random full-size weights), the fast path's forward; peak {args.peak_tflops:g} TFLOP/s")
    header = "| size | TFLOP | of which " + " | ".join(KINDS) + " | at peak ms |" + \
             (" model ms | share of peak |" if measured else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for index, (width, height) in enumerate(sizes):
        ops = counted(fast, width, height)
        total = sum(ops.values())
        floor_ms = total / (args.peak_tflops * 1e12) * 1000
        row = f"| {width}×{height} | {total / 1e12:.2f} | " + " | ".join(
            f"{sum(ops.get(op, 0) for op in names) / 1e12:.2f}" for names in KINDS.values()) + f" | {floor_ms:.1f} |"
        if measured:
            row += f" {measured[index]:g} | {floor_ms / measured[index]:.0%} |"
        print(row)


if __name__ == "__main__":
    main()
