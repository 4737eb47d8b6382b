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
import math
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
        if cout == 3:  # runs of adjacent output columns; 13 columns: the last run passes the map's edge
            # (one picture of 5 rows: the batch and the rows' tiles are the other cases' to check,
            # and the interpreter's time goes with the programs, 6 here against 24 for all of x)
            narrow = x[:1, :5, :13]
            source = (narrow + input_bias).relu() if relu_input else narrow + input_bias
            want = getattr(torch, activation)(F.conv2d(padded(source, 3), weight, bias)).permute(0, 2, 3, 1)
            conv.tune(block_m=2, num_warps=4, out_rows=2, out_columns=4)
            got = conv(narrow.to(dtype), relu_input=relu_input, input_bias=input_bias.to(dtype))
            errors[f"ReflectConv {cin}->{cout} {activation} {str(dtype)[6:]}, runs of 4 columns"] = relative_error(
                got, want)
        if cout == 64:  # the stem's way: its output written reflect-padded by 1 (border by fill_border)
            got = conv(x.to(dtype), relu_input=relu_input, input_bias=input_bias.to(dtype), padded_by=1)
            errors[f"ReflectConv {cin}->{cout} {activation} {str(dtype)[6:]}, output padded"] = relative_error(
                got, padded(want, 1).permute(0, 2, 3, 1))


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


def padded_conv_sums(errors: dict[str, float]) -> None:
    """ReflectConvSum.padded, a residual block's two layers as lama.fastnet runs them on maps kept
    padded: the local output from both inputs side by side, the global one from the local input
    and a 1x1 input, the residual read from the block's padded input; then fill_border. The
    whole padded output against reflect_pad of torch's result (border included)."""
    local_in, global_in, fourier, dtype = 16, 48, 32, torch.float32
    for batch, height, width in ((1, 2, 2), (2, 9, 13)):
        x_l, x_g = torch.randn(batch, height, width, local_in), torch.randn(batch, height, width, global_in)
        summed = torch.randn(batch, height, width, fourier)
        weights = {"l2l": torch.randn(local_in, local_in, 3, 3) / 12, "g2l": torch.randn(local_in, global_in, 3, 3) / 20,
                   "l2g": torch.randn(global_in, local_in, 3, 3) / 12, "conv2": torch.randn(global_in, fourier, 1, 1) / 6}
        b_l, b_g = torch.randn(local_in), torch.randn(global_in)
        local = kernels.ReflectConvSum([weights["l2l"], weights["g2l"]], b_l, True)
        global_ = kernels.ReflectConvSum([weights["l2g"], weights["conv2"]], b_g, True)
        source = kernels.reflect_pad(torch.cat([x_l, x_g], dim=3), 1)
        out = torch.full_like(source, float("nan"))
        local.padded(source, out[..., :local_in], residual=source[..., :local_in])
        global_.padded(source, out[..., local_in:], padded(summed, 1).permute(0, 2, 3, 1).contiguous(),
                       residual=source[..., local_in:])
        kernels.fill_border(out)
        want_l = F.conv2d(padded(x_l, 1), weights["l2l"]) + F.conv2d(padded(x_g, 1), weights["g2l"])
        want_g = F.conv2d(padded(x_l, 1), weights["l2g"]) + F.conv2d(nchw(summed), weights["conv2"])
        want = torch.cat([(want_l + b_l.view(1, -1, 1, 1)).relu(), (want_g + b_g.view(1, -1, 1, 1)).relu()], dim=1)
        want = want.permute(0, 2, 3, 1) + torch.cat([x_l, x_g], dim=3)
        errors[f"ReflectConvSum.padded {batch}x{height}x{width} {str(dtype)[6:]}"] = relative_error(
            out, padded(want, 1).permute(0, 2, 3, 1))


def overflow_flags(errors: dict[str, float]) -> None:
    """ReflectConvSum's `overflow` flag in fp16, both kernels (a global layer's: a 3x3 input, a
    1x1 input, a residual): 0 for finite maps, also where a sum far below fp16's range is cut to
    0 by the ReLU; nan where an input holds inf or nan (also an inf the ReLU would cut to 0) and
    where the output passes 65,504 from finite inputs. Each case's entry is 0 where the flag is
    as expected, 1 where not."""
    dtype = torch.float16
    local_in, fourier, cout, batch, height, width = 16, 32, 16, 2, 9, 13
    weights = [torch.randn(cout, local_in, 3, 3) / 12, torch.randn(cout, fourier, 1, 1).abs() / 6]
    conv = kernels.ReflectConvSum([w.to(dtype) for w in weights], torch.zeros(cout, dtype=dtype), True)
    cases = {"finite": (None, None, 0.0, False), "inf in the 1x1 input": ("second", float("inf"), 0.0, True),
             "-inf in the 1x1 input": ("second", float("-inf"), 0.0, True),
             "nan in the 3x3 input": ("first", float("nan"), 0.0, True),
             "sum cut by the ReLU": ("second", -30000.0, 0.0, False),
             "output past 65,504": (None, None, 60000.0, True)}
    for case, (where, value, residual_value, flagged) in cases.items():
        x = torch.randn(batch, height, width, local_in).to(dtype)
        second = torch.rand(batch, height, width, fourier).to(dtype)
        if where is not None:
            (x if where == "first" else second)[1, 4, 6, :] = value
        residual = torch.full((batch, height, width, cout), 1 + residual_value, dtype=dtype)
        if residual_value:
            conv.bias.fill_(residual_value)
        gather_flag = torch.zeros((), dtype=dtype)
        conv([x, second], residual, overflow=gather_flag)
        padded_flag = torch.zeros((), dtype=dtype)
        source = kernels.reflect_pad(x, 1)
        conv.padded(source, torch.empty_like(kernels.reflect_pad(residual, 1)), kernels.reflect_pad(second, 1),
                    kernels.reflect_pad(residual, 1), overflow=padded_flag)
        conv.bias.zero_()
        for kernel, flag in (("gather", gather_flag), ("padded", padded_flag)):
            errors[f"overflow flag {kernel}, {case}"] = float(math.isnan(float(flag)) != flagged)


def forward(errors: dict[str, float], tiny: Path) -> None:
    """The whole fast-path forward (every kernel the tiny checkpoint's shapes reach, with the
    torch operations between them) against the reference model, in fp32: once as it runs at
    the tiny bottleneck, once with the residual blocks on padded maps, as from 320×240 on."""
    generator = build_generator(load_checkpoint(tiny)).eval()
    fast = FastGenerator(fold_batchnorm(generator))
    x = torch.rand(1, 4, 40, 56)
    with torch.inference_mode():
        want = generator(x)
        errors["FastGenerator tiny 56x40"] = relative_error(fast(x), want)
        fast.padded_min_pixels = 0
        fast._constants.clear()  # made with the padded maps' DFT matrices from now on
        errors["FastGenerator tiny 56x40, padded maps"] = relative_error(fast(x), want)


def main() -> None:
    if not kernels.INTERPRETED:
        raise SystemExit("run with TRITON_INTERPRET=1, with Triton installed")
    torch.manual_seed(0)
    errors: dict[str, float] = {}
    pads(errors)
    convs(errors)
    conv_sums(errors)
    padded_conv_sums(errors)
    overflow_flags(errors)
    forward(errors, Path(sys.argv[1]))
    print(json.dumps(errors))


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
