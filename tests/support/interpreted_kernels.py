"""lama.kernels' Triton kernels run by Triton's interpreter on the CPU, each against its torch
version, and the fast path's whole forward of the tiny checkpoint against the reference model:
the CPU-only CI's check of the GPU kernels' arithmetic and indexing (tests/unit/test_kernels_interpreted.py
runs this in a process of its own, whose environment turns the interpreter on before Triton loads).

    TRITON_INTERPRET=1 python tests/support/interpreted_kernels.py TINY_CHECKPOINT_DIR

Prints one JSON object: each check's name and its relative error, ‖triton − torch‖ / ‖torch‖.
Random inputs at odd sizes, batches of 1 and 2; fp32 (exact products) and fp16.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lama import kernels  # noqa: E402
from lama.checkpoint import build_generator, load_checkpoint  # noqa: E402
from lama.fastnet import FastGenerator  # noqa: E402
from lama.fastpath import fold_batchnorm  # noqa: E402


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want))


def nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def padded(x: torch.Tensor, pad: int) -> torch.Tensor:
    """torch's own reflect padding, of an NHWC map, as NCHW."""
    return F.pad(nchw(x), (pad,) * 4, mode="reflect") if pad else nchw(x)


def pads(errors: dict[str, float]) -> None:
    for batch, height, width, channels, pad, relu, bias in ((1, 7, 9, 24, 1, False, False),
                                                            (2, 13, 6, 16, 3, True, True)):
        x = torch.randn(batch, height, width, channels)
        b = torch.randn(channels) if bias else None
        source = x + b if bias else x
        want = padded(source.relu() if relu else source, pad).permute(0, 2, 3, 1)
        errors[f"reflect_pad {batch}x{height}x{width}x{channels} pad {pad}"] = relative_error(
            kernels.reflect_pad(x, pad, relu, b), want)


def convs(errors: dict[str, float]) -> None:
    for cin, cout, activation, relu_input, dtype in ((4, 64, "relu", False, torch.float32),
                                                     (64, 3, "sigmoid", True, torch.float32),
                                                     (16, 16, "tanh", False, torch.float16),
                                                     (8, 5, "none", True, torch.float32)):
        weight = torch.randn(cout, cin, 7, 7) / (7 * cin ** 0.5)
        bias, input_bias = torch.randn(cout), torch.randn(cin)
        x = torch.randn(2, 11, 16, cin)
        source = (x + input_bias).relu() if relu_input else x + input_bias
        want = F.conv2d(padded(source, 3), weight, bias)
        want = (want if activation == "none" else getattr(torch, activation)(want)).permute(0, 2, 3, 1)
        conv = kernels.ReflectConv(weight.to(dtype), bias.to(dtype), activation)
        got = conv(x.to(dtype), relu_input=relu_input, input_bias=input_bias.to(dtype))
        errors[f"ReflectConv {cin}->{cout} {activation} {str(dtype)[6:]}"] = relative_error(got, want)


def conv_sums(errors: dict[str, float]) -> None:
    for shapes, cout, relu, residual, dtype in ((((16, 3), (48, 3)), 16, True, True, torch.float32),
                                                (((16, 3), (32, 1)), 48, True, False, torch.float32),
                                                (((32, 3),), 16, False, True, torch.float16)):
        weights = [torch.randn(cout, cin, k, k) / (k * cin ** 0.5) for cin, k in shapes]
        bias = torch.randn(cout)
        for batch, height, width in ((1, 2, 2), (2, 9, 13)):
            inputs = [torch.randn(batch, height, width, cin) for cin, _ in shapes]
            extra = torch.randn(batch, height, width, cout) if residual else None
            want = bias.view(1, -1, 1, 1) + sum(F.conv2d(padded(x, w.shape[-1] // 2), w) for x, w in zip(inputs, weights))
            want = (want.relu() if relu else want).permute(0, 2, 3, 1)
            want = want + extra if residual else want
            conv = kernels.ReflectConvSum([w.to(dtype) for w in weights], bias.to(dtype), relu)
            got = conv([x.to(dtype) for x in inputs], extra.to(dtype) if residual else None)
            name = "+".join(f"{cin}x{k}" for cin, k in shapes)
            errors[f"ReflectConvSum {name}->{cout} {batch}x{height}x{width} {str(dtype)[6:]}"] = relative_error(got, want)


def forward(errors: dict[str, float], tiny: Path) -> None:
    """The whole fast-path forward (every kernel the tiny checkpoint's shapes reach, with the
    torch operations between them) against the reference model, in fp32."""
    generator = build_generator(load_checkpoint(tiny)).eval()
    fast = FastGenerator(fold_batchnorm(generator))
    x = torch.rand(1, 4, 40, 56)
    with torch.inference_mode():
        errors["FastGenerator tiny 56x40"] = relative_error(fast(x), generator(x))


def main() -> None:
    if not kernels.INTERPRETED:
        raise SystemExit("run with TRITON_INTERPRET=1, with Triton installed")
    torch.manual_seed(0)
    errors: dict[str, float] = {}
    pads(errors)
    convs(errors)
    conv_sums(errors)
    forward(errors, Path(sys.argv[1]))
    print(json.dumps(errors))


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
