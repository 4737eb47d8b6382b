"""The big-lama generator: LaMa's FFC-ResNet (Suvorov et al., 2021), written for inference.

Module and attribute names mirror the official checkpoint so that its ``generator.*``
state dict loads without renaming (``model.5.conv1.ffc.convg2g.fu.conv_layer.weight``).
The network works on a (local, global) pair of feature maps: the local branch sees
3x3 neighbourhoods, the global branch is mixed by a 1x1 convolution in the Fourier
domain, which is what gives LaMa its image-wide receptive field.

Precision: weights may be fp16, but half-precision cuFFT only accepts power-of-two
sizes, so the Fourier transforms always run in fp32 and their results are cast back.
"""

from __future__ import annotations

import reprlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# A feature map split in two branches; a branch with no channels is the integer 0
# so that ``a + b`` still works when one side is absent (as in the official code).
Pair = tuple[Tensor | int, Tensor | int]


# The generators this code builds: big-lama and smaller networks of its layout. Every size is
# bounded by big-lama's own, so that no config (a checkpoint's, a file's) can make us build,
# or allocate for, a network larger than big-lama: one outside these bounds is refused first.
SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "input_nc": (4, 4),  # masked RGB + mask, what the engine feeds
    "output_nc": (3, 3),  # RGB, what the engine composites
    "ngf": (1, 64),
    "n_downsampling": (3, 3),  # every published LaMa; the engine pads to multiples of 2**3
    "n_blocks": (1, 18),
}
OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "none", "False")


@dataclass(frozen=True)
class FFCKwargs:
    """Share of global channels at a layer's input and output (each 0..1)."""

    ratio_gin: float = 0.0
    ratio_gout: float = 0.0
    enable_lfu: bool = False

    def __post_init__(self) -> None:
        for name in ("ratio_gin", "ratio_gout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} = {reprlib.repr(value)} is not a ratio between 0 and 1")
            object.__setattr__(self, name, float(value))
        if self.enable_lfu:
            raise ValueError(f"enable_lfu = {reprlib.repr(self.enable_lfu)} is not supported "
                             "(big-lama does not use the local Fourier unit)")


@dataclass(frozen=True)
class GeneratorConfig:
    """The ``generator:`` section of LaMa's training config, the fields inference needs.

    Construction refuses anything outside big-lama's family (:data:`SIZE_BOUNDS`) with a
    ``ValueError`` naming the value, so a config that exists can be built cheaply.
    """

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    add_out_act: str = "sigmoid"
    init_conv_kwargs: FFCKwargs = field(default_factory=FFCKwargs)
    downsample_conv_kwargs: FFCKwargs = field(default_factory=FFCKwargs)
    resnet_conv_kwargs: FFCKwargs = field(default_factory=lambda: FFCKwargs(0.75, 0.75))

    def __post_init__(self) -> None:
        for name, (low, high) in SIZE_BOUNDS.items():
            value = getattr(self, name)
            if type(value) is not int:
                raise ValueError(f"{name} = {reprlib.repr(value)} is not an integer")
            if not low <= value <= high:
                bounds = str(low) if low == high else f"{low}..{high}"
                raise ValueError(f"{name} = {reprlib.repr(value)} is outside big-lama's family ({name} {bounds})")
        if self.add_out_act not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unsupported output activation {reprlib.repr(self.add_out_act)}")
        resnet = self.resnet_conv_kwargs
        if resnet.ratio_gin != resnet.ratio_gout:
            # A residual block adds its input to its output: both must split alike.
            raise ValueError(f"resnet_conv_kwargs ratio_gin {resnet.ratio_gin} and ratio_gout {resnet.ratio_gout} differ")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GeneratorConfig:
        """Build from a (resolved) config mapping; unknown training-only keys are ignored.

        Values keep their type (a string "64" is refused, not converted): the mapping
        comes from a file, and only big-lama's own spelling of its config is accepted.
        """
        if not isinstance(raw, dict):
            raise ValueError(f"the generator config is a {type(raw).__name__}, not a mapping")
        kind = raw.get("kind", "ffc_resnet")
        if kind != "ffc_resnet":
            raise ValueError(f"unsupported generator kind {reprlib.repr(kind)}: "
                             "only 'ffc_resnet' (big-lama) is implemented")
        values: dict[str, Any] = {name: raw[name] for name in SIZE_BOUNDS if name in raw}
        if "add_out_act" in raw:
            act = raw["add_out_act"]
            values["add_out_act"] = "tanh" if act is True else "False" if act is False else act
        for name in ("init_conv_kwargs", "downsample_conv_kwargs", "resnet_conv_kwargs"):
            if name in raw:
                sub = raw[name] or {}
                if not isinstance(sub, dict):
                    raise ValueError(f"{name} is a {type(sub).__name__}, not a mapping")
                values[name] = FFCKwargs(sub.get("ratio_gin", 0), sub.get("ratio_gout", 0), sub.get("enable_lfu", False))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BIG_LAMA_CONFIG = GeneratorConfig()


class FourierUnit(nn.Module):
    """1x1 convolution on the real FFT of the input: every output pixel sees the whole map."""

    def __init__(self, channels: int):
        super().__init__()
        # Real and imaginary parts become channels, so the convolution sees 2 x channels.
        self.conv_layer = nn.Conv2d(channels * 2, channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        # fp32 transform whatever the weights' dtype (see module docstring).
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")
        # Interleave per channel: c0.re, c0.im, c1.re, c1.im, ...
        spectrum = torch.stack((spectrum.real, spectrum.imag), dim=2)
        spectrum = spectrum.reshape(batch, channels * 2, height, width // 2 + 1).to(x.dtype)
        spectrum = self.relu(self.bn(self.conv_layer(spectrum)))
        spectrum = spectrum.float().reshape(batch, channels, 2, height, width // 2 + 1)
        spectrum = torch.complex(spectrum[:, :, 0], spectrum[:, :, 1])
        return torch.fft.irfft2(spectrum, s=(height, width), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    """The global-to-global path: squeeze channels, Fourier unit with a skip, expand."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        return self.conv2(y + self.fu(y))


def _split(channels: int, ratio: float) -> tuple[int, int]:
    """(local, global) channel counts, rounded as the official code does."""
    global_channels = int(channels * ratio)
    return channels - global_channels, global_channels


class FFC(nn.Module):
    """Fast Fourier Convolution: four paths between the local and global branches.

    local_out = l2l(local) + g2l(global); global_out = l2g(local) + g2g(global).
    A path whose input or output branch has no channels does not exist.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0):
        super().__init__()
        in_l, in_g = _split(in_channels, ratio_gin)
        out_l, out_g = _split(out_channels, ratio_gout)

        def conv(cin: int, cout: int) -> nn.Module | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False, padding_mode="reflect")

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        self.convg2g = SpectralTransform(in_g, out_g) if in_g and out_g else None

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x
        out_l: Tensor | int = 0
        out_g: Tensor | int = 0
        for path, source, to_local in ((self.convl2l, x_l, True), (self.convg2l, x_g, True),
                                       (self.convl2g, x_l, False), (self.convg2g, x_g, False)):
            if path is None:
                continue
            if to_local:
                out_l = out_l + path(source)
            else:
                out_g = out_g + path(source)
        return out_l, out_g


class FFC_BN_ACT(nn.Module):
    """FFC followed by BatchNorm and an activation on each branch that exists."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, activation: bool = True):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding)
        out_l, out_g = _split(out_channels, ratio_gout)
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else None
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = self.ffc(x)
        if self.bn_l is not None:
            x_l = self.act(self.bn_l(x_l))
        if self.bn_g is not None:
            x_g = self.act(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    def __init__(self, channels: int, ratio: FFCKwargs):
        super().__init__()
        self.conv1 = FFC_BN_ACT(channels, channels, 3, ratio.ratio_gin, ratio.ratio_gout, padding=1)
        self.conv2 = FFC_BN_ACT(channels, channels, 3, ratio.ratio_gin, ratio.ratio_gout, padding=1)

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = self.conv2(self.conv1(x))
        return x[0] + x_l, x[1] + x_g


class ToPair(nn.Module):
    """Enter the two-branch part of the network: all channels start local."""

    def forward(self, x: Tensor) -> Pair:
        return x, 0


class ConcatTuple(nn.Module):
    """Leave the two-branch part: local channels first, then global."""

    def forward(self, x: Pair) -> Tensor:
        x_l, x_g = x
        if isinstance(x_g, int):
            return x_l
        if isinstance(x_l, int):
            return x_g
        return torch.cat((x_l, x_g), dim=1)


class FFCResNetGenerator(nn.Module):
    """Input: (B, 4, H, W) = masked RGB in 0..1 and the mask; H and W multiples of 2**n_downsampling."""

    def __init__(self, config: GeneratorConfig = BIG_LAMA_CONFIG):
        super().__init__()
        self.config = config
        ngf, n_down = config.ngf, config.n_downsampling
        init, down, res = config.init_conv_kwargs, config.downsample_conv_kwargs, config.resnet_conv_kwargs

        # Indices matter: they are the state dict keys of the official checkpoint.
        layers: list[nn.Module] = [
            nn.Sequential(nn.ReflectionPad2d(3), ToPair()),
            FFC_BN_ACT(config.input_nc, ngf, 7, init.ratio_gin, init.ratio_gout),
        ]
        for i in range(n_down):
            channels = ngf * 2**i
            # The last downsampling already produces the global branch the blocks expect.
            ratio_gout = res.ratio_gin if i == n_down - 1 else down.ratio_gout
            layers.append(FFC_BN_ACT(channels, channels * 2, 3, down.ratio_gin, ratio_gout, stride=2, padding=1))
        bottleneck = ngf * 2**n_down
        layers += [FFCResnetBlock(bottleneck, res) for _ in range(config.n_blocks)]
        layers.append(ConcatTuple())
        for i in range(n_down):
            channels = ngf * 2 ** (n_down - i)
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, config.output_nc, kernel_size=7)]
        if config.add_out_act == "sigmoid":
            layers.append(nn.Sigmoid())
        elif config.add_out_act == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
