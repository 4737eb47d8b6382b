"""The fast path's hand-written GPU kernels (Triton), each with its torch equivalent.

The torch versions run where there is no Triton (the CPU build of torch, CI) and are what
the CPU tests check the generator's rewrite with; tests/test_cuda.py checks each Triton
kernel against its torch version on the GPU.
- `reflect_pad`: reflect padding of an NHWC map in one pass. torch's own reflect pad on
  CUDA turns a channels-last tensor back into NCHW, and an index_select gather ran at a
  fifth of the memory bandwidth (H200).
- `ReflectConv`: big-lama's two full-resolution 7x7 convolutions (the 4-channel stem and
  the 3-channel head), reflect padding, input ReLU and output activation included. cuDNN
  runs them in a slow generic kernel (profiled on an H200 at 1280×960: 1.55 ms of 11, plus
  passes to pad, to add zero channels and to apply the sigmoid); here each row of the
  filter is one matrix product over (column offset, channel), which NHWC memory holds
  contiguously, accumulated on the tensor cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")

try:  # Triton ships with CUDA builds of torch; the CPU build (CI) has none and needs none
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def triton_runs(x: Tensor) -> bool:
    """Whether the Triton kernels run for `x` (a CUDA tensor, with Triton installed)."""
    return x.is_cuda and triton is not None


def reflect_pad(x: Tensor, pad: int, relu: bool = False) -> Tensor:
    """Reflect-pad an NHWC tensor's H and W by `pad` (as F.pad(mode='reflect') does to NCHW),
    and with `relu` take relu of it on the way. `x` may be any strided view; the result is
    a contiguous NHWC tensor."""
    if triton_runs(x):
        return _reflect_pad_triton(x, pad, relu)
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


def _reflect_pad_triton(x: Tensor, pad: int, relu: bool) -> Tensor:
    batch, height, width, channels = x.shape
    out = x.new_empty((batch, height + 2 * pad, width + 2 * pad, channels))
    block_c = min(128, triton.next_power_of_2(channels))
    block_w = max(16, 1024 // block_c)  # few channels: more pixels per program
    grid = (batch * (height + 2 * pad), triton.cdiv(width + 2 * pad, block_w), triton.cdiv(channels, block_c))
    _reflect_pad_kernel[grid](x, out, height, width, channels, pad, *x.stride(), RELU=relu, BLOCK_W=block_w,
                              BLOCK_C=block_c)
    return out


class ReflectConv:
    """act(conv(reflect_pad(maybe relu(x)))): a stride-1 convolution whose reflect padding
    keeps the size, on NHWC maps. One Triton kernel on CUDA, torch ops elsewhere.

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
        # Pixels per program and warps: tools/gpu_explore.py --kernels times the choices.
        self.block_m, self.num_warps = 128, 4
        self.out_channels, self.in_channels, self.kernel = out_channels, in_channels, kernel_h
        if weight.is_cuda and triton is not None:
            self._prepare_rows()

    def _prepare_rows(self) -> None:
        """The weight as `kernel` matrices, one per filter row: (column offset, channel) down,
        output channels across, both zero-padded to the sizes the tensor cores take."""
        row_length = self.kernel * self.in_channels
        self.block_k = 32 if row_length <= 32 else 64
        self.row_pad = -(-row_length // self.block_k) * self.block_k
        self.out_pad = max(16, triton.next_power_of_2(self.out_channels))
        rows = self.weight.permute(2, 3, 1, 0).reshape(self.kernel, row_length, self.out_channels)
        self.rows = F.pad(rows, (0, self.out_pad - self.out_channels, 0, self.row_pad - row_length)).contiguous()
        self.padded_bias = F.pad(self.bias.float(), (0, self.out_pad - self.out_channels)).contiguous()

    def __call__(self, x: Tensor, relu_input: bool = False) -> Tensor:
        """`x`: (B, H, W, in) NHWC, any strides (an NCHW tensor's permuted view works as is)."""
        padded = reflect_pad(x, self.pad, relu=relu_input)
        if triton_runs(x):
            return self._triton(padded)
        out = F.conv2d(padded.permute(0, 3, 1, 2), self.weight, self.bias)
        if self.activation != "none":
            out = getattr(torch, self.activation)(out)
        return out.permute(0, 2, 3, 1).contiguous()

    def _triton(self, padded: Tensor) -> Tensor:
        batch, padded_h, padded_w, channels = padded.shape
        if channels != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {channels}")
        height, width = padded_h - 2 * self.pad, padded_w - 2 * self.pad
        out = padded.new_empty((batch, height, width, self.out_channels))
        grid = (triton.cdiv(width, self.block_m), batch * height)
        _reflect_conv_kernel[grid](
            padded, self.rows, self.padded_bias, out, height, width, self.out_channels,
            CIN=self.in_channels, KERNEL=self.kernel, ROW_LENGTH=self.kernel * self.in_channels,
            ROW_PAD=self.row_pad, OUT_PAD=self.out_pad, BLOCK_M=self.block_m, BLOCK_K=self.block_k, ACT=self.activation,
            PRECISION="ieee" if padded.dtype == torch.float32 else "tf32", num_warps=self.num_warps)
        return out


if triton is not None:
    @triton.jit
    def _reflected(index, size):
        """Reflection (no edge repeat) of indices up to size - 1 beyond either edge."""
        index = tl.abs(index)
        return tl.where(index >= size, 2 * (size - 1) - index, index)

    @triton.jit
    def _reflect_pad_kernel(src, dst, height, width, channels, pad, stride_b, stride_h, stride_w, stride_c,
                            RELU: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
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
        if RELU:
            value = tl.maximum(value, 0.0)
        tl.store(dst + target, value, mask=keep)

    @triton.jit
    def _reflect_conv_kernel(src, rows, bias, dst, height, width, out_channels, CIN: tl.constexpr,
                             KERNEL: tl.constexpr, ROW_LENGTH: tl.constexpr, ROW_PAD: tl.constexpr,
                             OUT_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ACT: tl.constexpr,
                             PRECISION: tl.constexpr):
        """BLOCK_M output pixels of one row, every output channel, from the padded NHWC map.

        For filter row dy, the values an output pixel w needs are the padded row's
        (column w + dx, channel c) for dx < KERNEL: ROW_LENGTH = KERNEL * CIN consecutive
        elements from w * CIN on, so a (BLOCK_M, BLOCK_K) slice of them is a plain 2-D load
        (rows overlapping) and the row's weights a (ROW_PAD, OUT_PAD) matrix.
        """
        image_row = tl.program_id(1)  # batch * height + row
        b, h = image_row // height, image_row % height
        padded_w = width + KERNEL - 1
        row_elements = padded_w * CIN
        first_row = (b * (height + KERNEL - 1) + h).to(tl.int64) * row_elements
        w = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        n = tl.arange(0, OUT_PAD)
        chunks: tl.constexpr = ROW_PAD // BLOCK_K
        acc = tl.zeros((BLOCK_M, OUT_PAD), dtype=tl.float32)
        for step in range(KERNEL * chunks):
            dy = step // chunks
            k = (step % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
            a = tl.load(src + first_row + dy * row_elements + w[:, None] * CIN + k[None, :],
                        mask=(w[:, None] < width) & (k[None, :] < ROW_LENGTH), other=0.0)
            weights = tl.load(rows + (dy * ROW_PAD + k)[:, None] * OUT_PAD + n[None, :])
            acc = tl.dot(a, weights, acc, input_precision=PRECISION)
        acc += tl.load(bias + n)[None, :]
        if ACT == "relu":
            acc = tl.maximum(acc, 0.0)
        elif ACT == "sigmoid":
            acc = tl.sigmoid(acc)
        elif ACT == "tanh":
            acc = 2 * tl.sigmoid(2 * acc) - 1
        target = (image_row * width + w[:, None]).to(tl.int64) * out_channels + n[None, :]
        tl.store(dst + target, acc.to(dst.dtype.element_ty), mask=(w[:, None] < width) & (n[None, :] < out_channels))
