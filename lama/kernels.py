"""The fast path's hand-written GPU kernels (Triton), each with its torch equivalent.

The torch versions run on the CPU (where the CPU build of torch has no Triton, or Triton has
no GPU) and are what the CPU tests check the generator's rewrite with; tests/gpu/test_cuda.py
checks each Triton kernel against its torch version on the GPU, and CI runs them on the CPU
through Triton's interpreter (tests/unit/test_kernels_interpreted.py). The profiles behind
each choice, with their figures, GPU and commit: docs/PROFILING.md.
- `reflect_pad`: reflect padding of an NHWC map in one pass. torch's own reflect pad on
  CUDA turns a channels-last tensor back into NCHW, and an index_select gather ran far below
  the memory bandwidth.
- `ReflectConv`: big-lama's two full-resolution 7x7 convolutions (the 4-channel stem and
  the 3-channel head), with the padding, the ReLU before the head and the activations (the
  stem's output written padded for the down-sampling after it). cuDNN runs them in a slow
  generic kernel (plus passes to pad, to add zero channels and to apply the sigmoid); here each
  row of the filter is one matrix product over (column offset, channel), which NHWC memory
  holds contiguously, accumulated on the tensor cores.
- `ReflectConvSum`: a residual block's FFC output in one pass: the sum of its 3x3
  (reflect-padded) and 1x1 convolutions, bias, ReLU and the block's residual, and the check that
  nothing in it overflowed fp16 (the forward's overflow flag). On GPUs with a Tensor Memory
  Accelerator (Hopper on), `ReflectConvSum.padded` runs the same on maps kept reflect-padded
  by 1 from layer to layer (lama.fastnet), `fill_border` writing their border.

Triton compiles a kernel at its first launch with a new specialisation (constants, dtypes,
alignments), one after another as a forward reaches them: on a box whose kernel cache is empty
(a fresh GPU box, a container without a kept cache) that was 6.4 s of the warm-up on an H100.
`recording_launches` and `compile_recorded` compile them all at once instead (2.9–3.1 s there,
docs/BENCHMARKS.md): a forward run while recording launches nothing of its own and notes what it
would have launched, and the notes are compiled, with their launchers, on a thread pool (Triton's
compiler spends most of its time outside the GIL; its Python parts are what remains) into the
caches the real launches then find.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lama import triton_key

ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")

# Triton's interpreter (TRITON_INTERPRET=1, read by Triton at import) runs the kernels on CPU
# tensors, in numpy: how the CPU-only CI checks them (tests/unit/test_kernels_interpreted.py).
_INTERPRETER_ASKED = os.environ.get("TRITON_INTERPRET") == "1"
# Triton ships with GPU builds of torch; a CPU build (CI) compiles nothing and loads Triton only
# for its interpreter (the test extras install it).
triton = None
if torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None or _INTERPRETER_ASKED:
    try:
        import triton
        import triton.language as tl
        import triton.runtime.cache
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        triton = None
# Triton's version key, which hashes its 416 MB native library in every process before the first
# kernel, is read from the kernel cache folder instead (lama/triton_key.py). Triton's cache-key
# function looks the name up in its module at each call.
if triton is not None and callable(getattr(triton.runtime.cache, "triton_key", None)):
    triton.runtime.cache.triton_key = triton_key.kept_key(
        Path(triton.__file__).parent, lambda: triton.knobs.cache.dir, triton.runtime.cache.triton_key)


INTERPRETED = triton is not None and _INTERPRETER_ASKED


def triton_runs(x: Tensor) -> bool:
    """Whether the Triton kernels run for `x` (a CUDA tensor, with Triton installed; any tensor
    under Triton's interpreter)."""
    return triton is not None and (x.is_cuda or INTERPRETED)


def tma_runs(x: Tensor) -> bool:
    """Whether the kernels that read through tensor descriptors (ReflectConvSum.padded) run for
    `x`: on a GPU whose multiprocessors have a Tensor Memory Accelerator (compute capability 9,
    Hopper, and later), or under Triton's interpreter."""
    return triton_runs(x) and (INTERPRETED or _has_tma(x.device.index))


@functools.cache
def _has_tma(device: int) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 9


class _Pointer:
    """A tensor argument as Triton specialises on it (its dtype and address), without holding
    its memory: a recorded forward's maps are freed as they would be. Not a tuple: Triton takes
    tuples for arguments of their own."""

    __slots__ = ("dtype", "address")

    def __init__(self, dtype: torch.dtype, address: int):
        self.dtype, self.address = dtype, address

    def data_ptr(self) -> int:
        return self.address


class Launch(NamedTuple):
    """A kernel launch noted instead of run: what Triton needs to compile it."""

    kernel: Any  # a triton JITFunction
    device: int | None  # its tensors' CUDA device (None: not CUDA): compiled for and cached on it
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    options: dict[str, Any]

    def specialization(self) -> tuple[Any, ...]:
        """What tells this launch's compiled kernel from another's (as Triton does: dtypes,
        16-byte alignment of pointers, integers' divisibility by 16 and equality to 1 except
        for the arguments not specialised on, and every constant), so that each one is
        compiled once."""
        dynamic = set(self.kernel.do_not_specialize)
        names = self.kernel.arg_names

        def of(name: str, value: Any) -> Any:
            if isinstance(value, _Pointer):
                return value.dtype, value.address % 16 == 0
            if triton is not None and isinstance(value, TensorDescriptor):
                return value.base.dtype, tuple(value.block_shape)
            if isinstance(value, int) and not isinstance(value, bool):
                wide = not -2**31 <= value < 2**31
                return (wide,) if name in dynamic else (wide, value == 1, value % 16 == 0)
            return value

        return (self.kernel, self.device, *(of(name, value) for name, value in zip(names, self.args)),
                *sorted(self.options.items()))


_recording: ContextVar[list[Launch] | None] = ContextVar("kernel launches noted instead of run", default=None)


@contextlib.contextmanager
def recording_launches() -> Iterator[list[Launch]]:
    """While it lasts, this thread's Triton launches are noted in the list it gives, not run:
    their outputs hold whatever their memory held. Other threads launch as usual."""
    launches: list[Launch] = []
    token = _recording.set(launches)
    try:
        yield launches
    finally:
        _recording.reset(token)


def compile_recorded(launches: list[Launch], threads: int) -> tuple[int, float]:
    """Compiles each distinct kernel of `launches` and its launcher (or loads them from the kernel
    cache), and loads it onto its device, on `threads` threads at once; returns how many and the
    seconds it took."""
    distinct = list({launch.specialization(): launch for launch in launches}.values())
    started = time.perf_counter()

    def on_device(launch: Launch) -> contextlib.AbstractContextManager[Any]:
        # Triton compiles for, and caches on, the current device.
        return torch.cuda.device(launch.device) if launch.device is not None else contextlib.nullcontext()

    # A kernel's cache for a device is made at its first use there, and two threads making it at
    # once would each keep their own, one of them lost: made here first, one at a time.
    for launch in distinct:
        caches = getattr(launch.kernel, "device_caches", None)  # Triton's (a defaultdict in 3.x)
        if isinstance(caches, defaultdict) and launch.device is not None and launch.device not in caches:
            with on_device(launch):
                caches[launch.device] = caches.default_factory()

    def compile_one(launch: Launch) -> None:
        with on_device(launch):
            _load(launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.options))

    with ThreadPoolExecutor(max(1, min(threads, len(distinct))), thread_name_prefix="kernel-compile") as pool:
        list(pool.map(compile_one, distinct))
    return len(distinct), time.perf_counter() - started


def _load(compiled: Any) -> None:
    """A compiled kernel's launcher built (a C stub that gcc compiles at the kernel's first launch,
    cached on disk like the kernel) and its module loaded onto the current device: left to the
    first runs, an empty cache's launchers compiled one after another there."""
    compiled._init_handles()


def _launch(kernel: Any, grid: tuple[int, ...], *args: Any, **options: Any) -> None:
    """`kernel[grid](*args, **options)`, or noted where this thread records launches."""
    launches = _recording.get()
    if launches is None:
        kernel[grid](*args, **options)
        return
    device = next(arg.device for arg in args if isinstance(arg, Tensor))
    device = device.index if device.type == "cuda" else None
    launches.append(Launch(kernel, device, grid, tuple(_noted(arg) for arg in args), options))


def _noted(arg: Any) -> Any:
    """A launch's argument as a recorded launch keeps it: a tensor, also one under a tensor
    descriptor, as its dtype and address only."""
    if isinstance(arg, Tensor):
        return _Pointer(arg.dtype, arg.data_ptr())
    if triton is not None and isinstance(arg, TensorDescriptor):
        return TensorDescriptor(_noted(arg.base), list(arg.shape), list(arg.strides), list(arg.block_shape),
                                arg.padding)
    return arg


def reflect_pad(x: Tensor, pad: int, relu: bool = False, bias: Tensor | None = None) -> Tensor:
    """Reflect-pad an NHWC tensor's H and W by `pad` (as F.pad(mode='reflect') does to NCHW),
    adding a per-channel `bias` and taking relu on the way where asked (pad 0: just that).

    `x` may be any strided view; the result is a contiguous NHWC tensor. The bias and ReLU
    are for the transposed convolutions, whose bias cuDNN does not fuse (torch adds it in a
    pass of its own, strided on NHWC maps).
    """
    if triton_runs(x):
        return _reflect_pad_triton(x, pad, relu, bias)
    if bias is not None:
        x = x + bias
    if relu:
        x = x.relu()
    batch, height, width, channels = x.shape
    out = x.new_empty((batch, height + 2 * pad, width + 2 * pad, channels))
    out[:, pad:pad + height, pad:pad + width] = x
    for i in range(pad):
        out[:, pad - 1 - i, pad:pad + width] = x[:, i + 1]
        out[:, pad + height + i, pad:pad + width] = x[:, height - 2 - i]
    for i in range(pad):  # columns of the row-padded map, so the corners are reflected twice
        out[:, :, pad - 1 - i] = out[:, :, pad + 1 + i]
        out[:, :, pad + width + i] = out[:, :, pad + width - 2 - i]
    return out


def _reflect_pad_triton(x: Tensor, pad: int, relu: bool, bias: Tensor | None) -> Tensor:
    batch, height, width, channels = x.shape
    out = x.new_empty((batch, height + 2 * pad, width + 2 * pad, channels))
    block_c = min(128, triton.next_power_of_2(channels))
    block_w = max(16, 1024 // block_c)  # few channels: more pixels per program
    grid = (batch * (height + 2 * pad), triton.cdiv(width + 2 * pad, block_w), triton.cdiv(channels, block_c))
    _launch(_reflect_pad_kernel, grid, x, bias if bias is not None else x, out, height, width, channels, pad,
            *x.stride(), RELU=relu, BIAS=bias is not None, BLOCK_W=block_w, BLOCK_C=block_c)
    return out


def nonfinite_flag(x: Tensor) -> Tensor:
    """A 0-d tensor of x's dtype: 0 where x holds no inf or nan, nan where it does; flags add up,
    and a map plus its flag is itself or all nan. One pass for the least and the largest value
    (both propagate nan), no full-size temporary; a sum could overflow by itself.

    Each term times 0 (inf·0 is nan), not isfinite, logical_not and masked_fill: the first call
    of each of those loads a CUDA module of torch's whose image the process then keeps
    (masked_fill's the largest heap of any operation in the forward, tools/rss_steps.py and
    docs/BENCHMARKS.md); multiplying and adding, the forward does anyway."""
    least, largest = torch.aminmax(x)
    return least * 0 + largest * 0


def flagged(x: Tensor | None, overflow: Tensor | None) -> Tensor | None:
    """x, with `overflow` (a 0-d tensor or None) set to nan where x is not finite (nonfinite_flag
    added to it): the torch operations' way of the kernels' check."""
    if overflow is not None and x is not None:
        overflow.add_(nonfinite_flag(x))
    return x


def _flag_of(overflow: Tensor | None, like: Tensor) -> Tensor:
    """The conv-sum kernels' `flag` argument: `overflow` (checked), or `like`, not read (FLAG off)."""
    if overflow is None:
        return like
    if overflow.shape != () or overflow.dtype != like.dtype or overflow.device != like.device:
        raise ValueError(f"overflow must be a 0-d {like.dtype} tensor on {like.device}")
    return overflow


def fill_border(padded: Tensor) -> None:
    """Writes the border of a contiguous (B, H + 2, W + 2, C) map from its inside, as reflect_pad
    by 1 of the inside would (ReflectConvSum.padded and ReflectConv write the inside)."""
    batch, padded_height, padded_width, channels = padded.shape
    height, width = padded_height - 2, padded_width - 2
    block_c = min(512, triton.next_power_of_2(channels))
    grid = (batch * (2 * padded_width + 2 * height), triton.cdiv(channels, block_c))
    _launch(_fill_border_kernel, grid, padded, height, width, channels, BLOCK_C=block_c)


class ReflectConv:
    """act(conv(reflect_pad(maybe relu(x + bias_in)))): a stride-1 convolution whose reflect
    padding keeps the size, on NHWC maps. On CUDA two Triton passes: the padding (which also
    applies the input's bias and ReLU) and the convolution with its activation as epilogue;
    torch ops elsewhere.

    `weight` (out, in, k, k) and `bias` (out) are the folded layer's, on their device and in
    their dtype; the output is a contiguous (B, H, W, out) tensor in that dtype.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, activation: str = "none"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        out_channels, in_channels, kernel_h, kernel_w = weight.shape
        if kernel_h != kernel_w or kernel_h % 2 == 0:
            raise ValueError("ReflectConv keeps the size: it needs an odd, square kernel")
        self.weight, self.activation = weight.detach(), activation
        self.bias = bias.detach() if bias is not None else weight.new_zeros(out_channels)
        self.pad = kernel_h // 2
        self.out_channels, self.in_channels, self.kernel = out_channels, in_channels, kernel_h
        if triton_runs(weight):
            self._prepare_triton()

    def _prepare_triton(self) -> None:
        # The best of tools/gpu_explore.py --kernels (docs/PROFILING.md): the stem 128 columns by
        # 2 rows on 8 warps; the head 64 runs of 4 columns by 8 rows on 4 warps (128 accumulator
        # columns: its 3 channels padded to 4, times 4 columns, times 8 rows). Channel counts in
        # between (not big-lama's) take 128 columns by 4 rows, whose accumulator stays that size.
        if self.out_channels >= 64:
            self.tune(block_m=128, num_warps=8, out_rows=2)
        elif self.out_channels <= 4:
            self.tune(block_m=64, num_warps=4, out_rows=8, out_columns=4)
        else:
            self.tune(block_m=128, num_warps=8, out_rows=4)

    def tune(self, block_m: int, num_warps: int, out_rows: int, out_columns: int = 1) -> None:
        """Set the Triton kernel's tile: `block_m` runs of `out_columns` adjacent output columns,
        by `out_rows` output rows, per program, on `num_warps` warps (and build the weights for
        that tile).

        The weights become one matrix per padded input row r of a program's window: (column
        offset, channel) down, (output row j, output column s of the run, output channel)
        across, holding filter row r - j shifted by s columns (zeros where that is outside the
        filter). A program then loads each input row once for all of its output rows, as one
        (block_m, row) tile product per row, each of the tile's rows the input a run of columns
        sees. Runs of several columns are for few output channels (the head's 3): they widen the
        product where padding the channels would only add zeros, and every input element a
        program loads serves more outputs.
        """
        if any(n & (n - 1) for n in (block_m, out_rows, out_columns)):
            raise ValueError("block_m, out_rows and out_columns must be powers of two (Triton tiles are)")
        self.block_m, self.num_warps, self.out_rows, self.out_columns = block_m, num_warps, out_rows, out_columns
        # (column offset, channel) in chunks of block_k, as the tensor cores take them.
        self.row_length = (out_columns + self.kernel - 1) * self.in_channels
        self.block_k = 32 if self.row_length <= 32 else 64
        self.row_pad = -(-self.row_length // self.block_k) * self.block_k
        # Output channels padded to a power of two, and further only as far as the tensor cores'
        # least product width (16 accumulator columns over the tile) needs: the head's 3
        # channels take 4 columns, not 16, which made three quarters of its products zeros.
        self.out_pad = max(triton.next_power_of_2(self.out_channels), 16 // (out_rows * out_columns))
        self.padded_bias = F.pad(self.bias.float(), (0, self.out_pad - self.out_channels)).contiguous()
        span = self.kernel * self.in_channels  # one filter row's (column offset, channel)
        rows = self.weight.permute(2, 3, 1, 0).reshape(self.kernel, span, self.out_channels)
        window = out_rows + self.kernel - 1
        stacked = rows.new_zeros((window, self.row_pad, out_rows, out_columns, self.out_pad))
        for r in range(window):
            for j in range(max(0, r - self.kernel + 1), min(out_rows, r + 1)):
                for column in range(out_columns):
                    first = column * self.in_channels
                    stacked[r, first:first + span, j, column, :self.out_channels] = rows[r - j]
        self.stacked = stacked.reshape(window, self.row_pad, -1).contiguous()

    def __call__(self, x: Tensor, relu_input: bool = False, input_bias: Tensor | None = None,
                 padded_by: int = 0) -> Tensor:
        """`x`: (B, H, W, in) NHWC, any strides (an NCHW tensor's permuted view works as is);
        `input_bias` and `relu_input` are applied to it first, as reflect_pad does.
        `padded_by` 0 or 1: the output comes reflect-padded by that much, as reflect_pad would
        make it, for a next layer that pads its input (on CUDA written so by the kernel and
        fill_border: no padding pass over a full-size map)."""
        if padded_by not in (0, 1):
            raise ValueError("ReflectConv pads its output by 0 or 1")
        padded = reflect_pad(x, self.pad, relu=relu_input, bias=input_bias)
        if triton_runs(x):
            return self._triton(padded, padded_by)
        out = F.conv2d(padded.permute(0, 3, 1, 2), self.weight, self.bias)
        if self.activation != "none":
            out = getattr(torch, self.activation)(out)
        return reflect_pad(out.permute(0, 2, 3, 1), padded_by) if padded_by else out.permute(0, 2, 3, 1).contiguous()

    def _triton(self, padded: Tensor, padded_by: int) -> Tensor:
        batch, padded_h, padded_w, channels = padded.shape
        if channels != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {channels}")
        height, width = padded_h - 2 * self.pad, padded_w - 2 * self.pad
        if padded_by and (height < 2 or width < 2):  # reflection by 1 needs a second row and column
            return reflect_pad(self._triton(padded, 0), padded_by)
        out = padded.new_empty((batch, height + 2 * padded_by, width + 2 * padded_by, self.out_channels))
        grid = (triton.cdiv(width, self.block_m * self.out_columns), batch * triton.cdiv(height, self.out_rows))
        _launch(
            _reflect_conv_kernel, grid, padded, self.stacked, self.padded_bias, out, height, width, self.out_channels,
            CIN=self.in_channels, KERNEL=self.kernel, ROW_LENGTH=self.row_length, ROW_PAD=self.row_pad,
            OUT_PAD=self.out_pad, OUT_ROWS=self.out_rows, OUT_COLUMNS=self.out_columns, BLOCK_M=self.block_m,
            BLOCK_K=self.block_k, ACT=self.activation, PRECISION="ieee" if padded.dtype == torch.float32 else "tf32",
            BORDER=padded_by, num_warps=self.num_warps)
        if padded_by:
            fill_border(out)
        return out


# ReflectConvSum's tiles, (block_m pixels, block_n output channels, num_warps, num_stages), from
# `python tools/gpu_explore.py --tiles` on the H200 (docs/PROFILING.md). SUM_TILE, one warp group
# on 64×128, is the fastest or within 3 % of it at the bottlenecks of 640×480 and 1280×960
# inputs (80×60, 160×120). At 2560×1920's (320×240 = LARGE_MAP_PIXELS) 128×128 tiles ran the
# global output's layer in 186 µs instead of 223 and the local one's in 219 instead of 232, and
# the whole forward 2.4 % faster; at 160×120 the same tiles were 5-31 % slower (fewer waves of
# larger tiles on the 132 multiprocessors).
Tile = tuple[int, int, int, int]
SUM_TILE: Tile = (64, 128, 4, 3)
LOCAL_LARGE_TILE: Tile = (128, 128, 8, 3)
GLOBAL_LARGE_TILE: Tile = (128, 128, 4, 3)
LARGE_MAP_PIXELS = 320 * 240
# ReflectConvSum.padded's tiles in fp16 (the local output's layer, the global one's), the best of
# `python tools/gpu_explore.py --padded` on an H100, whole graphed forwards at 1280×960 and
# 2560×1920 (docs/PROFILING.md: the local layer's 3 stages gained 3 % at 1280×960 and lost 2 % at
# 1920×1080), and in fp32, whose operands take twice the shared memory.
LOCAL_PADDED_TILE: Tile = (128, 128, 4, 4)
GLOBAL_PADDED_TILE: Tile = (128, 128, 4, 3)
FP32_PADDED_TILE: Tile = (64, 128, 4, 4)


class ReflectConvSum:
    """The residual blocks' FFC outputs, one pass each on CUDA:
        maybe_relu(sum_i conv_i(x_i) + bias) + residual
    on NHWC maps, stride 1, where each conv_i is 3x3 on the reflect-padded map or 1x1. The
    local output sums the 3x3 convolutions of the local and the global input; the global
    output sums the local input's 3x3 convolution and the spectral branch's last (1x1) one;
    a block's second layer adds the block's input after the ReLU.

    cuDNN ran the 384 -> 128 global-to-local convolution at a small share of the tensor cores'
    rate (its tiles left multiprocessors idle; docs/PROFILING.md), and every layer needed two
    padding passes, a product and two residual adds besides. The Triton kernel reads each input
    pixel's reflection itself (a pixel's channels are contiguous, so the loads stay vectorised)
    and does the sums in its epilogue.

    On Hopper that kernel is latency-bound (docs/PROFILING.md: the tensor pipe 43 % busy, each
    tile's rows gathered by address). `padded` reads the 3x3 inputs instead from one map holding
    them side by side along the channels, reflect-padded, over whose pixels (flattened) it runs:
    output pixel q's tap (dy, dx) is padded pixel q + dy * (W + 2) + dx, so each tap of a tile is
    one rectangular block, which the Tensor Memory Accelerator copies on its own, and the local
    output's two convolutions are one loop over 512 channels. The tile's pixels in the padding's
    last two columns and rows are computed too (1.5 % more work at a 320×240 map) and land on
    border pixels, which `fill_border` writes afterwards.
    Its output goes into the inside of the next layer's padded map (the residual and the 1x1
    input are read there too), so no padding pass runs between layers.
    """

    def __init__(self, weights: list[Tensor], bias: Tensor, relu: bool, large_tile: Tile = SUM_TILE,
                 padded_tile: Tile = LOCAL_PADDED_TILE):
        """`large_tile`: the tile for maps of LARGE_MAP_PIXELS and more, in fp16 (SUM_TILE below);
        `padded_tile`: `padded`'s in fp16."""
        if not 1 <= len(weights) <= 2:
            raise ValueError("ReflectConvSum takes one or two convolutions")
        out_channels = weights[0].shape[0]
        for weight in weights:
            if weight.shape[0] != out_channels or weight.shape[2:] not in ((3, 3), (1, 1)):
                raise ValueError("ReflectConvSum sums 3x3 and 1x1 convolutions with the same output channels")
        self.weights = [w.detach() for w in weights]
        self.bias, self.relu, self.out_channels = bias.detach(), relu, out_channels
        self.in_channels = [w.shape[1] for w in weights]
        self.taps = [w.shape[2] * w.shape[3] for w in weights]
        # Rows (tap, input channel), columns output channels: a K-by-N operand per input.
        self.matrices = [w.detach().permute(2, 3, 1, 0).reshape(-1, out_channels).contiguous() for w in weights]
        self.block_k = next((k for k in (64, 32, 16) if all(c % k == 0 for c in self.in_channels)), None)
        self.tiles = ((LARGE_MAP_PIXELS, large_tile), (0, SUM_TILE))
        # `padded`'s operands: the 3x3 convolutions' weights joined along their input channels (the
        # padded map's leading channels), rows (tap, channel); the 1x1 one's as above. Made only
        # where that kernel can run.
        self.joined = None
        if self.block_k is not None and self.taps[0] == 9 and tma_runs(self.bias):
            joined = torch.cat([w for w, taps in zip(self.weights, self.taps) if taps == 9], 1)
            self.joined = joined.permute(2, 3, 1, 0).reshape(-1, out_channels).contiguous()
        self.padded_channels = sum(c for c, taps in zip(self.in_channels, self.taps) if taps == 9)
        # `padded`'s second input, the 1x1 convolution's (the kernel's CIN_B): its channels, 0 if none.
        self.second_channels = self.in_channels[1] if len(weights) == 2 and self.taps[1] == 1 else 0
        self.padded_tile = padded_tile

    def tune(self, block_m: int, block_n: int, num_warps: int, num_stages: int) -> None:
        """One tile for maps of every size (block_m pixels by block_n output channels, on
        num_warps warps, num_stages loads in flight): what tools/gpu_explore.py's sweeps set."""
        self.tiles = ((0, (block_m, block_n, num_warps, num_stages)),)

    def tile(self, pixels: int, dtype: torch.dtype) -> Tile:
        """The tile for maps of `pixels` (batch included) in `dtype`. Tiles by size serve fp16
        only, where they were measured (fp32 tiles hold twice the bytes in shared memory)."""
        return next(tile for least, tile in self.tiles if pixels >= least and (least == 0 or dtype == torch.float16))

    def __call__(self, inputs: list[Tensor], residual: Tensor | None = None, overflow: Tensor | None = None
                 ) -> Tensor:
        """`inputs`: one contiguous (B, H, W, C_i) map per weight; `residual`: a contiguous
        (B, H, W, out) map or None. Returns a contiguous (B, H, W, out) map. `overflow`: a 0-d
        tensor of the maps' dtype, set to nan where the sum before the ReLU is not finite (an
        input was not, or it overflowed) or the output is not (nonfinite_flag's meaning), else
        left as it is: the check costs the kernel's epilogue, not a pass over the maps."""
        if len(inputs) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} inputs, got {len(inputs)}")
        if triton_runs(inputs[0]) and self.block_k is not None:
            return self._triton(inputs, residual, overflow)
        out = self.bias.view(1, -1, 1, 1)
        for x, weight, taps in zip(inputs, self.weights, self.taps):
            source = reflect_pad(x, 1) if taps == 9 else x
            out = out + F.conv2d(source.permute(0, 3, 1, 2), weight)
        out = flagged(out.permute(0, 2, 3, 1), overflow)  # before the ReLU, which turns nan into 0
        if self.relu:
            out = out.relu()
        if residual is not None:
            out = out + residual
        return flagged(out, overflow).contiguous()

    def padded(self, source: Tensor, out: Tensor, second: Tensor | None = None, residual: Tensor | None = None,
               overflow: Tensor | None = None) -> None:
        """The same sum on maps reflect-padded by 1, (B, H + 2, W + 2, ·) with H and W at least 2,
        written into the inside of `out`. The border pixels of `out`'s channels are left holding
        throw-away values: `fill_border` writes them once every channel is in.
        `source`: contiguous, the 3x3 inputs side by side in its leading channels (more may follow);
        `second`: the 1x1 convolution's contiguous padded input where there is one; `residual`
        and `out`: views of wider padded maps' channels (the pixels' channels contiguous);
        `overflow` as in __call__. Only where `joined` exists (tma_runs)."""
        batch, padded_height, padded_width, channels = source.shape
        height, width = padded_height - 2, padded_width - 2
        if self.joined is None or channels < self.padded_channels or height < 2 or width < 2:
            raise ValueError("padded needs a GPU with a TMA and a padded map of the 3x3 inputs' channels, 2x2 or more")
        shape = (batch, padded_height, padded_width, self.out_channels)
        if not source.is_contiguous():
            raise ValueError("expected a contiguous padded map")
        for name, view in (("out", out), ("residual", residual)):
            if view is not None and (view.shape != shape or view.stride(3) != 1
                                     or view.stride(1) != padded_width * view.stride(2)
                                     or view.stride(0) != padded_height * view.stride(1)):
                raise ValueError(f"{name} must be a {shape} view whose pixels' channels are contiguous")
        if self.second_channels and (second is None or second.shape != (*shape[:3], self.second_channels)
                                     or not second.is_contiguous()):
            raise ValueError(f"expected a contiguous {(*shape[:3], self.second_channels)} 1x1 input")
        rows = batch * padded_height * padded_width
        tile = self.padded_tile if source.dtype == torch.float16 else FP32_PADDED_TILE
        block_m, block_n, num_warps, num_stages = tile
        taps_in = TensorDescriptor(source.view(rows, channels), [rows, self.padded_channels], [channels, 1],
                                   [block_m, self.block_k])
        taps_weights = TensorDescriptor.from_tensor(self.joined, [self.block_k, block_n])
        if self.second_channels:
            second_in = TensorDescriptor.from_tensor(second.view(rows, self.second_channels), [block_m, self.block_k])
            second_weights = TensorDescriptor.from_tensor(self.matrices[-1], [self.block_k, block_n])
        else:  # not read (CIN_B is 0): any descriptors of the same kind
            second_in, second_weights = taps_in, taps_weights
        written = TensorDescriptor(out, [rows, self.out_channels], [out.stride(2), 1], [block_m, block_n])
        added = (TensorDescriptor(residual, [rows, self.out_channels], [residual.stride(2), 1], [block_m, block_n])
                 if residual is not None else written)
        grid = (triton.cdiv(self.out_channels, block_n), triton.cdiv(rows, block_m))
        _launch(
            _padded_conv_sum_kernel, grid, taps_in, taps_weights, second_in, second_weights, self.bias, added, written,
            _flag_of(overflow, source), width, self.out_channels, CIN=self.padded_channels,
            CIN_B=self.second_channels, RELU=self.relu, RESIDUAL=residual is not None,
            FLAG=overflow is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=self.block_k,
            PRECISION="ieee" if source.dtype == torch.float32 else "tf32", num_warps=num_warps, num_stages=num_stages)

    def _triton(self, inputs: list[Tensor], residual: Tensor | None, overflow: Tensor | None) -> Tensor:
        first = inputs[0]
        batch, height, width, _ = first.shape
        for x, channels in zip(inputs, self.in_channels):
            if x.shape != (batch, height, width, channels) or not x.is_contiguous():
                raise ValueError(f"expected contiguous ({batch}, {height}, {width}, {channels}) maps")
        out = first.new_empty((batch, height, width, self.out_channels))
        if residual is not None and (residual.shape != out.shape or not residual.is_contiguous()):
            raise ValueError(f"expected a contiguous {tuple(out.shape)} residual")
        two = len(inputs) == 2
        pixels = batch * height * width
        block_m, block_n, num_warps, num_stages = self.tile(pixels, first.dtype)
        grid = (triton.cdiv(pixels, block_m), triton.cdiv(self.out_channels, block_n))
        _launch(
            _conv_sum_kernel, grid, first, self.matrices[0], inputs[-1], self.matrices[-1], self.bias,
            residual if residual is not None else out, out, _flag_of(overflow, out), pixels, height, width,
            self.out_channels, CIN_A=self.in_channels[0], TAPS_A=self.taps[0], CIN_B=self.in_channels[1] if two else 0,
            TAPS_B=self.taps[-1], RELU=self.relu, RESIDUAL=residual is not None, FLAG=overflow is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=self.block_k,
            PRECISION="ieee" if first.dtype == torch.float32 else "tf32",
            num_warps=num_warps, num_stages=num_stages)
        return out


if triton is not None:
    # The maps' sizes are not specialised on: Triton compiles a kernel again for each pattern of
    # its integer arguments' divisibility by 16 (and equality to 1), and crops of every size reach
    # these kernels, so each new pattern cost a compile, or a load from the disk cache, in a GPU
    # worker's repair. Strides and channel counts stay specialised: vectorised loads need them
    # (the stem's 4-channel input has a model input's width, a multiple of 8: its rows stay
    # aligned at every size).
    @triton.jit
    def _reflected(index, size):
        """Reflection (no edge repeat) of indices up to size - 1 beyond either edge."""
        index = tl.abs(index)
        return tl.where(index >= size, 2 * (size - 1) - index, index)

    @triton.jit(do_not_specialize=["height", "width"])
    def _reflect_pad_kernel(src, bias, dst, height, width, channels, pad, stride_b, stride_h, stride_w, stride_c,
                            RELU: tl.constexpr, BIAS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """One output row segment: BLOCK_W pixels × BLOCK_C channels, read from its reflection."""
        row = tl.program_id(0)  # batch * padded height + padded row
        padded_h, padded_w = height + 2 * pad, width + 2 * pad
        b, out_h = row // padded_h, row % padded_h
        h = _reflected(out_h - pad, height)
        out_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        w = _reflected(out_w - pad, width)
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        keep = (out_w[:, None] < padded_w) & (c[None, :] < channels)
        source = (b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h + w[:, None].to(tl.int64) * stride_w
                  + c[None, :] * stride_c)
        target = ((b * padded_h + out_h) * padded_w + out_w[:, None]).to(tl.int64) * channels + c[None, :]
        value = tl.load(src + source, mask=keep)
        if BIAS:
            value = (value + tl.load(bias + c, mask=c < channels)[None, :]).to(value.dtype)
        if RELU:
            value = tl.maximum(value, 0.0)
        tl.store(dst + target, value.to(dst.dtype.element_ty), mask=keep)

    @triton.jit(do_not_specialize=["height", "width"])
    def _reflect_conv_kernel(src, stacked, bias, dst, height, width, out_channels, CIN: tl.constexpr,
                             KERNEL: tl.constexpr, ROW_LENGTH: tl.constexpr, ROW_PAD: tl.constexpr,
                             OUT_PAD: tl.constexpr, OUT_ROWS: tl.constexpr, OUT_COLUMNS: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ACT: tl.constexpr,
                             PRECISION: tl.constexpr, BORDER: tl.constexpr):
        """BLOCK_M runs of OUT_COLUMNS output columns, of OUT_ROWS rows, every output channel,
        from the padded map, into the inside of `dst`, which has a border of BORDER pixels
        (fill_border's to write).

        In padded input row r, the values a run from output column w needs are (column w + dx,
        channel c) for dx < OUT_COLUMNS + KERNEL - 1: ROW_LENGTH consecutive elements from
        w * CIN on, so a (BLOCK_M, BLOCK_K) slice of them is a plain 2-D load (rows
        overlapping); times row r's stacked weights it adds to every output of the runs at once.
        """
        row_blocks = tl.cdiv(height, OUT_ROWS)
        b, h0 = tl.program_id(1) // row_blocks, (tl.program_id(1) % row_blocks) * OUT_ROWS
        padded_h, padded_w = height + KERNEL - 1, width + KERNEL - 1
        row_elements = padded_w * CIN
        first_row = (b * padded_h + h0).to(tl.int64) * row_elements
        w = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)) * OUT_COLUMNS  # each run's first column
        N: tl.constexpr = OUT_ROWS * OUT_COLUMNS * OUT_PAD
        n = tl.arange(0, N)
        chunks: tl.constexpr = ROW_PAD // BLOCK_K
        acc = tl.zeros((BLOCK_M, N), dtype=tl.float32)
        for step in range((OUT_ROWS + KERNEL - 1) * chunks):
            r = step // chunks
            k = (step % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
            row_inside = (h0 + r + tl.zeros_like(w)) < padded_h  # the last row block's window ends early
            if OUT_COLUMNS == 1:
                columns_inside = (w[:, None] < width) & (k[None, :] < ROW_LENGTH)
            else:  # a run past the map's right edge reads only the columns the map has
                columns_inside = (w[:, None] + k[None, :] // CIN < padded_w) & (k[None, :] < ROW_LENGTH)
            keep = columns_inside & row_inside[:, None]
            a = tl.load(src + first_row + r * row_elements + w[:, None] * CIN + k[None, :], mask=keep, other=0.0)
            weights = tl.load(stacked + (r * ROW_PAD + k)[:, None] * N + n[None, :])
            acc = tl.dot(a, weights, acc, input_precision=PRECISION)
        channel, column = n % OUT_PAD, (n // OUT_PAD) % OUT_COLUMNS
        out_row = h0 + n // (OUT_PAD * OUT_COLUMNS)
        acc += tl.load(bias + channel)[None, :]
        if ACT == "relu":
            acc = tl.maximum(acc, 0.0)
        elif ACT == "sigmoid":
            acc = tl.sigmoid(acc)
        elif ACT == "tanh":
            acc = 2 * tl.sigmoid(2 * acc) - 1
        out_w = w[:, None] + column[None, :]
        target = (((b * (height + 2 * BORDER) + out_row + BORDER)[None, :].to(tl.int64) * (width + 2 * BORDER)
                   + out_w + BORDER) * out_channels + channel[None, :])
        keep = (out_w < width) & (out_row[None, :] < height) & (channel[None, :] < out_channels)
        tl.store(dst + target, acc.to(dst.dtype.element_ty), mask=keep)

    @triton.jit
    def _accumulate_conv(acc, src, matrix, CIN: tl.constexpr, TAPS: tl.constexpr, m, b, h, w, height, width,
                         keep_m, n, keep_n, out_channels, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
        """acc + the (pixels, out channels) tile of a 1x1 convolution of src, or of a 3x3 one
        of reflect_pad(src, 1); K runs over (tap, channel)."""
        chunks: tl.constexpr = CIN // BLOCK_K
        k = tl.arange(0, BLOCK_K)
        for step in range(TAPS * chunks):
            tap = step // chunks
            channel = (step % chunks) * BLOCK_K + k
            if TAPS == 9:
                pixel = ((b * height + _reflected(h + tap // 3 - 1, height)) * width
                         + _reflected(w + tap % 3 - 1, width))
            else:
                pixel = m
            a = tl.load(src + pixel.to(tl.int64)[:, None] * CIN + channel[None, :], mask=keep_m[:, None], other=0.0)
            weights = tl.load(matrix + (tap * CIN + channel)[:, None] * out_channels + n[None, :],
                              mask=keep_n[None, :], other=0.0)
            acc = tl.dot(a, weights, acc, input_precision=PRECISION)
        return acc

    @triton.jit
    def _relu(acc, KEEP_NONFINITE: tl.constexpr):
        """max(acc, 0); where KEEP_NONFINITE, inf and nan become nan instead of 0 or inf (x - x is 0
        for finite x only), so that _flag_nonfinite sees in the output an input that was not
        finite: a max turns nan into 0. No copy of the accumulator stays alive for it (a 128×128
        tile's takes 128 registers a thread)."""
        if KEEP_NONFINITE:
            return tl.maximum(acc, 0.0) + (acc - acc)
        return tl.maximum(acc, 0.0)

    @triton.jit
    def _flag_nonfinite(flag, stored):
        """Sets the 0-d `flag` to nan where a tile's output as stored is inf or nan (an input was,
        through _relu's KEEP_NONFINITE, or the sum overflowed the maps' dtype); else leaves it
        alone, so that the programs that write it all write nan."""
        tl.store(flag, float("nan"), mask=tl.min(((stored - stored) == 0).to(tl.int32)) == 0)

    @triton.jit(do_not_specialize=["pixels", "height", "width"])
    def _conv_sum_kernel(src_a, matrix_a, src_b, matrix_b, bias, residual, dst, flag, pixels, height, width,
                         out_channels, CIN_A: tl.constexpr, TAPS_A: tl.constexpr, CIN_B: tl.constexpr,
                         TAPS_B: tl.constexpr, RELU: tl.constexpr, RESIDUAL: tl.constexpr, FLAG: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         PRECISION: tl.constexpr):
        """BLOCK_M pixels (flattened over batch, rows, columns) by BLOCK_N output channels; where
        FLAG, _flag_nonfinite's check on them."""
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        keep_m = m < pixels
        per_image = height * width
        b, h, w = m // per_image, (m % per_image) // width, m % width
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        keep_n = n < out_channels
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc = _accumulate_conv(acc, src_a, matrix_a, CIN_A, TAPS_A, m, b, h, w, height, width, keep_m, n, keep_n,
                               out_channels, BLOCK_K, PRECISION)
        if CIN_B > 0:
            acc = _accumulate_conv(acc, src_b, matrix_b, CIN_B, TAPS_B, m, b, h, w, height, width, keep_m, n,
                                   keep_n, out_channels, BLOCK_K, PRECISION)
        acc += tl.load(bias + n, mask=keep_n, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = _relu(acc, FLAG)
        target = m.to(tl.int64)[:, None] * out_channels + n[None, :]
        keep = keep_m[:, None] & keep_n[None, :]
        if RESIDUAL:
            acc += tl.load(residual + target, mask=keep, other=0.0).to(tl.float32)  # finite where not kept
        stored = acc.to(dst.dtype.element_ty)
        if FLAG:
            _flag_nonfinite(flag, stored)
        tl.store(dst + target, stored, mask=keep)

    @triton.jit(do_not_specialize=["width"])
    def _padded_conv_sum_kernel(source, matrix, second, matrix_b, bias, residual, dst, flag, width, out_channels,
                                CIN: tl.constexpr, CIN_B: tl.constexpr, RELU: tl.constexpr, RESIDUAL: tl.constexpr,
                                FLAG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
        """BLOCK_M pixels of the padded maps (flattened over batch, rows, columns), each the top-left
        tap of an output pixel, by BLOCK_N output channels. Every operand is a tensor descriptor
        over the padded maps' pixels (flattened) and their channels: `source` the padded map's
        leading CIN channels and `matrix` the joined 3x3 weights; `second` and `matrix_b` the 1x1
        convolution's padded input and its weights, read where CIN_B > 0; `residual` and `dst`
        the padded maps' channels that the layer adds and writes. So no tile holds an address a
        value (a 128×128 tile's would take 128 registers a thread beside its accumulator's 128).
        The output channels are the fast grid axis: the programs of one pixel tile run side by
        side and share its loads in L2. Where FLAG, _flag_nonfinite's check on the tile (whose
        pixels on the border compute from finite values where the inside's are finite)."""
        n0 = tl.program_id(0) * BLOCK_N
        q0 = tl.program_id(1) * BLOCK_M
        padded_width = width + 2
        chunks: tl.constexpr = CIN // BLOCK_K
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for step in range(9 * chunks):
            tap = step // chunks
            channel = (step % chunks) * BLOCK_K
            a = source.load([q0 + (tap // 3) * padded_width + tap % 3, channel])
            acc = tl.dot(a, matrix.load([tap * CIN + channel, n0]), acc, input_precision=PRECISION)
        # Output pixel (y, x) is (y + 1, x + 1) of the padded maps: the tile's outputs are one block
        # of their rows too, from `inside` on.
        inside = q0 + padded_width + 1
        if CIN_B > 0:
            for step in range(CIN_B // BLOCK_K):
                a = second.load([inside, step * BLOCK_K])
                acc = tl.dot(a, matrix_b.load([step * BLOCK_K, n0]), acc, input_precision=PRECISION)
        n = n0 + tl.arange(0, BLOCK_N)
        acc += tl.load(bias + n, mask=n < out_channels, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = _relu(acc, FLAG)
        if RESIDUAL:
            acc += residual.load([inside, n0]).to(tl.float32)
        # The tile's pixels in the padding's columns and rows land on border pixels, which
        # fill_border writes afterwards; what falls past the map is dropped by the descriptor.
        stored = acc.to(dst.dtype)
        if FLAG:
            _flag_nonfinite(flag, stored)
        dst.store([inside, n0], stored)

    @triton.jit(do_not_specialize=["height", "width"])
    def _fill_border_kernel(padded, height, width, channels, BLOCK_C: tl.constexpr):
        """One border pixel of a (B, H + 2, W + 2, C) map, BLOCK_C channels, from its reflection
        inside: the top and bottom rows, then the left and right columns between them."""
        per_image = 2 * (width + 2) + 2 * height
        b, i = tl.program_id(0) // per_image, tl.program_id(0) % per_image
        j = i - 2 * (width + 2)
        row = tl.where(i < width + 2, 0, tl.where(i < 2 * (width + 2), height + 1, 1 + j // 2))
        column = tl.where(i < width + 2, i, tl.where(i < 2 * (width + 2), i - width - 2,
                                                     tl.where(j % 2 == 0, 0, width + 1)))
        # The inside's reflection of both coordinates at once, so a corner reads the inside too.
        source_row = 1 + _reflected(row - 1, height)
        source_column = 1 + _reflected(column - 1, width)
        image = b.to(tl.int64) * (height + 2)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        keep = c < channels
        source = ((image + source_row) * (width + 2) + source_column) * channels + c
        target = ((image + row) * (width + 2) + column) * channels + c
        tl.store(padded + target, tl.load(padded + source, mask=keep), mask=keep)
