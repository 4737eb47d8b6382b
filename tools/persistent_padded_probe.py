"""Experiment: lama.kernels._padded_conv_sum_kernel as a persistent kernel, on a GPU with a Tensor
Memory Accelerator (Hopper on).

    python tools/persistent_padded_probe.py
    TRITON_INTERPRET=1 python tools/persistent_padded_probe.py   # its arithmetic, on the CPU
    python tools/persistent_padded_probe.py --resources 90        # compiled for sm_90, on the CPU

The residual layers' padded kernel launches a program per output tile; the global layer's
reduction is short (21 steps of 64 against the local layer's 72), so each program's prologue and
epilogue weigh on it. Here a grid of one or two programs a multiprocessor loops over the tiles
(output channels the fast axis, as before); with `tl.range(flatten=True)` Triton's pipeliner may
copy the next tile's operands while a tile's epilogue runs. Launches of the padded kernel are
redirected to this one (lama.kernels._launch wrapped), so the service's own layers run it.

Prints JSON rows: each layer alone (graphs of 20 calls, random maps) at the bottlenecks 320×240
and 160×120, Triton's kernel, then each variant, then Triton's again, each with its largest
difference from the first; then whole graphed forwards at 2560×1920, 4096×4096 and 1280×960 with
the variants taking turns, and the largest difference of the forwards' outputs.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import torch

if "--resources" in sys.argv:  # compiled for a GPU this box may not have: tools/kernel_resources.py
    torch.version.cuda = torch.version.cuda or "0.0"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_explore import _graphed_forward_ms, graph_us  # noqa: E402
from lama import kernels  # noqa: E402
from lama.engine import InpaintEngine  # noqa: E402
from lama.fastnet import FastGenerator  # noqa: E402
from lama.synthetic import synthetic_case  # noqa: E402


if kernels.triton is not None:  # a GPU build of torch (lama.kernels loads Triton only there)
    from lama.kernels import _padded_conv_sum_tile

    @triton.jit(do_not_specialize=["width", "tiles"])
    def _persistent(source, matrix, second, matrix_b, bias, residual, dst, flag, width, out_channels, tiles,
                    CIN: tl.constexpr, CIN_B: tl.constexpr, RELU: tl.constexpr, RESIDUAL: tl.constexpr,
                    FLAG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    PRECISION: tl.constexpr, FLATTEN: tl.constexpr):
        """lama.kernels._padded_conv_sum_kernel's tile for each of `tiles` tiles in turn."""
        n_tiles = tl.cdiv(out_channels, BLOCK_N)
        for tile in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=FLATTEN):
            _padded_conv_sum_tile(source, matrix, second, matrix_b, bias, residual, dst, flag, width + 2,
                                  out_channels, (tile // n_tiles) * BLOCK_M, (tile % n_tiles) * BLOCK_N, CIN, CIN_B,
                                  RELU, RESIDUAL, FLAG, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)


# (programs a multiprocessor, flatten, which layers: "both" or "global"), or None: Triton's kernel.
Variant = tuple[int, bool, str] | None
variant: Variant = None
_launch = kernels._launch


def _redirected(kernel, grid, *args, **options) -> None:
    if kernel is kernels._padded_conv_sum_kernel and variant is not None:
        per_sm, flatten, layers = variant
        if layers == "both" or options["CIN_B"] > 0:  # the global layer's has a 1x1 input
            tiles = grid[0] * grid[1]
            # Under the interpreter, two "multiprocessors": programs loop over several tiles there too.
            sms = 2 if kernels.INTERPRETED else torch.cuda.get_device_properties(0).multi_processor_count
            return _launch(_persistent, (min(tiles, per_sm * sms),), *args, tiles, FLATTEN=flatten, **options)
    return _launch(kernel, grid, *args, **options)


def _name(v: Variant) -> str:
    return "triton" if v is None else f"persistent x{v[0]} {'flat' if v[1] else 'nested'} {v[2]}"


def interpreted() -> None:
    """Under Triton's interpreter (TRITON_INTERPRET=1), on the CPU: the interpreted padded check of
    tests/support/interpreted_kernels.py, with Triton's kernel and then the persistent one."""
    global variant
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
    from interpreted_kernels import padded_conv_sums
    kernels._launch = _redirected
    for variant in (None, (1, True, "both")):
        torch.manual_seed(0)
        errors: dict[str, float] = {}
        padded_conv_sums(errors)
        print(json.dumps({"kernel": _name(variant), **errors}), flush=True)


def resources(arch: int) -> None:
    """Both layers' persistent kernel, flattened and nested, compiled for sm_`arch` with their
    padded tiles (tools/kernel_resources.py): registers, spill stack, shared memory."""
    import kernel_resources
    for name, conv in kernel_resources.residual_layer_convs().items():
        for flatten in (True, False):
            found = kernel_resources.compiled_padded(conv, arch, _persistent, {"tiles": "i32", "FLATTEN": flatten})
            print(json.dumps({"layer": name, "flatten": flatten, "tile": conv.padded_tile, **found}), flush=True)


def main() -> None:
    global variant
    if "--resources" in sys.argv:
        return resources(int(sys.argv[sys.argv.index("--resources") + 1]))
    if kernels.INTERPRETED:
        return interpreted()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        sys.exit("needs a GPU with a Tensor Memory Accelerator (compute capability 9 or later)")
    kernels._launch = _redirected
    torch.manual_seed(0)
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    fast = FastGenerator(engine.backend.generator)
    layer = next(layer for pair in fast.blocks for layer in pair if layer.fused)
    layers = (("local", layer.local_conv, 0, 128), ("global", layer.global_conv, 128, 512))
    for width, height in ((320, 240), (160, 120)):
        shape = (1, height + 2, width + 2)
        padded = torch.randn(*shape, 512, device="cuda", dtype=torch.half)
        wider = torch.randn(*shape, 512, device="cuda", dtype=torch.half)
        second = torch.randn(*shape, layer.global_conv.in_channels[1], device="cuda", dtype=torch.half)
        for name, conv, lo, hi in layers:
            row, want = {"size": f"{width}x{height}", "layer": name}, None
            for variant in (None, (1, True, "both"), (1, False, "both"), (2, False, "both"), None):
                out = torch.zeros_like(padded)
                flag = torch.zeros((), device="cuda", dtype=torch.half)
                run = partial(conv.padded, padded, out[..., lo:hi], second if name == "global" else None,
                              residual=wider[..., lo:hi], overflow=flag)
                run()
                got = out[:, 1:-1, 1:-1, lo:hi].float()
                want = got if want is None else want
                key = _name(variant) + (" again" if _name(variant) in row else "")
                row[key] = {"us": round(graph_us(run), 1), "max_diff": float((got - want).abs().max())}
            print(json.dumps(row), flush=True)
    for width, height in ((2560, 1920), (4096, 4096), (1280, 960)):
        image, mask = synthetic_case(width, height)
        net_input = engine.backend.model_input(image, mask > 0)[2]
        row = {"size": f"{width}x{height}"}
        for variant in (None, (1, True, "both"), (1, True, "global"), (1, False, "both"), None, (1, True, "both"),
                        (1, True, "global")):
            fast._constants.clear()
            key = _name(variant) + " ms"
            row[key + " again" if key in row else key] = round(_graphed_forward_ms(fast, net_input), 2)
        outputs = []
        with torch.inference_mode():
            for variant in (None, (1, True, "both")):
                outputs.append(fast(net_input).float())
        variant = None
        row["max_diff"] = float((outputs[0] - outputs[1]).abs().max())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
