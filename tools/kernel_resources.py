"""What NVIDIA's assembler makes of the residual layers' kernels, without a GPU: for each of big-lama's
two residual-layer convolutions (lama.kernels.ReflectConvSum, as lama.fastnet builds them) and each
of their tiles, Triton compiles the kernel for a GPU architecture (its own ptxas, its own options)
and the compiled kernel's resources are read back with cuobjdump: registers a thread, the stack a
thread spills registers to, shared memory. The gather kernel's rows first (every GPU), then, on
architectures with a Tensor Memory Accelerator (sm_90 and later), the padded maps' kernel's, which
runs there from lama.fastnet.PADDED_MAP_PIXELS on.

    python tools/kernel_resources.py [--arch 90]

The Nsight Compute profile of that kernel on an H100 (`bash tools/gpu_soak.sh OUT ncu`,
docs/PROFILING.md) found it latency-bound, one of its layers spilling registers; a kernel change can
be screened here for that on the 2-core box before a GPU call measures it. Needs Triton (the test
extras) and nothing of CUDA: Triton ships ptxas and cuobjdump.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

# lama.kernels loads Triton's compiler only beside a GPU build of torch; this process compiles for a
# GPU it does not have.
torch.version.cuda = torch.version.cuda or "0.0"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from lama import kernels  # noqa: E402
from lama.fastnet import PADDED_MAP_PIXELS, FastGenerator  # noqa: E402
from lama.fastpath import fold_batchnorm  # noqa: E402
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator  # noqa: E402

POINTERS = ("src_a", "matrix_a", "src_b", "matrix_b", "bias", "residual", "dst", "flag")
INTEGERS = ("pixels", "height", "width", "out_channels")
# What Triton specialises a launch of the service on (lama.kernels.Launch.specialization): its
# tensors' addresses aligned to 16 bytes (torch's allocations are), and the output channels, a
# multiple of 16 in big-lama; the maps' sizes are left unspecialised by the kernel itself.
DIVISIBLE_BY_16 = (*POINTERS, "out_channels")
# cuobjdump --dump-resource-usage's line for a kernel: "REG:255 STACK:168 SHARED:1024 LOCAL:0 ...".
_RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)")


def residual_layer_convs() -> dict[str, kernels.ReflectConvSum]:
    """A residual block's two convolutions as lama.fastnet builds them for big-lama in fp16
    (weights on the meta device: shapes, tiles and channel blocks, no values)."""
    with torch.device("meta"):
        generator = FFCResNetGenerator(BIG_LAMA_CONFIG).eval().half()
    layer = FastGenerator(fold_batchnorm(generator)).blocks[0][0]
    return {"local": layer.local_conv, "global": layer.global_conv}


def compiled(conv: kernels.ReflectConvSum, tile: kernels.Tile, arch: int) -> dict[str, int]:
    """The gather kernel of `conv` with `tile`, compiled for sm_`arch`: registers and stack a
    thread, and shared memory (the kernel's own and what Triton asks for at launch)."""
    two = len(conv.in_channels) == 2
    constants = {"CIN_A": conv.in_channels[0], "TAPS_A": conv.taps[0], "CIN_B": conv.in_channels[1] if two else 0,
                 "TAPS_B": conv.taps[-1], "RELU": conv.relu, "RESIDUAL": True, "FLAG": True, "BLOCK_M": tile[0],
                 "BLOCK_N": tile[1], "BLOCK_K": conv.block_k, "PRECISION": "tf32"}
    signature = {**dict.fromkeys(POINTERS, "*fp16"), **dict.fromkeys(INTEGERS, "i32")}
    return _resources(kernels._conv_sum_kernel, signature, constants, DIVISIBLE_BY_16, tile, arch)


def compiled_padded(conv: kernels.ReflectConvSum, arch: int) -> dict[str, int]:
    """The same for `conv`'s padded maps' kernel with its padded tile: every operand a tensor
    descriptor of the tile's blocks (ReflectConvSum.padded)."""
    block_m, block_n = conv.padded_tile[:2]
    constants = {"CIN": conv.padded_channels, "CIN_B": conv.second_channels,
                 "RELU": conv.relu, "RESIDUAL": True, "FLAG": True, "BLOCK_M": block_m, "BLOCK_N": block_n,
                 "BLOCK_K": conv.block_k, "PRECISION": "tf32"}
    pixels, weights, outputs = (f"tensordesc<fp16[{rows},{columns}]>" for rows, columns in
                                ((block_m, conv.block_k), (conv.block_k, block_n), (block_m, block_n)))
    signature = {"source": pixels, "matrix": weights, "second": pixels, "matrix_b": weights, "bias": "*fp16",
                 "residual": outputs, "dst": outputs, "flag": "*fp16", "width": "i32", "out_channels": "i32"}
    return _resources(kernels._padded_conv_sum_kernel, signature, constants, ("bias", "flag", "out_channels"),
                      conv.padded_tile, arch)


def _resources(function, signature: dict[str, str], constants: dict, divisible_by_16: tuple[str, ...],
               tile: kernels.Tile, arch: int) -> dict[str, int]:
    divisible = {(function.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible_by_16}
    source = triton.compiler.ASTSource(fn=function, signature={**signature, **dict.fromkeys(constants, "constexpr")},
                                       constexprs=constants, attrs=divisible)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": tile[2], "num_stages": tile[3]})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        report = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)],
                                capture_output=True, text=True, check=True).stdout
    registers, stack, shared = map(int, _RESOURCES.search(report).groups())
    return {"registers": registers, "stack bytes": stack, "shared bytes": shared + kernel.metadata.shared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100, H200), 86 (A10)")
    args = parser.parse_args()
    print(f"Triton {triton.__version__}, sm_{args.arch}, fp16")
    print("| layer | from map pixels | tile (block_m, block_n, warps, stages) | registers | stack bytes | shared bytes |")
    print("|---|---|---|---|---|---|")
    convs = residual_layer_convs()
    rows = [(name, least, tile, partial(compiled, conv, tile)) for name, conv in convs.items() for least, tile in conv.tiles]
    if args.arch >= 90:  # a Tensor Memory Accelerator (lama.kernels.tma_runs)
        rows += [(f"{name}, padded maps", PADDED_MAP_PIXELS, conv.padded_tile, partial(compiled_padded, conv))
                 for name, conv in convs.items()]
    for name, least, tile, compile_for in rows:
        found = compile_for(args.arch)
        print(f"| {name} | {least} | {tile} | {found['registers']} | {found['stack bytes']} | "
              f"{found['shared bytes']} |", flush=True)


if __name__ == "__main__":
    main()
