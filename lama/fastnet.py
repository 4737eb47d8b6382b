"""big-lama's forward pass written for the GPU: channels-last all the way, fewer passes.

The same function as `lama.model.FFCResNetGenerator` (built from a BatchNorm-folded copy,
`lama.fastpath.fold_batchnorm`), organised around what the profiler showed on an H200:
- cuDNN's fp16 tensor-core convolutions work on NHWC. The module version keeps NCHW
  tensors, so every convolution transposes in and out, and reflect padding on CUDA turns
  a channels-last tensor back into NCHW. Here every feature map is an NHWC tensor
  (B, H, W, C) and reflect padding is done in NHWC (`reflect_pad`).
- 1x1 convolutions are matrix products over the channel axis; where a branch adds two
  paths, the second is accumulated into the first (`addmm`, cuDNN's conv+add+ReLU).
- The Fourier unit transforms in fp32 (half-precision cuFFT refuses non-power-of-two
  sizes) on NCHW copies, where cuFFT's batched transforms read contiguous rows, and the
  real/imaginary interleaving of the official layout is the innermost axis of an NHWC
  spectrum, so the transposes and casts are single copies.
- The 4-channel input and the 3-channel output get zero channels up to 8, so that their
  7x7 convolutions run on tensor cores too (the extra channels carry exact zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama.model import FFC_BN_ACT, FFCResNetGenerator, FFCResnetBlock

CHANNEL_MULTIPLE = 8  # fp16 tensor-core convolutions want channel counts in multiples of 8


def reflect_pad(x: Tensor, pad: int) -> Tensor:
    """Reflect-pad an NHWC tensor's H and W by `pad` (as F.pad(mode='reflect') does to NCHW)."""
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


def _nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


class _Conv:
    """A folded convolution's weights, channels-last, with its geometry."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d | None, in_pad: int = 0, out_pad: int = 0):
        self.present = conv is not None
        if conv is None:
            return
        weight = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else None
        transposed = isinstance(conv, nn.ConvTranspose2d)
        if in_pad or out_pad:  # zero input/output channels, exact
            out_dim, in_dim = (1, 0) if transposed else (0, 1)
            shape = list(weight.shape)
            shape[in_dim] += in_pad
            shape[out_dim] += out_pad
            padded = weight.new_zeros(shape)
            padded.narrow(in_dim, 0, weight.shape[in_dim]).narrow(out_dim, 0, weight.shape[out_dim]).copy_(weight)
            weight = padded
            if bias is not None:
                bias = torch.cat((bias, bias.new_zeros(out_pad)))
        self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias
        self.stride = conv.stride
        self.padding = conv.padding
        self.reflect = getattr(conv, "padding_mode", "zeros") == "reflect" and conv.padding[0] > 0
        self.transposed = transposed
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
            out = F.conv2d(_nchw(padded), self.weight, b, self.stride, 0 if self.reflect else self.padding)
        return _nhwc(out).contiguous()

    def add_relu(self, padded: Tensor, addend: Tensor) -> Tensor:
        """relu(conv(padded) + bias + addend), fused by cuDNN on CUDA."""
        if padded.is_cuda and not self.transposed:
            out = torch.cudnn_convolution_add_relu(
                _nchw(padded), self.weight, _nchw(addend), 1.0, self.bias, self.stride, (0, 0), (1, 1), 1)
            return _nhwc(out).contiguous()
        return self(padded).add_(addend).relu_()

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        if self.present:
            self.weight = self.weight.to(device, dtype)
            self.bias = self.bias.to(device, dtype) if self.bias is not None else None


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
            self.w2 = spectral.conv2.weight.detach()[:, :, 0, 0]
            self.b2 = spectral.conv2.bias.detach() if spectral.conv2.bias is not None else None

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        for conv in (self.l2l, self.g2l, self.l2g):
            conv.to(device, dtype)
        if self.spectral:
            for name in ("w1", "b1", "wfu", "bfu", "w2", "b2"):
                value = getattr(self, name)
                if value is not None:
                    setattr(self, name, value.to(device, dtype))

    def _pad(self, x: Tensor | None, conv: _Conv) -> Tensor | None:
        return reflect_pad(x, conv.pad) if x is not None and conv.reflect else x

    def __call__(self, x_l: Tensor | None, x_g: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        geometry = next(c for c in (self.l2l, self.l2g, self.g2l) if c.present)
        p_l = self._pad(x_l, geometry) if self.l2l.present or self.l2g.present else None
        p_g = self._pad(x_g, geometry) if self.g2l.present else None
        out_l = out_g = None
        if self.l2l.present:
            if self.g2l.present:
                out_l = self.l2l.add_relu(p_l, self.g2l(p_g, bias=False)) if self.relu else \
                    self.l2l(p_l).add_(self.g2l(p_g, bias=False))
            else:
                out_l = self.l2l(p_l)
                if self.relu:
                    out_l.relu_()
        if self.spectral:
            spectral = self._spectral(x_g)
            if self.l2g.present:
                out_g = self.l2g.add_relu(p_l, spectral) if self.relu else self.l2g(p_l).add_(spectral)
            else:
                out_g = spectral.relu_() if self.relu else spectral
        elif self.l2g.present:
            out_g = self.l2g(p_l)
            if self.relu:
                out_g.relu_()
        return out_l, out_g

    def _spectral(self, x_g: Tensor) -> Tensor:
        """conv2(y + fu(y)) with y = relu(conv1(x_g)): NHWC in and out, conv2's bias included."""
        y = F.linear(x_g, self.w1, self.b1).relu_()
        summed = self._fourier(y)
        batch, height, width, channels = summed.shape
        flat = summed.view(-1, channels)
        out = F.linear(flat, self.w2, self.b2)
        return out.view(batch, height, width, -1)

    def _fourier(self, y: Tensor) -> Tensor:
        """y + FourierUnit(y), NHWC."""
        batch, height, width, channels = y.shape
        half = width // 2 + 1
        planar = torch.empty((batch, channels, height, width), dtype=torch.float32, device=y.device)
        planar.copy_(_nchw(y))
        spectrum = torch.view_as_real(torch.fft.rfft2(planar, norm="ortho"))  # (B, C, H, W', 2)
        interleaved = torch.empty((batch, height, half, channels, 2), dtype=y.dtype, device=y.device)
        interleaved.copy_(spectrum.permute(0, 2, 3, 1, 4))  # c0.re, c0.im, c1.re, ... innermost
        mixed = F.linear(interleaved.view(batch, height, half, 2 * channels), self.wfu, self.bfu).relu_()
        planar_spectrum = torch.empty((batch, channels, height, half, 2), dtype=torch.float32, device=y.device)
        planar_spectrum.copy_(mixed.view(batch, height, half, channels, 2).permute(0, 3, 1, 2, 4))
        back = torch.fft.irfft2(torch.view_as_complex(planar_spectrum), s=(height, width), norm="ortho")
        return torch.add(y, _nhwc(back), out=torch.empty_like(y))


class FastGenerator(nn.Module):
    """`FFCResNetGenerator.forward` on NHWC maps; input and output NCHW as the generator's.

    Built from a folded generator already on its device and in its dtype (weights are
    shared, not copied). The output is a channels-last (B, 3, H, W) tensor.
    """

    def __init__(self, folded: FFCResNetGenerator):
        super().__init__()
        self.config = folded.config
        layers = list(folded.model)
        self.stem_pad = layers[0][0].padding[0]
        self.in_channels = folded.config.input_nc
        in_pad = -self.in_channels % CHANNEL_MULTIPLE
        stem = layers[1]
        self.stem = _FFCLayer(stem)
        self.stem.l2l = _Conv(stem.ffc.convl2l, in_pad=in_pad)
        self.stem_in_pad = in_pad
        n_down = folded.config.n_downsampling
        self.downs = [_FFCLayer(layer) for layer in layers[2:2 + n_down]]
        self.blocks = [(_FFCLayer(b.conv1), _FFCLayer(b.conv2)) for b in layers if isinstance(b, FFCResnetBlock)]
        self.ups = [_Conv(layer) for layer in layers if isinstance(layer, nn.ConvTranspose2d)]
        head = next(layer for layer in reversed(layers) if isinstance(layer, nn.Conv2d))
        self.out_channels = head.out_channels
        self.head = _Conv(head, out_pad=-self.out_channels % CHANNEL_MULTIPLE)
        self.head_pad = next(layer for layer in reversed(layers) if isinstance(layer, nn.ReflectionPad2d)).padding[0]
        last = layers[-1]
        self.out_act = torch.sigmoid if isinstance(last, nn.Sigmoid) else torch.tanh if isinstance(last, nn.Tanh) \
            else None
        weight = folded.model[1].ffc.convl2l.weight
        for part in (self.stem, *self.downs, *(layer for pair in self.blocks for layer in pair)):
            part.to(weight.device, weight.dtype)
        for conv in (*self.ups, self.head):
            conv.to(weight.device, weight.dtype)
        self.stem.l2l.to(weight.device, weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = _nhwc(x)
        if self.stem_in_pad:
            x = F.pad(x, (0, self.stem_in_pad))
        x_l, x_g = self.stem(reflect_pad(x, self.stem_pad), None)
        for layer in self.downs:
            x_l, x_g = layer(x_l, x_g)
        for first, second in self.blocks:
            y_l, y_g = second(*first(x_l, x_g))
            x_l, x_g = x_l + y_l, x_g + y_g
        x = torch.cat([t for t in (x_l, x_g) if t is not None], dim=3)
        for up in self.ups:
            x = up(x).relu_()
        x = self.head(reflect_pad(x, self.head_pad))[..., :self.out_channels]
        x = self.out_act(x) if self.out_act is not None else x.contiguous()
        return _nchw(x)
