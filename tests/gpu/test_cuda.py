"""The GPU path. Skipped where there is no CUDA (CI); run on the device machine."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lama.bench import bench_size, strict_fp32
from lama.synthetic import synthetic_case
from lama.engine import InpaintEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_precision_on_cuda_is_fp16_with_half_weights(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="auto")
    assert engine.device.is_cuda and engine.precision == "fp16"
    assert all(p.dtype == torch.float16 and p.is_cuda for p in engine.backend.generator.parameters())


def test_fp32_on_cuda_matches_the_official_fixture(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="cuda", precision="fp32", fast=False)
    image = cv2.cvtColor(cv2.imread(str(tiny_dir / "cases/stroke_100x76_image.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(tiny_dir / "cases/stroke_100x76_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    with strict_fp32():
        predicted = engine.backend.predict(image, mask)
    assert np.abs(predicted - np.load(tiny_dir / "cases/stroke_100x76_expected.npy")).max() <= 1e-4


@pytest.mark.parametrize(("width", "height"), [(8, 8), (1, 1), (150, 33), (640, 480), (641, 481), (1000, 750)])
def test_fp16_works_for_sizes_half_precision_cufft_refuses(width, height):
    """Naive .half() fails at 640×480: cuFFT in fp16 only takes powers of two."""
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    image, mask = synthetic_case(width, height)
    mask[: max(1, height // 2), : max(1, width // 2)] = 255
    out = engine.inpaint(image, mask, strategy="original")
    assert out.shape == image.shape
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_fast_path_agrees_with_the_fp32_reference_and_graphs_are_bounded():
    fast = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    assert fast.describe()["fast_path"]
    result = bench_size(fast, 640, 480, runs=3, warmup=1, reference=fast.reference())
    assert result.rel_error < 1e-3, "fp16 + folded BatchNorm + graphs vs fp32 eager, same input"
    network_graphs = fast.backend.run_model.fast  # inside the fp16 overflow guard
    assert (1, 4, 480, 640) in network_graphs.shapes, "the bench times the network as a graph of its own shape"
    graphs = fast.backend.repairs  # the whole repair's
    once = synthetic_case(1000, 200)
    fast.inpaint(*once, strategy="original")
    assert (200, 1000, 3) not in graphs.shapes, "a shape's first run is eager: most crop boxes come once"
    fast.inpaint(*once, strategy="original")
    assert (200, 1000, 3) in graphs.shapes, "a shape that comes back gets its graph"
    assert (1, 4, 200, 1000) not in network_graphs.shapes, "the service's repairs replay the whole repair's graph"
    for width in range(304, 304 + 64 * 10, 64):  # ten more shapes: the LRU keeps max_graphs of them
        for _ in range(2):
            fast.inpaint(*synthetic_case(width, 200), strategy="original")
    assert len(graphs.shapes) == graphs.max_graphs


def test_the_whole_repair_graph_repairs_as_its_steps_do_one_by_one():
    """The service's repairs replay padding, network, composite and uint8 conversion as one
    graph (lama.fastpath.DeviceRepair): the same pixels as the steps run one by one (`stepwise`,
    the network through its own graph), on the graph and on a shape's first, eager run."""
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    image, mask = synthetic_case(640, 480)
    eager = engine.inpaint(image, mask, strategy="original")
    graphed = engine.inpaint(image, mask, strategy="original")
    assert (480, 640, 3) in engine.backend.repairs.shapes
    with engine.backend.stepwise():
        stepwise = [engine.inpaint(image, mask, strategy="original") for _ in range(2)]
    assert (1, 4, 480, 640) in engine.backend.run_model.fast.shapes
    assert np.array_equal(graphed, stepwise[1]) and np.array_equal(eager, stepwise[0])


def test_the_padded_residual_stage_agrees_with_the_fp32_reference():
    """From lama.fastnet.PADDED_MAP_PIXELS on (1280×960's 160×120 bottleneck), on a GPU with a TMA,
    the residual blocks run on maps kept reflect-padded (their kernels through tensor descriptors,
    the Fourier units' products through strided views): the same output as the reference."""
    fast = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    network = fast.backend.run_model.fast.module
    if not network._padded_stage(120, 160):
        pytest.skip("this GPU has no Tensor Memory Accelerator: the padded stage does not run")
    result = bench_size(fast, 1280, 960, runs=1, warmup=1, reference=fast.reference())
    assert result.rel_error < 1e-3


def test_the_warm_up_leaves_a_graph_for_2560x1920():
    """The largest warm-up size runs as a graph from the first request on: eagerly, its hundreds
    of launches each wait for the GIL behind a loaded server's request threads."""
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    engine.warmup()
    graphs = engine.backend.repairs
    assert (1920, 2560, 3) in graphs.shapes
    assert not graphs.uses_graph(2016, 2688), "above the limit (5.4 MP) the forward runs eagerly"
    assert graphs.model_shape(torch.Size((1913, 2553, 3))) == (1920, 2560), "the limit is on the padded input"


def test_the_warm_up_compiles_its_kernels_ahead_and_its_runs_compile_none():
    """The warm-up compiles every Triton kernel its sizes launch at once, before its first run
    (lama.kernels.compile_recorded): a kernel the recording missed would be compiled during a
    run instead, one after another as before, and show up in Triton's per-device cache here; its
    launcher, built ahead too, has loaded the kernel's module."""
    from lama import kernels

    triton_kernels = (kernels._reflect_pad_kernel, kernels._reflect_conv_kernel, kernels._conv_sum_kernel)
    for kernel in triton_kernels:  # this process's earlier tests compiled some: start from none
        kernel.device_caches.clear()

    def compiled_kernels() -> list:
        return [compiled for kernel in triton_kernels for caches in kernel.device_caches.values()
                for compiled in caches[0].values()]

    def compiled() -> int:
        return len(compiled_kernels())

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    sizes = ((640, 480), (2560, 1920))  # the large maps' tile too (kernels.LARGE_MAP_PIXELS)
    seen = []
    compile_ahead = engine.backend.compile_ahead
    # What was compiled, and how much of it was loaded, before the warm-up's first run:
    engine.backend.compile_ahead = lambda shapes, wait_for=None: (compile_ahead(shapes, wait_for), seen.append(
        (compiled(), sum(kernel.module is not None for kernel in compiled_kernels()))))
    engine.warmup(sizes)
    assert seen and seen[0][0] > 0, "nothing was compiled ahead"
    assert compiled() == seen[0][0], "a warm-up run compiled a kernel the recording had missed"
    assert seen[0][1] == seen[0][0], "a kernel's launcher was left to its first run"


def test_the_fast_path_reproduces_the_official_fixture_in_fp32(tiny_dir):
    """Folding and graphs are exact: on the fixture the fast fp32 path stays within 1e-4."""
    engine = InpaintEngine(tiny_dir, device="cuda", precision="fp32", fast=True)
    assert engine.describe()["fast_path"]
    image = cv2.cvtColor(cv2.imread(str(tiny_dir / "cases/stroke_100x76_image.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(tiny_dir / "cases/stroke_100x76_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    with strict_fp32():
        for _ in range(3):  # the first call runs eagerly, the second captures the graph, the third replays it
            predicted = engine.backend.predict(image, mask)
            assert np.abs(predicted - np.load(tiny_dir / "cases/stroke_100x76_expected.npy")).max() <= 1e-4


def test_concurrent_repairs_on_the_graph_path_match_sequential_ones():
    """GPU workers share the graphs' buffers and the per-shape constants, each on a CUDA stream
    of its own: the runner's lock and its event keep each result its own, on the graph path and
    on the eager one (the last case is above the graph limit, fastpath.GRAPH_MAX_PIXELS)."""
    import threading

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    cases = [synthetic_case(640, 480), synthetic_case(512, 512), synthetic_case(640, 480),
             synthetic_case(2688, 2016)]
    expected = [engine.inpaint(image, mask, strategy="original") for image, mask in cases]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(5):
            results[index] = engine.inpaint(*cases[index], strategy="original")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, want in enumerate(expected):
        assert np.array_equal(results[index], want)


@pytest.mark.parametrize("channels", [4, 8, 64, 96, 128, 384])
def test_the_triton_reflect_pad_is_torchs_reflect_pad(channels):
    from lama import kernels

    assert kernels.triton_runs(torch.zeros(1, device="cuda")), "Triton is part of the CUDA build: it must be used"
    for shape, pad in (((1, 2, 2), 1), ((2, 61, 37), 1), ((1, 483, 645), 3), ((1, 7, 9), 3)):
        batch, height, width = shape
        x = torch.randn(batch, height, width, channels, device="cuda", dtype=torch.float16)
        want = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (pad,) * 4, mode="reflect").permute(0, 2, 3, 1)
        assert torch.equal(kernels.reflect_pad(x, pad), want), (shape, pad)
        assert torch.equal(kernels.reflect_pad(x, pad, relu=True), want.relu()), (shape, pad)
        nchw = x.permute(0, 3, 1, 2).contiguous()  # a strided NHWC view reads as well
        assert torch.equal(kernels.reflect_pad(nchw.permute(0, 2, 3, 1), pad), want), (shape, pad)
        bias = torch.randn(channels, device="cuda", dtype=torch.float16)
        assert torch.equal(kernels.reflect_pad(x, pad, relu=True, bias=bias), (want + bias).relu()), (shape, pad)
        assert torch.equal(kernels.reflect_pad(x, 0, relu=True, bias=bias), (x + bias).relu()), shape


def test_maps_of_any_size_share_the_kernels_compiled_for_the_first():
    """Crops of every size reach the Triton kernels: a map whose sizes divide differently by 16
    must run the kernel already compiled, not compile, or load from disk, another in a GPU
    worker's repair. The stem sees model inputs, whose widths are multiples of 8 (so its
    4-channel rows stay 16-element aligned, a specialisation kept); the residual layers and the
    paddings see bottlenecks of any size."""
    from lama import kernels

    def compiled(kernel) -> int:  # Triton's per-device cache: (kernels by key, ...)
        return sum(len(caches[0]) for caches in kernel.device_caches.values())

    half = dict(device="cuda", dtype=torch.float16)
    stem = kernels.ReflectConv(torch.randn(16, 4, 7, 7, **half) / 50, torch.randn(16, **half), "relu")
    layer = kernels.ReflectConvSum([torch.randn(16, 32, 3, 3, **half) / 30], torch.randn(16, **half), True)

    def run_all(batch: int, height: int, width: int) -> None:
        kernels.reflect_pad(torch.randn(batch, height, width, 32, **half), 1)
        stem(torch.randn(batch, height, -(-width // 8) * 8, 4, **half))
        layer([torch.randn(batch, height, width, 32, **half)])

    run_all(1, 16, 32)
    torch.cuda.synchronize()
    before = [compiled(k) for k in (kernels._reflect_pad_kernel, kernels._reflect_conv_kernel, kernels._conv_sum_kernel)]
    for shape in ((1, 13, 27), (2, 17, 48), (1, 7, 9), (1, 48, 5), (1, 45, 24)):
        run_all(*shape)
    torch.cuda.synchronize()
    after = [compiled(k) for k in (kernels._reflect_pad_kernel, kernels._reflect_conv_kernel, kernels._conv_sum_kernel)]
    assert after == before, "a map's size made Triton compile a kernel again"


@pytest.mark.parametrize(("in_channels", "out_channels", "activation", "relu_input"),
                         [(4, 64, "relu", False), (64, 3, "sigmoid", True), (16, 16, "tanh", False),
                          (8, 5, "none", True)])
def test_the_triton_reflect_conv_is_a_reflect_padded_convolution(in_channels, out_channels, activation, relu_input):
    """The stem's and the head's kernel, in fp32 (exact products) and fp16, at odd sizes."""
    from lama.kernels import ReflectConv

    torch.manual_seed(7)
    weight = torch.randn(out_channels, in_channels, 7, 7, device="cuda") / (7 * in_channels ** 0.5)
    bias = torch.randn(out_channels, device="cuda")
    for batch, height, width in ((1, 16, 16), (2, 37, 131), (1, 483, 645)):
        x = torch.randn(batch, in_channels, height, width, device="cuda")
        with strict_fp32():
            source = x.relu() if relu_input else x
            want = F.conv2d(F.pad(source, (3, 3, 3, 3), mode="reflect"), weight, bias)
            want = want if activation == "none" else getattr(torch, activation)(want)
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            conv = ReflectConv(weight.to(dtype), bias.to(dtype), activation)
            got = conv(x.to(dtype).permute(0, 2, 3, 1), relu_input=relu_input).permute(0, 3, 1, 2).float()
            error = float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want))
            assert error < tolerance, (dtype, (batch, height, width), error)


@pytest.mark.parametrize(("shapes", "out_channels", "relu", "with_residual"),
                         [(((128, 3), (384, 3)), 128, True, True), (((128, 3), (192, 1)), 384, True, False),
                          (((32, 3), (96, 3)), 40, False, True), (((24, 3),), 16, True, True),
                          (((20, 3),), 8, True, False)])
def test_the_triton_conv_sum_is_the_sum_of_the_ffc_paths(shapes, out_channels, relu, with_residual):
    """The residual blocks' kernel (big-lama's two layer kinds first), in fp32 (exact
    products) and fp16, at the smallest bottleneck, odd sizes, batch 2 and a map large enough
    for the large maps' tile (lama.kernels.LARGE_MAP_PIXELS). 20 input channels are no
    multiple of 16: that one runs the torch version."""
    from lama.kernels import ReflectConvSum

    torch.manual_seed(9)
    weights = [torch.randn(out_channels, cin, k, k, device="cuda") / (k * cin ** 0.5) for cin, k in shapes]
    bias = torch.randn(out_channels, device="cuda")
    for batch, height, width in ((1, 2, 2), (2, 37, 61), (1, 121, 161), (1, 241, 321)):
        inputs = [torch.randn(batch, height, width, cin, device="cuda") for cin, _ in shapes]
        residual = torch.randn(batch, height, width, out_channels, device="cuda") if with_residual else None
        with strict_fp32():
            want = torch.zeros(batch, out_channels, height, width, device="cuda") + bias.view(1, -1, 1, 1)
            for x, weight in zip(inputs, weights):
                pad = weight.shape[-1] // 2
                source = x.permute(0, 3, 1, 2)
                want = want + F.conv2d(F.pad(source, (pad,) * 4, mode="reflect") if pad else source, weight)
            want = (want.relu() if relu else want).permute(0, 2, 3, 1)
            want = want + residual if with_residual else want
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            conv = ReflectConvSum([w.to(dtype) for w in weights], bias.to(dtype), relu)
            with strict_fp32():  # the torch version's fp32 convolutions would take TF32 products
                got = conv([x.to(dtype) for x in inputs], residual.to(dtype) if with_residual else None).float()
            error = float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want))
            assert error < tolerance, (dtype, (batch, height, width), error)
    conv = ReflectConvSum(weights, bias, relu)
    if conv.block_k is not None:
        with pytest.raises(ValueError, match="expected contiguous"):
            conv([x.transpose(1, 2).contiguous().transpose(1, 2) for x in inputs], residual)
        with pytest.raises(ValueError, match="residual"):
            conv(inputs, torch.zeros(batch, height, width, out_channels + 1, device="cuda"))


def test_the_two_stream_branches_compute_what_one_stream_computes():
    """The residual blocks' local branch runs on a side stream: eagerly (large images) and in
    graphs the result must be the one-stream result, every time (a missed join would race)."""
    from lama import fastpath

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    fast = engine.backend.run_model.fast.module  # inside the fp16 overflow guard
    assert fast.parallel_branches
    with torch.inference_mode():
        inputs = [engine.backend.model_input(image, mask > 0)[2] for image, mask in (synthetic_case(640, 480),
                                                                             synthetic_case(1600, 1600))]
        fast.parallel_branches = False
        want = [fast(x) for x in inputs]
        fast.parallel_branches = True
        graphs = fastpath.GraphRunner(fast, max_pixels=640 * 480)
        for _ in range(3):
            for x, expected in zip(inputs, want):
                for got in (fast(x), graphs(x)):
                    assert float((got - expected).abs().max()) <= 1e-3
    assert graphs.shapes == [tuple(inputs[0].shape)], "the small input ran as a graph, the large one eagerly"


def test_spectra_at_the_edge_of_fp16_stay_finite_on_the_gpu():
    """A Fourier unit's input near 2,000 at 2560×1920's bottleneck (320×240): the official
    orthonormal DC bin would be 554,000, eight times fp16's range. The scaled transforms keep
    it within the input's own range, on cuBLAS's fp16 products, and match fp32."""
    import copy

    from lama.fastnet import FastGenerator

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    fast16 = engine.backend.run_model.fast.module
    fast32 = FastGenerator(copy.deepcopy(engine.backend.generator).float())
    layer16, layer32 = fast16.blocks[0][0], fast32.blocks[0][0]
    y = 2000 + 50 * torch.randn(1, 240, 320, layer16.w1.shape[0], device="cuda")
    with torch.inference_mode(), strict_fp32():
        c16, c32 = fast16.constants(240, 320), fast32.constants(240, 320)
        got = layer16._fourier(y.half(), c16.dft, c16.fourier_biases[layer16]).float()
        want = layer32._fourier(y.clone(), c32.dft, c32.fourier_biases[layer32])
        # The same unit on the map reflect-padded by 1, as the residual blocks run it at this size.
        padded16 = F.pad(y.half().permute(0, 3, 1, 2), (1, 1, 1, 1), mode="reflect").permute(0, 2, 3, 1).contiguous()
        got_padded = layer16._fourier(padded16, c16.padded_dft, c16.fourier_biases[layer16])[:, 1:-1, 1:-1].float()
    assert torch.isfinite(got).all() and torch.isfinite(got_padded).all()
    assert float((got - want).norm() / want.norm()) < 1e-3
    assert float((got_padded - want).norm() / want.norm()) < 1e-3


@pytest.mark.parametrize("size", [(640, 480), (1280, 960)], ids=["gather kernels", "padded maps"])
def test_an_fp16_overflow_is_computed_again_in_fp32_and_counted(size):
    """The first Fourier unit's input pushed past 65,504. The graph replays with it (it reads the
    weights in place), answers nan, and the engine runs that input again in fp32: a finite
    result, counted. At both of the residual layers' kernels, whose epilogues flag it."""
    import copy

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    image, mask = synthetic_case(*size)
    engine.inpaint(image, mask, strategy="original")  # captures the size's graph
    assert engine.fp16_fallbacks == 0
    # The first Fourier unit's input pushed past fp16's range: conv1's bias at 65,000 and its
    # weights (views of the generator's own, which the captured graph reads in place) ten
    # thousand times larger, so that many pre-activations pass 65,520, where fp16 rounds to inf;
    # fp32 holds them. (60,000 with weights ×1000 stayed finite on the H200.)
    layer = engine.backend.run_model.fast.module.blocks[0][0]
    layer.w1.mul_(10_000)
    layer.b1.fill_(65_000)
    with torch.inference_mode():
        x = engine.backend.model_input(image, mask > 0)[2]
        out = engine.backend.run_model(x)
        expected = copy.deepcopy(engine.backend.generator).float()(x.float())
    assert engine.fp16_fallbacks == 1
    assert torch.isfinite(out).all()
    assert float((out - expected).abs().max()) <= 1e-3
    repaired = engine.inpaint(image, mask, strategy="original")
    assert engine.fp16_fallbacks == 2 and repaired.shape == image.shape


def test_the_transfers_pinned_buffers_are_counted_and_given_back(tiny_dir):
    """A repair's transfers leave page-locked blocks in torch's cache (part of RSS, which the
    idle sweep gives back, webui.compose): the reading sees them, the release empties the cache."""
    engine = InpaintEngine(tiny_dir, device="cuda")
    image, mask = synthetic_case(640, 480)
    engine.inpaint(image, mask, strategy="original")
    held = engine.device.pinned_host_bytes()
    assert held is not None and held >= image.nbytes  # the photo's way in and the result's way out
    engine.device.release_pinned_host_memory()
    assert engine.device.pinned_host_bytes() == 0
    assert engine.inpaint(image, mask, strategy="original").shape == image.shape  # pinned again as needed
