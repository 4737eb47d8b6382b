"""lama.hopper_conv's warp-specialised kernel against Triton's padded kernel on a Hopper GPU.

    python tools/hopper_conv_probe.py [--tiles 128,128,4,4 ...] [--persistent 128,128,4,4,1 ...]

Prints JSON rows: first each residual layer alone (big-lama's local and global output, random
weights and maps) at the padded stage's bottlenecks 320×240 (2560×1920 inputs), 160×120 and
512×512, Triton's kernel and lama.hopper_conv's with each of `--tiles` (block_m, block_n, default
warps, stages; lama.kernels.HOPPER_PADDED_TILE replaced), the largest difference from Triton's
output beside each time; an inf in the input must set the overflow flag. Then whole graphed
forwards (as the service replays them) at 2560×1920, 1280×960 and 4096×4096, Triton's kernel and
the Hopper one taking turns twice, with the largest difference of their outputs. Last, the
`--persistent` variants (a grid of `programs a multiprocessor` × the multiprocessors, each program
looping over tiles, the copying warp running ahead into the next tile while the products' warps
finish one): kept out of lama until they measure faster. Needs a compute capability 9.0 GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_explore import _graphed_forward_ms, cuda_median_ms  # noqa: E402

from lama import hopper_conv, kernels  # noqa: E402
from lama.engine import InpaintEngine  # noqa: E402
from lama.fastnet import FastGenerator  # noqa: E402
from lama.synthetic import synthetic_case  # noqa: E402

if hopper_conv.gluon is not None:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

    _tma_load = hopper_conv._tma_load

    @gluon.jit
    def _persistent_copies(source, matrix, second, matrix_b, ready, empty, a_bufs, b_bufs, width, tiles, n_tiles,
                           CIN: gl.constexpr, CIN_B: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                           BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
        chunks: gl.constexpr = CIN // BLOCK_K
        tap_steps: gl.constexpr = 9 * chunks
        nbytes: gl.constexpr = source.block_type.nbytes + matrix.block_type.nbytes
        padded_width = width + 2
        counter = 0
        for tile in range(gl.program_id(0), tiles, gl.num_programs(0)):
            n0 = (tile % n_tiles) * BLOCK_N
            q0 = (tile // n_tiles) * BLOCK_M
            for step in range(tap_steps + CIN_B // BLOCK_K):
                index = counter % STAGES
                mbarrier.wait(empty.index(index), ((counter // STAGES) & 1) ^ 1)
                bar = ready.index(index)
                mbarrier.expect(bar, nbytes)
                if step < tap_steps:
                    tap = step // chunks
                    channel = (step % chunks) * BLOCK_K
                    _tma_load(source, [q0 + (tap // 3) * padded_width + tap % 3, channel], bar, a_bufs.index(index))
                    _tma_load(matrix, [tap * CIN + channel, n0], bar, b_bufs.index(index))
                else:
                    k = (step - tap_steps) * BLOCK_K
                    _tma_load(second, [q0 + padded_width + 1, k], bar, a_bufs.index(index))
                    _tma_load(matrix_b, [k, n0], bar, b_bufs.index(index))
                counter += 1

    @gluon.jit
    def _persistent_tiles(ready, empty, a_bufs, b_bufs, out_smem, residual_in, bias, residual, dst, flag, width,
                          out_channels, tiles, n_tiles, CIN: gl.constexpr, CIN_B: gl.constexpr, RELU: gl.constexpr,
                          RESIDUAL: gl.constexpr, FLAG: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                          BLOCK_K: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr):
        steps: gl.constexpr = 9 * (CIN // BLOCK_K) + CIN_B // BLOCK_K
        padded_width = width + 2
        counter = 0
        phase = 0
        for tile in range(gl.program_id(0), tiles, gl.num_programs(0)):
            n0 = (tile % n_tiles) * BLOCK_N
            inside = (tile // n_tiles) * BLOCK_M + padded_width + 1
            if RESIDUAL:  # into the output's buffer once the last tile's store has read it
                tma.store_wait(pendings=0)
                mbarrier.expect(residual_in, residual.block_type.nbytes)
                _tma_load(residual, [inside, n0], residual_in, out_smem)
            acc = gl.zeros((BLOCK_M, BLOCK_N), gl.float32, layout)
            for step in range(steps):
                index = counter % STAGES
                mbarrier.wait(ready.index(index), (counter // STAGES) & 1)
                acc = warpgroup_mma(a_bufs.index(index), b_bufs.index(index), acc, is_async=True)
                acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
                mbarrier.arrive(empty.index((counter + STAGES - 1) % STAGES), pred=step > 0)
                counter += 1
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(empty.index((counter + STAGES - 1) % STAGES))
            hopper_conv.epilogue(acc, out_smem, residual_in, phase, bias, dst, flag, n0, inside, out_channels, RELU,
                                 RESIDUAL, FLAG, layout)
            phase ^= 1
        tma.store_wait(pendings=0)

    @gluon.jit
    def _persistent_kernel(source, matrix, second, matrix_b, bias, residual, dst, flag, width, out_channels, tiles,
                           CIN: gl.constexpr, CIN_B: gl.constexpr, RELU: gl.constexpr, RESIDUAL: gl.constexpr,
                           FLAG: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr):
        BLOCK_M: gl.constexpr = source.block_type.shape[0]
        BLOCK_K: gl.constexpr = source.block_type.shape[1]
        BLOCK_N: gl.constexpr = matrix.block_type.shape[1]
        n_tiles = gl.cdiv(out_channels, BLOCK_N)
        a_bufs, b_bufs, out_smem, ready, empty, residual_in = hopper_conv.buffers(source, matrix, dst, STAGES)
        layout: gl.constexpr = hopper_conv.accumulator_layout(BLOCK_M, BLOCK_N, num_warps)
        gl.warp_specialize([
            (_persistent_tiles, (ready, empty, a_bufs, b_bufs, out_smem, residual_in, bias, residual, dst, flag, width,
                                 out_channels, tiles, n_tiles, CIN, CIN_B, RELU, RESIDUAL, FLAG, BLOCK_M, BLOCK_N,
                                 BLOCK_K, STAGES, layout)),
            (_persistent_copies, (source, matrix, second, matrix_b, ready, empty, a_bufs, b_bufs, width, tiles,
                                  n_tiles, CIN, CIN_B, BLOCK_M, BLOCK_N, BLOCK_K, STAGES)),
        ], [1], [40])


def persistent_padded(conv: kernels.ReflectConvSum, variant: tuple[int, ...], source, out, second=None,
                      residual=None, overflow=None) -> None:
    """ReflectConvSum.padded through _persistent_kernel; `variant`: block_m, block_n, default
    warps, stages, programs a multiprocessor."""
    block_m, block_n, num_warps, stages, per_sm = variant
    rows = source.numel() // source.shape[3]
    tiles = -(-conv.out_channels // block_n) * -(-rows // block_m)
    programs = min(tiles, per_sm * torch.cuda.get_device_properties(source.device).multi_processor_count)
    _persistent_kernel[(programs,)](
        *conv.padded_descriptors(hopper_conv.descriptor, block_m, block_n, source, out, second, residual),
        kernels._flag_of(overflow, source), source.shape[2] - 2, conv.out_channels, tiles, CIN=conv.padded_channels,
        CIN_B=conv.padded_cin_b, RELU=conv.relu, RESIDUAL=residual is not None, FLAG=overflow is not None,
        STAGES=stages, num_warps=num_warps)


def with_kernel(hopper: bool, tile: kernels.Tile = kernels.HOPPER_PADDED_TILE):
    """Sets which kernel ReflectConvSum.padded runs (and the Hopper one's tile)."""
    hopper_conv.runs = (lambda x: x.is_cuda and x.dtype == torch.float16) if hopper else (lambda x: False)
    kernels.HOPPER_PADDED_TILE = tile


def _tile(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", nargs="*", type=_tile, default=[kernels.HOPPER_PADDED_TILE, (128, 128, 8, 4),
                                                                   (128, 128, 4, 3), (128, 128, 4, 5)])
    parser.add_argument("--persistent", nargs="*", type=_tile, default=[(128, 128, 4, 4, 1), (128, 128, 8, 4, 1)])
    args = parser.parse_args()
    if hopper_conv.gluon is None or torch.cuda.get_device_capability() != (9, 0):
        sys.exit("needs a compute capability 9.0 GPU and a Triton with Gluon's Hopper module")
    default_tile = kernels.HOPPER_PADDED_TILE
    torch.manual_seed(0)
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    fast = FastGenerator(engine.backend.generator)
    layer = next(layer for pair in fast.blocks for layer in pair if layer.fused)
    layers = (("local", layer.local_conv, 0, 128), ("global", layer.global_conv, 128, 512))

    def maps(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (1, height + 2, width + 2)
        return (torch.randn(*shape, 512, device="cuda", dtype=torch.half),
                torch.randn(*shape, 512, device="cuda", dtype=torch.half),
                torch.randn(*shape, layer.global_conv.in_channels[1], device="cuda", dtype=torch.half))

    def layer_us(run, out: torch.Tensor, lo: int, hi: int, want: torch.Tensor | None) -> dict:
        run(out)
        torch.cuda.synchronize()
        row = {"us": round(cuda_median_ms(partial(run, out), runs=50) * 1000, 1)}
        if want is not None:
            row["max_diff"] = float((out[:, 1:-1, 1:-1, lo:hi].float() - want[:, 1:-1, 1:-1, lo:hi].float()).abs().max())
        return row

    for width, height in ((320, 240), (160, 120), (512, 512)):
        padded, wider, second = maps(width, height)
        for name, conv, lo, hi in layers:
            sec = second if name == "global" else None
            flag = torch.zeros((), device="cuda", dtype=torch.half)

            def run(out, conv=conv, lo=lo, hi=hi, sec=sec, flag=flag):
                conv.padded(padded, out[..., lo:hi], sec, residual=wider[..., lo:hi], overflow=flag)

            with_kernel(False)
            want = torch.zeros_like(padded)
            row = {"size": f"{width}x{height}", "layer": name, "triton": layer_us(run, want, lo, hi, None)}
            for tile in args.tiles:
                with_kernel(True, tile)
                row["hopper " + "x".join(map(str, tile))] = layer_us(run, torch.zeros_like(padded), lo, hi, want)
            row["flag"] = float(flag)
            print(json.dumps(row), flush=True)
    padded[0, 5, 7, 3] = float("inf")
    flag = torch.zeros((), device="cuda", dtype=torch.half)
    with_kernel(True, default_tile)
    layers[0][1].padded(padded, torch.zeros_like(padded)[..., :128], overflow=flag)
    print(json.dumps({"inf in the input, flag": str(float(flag))}), flush=True)

    for width, height in ((2560, 1920), (1280, 960), (4096, 4096)):
        image, mask = synthetic_case(width, height)
        net_input = engine.backend.model_input(image, mask > 0)[2]
        row = {"size": f"{width}x{height}"}
        for name, hopper in (("triton_ms", False), ("hopper_ms", True), ("triton_again_ms", False),
                             ("hopper_again_ms", True)):
            with_kernel(hopper, default_tile)
            fast._constants.clear()
            row[name] = round(_graphed_forward_ms(fast, net_input), 2)
        with torch.inference_mode():
            outputs = []
            for hopper in (False, True):
                with_kernel(hopper, default_tile)
                outputs.append(fast(net_input).float())
        row["max_diff"] = float((outputs[0] - outputs[1]).abs().max())
        print(json.dumps(row), flush=True)

    # Last: a deadlock in a variant loses only these rows.
    padded, wider, second = maps(320, 240)
    for variant in args.persistent:
        for name, conv, lo, hi in layers:
            sec = second if name == "global" else None
            flag = torch.zeros((), device="cuda", dtype=torch.half)
            with_kernel(False)
            want = torch.zeros_like(padded)
            conv.padded(padded, want[..., lo:hi], sec, residual=wider[..., lo:hi], overflow=flag)

            def run(out, conv=conv, lo=lo, hi=hi, sec=sec, flag=flag, variant=variant):
                persistent_padded(conv, variant, padded, out[..., lo:hi], sec, wider[..., lo:hi], flag)

            row = {"size": "320x240", "layer": name, "persistent " + "x".join(map(str, variant)):
                   layer_us(run, torch.zeros_like(padded), lo, hi, want), "flag": float(flag)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
