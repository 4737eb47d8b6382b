"""The fast path's rewrites compute the same function (CPU; the CUDA parts are in test_cuda.py)."""

import copy
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lama.checkpoint import build_generator, load_checkpoint
from lama.engine import InpaintEngine
from lama.fastnet import FastGenerator, dft_matrices, padded_dft_matrices
from lama import fastpath
from lama.fastpath import DeviceRepair, Fp32Fallback, ShapeSightings, fold_batchnorm
from lama import kernels
from lama.kernels import LARGE_MAP_PIXELS, SUM_TILE, ReflectConv, ReflectConvSum, nonfinite_flag, reflect_pad
from lama.model import GeneratorConfig, FFCResNetGenerator
from lama.reference import composite, to_uint8


def test_folding_batchnorm_keeps_the_official_fixture_output(tiny_dir):
    generator = build_generator(load_checkpoint(tiny_dir))
    folded = fold_batchnorm(generator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()), "every BatchNorm is folded"
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules()), "the original is left alone"

    image = cv2.cvtColor(cv2.imread(str(tiny_dir / "cases/stroke_100x76_image.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(tiny_dir / "cases/stroke_100x76_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    engine = InpaintEngine(tiny_dir, device="cpu")
    with torch.inference_mode():
        net_input = engine.backend.model_input(image, mask)[2]
        assert torch.allclose(folded(net_input), generator(net_input), atol=1e-5)


def _random_statistics(generator: FFCResNetGenerator) -> FFCResNetGenerator:
    for module in generator.modules():
        if isinstance(module, nn.BatchNorm2d):  # far from identity, so a missed fold shows
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return generator


def test_folding_handles_random_statistics_in_every_layer_kind():
    torch.manual_seed(3)
    generator = _random_statistics(FFCResNetGenerator(GeneratorConfig(ngf=8, n_blocks=2)).eval())
    x = torch.rand(2, 4, 48, 64)
    with torch.inference_mode():
        assert torch.allclose(fold_batchnorm(generator)(x), generator(x), atol=1e-5)


def test_the_cpu_engine_is_the_plain_reference_path(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="cpu", fast=True)
    assert engine.describe()["fast_path"] is False
    assert any(isinstance(m, nn.BatchNorm2d) for m in engine.backend.generator.modules())
    assert np.isfinite(engine.reference().backend.predict(np.zeros((16, 16, 3), np.uint8), np.ones((16, 16), bool))).all()


def test_reflect_pad_in_nhwc_is_torchs_reflect_pad():
    x = torch.rand(2, 9, 5, 7)
    for pad in (1, 3):
        expected = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (pad,) * 4, mode="reflect").permute(0, 2, 3, 1)
        assert torch.equal(reflect_pad(x, pad), expected)
        assert torch.equal(reflect_pad(x - 0.5, pad, relu=True), (expected - 0.5).relu())
        bias = torch.rand(7) - 0.5
        assert torch.equal(reflect_pad(x, pad, relu=True, bias=bias), (expected + bias).relu())
    assert torch.equal(reflect_pad(x, 0, relu=True, bias=-bias), (x - bias).relu()), "pad 0: bias and ReLU alone"


def test_the_nhwc_generator_computes_the_generators_function():
    torch.manual_seed(4)
    for config in (GeneratorConfig(ngf=16, n_blocks=2), GeneratorConfig(ngf=8, n_blocks=1, output_nc=3)):
        generator = _random_statistics(FFCResNetGenerator(config).eval())
        fast = FastGenerator(fold_batchnorm(generator))
        for shape in ((1, 4, 56, 72), (2, 4, 16, 16), (1, 4, 80, 24)):
            x = torch.rand(shape)
            with torch.inference_mode():
                expected, got = generator(x), fast(x)
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, atol=1e-5), (config, shape)


def test_the_nhwc_generator_reproduces_the_official_fixture(tiny_dir):
    generator = build_generator(load_checkpoint(tiny_dir))
    fast = FastGenerator(fold_batchnorm(generator))
    engine = InpaintEngine(tiny_dir, device="cpu")
    image = cv2.cvtColor(cv2.imread(str(tiny_dir / "cases/border_130x90_image.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(tiny_dir / "cases/border_130x90_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    with torch.inference_mode():
        x, m, net_input = engine.backend.model_input(image, mask)
        out = (m * fast(net_input) + (1 - m) * x)[0, :, :90, :130].permute(1, 2, 0).numpy()
    assert np.abs(out - np.load(tiny_dir / "cases/border_130x90_expected.npy")).max() <= 1e-4


def test_device_padding_is_numpys_symmetric_padding(tiny_dir):
    """The engine pads on the device; sizes far below the bottleneck's need included (1×1 -> 16×16)."""
    engine = InpaintEngine(tiny_dir, device="cpu")
    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (3, 2), (9, 17), (76, 100)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = rng.random((height, width)) < 0.5
        x, m, _ = engine.backend.model_input(image, mask)
        rows, cols = x.shape[2] - height, x.shape[3] - width
        want = np.pad(image, ((0, rows), (0, cols), (0, 0)), mode="symmetric")
        assert np.array_equal((x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), want)
        assert np.array_equal(m[0, 0].numpy() > 0, np.pad(mask, ((0, rows), (0, cols)), mode="symmetric"))


def test_the_device_repair_is_the_references_steps_in_one_call(tiny_dir):
    """What the fast path's whole-repair graph replays (DeviceRepair, run eagerly here): the
    reference's steps around the same network to the bit, from the uploaded pixels to uint8, at
    sizes that pad by nothing, by a little and by more than the image has; the unmasked pixels
    untouched; and a zero overflow flag."""
    backend = InpaintEngine(tiny_dir, device="cpu").backend
    network = FastGenerator(fold_batchnorm(backend.generator))
    on_device = DeviceRepair(network, backend.padded_size)
    rng = np.random.default_rng(1)
    for height, width in ((16, 24), (76, 100), (3, 2)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = rng.random((height, width)) < 0.3
        with torch.inference_mode():
            got, flag = on_device(torch.from_numpy(image), torch.from_numpy(mask))
            x, m, net_input = backend.model_input(image, mask)
            want = to_uint8(composite(x, m, network(net_input), (height, width)))
        assert got.dtype == torch.uint8 and got.shape == (height, width, 3)
        assert torch.equal(got, want), (height, width)
        assert got[torch.from_numpy(~mask)].tolist() == torch.from_numpy(image)[torch.from_numpy(~mask)].tolist()
        assert float(flag) == 0


def test_the_device_repairs_padding_indices_are_bounded_and_held_by_a_graphs_keepalive(tiny_dir):
    """A stream of odd sizes keeps the last MAX_INDEX_SHAPES sizes' indices; what a graph keeps
    alive is its own size's, whatever the cache has dropped since."""
    backend = InpaintEngine(tiny_dir, device="cpu").backend
    on_device = DeviceRepair(FastGenerator(fold_batchnorm(backend.generator)), backend.padded_size)
    kept = on_device.keepalive(torch.Size((9, 17, 3)))
    rows, cols = kept[0]
    for width in range(20, 20 + fastpath.MAX_INDEX_SHAPES + 4):
        on_device.indices(8, width)
    assert len(on_device._indices) == fastpath.MAX_INDEX_SHAPES and (9, 17) not in on_device._indices
    assert rows.tolist() == [*range(9), 8, 7, 6, 5, 4, 3, 2] and cols.shape == (24,)


def test_per_size_constants_are_bounded_and_match_the_bottleneck():
    """A stream of odd sizes must not grow (GPU) memory: the per-size cache keeps the last few."""
    from lama import fastnet

    torch.manual_seed(5)
    fast = FastGenerator(fold_batchnorm(FFCResNetGenerator(GeneratorConfig(ngf=8, n_blocks=1)).eval()))
    with torch.inference_mode():
        for width in range(16, 16 + 8 * (fastnet.MAX_CONSTANT_SHAPES + 4), 8):
            fast(torch.rand(1, 4, 16, width))
    assert len(fast._constants) == fastnet.MAX_CONSTANT_SHAPES
    assert fast.constants_for_input((1, 4, 16, width)) is fast._constants[(2, width // 8)]
    assert fast.constants_for_input((1, 4, 17, 9)).dft.forward_h.shape[1] == 3, "ceil(17 / 8) rows"


def test_reflect_conv_is_a_reflect_padded_convolution_with_its_activations():
    torch.manual_seed(6)
    for in_channels, out_channels, kernel in ((4, 16, 7), (16, 3, 7), (8, 8, 3)):
        weight, bias = torch.randn(out_channels, in_channels, kernel, kernel), torch.randn(out_channels)
        x = torch.randn(2, in_channels, 11, 13)  # NCHW, read through its NHWC view as the stem does
        for activation in ("none", "relu", "sigmoid", "tanh"):
            conv = ReflectConv(weight, bias, activation)
            for relu_input in (False, True):
                source = x.relu() if relu_input else x
                want = F.conv2d(F.pad(source, (kernel // 2,) * 4, mode="reflect"), weight, bias)
                want = want if activation == "none" else getattr(torch, activation)(want)
                got = conv(x.permute(0, 2, 3, 1), relu_input=relu_input)
                assert got.shape == (2, 11, 13, out_channels) and got.is_contiguous()
                assert torch.allclose(got.permute(0, 3, 1, 2), want, atol=1e-5), (in_channels, activation, relu_input)


def test_reflect_conv_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="odd, square kernel"):
        ReflectConv(torch.zeros(3, 4, 4, 4), None)
    with pytest.raises(ValueError, match="unknown activation"):
        ReflectConv(torch.zeros(3, 4, 3, 3), None, "gelu")


def _conv_sum_by_torch(inputs, weights, bias, relu, residual):
    """The FFC output as the module computes it: each path reflect-padded and convolved."""
    out = bias.view(1, -1, 1, 1)
    for x, weight in zip(inputs, weights):
        pad = weight.shape[-1] // 2
        source = x.permute(0, 3, 1, 2)
        out = out + F.conv2d(F.pad(source, (pad,) * 4, mode="reflect") if pad else source, weight)
    out = out.relu() if relu else out
    out = out.permute(0, 2, 3, 1)
    return out + residual if residual is not None else out


def test_reflect_conv_sum_sums_reflect_padded_and_pointwise_convolutions():
    torch.manual_seed(8)
    for shapes, relu, with_residual in ((((12, 3), (20, 3)), True, True), (((12, 3), (20, 1)), True, False),
                                       (((8, 3),), False, True)):
        weights = [torch.randn(16, cin, k, k) for cin, k in shapes]
        bias = torch.randn(16)
        inputs = [torch.randn(2, 5, 7, cin) for cin, _ in shapes]
        residual = torch.randn(2, 5, 7, 16) if with_residual else None
        got = ReflectConvSum(weights, bias, relu)(inputs, residual=residual)
        assert got.shape == (2, 5, 7, 16) and got.is_contiguous()
        want = _conv_sum_by_torch(inputs, weights, bias, relu, residual)
        assert torch.allclose(got, want, atol=1e-5), (shapes, relu, with_residual)


def test_reflect_conv_sum_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="one or two convolutions"):
        ReflectConvSum([torch.zeros(4, 4, 3, 3)] * 3, torch.zeros(4), True)
    with pytest.raises(ValueError, match="3x3 and 1x1 convolutions with the same output channels"):
        ReflectConvSum([torch.zeros(4, 4, 3, 3), torch.zeros(5, 4, 3, 3)], torch.zeros(4), True)
    with pytest.raises(ValueError, match="3x3 and 1x1"):
        ReflectConvSum([torch.zeros(4, 4, 5, 5)], torch.zeros(4), True)
    with pytest.raises(ValueError, match="expected 2 inputs, got 1"):
        ReflectConvSum([torch.zeros(4, 4, 3, 3)] * 2, torch.zeros(4), True)([torch.zeros(1, 3, 3, 4)])


def test_the_large_maps_tile_serves_fp16_maps_from_its_size_on_and_nothing_else():
    """The tile is a launch parameter: a wrong choice is only slower, which no CPU test sees. What
    it must not do is hand the large tile (measured in fp16 only) to fp32 maps or to small ones."""
    large = (128, 128, 4, 3)
    conv = ReflectConvSum([torch.zeros(16, 16, 3, 3)], torch.zeros(16), True, large_tile=large)
    assert conv.tile(LARGE_MAP_PIXELS, torch.float16) == large
    assert conv.tile(LARGE_MAP_PIXELS - 1, torch.float16) == SUM_TILE
    assert conv.tile(4 * LARGE_MAP_PIXELS, torch.float32) == SUM_TILE
    conv.tune(32, 64, 4, 2)  # a sweep's one tile, for every size and dtype
    assert conv.tile(LARGE_MAP_PIXELS, torch.float16) == conv.tile(16, torch.float32) == (32, 64, 4, 2)


class _Kernel:
    """Stands in for a Triton kernel where there is no Triton: what it was launched and compiled with."""

    arg_names = ["src", "height", "channels", "BLOCK"]
    do_not_specialize = ["height"]

    def __init__(self):
        self.launched, self.compiled, self.loaded = [], [], 0

    def __getitem__(self, grid):
        return lambda *args, **options: self.launched.append((grid, args, options))

    def warmup(self, *args, grid, **options):
        self.compiled.append((args, options))
        return _Compiled(self)


class _Compiled:
    """Stands in for a compiled Triton kernel: whether its launcher was built and its module loaded."""

    def __init__(self, kernel: _Kernel):
        self.kernel = kernel

    def _init_handles(self):
        self.kernel.loaded += 1


def test_recorded_launches_are_not_run_and_each_specialisation_compiles_once():
    """While a forward records (the warm-up's compiling ahead), its kernels are noted, not run,
    and what Triton would compile apart is compiled apart, once each, launcher included: a size
    that only the unspecialised argument sees shares its kernel; an unaligned map, a channel count
    that divides differently by 16 or another constant does not."""
    kernel, x = _Kernel(), torch.zeros(64, dtype=torch.float16)
    kernels._launch(kernel, (1,), x, 5, 32, BLOCK=16)
    with kernels.recording_launches() as launches:
        kernels._launch(kernel, (2,), x, 7, 32, BLOCK=16)
        kernels._launch(kernel, (9,), x, 9, 32, BLOCK=16)  # another height: the same kernel
        kernels._launch(kernel, (9,), x[1:], 9, 32, BLOCK=16)  # 2 bytes past 16-byte alignment
        kernels._launch(kernel, (9,), x, 9, 40, BLOCK=16)  # 40 channels: not a multiple of 16
        kernels._launch(kernel, (9,), x, 9, 1, BLOCK=16)  # 1: Triton makes it a constant
        kernels._launch(kernel, (9,), x, 9, 32, BLOCK=32)
    kernels._launch(kernel, (1,), x, 5, 32, BLOCK=16)
    assert [grid for grid, _, _ in kernel.launched] == [(1,), (1,)], "recording stops with its block"
    assert len(launches) == 6 and not kernel.compiled
    assert all(launch.device is None for launch in launches), "CPU tensors: no CUDA device to compile on"
    count, seconds = kernels.compile_recorded(launches, threads=3)
    assert count == 5 and len(kernel.compiled) == 5 and seconds >= 0
    assert kernel.loaded == 5, "each launcher is built ahead too, not at the first run"
    pointers = [args[0] for args, _ in kernel.compiled]
    assert {(p.dtype, p.data_ptr() - x.data_ptr()) for p in pointers} == {(torch.float16, 0), (torch.float16, 2)}
    assert sorted(options["BLOCK"] for _, options in kernel.compiled) == [16, 16, 16, 16, 32]


# ------------------------------------------------------------------ fp16 never overflows silently


def _fp16_and_fp32(seed: int) -> tuple[FastGenerator, FastGenerator, FFCResNetGenerator]:
    """The NHWC generator in fp16 and in fp32 over the same (fp16-rounded) folded weights, and the
    fp16 folded module the fp16 one shares its weights with."""
    torch.manual_seed(seed)
    folded = fold_batchnorm(_random_statistics(FFCResNetGenerator(GeneratorConfig(ngf=8, n_blocks=1)).eval()))
    folded = folded.half()
    return FastGenerator(folded), FastGenerator(copy.deepcopy(folded).float()), folded


def test_spectra_stay_within_the_activations_range_where_orthonormal_ones_overflow():
    """A Fourier unit's input near 2,000 at a 64×64 bottleneck (a 512×512 picture): the official
    orthonormal spectrum's DC bin would be 128,000, past fp16's 65,504; the fast path's stays
    below the input's own largest value and the unit's output matches fp32."""
    half, full, _ = _fp16_and_fp32(5)
    layer16, layer32 = half.blocks[0][0], full.blocks[0][0]
    channels = layer16.w1.shape[0]
    y = 2000 + 50 * torch.randn(1, 64, 64, channels)
    assert (y.double().sum(dim=(1, 2)) / 64).max() > torch.finfo(torch.float16).max, "orthonormal DC overflows"

    constants = half.constants(64, 64)
    rows = torch.matmul(constants.dft.forward_h, y.half().view(1, 64, 64 * channels))
    spectrum = torch.matmul(constants.dft.forward_w, rows.view(-1, 2 * 64, channels))
    assert torch.isfinite(spectrum).all() and spectrum.abs().max() <= y.abs().max()

    with torch.inference_mode():
        got = layer16._fourier(y.half(), constants.dft, constants.fourier_biases[layer16]).float()  # y: updated in place
        full_constants = full.constants(64, 64)
        want = layer32._fourier(y.clone(), full_constants.dft, full_constants.fourier_biases[layer32])
    assert torch.isfinite(got).all()
    assert float((got - want).norm() / want.norm()) < 1e-3


@pytest.mark.parametrize("height, width", [(7, 9), (10, 3), (6, 10), (1, 5), (2, 2), (135, 240)])
def test_the_dft_matrices_are_rfft2_and_irfft2_from_half_the_rows(height, width):
    """The forward products make rfft2's every bin (scaled by 1/(H·W)) from rows 0 .. H/2, each
    row kh giving rows kh and H - kh; the inverse ones give irfft2 (unscaled) of any spectrum
    laid out that way, whatever the alignment's zero bins and rows hold; odd and even sizes."""
    torch.manual_seed(height * width)
    forward_h, forward_w, inverse_w, inverse_h = dft_matrices(height, width, torch.device("cpu"), torch.float64)
    rows, bins, one_sided = forward_h.shape[0] // 2, forward_w.shape[0] // 4, width // 2 + 1
    slots = [(kh, side, (height - kh) % height if side else kh) for kh in range(height // 2 + 1) for side in (0, 1)]
    assert {row for *_, row in slots} == set(range(height)), "every row of the spectrum has a slot"

    y = torch.randn(height, width, 3, dtype=torch.float64)
    spectrum = (forward_w @ (forward_h @ y.view(height, -1)).view(rows, 2 * width, 3)).view(rows, 2, bins, 2, 3)
    want = torch.fft.rfft2(y, dim=(0, 1)) / (height * width)
    for kh, side, row in slots:
        got = torch.complex(spectrum[kh, side, :one_sided, 0], spectrum[kh, side, :one_sided, 1])
        assert torch.allclose(got, want[row], atol=1e-12), (kh, side)

    mixed = torch.full((rows, 2, bins, 2, 3), 5.0, dtype=torch.float64)  # alignment's slots: ignored
    other = torch.randn(height, one_sided, 3, dtype=torch.complex128)  # any spectrum, not only a real map's
    for kh, side, row in slots:
        mixed[kh, side, :one_sided, 0], mixed[kh, side, :one_sided, 1] = other[row].real, other[row].imag
    got = inverse_h @ (inverse_w @ mixed.view(rows, 4 * bins, 3)).view(2 * rows, -1)
    want = torch.fft.irfft2(other, s=(height, width), dim=(0, 1)) * (height * width)
    assert torch.allclose(got.view(height, width, 3), want, atol=1e-9)


def test_the_inverse_products_keep_a_map_near_fp16s_edge_within_its_range():
    """The spectrum of a map of about 40,000 sent back unchanged (an identity 1x1 convolution):
    between the inverse products each row holds the mean of two rows' shares, here the map's own
    DFT along H (row 0: its mean); their sum would be twice that, past fp16's 65,504. The map
    comes back."""
    torch.manual_seed(6)
    height, width, channels = 12, 16, 8
    y = 40000 + 1000 * torch.rand(1, height, width, channels)
    forward_h, forward_w, inverse_w, inverse_h = dft_matrices(height, width, torch.device("cpu"), torch.float16)
    rows = forward_h.shape[0] // 2
    spectrum = torch.matmul(forward_w, torch.matmul(forward_h, y.half().view(1, height, -1)).view(rows, 2 * width, -1))
    between = torch.matmul(inverse_w, spectrum)
    assert torch.isfinite(between).all() and between.abs().max() <= y.abs().max() * 1.001
    back = torch.matmul(inverse_h, between.view(1, 2 * rows, -1)).view(y.shape)
    assert torch.allclose(back.float(), y, rtol=2e-3)


def test_the_fourier_unit_on_a_padded_map_is_the_unpadded_one_inside_it():
    """The residual stage's maps kept reflect-padded by 1 (from PADDED_MAP_PIXELS on, where a GPU
    has a TMA): the forward products read the padded map's inside through a strided view, and
    the sum's inside is what the unit gives the map without a border, in fp32 and in batches."""
    _, full, _ = _fp16_and_fp32(8)
    layer = full.blocks[0][0]
    height, width = 6, 10
    y = torch.randn(2, height, width, layer.w1.shape[0])
    bias = full.constants(height, width).fourier_biases[layer]
    with torch.inference_mode():
        want = layer._fourier(y.clone(), dft_matrices(height, width, y.device, y.dtype), bias)
        got = layer._fourier(reflect_pad(y, 1), padded_dft_matrices(height, width, y.device, y.dtype), bias)
    assert got.shape == (2, height + 2, width + 2, y.shape[3])
    assert torch.allclose(got[:, 1:-1, 1:-1], want, atol=1e-5)
    assert torch.isfinite(got).all()


def test_the_overflow_flag_is_zero_for_any_finite_map_and_nan_for_inf_or_nan():
    """fp16's extremes are finite (a difference of them would overflow by itself: not taken);
    one inf, -inf or nan anywhere flags the map, and flags add up."""
    edge = torch.tensor([[-65504.0, 0.0], [1e-7, 65504.0]], dtype=torch.float16)
    assert float(nonfinite_flag(edge)) == 0
    for bad in (float("inf"), float("-inf"), float("nan")):
        spoiled = edge.clone()
        spoiled[1, 0] = bad
        assert math.isnan(float(nonfinite_flag(spoiled)))
        assert math.isnan(float(nonfinite_flag(edge) + nonfinite_flag(spoiled)))
    assert torch.equal(edge + nonfinite_flag(edge), edge)


def test_an_overflow_makes_the_whole_output_nan_not_a_plausible_picture():
    half, _, _ = _fp16_and_fp32(6)
    x = torch.rand(1, 4, 64, 48).half()
    with torch.inference_mode():
        assert torch.isfinite(half(x)).all()
        # The Fourier unit's input at the edge of fp16 (60,000): its output y + fu(y) is past it.
        half.blocks[0][0].b1.fill_(60000)
        assert torch.isnan(half(x)).all()


def test_an_input_that_overflows_is_computed_again_in_fp32_and_counted():
    half, _, folded = _fp16_and_fp32(7)
    x = torch.rand(1, 4, 64, 48).half()
    guard = Fp32Fallback(half, folded)
    with torch.inference_mode():
        assert torch.equal(guard(x), half(x)) and guard.fallbacks == 0, "a finite output passes as it is"
        half.blocks[0][0].b1.fill_(60000)  # as above; shared with `folded`: the fp32 run has it too
        out = guard(x)
        expected = copy.deepcopy(folded).float()(x.float())
    assert guard.fallbacks == 1
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(out, expected, atol=1e-6)


def test_a_shape_is_worth_a_graph_when_it_comes_back_or_while_warming():
    """A capture costs two eager runs and the capture: a shape that comes once runs eagerly."""
    sightings = ShapeSightings(remembered=2)
    first, second, third = (1, 4, 480, 640), (1, 4, 968, 1120), (1, 4, 200, 304)
    assert not sightings.wants_graph(first), "the first time: eagerly"
    assert sightings.wants_graph(first), "back again: captured"
    assert not sightings.wants_graph(first), "a captured shape is forgotten here (its graph may be evicted)"
    for shape in (second, third):
        assert not sightings.wants_graph(shape)
    assert not sightings.wants_graph(first), "two newer shapes pushed it out of what is remembered"
    with sightings.capturing_every_shape():
        assert sightings.wants_graph((1, 4, 512, 512)), "the warm-up's sizes are captured at once"
    assert not sightings.wants_graph((1, 4, 520, 520)), "only while warming"
