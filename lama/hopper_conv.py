"""The residual layers' convolution sum on Hopper GPUs (compute capability 9.0) as a
warp-specialised kernel, written in Gluon (Triton's lower-level language): what
lama.kernels.ReflectConvSum.padded runs there in fp16.

Triton's own kernel for that sum (lama.kernels._padded_conv_sum_kernel) issues its operands'
copies, waits for them and issues the tensor cores' products from the same warps: Nsight Compute
found its tensor pipe 43 % busy on an H100, an instruction issued every 3 cycles or so with under
half a warp ready (docs/PROFILING.md). Here one warp does nothing but issue the Tensor Memory
Accelerator's copies of each step's operands into a ring of shared-memory stages, and the
default warps do nothing but the warp-group products (wgmma) as stages fill, one product in
flight, each stage handed back to the copying warp when its product is done. Triton 3.6's
automatic warp specialisation (`tl.range(warp_specialize=True)`) did not compile this loop on
Hopper (docs/BENCHMARKS.md); Gluon states the partitions explicitly.

Same operands as the Triton kernel: tensor descriptors over the padded maps' pixels (flattened)
and channels, each output tile BLOCK_M padded pixels (each the top-left tap of an output pixel)
by BLOCK_N output channels, the 3x3 convolutions one reduction over (tap, channel) and the 1x1
one's after it. wgmma exists on sm_90 only (Blackwell's tensor cores take other instructions),
hence `runs`.

Opt-in (LAMA_HOPPER_KERNEL=1 in the environment) until it has run on a GPU: it compiles for
sm_90 with Triton 3.6 and 3.9 (tools/kernel_resources.py, in CI), and `python
tools/hopper_conv_probe.py` and tests/gpu/test_cuda.py compare it with Triton's kernel there.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor

gluon = None
if torch.version.cuda is not None:  # as lama.kernels: a CPU build of torch loads no compiler
    try:
        from triton.experimental import gluon
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                                      warpgroup_mma, warpgroup_mma_wait)
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    except ImportError:  # no Triton, or one without Gluon's Hopper module (before 3.5)
        gluon = None


ENABLED = os.environ.get("LAMA_HOPPER_KERNEL") == "1"


def runs(x: Tensor) -> bool:
    """Whether the kernel runs for `x`: where ENABLED, an fp16 CUDA tensor on a compute
    capability 9.0 GPU, with a Triton that has Gluon's Hopper module."""
    return (ENABLED and gluon is not None and x.is_cuda and x.dtype == torch.float16
            and _is_hopper(x.device.index))


@functools.cache
def _is_hopper(device: int) -> bool:
    return torch.cuda.get_device_capability(device) == (9, 0)


def descriptor(tensor: Tensor, shape: list[int], strides: list[int], block: list[int]) -> Any:
    """A Gluon tensor descriptor of fp16 `tensor` with blocks of `block`, in the shared-memory
    layout the tensor cores read (NVMMA's, swizzled for the block's rows)."""
    return TensorDescriptor(tensor, shape, strides, block, gl.NVMMASharedLayout.get_default_for(block, gl.float16))


if gluon is not None:
    # Triton 3.7 renamed the TMA copies (torch 2.11 ships Triton 3.6, torch 2.13 Triton 3.9).
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

    @gluon.jit
    def _copies(source, matrix, second, matrix_b, ready, empty, a_bufs, b_bufs, q0, n0, padded_width,
                CIN: gl.constexpr, CIN_B: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
        """The copying warp: each step's pixel block and weight block into the next free stage."""
        chunks: gl.constexpr = CIN // BLOCK_K
        tap_steps: gl.constexpr = 9 * chunks
        nbytes: gl.constexpr = source.block_type.nbytes + matrix.block_type.nbytes
        for step in range(tap_steps + CIN_B // BLOCK_K):
            index = step % STAGES
            # A stage's first use waits for nothing: a fresh barrier passes a wait for phase 1.
            mbarrier.wait(empty.index(index), ((step // STAGES) & 1) ^ 1)
            bar = ready.index(index)
            mbarrier.expect(bar, nbytes)  # a block past the map counts in full, zero-filled
            if step < tap_steps:
                tap = step // chunks
                channel = (step % chunks) * BLOCK_K
                _tma_load(source, [q0 + (tap // 3) * padded_width + tap % 3, channel], bar, a_bufs.index(index))
                _tma_load(matrix, [tap * CIN + channel, n0], bar, b_bufs.index(index))
            else:  # the 1x1 convolution reads the output pixels themselves, (y + 1, x + 1)
                k = (step - tap_steps) * BLOCK_K
                _tma_load(second, [q0 + padded_width + 1, k], bar, a_bufs.index(index))
                _tma_load(matrix_b, [k, n0], bar, b_bufs.index(index))

    @gluon.jit
    def _products(ready, empty, a_bufs, b_bufs, CIN: gl.constexpr, CIN_B: gl.constexpr, BLOCK_M: gl.constexpr,
                  BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr):
        """The default warps: each stage's product as it fills, one in flight."""
        acc = gl.zeros((BLOCK_M, BLOCK_N), gl.float32, layout)
        for step in range(9 * (CIN // BLOCK_K) + CIN_B // BLOCK_K):
            index = step % STAGES
            mbarrier.wait(ready.index(index), (step // STAGES) & 1)
            acc = warpgroup_mma(a_bufs.index(index), b_bufs.index(index), acc, is_async=True)
            # With this product in flight, the one before it is done: its stage can be refilled.
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
            mbarrier.arrive(empty.index((step + STAGES - 1) % STAGES), pred=step > 0)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        return (acc, )  # warp_specialize takes the default partition's results as a tuple

    @gluon.constexpr_function
    def accumulator_layout(block_m, block_n, num_warps):
        """The products' accumulator layout: the warps stacked along the tile's rows, 16 each."""
        warps_m = num_warps if block_m >= 16 * num_warps else block_m // 16
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[warps_m, num_warps // warps_m],
                                         instr_shape=[16, block_n // (num_warps // warps_m), 16])

    @gluon.jit
    def buffers(source, matrix, dst, STAGES: gl.constexpr):
        """The shared memory of a program: the operands' stages, the output tile (which the
        residual's tile comes into first), their barriers, initialised."""
        a_bufs = gl.allocate_shared_memory(source.dtype, [STAGES] + source.block_type.shape, source.layout)
        b_bufs = gl.allocate_shared_memory(matrix.dtype, [STAGES] + matrix.block_type.shape, matrix.layout)
        out_smem = gl.allocate_shared_memory(dst.dtype, dst.block_type.shape, dst.layout)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        residual_in = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=1)
        mbarrier.init(residual_in, count=1)
        return a_bufs, b_bufs, out_smem, ready, empty, residual_in

    @gluon.jit
    def epilogue(acc, out_smem, residual_in, residual_phase, bias, dst, flag, n0, inside, out_channels,
                 RELU: gl.constexpr, RESIDUAL: gl.constexpr, FLAG: gl.constexpr, layout: gl.constexpr):
        """Bias, ReLU, the residual (copied into `out_smem`, arriving on `residual_in`), the
        overflow flag, and the tile's TMA store from `out_smem`, left in flight."""
        n = n0 + gl.arange(0, acc.shape[1], layout=gl.SliceLayout(0, layout))
        acc += gl.load(bias + n, mask=n < out_channels, other=0.0).to(gl.float32)[None, :]
        if RELU:
            if FLAG:  # inf and nan kept, as nan (x - x is 0 for finite x only): lama.kernels._relu
                acc = gl.maximum(acc, 0.0) + (acc - acc)
            else:
                acc = gl.maximum(acc, 0.0)
        if RESIDUAL:
            mbarrier.wait(residual_in, residual_phase)
            acc += out_smem.load(layout).to(gl.float32)
        stored = acc.to(dst.dtype)
        if FLAG:  # lama.kernels._flag_nonfinite: nan where a stored value is not finite
            bad = gl.max(gl.max(((stored - stored) != 0).to(gl.int32), axis=1), axis=0)
            gl.store(flag, float("nan"), mask=bad != 0)
        # The tile's pixels in the padding's columns and rows land on border pixels, which
        # lama.kernels.fill_border writes afterwards; what falls past the map is dropped.
        tma.store_wait(pendings=0)  # a store of out_smem still reading it
        out_smem.store(stored)
        fence_async_shared()
        _tma_store(dst, [inside, n0], out_smem)

    @gluon.jit(do_not_specialize=["width"])
    def _conv_sum_kernel(source, matrix, second, matrix_b, bias, residual, dst, flag, width, out_channels,
                         CIN: gl.constexpr, CIN_B: gl.constexpr, RELU: gl.constexpr, RESIDUAL: gl.constexpr,
                         FLAG: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr):
        """lama.kernels._padded_conv_sum_kernel's sum, bias, ReLU, residual and overflow flag."""
        BLOCK_M: gl.constexpr = source.block_type.shape[0]
        BLOCK_K: gl.constexpr = source.block_type.shape[1]
        BLOCK_N: gl.constexpr = matrix.block_type.shape[1]
        n0 = gl.program_id(0) * BLOCK_N
        q0 = gl.program_id(1) * BLOCK_M
        padded_width = width + 2
        inside = q0 + padded_width + 1  # the tile's output pixels are one block of rows from here
        a_bufs, b_bufs, out_smem, ready, empty, residual_in = buffers(source, matrix, dst, STAGES)
        if RESIDUAL:  # copied in while the products run
            mbarrier.expect(residual_in, residual.block_type.nbytes)
            _tma_load(residual, [inside, n0], residual_in, out_smem)
        layout: gl.constexpr = accumulator_layout(BLOCK_M, BLOCK_N, num_warps)
        acc = gl.warp_specialize([
            (_products, (ready, empty, a_bufs, b_bufs, CIN, CIN_B, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, layout)),
            (_copies, (source, matrix, second, matrix_b, ready, empty, a_bufs, b_bufs, q0, n0, padded_width, CIN,
                       CIN_B, BLOCK_K, STAGES)),
        ], [1], [40])[0]  # one copying warp, 40 registers a thread: it holds a few integers
        epilogue(acc, out_smem, residual_in, 0, bias, dst, flag, n0, inside, out_channels, RELU, RESIDUAL, FLAG,
                 layout)
        tma.store_wait(pendings=0)
