"""big-lama's forward pass written for the GPU: channels-last all the way, fewer passes.

The same function as `lama.model.FFCResNetGenerator` (built from a BatchNorm-folded copy,
`lama.fastpath.fold_batchnorm`), organised around what the profiler showed (docs/PROFILING.md):
- cuDNN's fp16 tensor-core convolutions work on NHWC. The module version keeps NCHW
  tensors, so every convolution transposes in and out, and reflect padding on CUDA turns
  a channels-last tensor back into NCHW. Here every feature map is an NHWC tensor
  (B, H, W, C) and reflect padding is one Triton kernel in NHWC (`lama.kernels`).
- The residual blocks' layers are two Triton passes each (`lama.kernels.ReflectConvSum`):
  the local output's two 3x3 convolutions, and the global output's 3x3 convolution with the
  spectral branch's last 1x1 one, each with the reflect padding, the bias, the ReLU and the
  block's residual add. Elsewhere 1x1 convolutions are matrix products over the channel
  axis, and where a branch adds two paths, cuDNN's fused convolution + add + bias + ReLU
  does the sum.
- The Fourier unit's transforms are dense DFT matrix products in fp16 with fp32
  accumulation (`dft_matrices`): half-precision cuFFT refuses non-power-of-two sizes, and
  fp32 cuFFT needed NCHW fp32 copies and transposes around every transform, which cost
  more than the transforms. They are scaled so that no value on the way is larger than the
  activations it comes from or goes to (an orthonormal spectrum's DC grows with the image),
  so fp16 overflows only where the activations themselves would.
- The full-resolution 7x7 stem (4 channels in) and head (3 channels out) are Triton
  kernels (`lama.kernels.ReflectConv`; cuDNN ran them in a slow generic kernel), the
  transposed convolutions' bias and ReLU are applied in a padding pass, and the
  activations are the convolution kernel's epilogue.
- The residual blocks' local and global branches run on two CUDA streams.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama import kernels
from lama.kernels import (GLOBAL_LARGE_TILE, GLOBAL_PADDED_TILE, LOCAL_LARGE_TILE, ReflectConv, ReflectConvSum,
                          flagged, reflect_pad)
from lama.model import FFC_BN_ACT, FFCResNetGenerator, FFCResnetBlock

CHANNEL_MULTIPLE = 8  # fp16 tensor-core GEMMs want leading dimensions in multiples of 8
MAX_CONSTANT_SHAPES = 16  # bottleneck sizes whose DFT matrices stay on the GPU
# Bottlenecks of this many pixels and more run the residual blocks on padded maps, where the GPU
# can (FastGenerator._padded_stage). `python tools/gpu_explore.py --padded` on an H100, whole graphed
# forwards, padded against the gather kernels (docs/PROFILING.md): 8.30 against 8.40-8.42 ms at
# 1280×960 (a 160×120 bottleneck), 15.42 against 15.79-15.80 at 1920×1080, 30.48 against
# 31.70-31.72 at 2560×1920; slower below, where the border is a larger share of the map: 6.06
# against 5.76-5.78 at 1024×768 (128×96), 3.72 against 3.37-3.42 at 640×480 (80×60).
PADDED_MAP_PIXELS = 160 * 120


class BottleneckConstants(NamedTuple):
    """What the residual blocks need at one bottleneck size, made once per size: the DFT
    matrices (`dft_matrices`; for maps kept reflect-padded, `padded_dft_matrices`, or None) and
    each spectral layer's Fourier-unit bias, by layer, scaled as the spectrum is."""

    dft: DFTMatrices
    padded_dft: DFTMatrices | None
    fourier_biases: dict[_FFCLayer, Tensor]


class DFTMatrices(NamedTuple):
    forward_h: Tensor
    forward_w: Tensor
    inverse_w: Tensor
    inverse_h: Tensor


def _nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


class _Conv:
    """A folded convolution's weights, channels-last, with its geometry."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d | None):
        self.present = conv is not None
        if conv is None:
            return
        self.weight = conv.weight.detach().contiguous(memory_format=torch.channels_last)
        self.bias = conv.bias.detach() if conv.bias is not None else None
        self.stride = conv.stride
        self.padding = conv.padding
        self.reflect = getattr(conv, "padding_mode", "zeros") == "reflect" and conv.padding[0] > 0
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.output_padding = getattr(conv, "output_padding", (0, 0))

    @property
    def pad(self) -> int:
        return self.padding[0] if self.reflect else 0

    def __call__(self, padded: Tensor, bias: bool = True) -> Tensor:
        """NHWC in (already reflect-padded when the layer pads by reflection), NHWC out."""
        b = self.bias if bias else None
        if self.transposed:
            out = F.conv_transpose2d(_nchw(padded), self.weight, b, self.stride, self.padding, self.output_padding)
        else:
            out = F.conv2d(_nchw(padded), self.weight, b, self.stride, self._conv_padding)
        return _nhwc(out).contiguous()

    @property
    def _conv_padding(self) -> tuple[int, int]:
        return (0, 0) if self.reflect else self.padding

    def relu(self, padded: Tensor) -> Tensor:
        """relu(conv(padded) + bias), fused by cuDNN on CUDA: F.conv2d adds the bias to a
        channels-last output in a strided pass of its own and the ReLU is one more."""
        if padded.is_cuda and not self.transposed:
            out = torch.cudnn_convolution_relu(_nchw(padded), self.weight, self.bias, self.stride,
                                               self._conv_padding, (1, 1), 1)
            return _nhwc(out).contiguous()
        return self(padded).relu_()

    def add_relu(self, padded: Tensor, addend: Tensor) -> Tensor:
        """relu(conv(padded) + bias + addend), fused by cuDNN on CUDA."""
        if padded.is_cuda and not self.transposed:
            out = torch.cudnn_convolution_add_relu(
                _nchw(padded), self.weight, _nchw(addend), 1.0, self.bias, self.stride, self._conv_padding, (1, 1), 1)
            return _nhwc(out).contiguous()
        return self(padded).add_(addend).relu_()


class _FFCLayer:
    """One FFC + (folded) BatchNorm + ReLU on NHWC (local, global) maps."""

    def __init__(self, layer: FFC_BN_ACT):
        ffc = layer.ffc
        self.l2l, self.g2l, self.l2g = _Conv(ffc.convl2l), _Conv(ffc.convg2l), _Conv(ffc.convl2g)
        self.relu = isinstance(layer.act, nn.ReLU)
        spectral = ffc.convg2g
        self.spectral = spectral is not None
        if self.spectral:
            self.w1 = spectral.conv1[0].weight.detach()[:, :, 0, 0]
            self.b1 = spectral.conv1[0].bias.detach()
            unit = spectral.fu.conv_layer
            self.wfu, self.bfu = unit.weight.detach()[:, :, 0, 0], unit.bias.detach()
            # The same 1x1 convolution on spectra stored re-block then im-block per pixel
            # (what the DFT products below produce) instead of interleaved c0.re, c0.im, ...
            order = _interleaved_order(self.wfu.shape[0] // 2)
            self.wfu_blocked, self.bfu_blocked = self.wfu[order][:, order], self.bfu[order]
            self.w2 = spectral.conv2.weight.detach()[:, :, 0, 0]
            self.b2 = spectral.conv2.bias.detach() if spectral.conv2.bias is not None else None
        # A residual block's layer (all four paths, 3x3, stride 1, reflect padding 1): each
        # branch's output is one ReflectConvSum pass, padding, sums and the spectral branch's
        # last 1x1 convolution included.
        self.fused = (self.l2l.present and self.g2l.present and self.l2g.present and self.spectral
                      and ffc.convl2l.kernel_size == (3, 3) and ffc.convl2l.stride == (1, 1) and self.l2l.pad == 1)
        if self.fused:
            self.local_conv = ReflectConvSum([self.l2l.weight, self.g2l.weight], self.l2l.bias + self.g2l.bias,
                                             self.relu, large_tile=LOCAL_LARGE_TILE)
            spectral_bias = self.b2 if self.b2 is not None else 0
            self.global_conv = ReflectConvSum([self.l2g.weight, spectral.conv2.weight.detach()],
                                              self.l2g.bias + spectral_bias, self.relu, large_tile=GLOBAL_LARGE_TILE,
                                              padded_tile=GLOBAL_PADDED_TILE)
        # The reflect padding an unfused layer's convolutions take their inputs with (0: none),
        # one pass for all of them (their geometry is the layer's).
        present = [conv for conv in (self.l2l, self.l2g, self.g2l) if conv.present]
        self.input_pad = present[0].pad if present and not self.fused else 0

    def __call__(self, x_l: Tensor | None, x_g: Tensor | None, constants: BottleneckConstants | None = None,
                 side: torch.cuda.Stream | None = None, residual: tuple[Tensor, Tensor] | None = None,
                 overflow: Tensor | None = None, padded_l: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """`constants`: the bottleneck's DFT matrices, for the layers with a spectral path.
        `side`: a CUDA stream on which the local output is computed while the current stream
        computes the global one (where the layer has both); the branches share only inputs.
        `residual`: (local, global) maps added to the outputs, each on its branch's stream.
        `overflow`: None, or the layer's two slots of overflow_slots (local, global): each set to
        nan where its branch's output, or a sum inside it, is not finite.
        `padded_l`: the local input already reflect-padded by `input_pad`, in place of x_l (an
        unfused layer's)."""
        res_l, res_g = residual if residual is not None else (None, None)
        flag_l, flag_g = _branch_flags(overflow)
        if self.fused:
            def local() -> Tensor | None:
                return self.local_conv([x_l, x_g], residual=res_l, overflow=flag_l)

            def global_() -> Tensor | None:
                return self.global_conv([x_l, self._fourier_sum(x_g, constants)], residual=res_g, overflow=flag_g)
        else:
            def pad(x: Tensor) -> Tensor:
                return reflect_pad(x, self.input_pad) if self.input_pad else x

            p_l = padded_l if padded_l is not None else pad(x_l) if self.l2l.present or self.l2g.present else None

            def local() -> Tensor | None:
                out_l = self._local(p_l, x_g, pad)
                return flagged(out_l.add_(res_l) if res_l is not None else out_l, flag_l)

            def global_() -> Tensor | None:
                out_g = self._global(p_l, x_g, constants, flag_g)
                return flagged(out_g.add_(res_g) if res_g is not None else out_g, flag_g)

        if not self.l2l.present or not (self.l2g.present or self.spectral):
            return local(), global_()
        return _branches(local, global_, side)

    def padded_runs(self, height: int, width: int) -> bool:
        """Whether `padded_call` runs for maps of this size (ReflectConvSum.padded: a GPU with a
        TMA, lama.kernels.tma_runs, and maps of 2x2 or more)."""
        return (self.fused and self.local_conv.joined is not None and self.global_conv.joined is not None
                and height >= 2 and width >= 2)

    def padded_call(self, padded: Tensor, constants: BottleneckConstants, side: torch.cuda.Stream | None = None,
                    residual: Tensor | None = None, overflow: Tensor | None = None) -> Tensor:
        """A fused layer as __call__ on maps kept reflect-padded by 1: `padded` holds the local
        and the global input side by side, `residual` (None, or the same for the block's input)
        is added, and the layer's outputs come back the same way, border written. `overflow` as
        in __call__."""
        local_channels = self.local_conv.out_channels
        out = padded.new_empty((*padded.shape[:3], local_channels + self.global_conv.out_channels))
        flag_l, flag_g = _branch_flags(overflow)

        def local() -> None:
            self.local_conv.padded(padded, out[..., :local_channels],
                                   residual=residual[..., :local_channels] if residual is not None else None,
                                   overflow=flag_l)

        def global_() -> None:
            global_in = padded[..., padded.shape[3] - self.w1.shape[1]:]  # a view: the global input's channels
            self.global_conv.padded(padded, out[..., local_channels:], self._fourier_sum(global_in, constants, padded=True),
                                    residual=residual[..., local_channels:] if residual is not None else None,
                                    overflow=flag_g)

        _branches(local, global_, side)
        kernels.fill_border(out)
        return out

    def _local(self, p_l: Tensor | None, x_g: Tensor | None, pad: Callable[[Tensor], Tensor]) -> Tensor | None:
        if not self.l2l.present:
            return None
        if self.g2l.present:
            from_global = self.g2l(pad(x_g), bias=False)
            return self.l2l.add_relu(p_l, from_global) if self.relu else self.l2l(p_l).add_(from_global)
        return self.l2l.relu(p_l) if self.relu else self.l2l(p_l)

    def _global(self, p_l: Tensor | None, x_g: Tensor | None, constants: BottleneckConstants | None,
                overflow: Tensor | None = None) -> Tensor | None:
        if self.spectral:
            spectral = self._spectral(x_g, constants, overflow)
            if self.l2g.present:
                return self.l2g.add_relu(p_l, spectral) if self.relu else self.l2g(p_l).add_(spectral)
            return spectral.relu_() if self.relu else spectral
        if not self.l2g.present:
            return None
        return self.l2g.relu(p_l) if self.relu else self.l2g(p_l)

    def _fourier_sum(self, x_g: Tensor, constants: BottleneckConstants, padded: bool = False) -> Tensor:
        """y + fu(y) with y = relu(conv1(x_g)), NHWC: the input of the spectral branch's conv2.
        `padded`: x_g is kept reflect-padded by 1 (y and the sum too, through the padded maps'
        DFT matrices, whose transforms leave the border as y has it).

        An fp16 overflow on the way shows in the sum as inf or nan, and must be caught before a
        ReLU taken as a max turns nan into 0 (seen on the H200: the output came back finite and
        plausible): the fused layers' kernels check the sum they read (ReflectConvSum's
        `overflow`), _spectral checks it otherwise."""
        return self._fourier(_linear_relu(x_g, self.w1, self.b1), constants.padded_dft if padded else constants.dft,
                             constants.fourier_biases[self])

    def _spectral(self, x_g: Tensor, constants: BottleneckConstants, overflow: Tensor | None = None) -> Tensor:
        """conv2(y + fu(y)) with y = relu(conv1(x_g)): NHWC in and out, conv2's bias included;
        `overflow` (a 0-d flag or None) set to nan where the sum is not finite."""
        summed = flagged(self._fourier_sum(x_g, constants), overflow)
        batch, height, width, channels = summed.shape
        flat = summed.view(-1, channels)
        out = F.linear(flat, self.w2, self.b2)
        return out.view(batch, height, width, -1)

    def _fourier(self, y: Tensor, dft: DFTMatrices, bias: Tensor) -> Tensor:
        """y + FourierUnit(y), NHWC, as five matrix products (see dft_matrices). `y` is the map
        or, with padded_dft_matrices, the map reflect-padded by 1, whose inside the forward
        products read through a view: a reduction over its H + 2 rows or 2 (W + 2) columns would
        leave the tensor cores' 8-element alignment. The inside's rows are (W + 2) * ch elements
        apart there, which the first product takes as its operand's leading dimension: its
        output is then the inside's alone, and the transform along W one product, as without
        the border (where the first product's output held the border's columns too, the second
        was split in two around them, its halves' sum an extra pass over the spectrum)."""
        batch, rows_in, columns, channels = y.shape
        forward_h, forward_w, inverse_w, inverse_h = dft
        height, width = forward_h.shape[1], forward_w.shape[1] // 2  # the transform's (the inside's)
        half_h = forward_h.shape[0] // 2  # rows kh = 0 .. H/2, each giving rows kh and H - kh
        per_row = forward_w.shape[0]  # (side, kw, part): both rows' one-sided bins, real and imaginary
        border = (rows_in - height) // 2
        inside = y[:, border:border + height, border:border + width].flatten(2)  # (B, H, W*ch): a view
        rows = torch.matmul(forward_h, inside)  # (B, 2 half_h, W*ch)
        spectrum = torch.matmul(forward_w, rows.view(batch * half_h, 2 * width, channels))  # (B*half_h, per_row, ch)
        mixed = _linear_relu(spectrum.view(-1, 2 * channels), self.wfu_blocked, bias)
        cols = torch.matmul(inverse_w, mixed.view(batch * half_h, per_row, channels))  # (B*half_h, 2*columns, ch)
        # In place: y's last use, and an out-of-place baddbmm starts with a copy of it.
        out = y.view(batch, rows_in, columns * channels).baddbmm_(inverse_h.expand(batch, -1, -1),
                                                               cols.view(batch, 2 * half_h, columns * channels))
        return out.view(batch, rows_in, columns, channels)


def overflow_slots(blocks: int, like: Tensor) -> Tensor:
    """Zeroed overflow flags for a forward's residual blocks, of `like`'s dtype and device: one
    slot per block, layer and branch, (blocks, 2, 2, 8), its flag the slot's first element.
    A branch's kernels set their slot to nan and never read it; the torch operations that stand
    in for them where the kernels do not run add to it, which two streams must not do to one
    slot at once: hence a slot per branch. 8 elements a slot keep each flag 16-byte aligned, as
    Triton's kernels are specialised on their pointers' alignment. They add up in `.sum()`."""
    return like.new_zeros((blocks, 2, 2, 8))


def _branch_flags(overflow: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """A layer's (local, global) 0-d flags from its two slots of overflow_slots (None: none)."""
    return (None, None) if overflow is None else (overflow[0, 0], overflow[1, 0])


def _branches(local: Callable[[], Tensor | None], global_: Callable[[], Tensor | None],
              side: torch.cuda.Stream | None) -> tuple[Tensor | None, Tensor | None]:
    """A layer's local and global outputs, the local one on the `side` stream (where there is
    one) while the current stream computes the global one: the branches share only inputs."""
    if side is None:
        return local(), global_()
    main = torch.cuda.current_stream()
    side.wait_stream(main)
    with torch.cuda.stream(side):
        out_l = local()
    if out_l is not None:
        # Made on the side stream, used on this one: the allocator must not hand its memory
        # to the side stream again before this stream is done with it.
        out_l.record_stream(main)
    out_g = global_()
    main.wait_stream(side)
    return out_l, out_g


def _linear_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """relu(x @ weight.T + bias) over the last axis; on CUDA the ReLU and the bias are the
    matrix product's epilogue (cuBLASLt), not a second pass over the result."""
    flat = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t())
    return flat.view(*x.shape[:-1], weight.shape[0])


def _interleaved_order(channels: int) -> list[int]:
    """For each blocked index part*C + c, the official interleaved index 2c + part."""
    return [2 * (j % channels) + j // channels for j in range(2 * channels)]


def dft_matrices(height: int, width: int, device: torch.device, dtype: torch.dtype) -> DFTMatrices:
    """The Fourier unit's transforms as dense DFT matrices for one bottleneck size, scaled so
    that fp16 holds every value on the way.

    rfft2/irfft2 with orthonormal scaling are linear maps; written as matrix products over
    NHWC maps they run on the tensor cores in the weights' dtype (fp32 accumulation), with
    no transposes, no casts to fp32 and no separate kernels for the skip connection, where
    cuFFT needed fp32 copies in NCHW order and back. Real and imaginary parts live as two
    blocks of rows ('part'):
      forward, H: T[(kh, part)] = sum_h M_h[(kh, part), h] y[h]           (real -> complex)
      forward, W: Z[(side, kw, part)] = sum_(part', w) M_w[(side, kw, part), (part', w)] T[(part', w)]
      inverse, W: G[(part, w)]  = sum_(side, kw, part') N_w[(part, w), (side, kw, part')] O[(side, kw, part')]
      inverse, H: u[h]          = sum_(kh, part) N_h[h, (kh, part)] G[(kh, part)]   (real part)
    The input is real, so the transform along H keeps rows kh = 0 .. H/2 only: row H - kh of
    the spectrum is the conjugate of row kh at -kw, and the transform along W makes both from
    row kh (side 0: row kh's one-sided bins, side 1: row H - kh's). The 1x1 convolution in
    between sees every bin of rfft2's spectrum, as the official unit; rows 0 and H/2 are
    their own partners, so they come twice and the inverse counts them once. Both
    products along H are half as long as with every row (and the maps between them half as
    large), the products along W as long. The inverse weights the one-sided bins as irfft
    does (1 for DC and Nyquist, 2 for the rest), takes side 1's share conjugated (what row
    H - kh adds to the real part of the result is that of e^(i·kh·h) times its conjugate),
    keeps the mean of the two sides between its products (their sum could be twice the largest
    value on the way) and, like irfft, drops what would be the imaginary part of the result.
    The sums are finite, so doing W before H on the way back is exact.

    Scaling: the official unit is orthonormal (1/sqrt(H) and 1/sqrt(W) each way), so its
    spectrum's DC bin is sqrt(H·W) times the map's mean: it grows with the image, and at the
    largest inputs trained weights can push it past fp16's 65,504. Here the forward
    products divide by H and by W, so that every bin is at most the largest |y| (an average of
    y times unit phases), and the inverse ones divide by nothing (but for the mean of two
    rows' shares along W, counted twice along H). In between, the 1x1
    convolution is linear and its ReLU commutes with a positive factor, so it gives the
    official mixed spectrum divided by sqrt(H·W) when its bias is divided by the same
    (`spectral_bias_scale`); the inverse's unnormalised sums then return exactly the
    official output. Every intermediate is the orthonormal one's divided by sqrt(H), sqrt(H·W)
    or 1 (between the inverse products, the mean of two such rows): never larger. What falls
    to fp16's subnormals for it is below its rounding anyway.
    """

    return DFTMatrices(*(_aligned(m.to(device, dtype)) for m in _dft_matrices(height, width)))


def padded_dft_matrices(height: int, width: int, device: torch.device, dtype: torch.dtype) -> DFTMatrices:
    """dft_matrices for maps reflect-padded by 1, (H + 2, W + 2): the forward ones as they are
    (the forward products read the inside), the inverse ones with zero rows for the border's rows
    and columns (y + fu(y) leaves the border as y had it)."""
    forward_h, forward_w, inverse_w, inverse_h = _dft_matrices(height, width)
    inverse_w = F.pad(inverse_w.view(2, width, -1), (0, 0, 1, 1)).view(2 * (width + 2), -1)
    matrices = (forward_h, forward_w, inverse_w, F.pad(inverse_h, (0, 0, 1, 1)))
    return DFTMatrices(*(_aligned(m.to(device, dtype)) for m in matrices))


def _aligned(matrix: Tensor) -> Tensor:
    """`matrix` stored with rows padded to a multiple of 8 elements: the tensor-core GEMMs
    want 16-byte aligned leading dimensions (an odd bottleneck height gives odd ones)."""
    rows, cols = matrix.shape
    storage = matrix.new_zeros((rows, -(-cols // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE))
    storage[:, :cols] = matrix
    return storage[:, :cols]


def _dft_matrices(height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # Bins past the last real one are zero rows of the forward matrices and zero columns of the
    # inverse ones: exact (the mixing's ReLU(bias) there meets zero weights on the way back),
    # and they keep every product's reduction a multiple of 8 elements long.
    half_h, half_w = height // 2 + 1, width // 2 + 1
    rows_h, bins = -(-half_h // 4) * 4, -(-half_w // 2) * 2  # 2 rows_h and 4 bins: multiples of 8
    kh = torch.arange(half_h, dtype=torch.float64)
    angle_h = 2 * torch.pi * torch.outer(kh, torch.arange(height, dtype=torch.float64)) / height  # (kh, h)
    cos_h, sin_h = torch.cos(angle_h), torch.sin(angle_h)
    forward_h = torch.stack((cos_h, -sin_h), dim=1).reshape(2 * half_h, height) / height  # rows (kh, part)
    forward_h = F.pad(forward_h, (0, 0, 0, 2 * (rows_h - half_h)))
    # Row kh of inverse_w's output is the mean of rows kh and H - kh's shares (below): twice that
    # for them both, once for rows 0 and H / 2, their own partners (which arrive twice).
    share = _one_sided_counts(half_h, height)
    inverse_h = torch.stack(((share * cos_h).T, (-share * sin_h).T), dim=2).reshape(height, 2 * half_h)
    inverse_h = F.pad(inverse_h, (0, 2 * (rows_h - half_h)))  # cols (kh, part)

    angle_w = 2 * torch.pi * torch.outer(torch.arange(half_w, dtype=torch.float64),
                                         torch.arange(width, dtype=torch.float64)) / width  # (kw, w)
    cos_w, sin_w = torch.cos(angle_w), torch.sin(angle_w)
    # rows (side, kw, part_out), cols (part_in, w). Side 0 is row kh's spectrum; side 1 row
    # H - kh's, the conjugate of row kh's at -kw (the input is real): [[cos, sin], [-sin, cos]]
    # and [[cos, -sin], [-sin, -cos]].
    sides = ((cos_w, sin_w, -sin_w, cos_w), (cos_w, -sin_w, -sin_w, -cos_w))
    forward_w = torch.cat([F.pad(torch.stack((torch.stack((a, b), dim=1), torch.stack((c, d), dim=1)), dim=1)
                                 .reshape(2 * half_w, 2 * width), (0, 0, 0, 2 * (bins - half_w))) for a, b, c, d in sides])
    forward_w = forward_w / width
    # irfft's weights for the one-sided bins (1 for DC and Nyquist, 2 for the rest), halved: the
    # product's output is the mean of two rows' shares, never larger than the larger of them
    # (their sum would be twice row 0's, the map's mean, where fp16 has no room for it).
    weight = _one_sided_counts(half_w, width) / 2
    cos_i, sin_i = (weight * cos_w).T, (weight * sin_w).T  # (w, kw)
    # rows (part_out, w), cols (side, kw, part_in): side 0 [[cos, -sin], [sin, cos]] (irfft's
    # bins to a complex row); side 1 the conjugate of that, [[cos, -sin], [-sin, -cos]], so
    # that inverse_h's real part of e^(i·kh·h) times the result is both rows' share.
    sides = ((cos_i, -sin_i, sin_i, cos_i), (cos_i, -sin_i, -sin_i, -cos_i))
    inverse_w = torch.cat([F.pad(torch.stack((torch.stack((a, b), dim=2), torch.stack((c, d), dim=2)), dim=0)
                                 .reshape(2 * width, 2 * half_w), (0, 2 * (bins - half_w))) for a, b, c, d in sides], dim=1)
    return forward_h, forward_w, inverse_w, inverse_h


def _one_sided_counts(bins: int, size: int) -> Tensor:
    """(bins, 1): how often each of a one-sided spectrum's bins stands for the full one's, 1 for
    DC and (for an even size) Nyquist, 2 for the rest, each of those a conjugate pair."""
    counts = torch.full((bins, 1), 2.0, dtype=torch.float64)
    counts[0] = 1.0
    if size % 2 == 0:
        counts[-1] = 1.0
    return counts


def spectral_bias_scale(height: int, width: int) -> float:
    """What the Fourier units' biases are multiplied by at this bottleneck size: the spectrum
    dft_matrices makes is the orthonormal one times this."""
    return 1 / math.sqrt(height * width)


class FastGenerator(nn.Module):
    """`FFCResNetGenerator.forward` on NHWC maps; input and output NCHW as the generator's.

    Built from a folded generator already on its device and in its dtype (weights are
    shared, not copied). The output is a channels-last (B, 3, H, W) tensor.
    """

    def __init__(self, folded: FFCResNetGenerator, parallel_branches: bool = True):
        super().__init__()
        self.config = folded.config
        # On CUDA the residual blocks' local and global branches run on two streams: alone,
        # neither fills an H200 at the bottleneck's size (the local one's convolutions have
        # 128 output channels; the Fourier unit's products are small).
        self.parallel_branches = parallel_branches
        self._side_streams: dict[int, torch.cuda.Stream] = {}
        layers = list(folded.model)
        stem = layers[1].ffc
        if stem.convl2g is not None or stem.convg2l is not None or stem.convg2g is not None:
            raise ValueError("the fast path needs a local-only stem (init ratios 0), as big-lama's")
        # The stem's reflect padding (layers[0]) is its 7x7 kernel's half, as ReflectConv pads.
        self.stem = ReflectConv(stem.convl2l.weight, stem.convl2l.bias,
                                "relu" if isinstance(layers[1].act, nn.ReLU) else "none")
        n_down = folded.config.n_downsampling
        self.downs = [_FFCLayer(layer) for layer in layers[2:2 + n_down]]
        self.blocks = [(_FFCLayer(b.conv1), _FFCLayer(b.conv2)) for b in layers if isinstance(b, FFCResnetBlock)]
        self.ups = [_Conv(layer) for layer in layers if isinstance(layer, nn.ConvTranspose2d)]
        head = next(layer for layer in reversed(layers) if isinstance(layer, nn.Conv2d))
        last = layers[-1]
        head_act = "sigmoid" if isinstance(last, nn.Sigmoid) else "tanh" if isinstance(last, nn.Tanh) else "none"
        self.head = ReflectConv(head.weight, head.bias, head_act)
        weight = folded.model[1].ffc.convl2l.weight
        self.device, self.dtype = weight.device, weight.dtype
        self._spectral_layers = [layer for pair in self.blocks for layer in pair if layer.spectral]
        self.padded_min_pixels = PADDED_MAP_PIXELS
        self._constants: OrderedDict[tuple[int, int], BottleneckConstants] = OrderedDict()

    def _side_stream(self) -> torch.cuda.Stream:
        """The side stream paired with the current stream. One per current stream, so that a
        graph capture's side branch never shares a stream with eager work on another thread;
        concurrent eager calls share theirs, which keeps each one's fork and join in order."""
        current = torch.cuda.current_stream(self.device)
        side = self._side_streams.get(current.cuda_stream)
        if side is None:
            side = self._side_streams[current.cuda_stream] = torch.cuda.Stream(self.device)
        return side

    def constants_for_input(self, input_shape: torch.Size | tuple[int, ...]) -> BottleneckConstants:
        """The residual blocks' constants for an input of this (B, C, H, W) shape."""
        # Each stride-2 layer (3x3, padding 1) gives ceil(size / 2).
        scale = 2 ** self.config.n_downsampling
        return self.constants(-(-input_shape[-2] // scale), -(-input_shape[-1] // scale))

    def constants(self, height: int, width: int) -> BottleneckConstants:
        """The residual blocks' constants at this bottleneck size.

        Kept for the last MAX_CONSTANT_SHAPES bottleneck sizes, so that a stream of odd sizes
        does not grow GPU memory; a CUDA graph that uses an entry holds it itself
        (GraphRunner's keepalive), so dropping it here never frees memory a graph reads.
        """
        key = (height, width)
        if key in self._constants:
            self._constants.move_to_end(key)
        else:
            with on_the_default_stream(self.device):
                scale = spectral_bias_scale(height, width)
                biases = {layer: (layer.bfu_blocked.float() * scale).to(self.dtype) for layer in self._spectral_layers}
                padded = (padded_dft_matrices(height, width, self.device, self.dtype)
                          if self._padded_stage(height, width) else None)
                self._constants[key] = BottleneckConstants(dft_matrices(height, width, self.device, self.dtype),
                                                           padded, biases)
            while len(self._constants) > MAX_CONSTANT_SHAPES:
                self._constants.popitem(last=False)
        return self._constants[key]

    def compile_kernels(self, input_shapes: list[tuple[int, int, int, int]], threads: int,
                        wait_for: Callable[[], None] | None = None) -> tuple[int, float]:
        """Compiles the Triton kernels that forwards at these (B, C, H, W) input shapes launch, on
        `threads` threads at once and without running them (lama.kernels.compile_recorded);
        returns how many and the seconds the compiling took. The forwards' other operations run
        on whatever the unrun kernels' outputs held: their results are thrown away. `wait_for` is
        called between the recording and the compiling."""
        with torch.inference_mode(), kernels.recording_launches() as launches:
            for shape in input_shapes:
                self(torch.empty(shape, device=self.device, dtype=self.dtype))
        if wait_for is not None:
            wait_for()
        return kernels.compile_recorded(launches, threads)

    def _padded_stage(self, height: int, width: int) -> bool:
        """Whether the residual blocks run on maps kept reflect-padded (_FFCLayer.padded_call) at
        this bottleneck size: on a GPU with a TMA, from `padded_min_pixels` on."""
        return (bool(self.blocks) and height * width >= self.padded_min_pixels
                and all(layer.padded_runs(height, width) for block in self.blocks for layer in block))

    def _residual_blocks(self, x_l: Tensor | None, x_g: Tensor | None, constants: BottleneckConstants,
                         side: torch.cuda.Stream | None, overflow: Tensor) -> Tensor:
        """The residual blocks; their outputs side by side, (B, H, W, local + global). `overflow`:
        overflow_slots for them, which each layer sets where its maps are not finite."""
        if constants.padded_dft is None:
            for (first, second), flags in zip(self.blocks, overflow):
                x_l, x_g = second(*first(x_l, x_g, constants, side, overflow=flags[0]), constants, side,
                                  residual=(x_l, x_g), overflow=flags[1])
            return torch.cat([t for t in (x_l, x_g) if t is not None], dim=3)
        padded = reflect_pad(torch.cat([x_l, x_g], dim=3), 1)
        for (first, second), flags in zip(self.blocks, overflow):
            padded = second.padded_call(first.padded_call(padded, constants, side, overflow=flags[0]), constants, side,
                                        residual=padded, overflow=flags[1])
        return padded[:, 1:-1, 1:-1].contiguous()

    def forward(self, x: Tensor) -> Tensor:
        x = _nhwc(x)  # a view: the stem's padding pass reads the NCHW input in place
        side = self._side_stream() if self.parallel_branches and x.is_cuda else None
        downs = self.downs
        if downs and downs[0].input_pad == 1:
            # The first down-sampling pads the stem's output by 1: the stem writes it so, without
            # a pass over the full-size map (at 2560×1920, 64 channels: 629 MB read, 630 written).
            x_l, x_g = downs[0](None, None, side=side, padded_l=self.stem(x, padded_by=1))
            downs = downs[1:]
        else:
            x_l, x_g = self.stem(x), None
        for layer in downs:
            x_l, x_g = layer(x_l, x_g, side=side)
        # An overflow (a value past fp16's 65,504) leaves inf or nan in the bottleneck: the
        # residual blocks' layers flag it where they make it or read it.
        slots = overflow_slots(len(self.blocks), x_l)
        x = self._residual_blocks(x_l, x_g, self.constants(x_l.shape[1], x_l.shape[2]), side, slots)
        overflow = slots.sum()
        if not self.ups:
            out = self.head(x)
        else:
            for up in self.ups[:-1]:
                x = reflect_pad(up(x, bias=False), 0, relu=True, bias=up.bias)
            # The last up-sampling's bias and ReLU are applied as the head pads its input, saving
            # two passes over the full-size map.
            last = self.ups[-1]
            out = self.head(last(x, bias=False), relu_input=True, input_bias=last.bias)
        # The head's sigmoid could make an overflow look like a plausible colour: the output says
        # so instead, all nan (0 added everywhere, or nan), which is what callers check for
        # (lama.fastpath.Fp32Fallback). No sync: a graph replays this too.
        return _nchw(out.add_(overflow))


@contextlib.contextmanager
def on_the_default_stream(device: torch.device) -> Iterator[None]:
    """Tensors made in the block are allocated on the default stream and ready for the current
    one. Constants that runs on several streams read (each GPU worker has its own) must not
    belong to one worker's stream: freed, their memory would go back to that stream's pool and
    could be reused there while a run on another stream still read it. No worker allocates on
    the default stream."""
    if device.type != "cuda":
        yield
        return
    current = torch.cuda.current_stream(device)
    default = torch.cuda.default_stream(device)
    default.wait_stream(current)
    with torch.cuda.stream(default):
        yield
    current.wait_stream(default)
