"""The GPU fast path: the same function as the generator, with less work per image.

LamaFastPath is the reference backend (lama/reference.py) with these changes, each exact up to
rounding (the folded weights then run through lama.fastnet's NHWC forward inside the graphs), and
a guard:
- fold_batchnorm: every eval-mode BatchNorm becomes a per-channel scale and shift folded
  into the convolution(s) that feed it, so each FFC layer runs its convolutions and a ReLU
  instead of convolutions, a sum, a normalisation pass and a ReLU.
- GraphRunner: CUDA graphs. At small sizes big-lama is bound by launching its ~500 kernels,
  not by arithmetic; a captured graph replays them all with one launch. Graphs are
  specialised on the input shape: they are kept in an LRU of `max_graphs` and share one
  memory pool and a lock (the service's GPU workers take turns replaying). A capture costs
  two eager runs and the capture itself, so a shape is captured when it comes back (the crop
  strategy's boxes follow people's masks: most shapes come once), or at once during the
  engine's warm-up (its sizes are the ones expected to come back). Shapes are the
  official padding's, not coarser buckets: LaMa sees the whole image, and a wider mirrored
  border changed the tiny fixture's repair far beyond rounding (tests/gpu/test_cuda.py keeps the
  fast path on the fixture). What makes shapes come back is upstream: the crop strategy's
  boxes grow to a ladder of sides with more of the image, not of a mirror
  (`prefers_few_shapes`, lama.planning).
- DeviceRepair: what the reference does around the network (the official padding, the network's
  input, the composite, the conversion to uint8) and the overflow check, captured with the network
  in one graph per image shape (`repairs`): a repair is its upload, one replay and its copy back.
- Fp32Fallback: an fp16 output that is not finite (an overflow) is computed again in fp32,
  and counted.
- compile_ahead: the Triton kernels of the warm-up's sizes compiled at once, on every core,
  before its first run (lama.kernels.compile_recorded).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from lama import parallel, reference
from lama.fastnet import FastGenerator, on_the_default_stream
from lama.kernels import nonfinite_flag
from lama.model import FFC_BN_ACT, FFCResNetGenerator, FourierUnit, SpectralTransform
from lama.reference import LamaReference, composite, network_input, symmetric_index, to_uint8

log = logging.getLogger(__name__)


class LamaFastPath(LamaReference):
    """big-lama on CUDA: BatchNorm folded, the NHWC forward, CUDA graphs per input shape."""

    fast_path = True
    prefers_few_shapes = True

    def prepare(self, generator: FFCResNetGenerator) -> FFCResNetGenerator:
        return fold_batchnorm(generator)

    def runner(self) -> Callable[[Tensor], Tensor]:
        self.network = FastGenerator(self.generator)
        self.graphs = GraphRunner(self.network, keepalive=self.network.constants_for_input)
        on_device = DeviceRepair(self.network, self.padded_size)
        # The service's repairs: the model's input, the network, the composite and the uint8
        # conversion in one graph. Eager, each of those steps is a launch from Python, and a
        # loaded server's GPU workers wait for the GIL at each of them (docs/BENCHMARKS.md).
        self.repairs = GraphRunner(on_device, keepalive=on_device.keepalive, lock=self.graphs.lock,
                                   model_shape=lambda shape: self.padded_size(shape[0], shape[1]))
        return Fp32Fallback(self.graphs, self.generator) if self.precision == "fp16" else self.graphs

    _stepwise = False

    @contextlib.contextmanager
    def stepwise(self) -> Iterator[None]:
        self._stepwise = True
        try:
            yield
        finally:
            self._stepwise = False

    def repair(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._stepwise:
            return super().repair(rgb, mask)
        device = self.device.torch
        with torch.inference_mode(), self.device.worker_stream():
            result, flag = self.repairs(reference.to_device(rgb, device), reference.to_device(mask, device))
            overflow = torch.empty((), dtype=flag.dtype, pin_memory=True)
            overflow.copy_(flag, non_blocking=True)
            repaired = reference.to_host(result)  # waits for the stream, the flag's copy with it
        if self.precision == "fp16" and math.isnan(float(overflow)):
            # The stepwise repair, through the fp16 guard (Fp32Fallback): it runs the fp16 network
            # once more, sees the overflow again, computes it in fp32 and counts it. One fp16
            # forward spent twice, on overflows only.
            return super().repair(rgb, mask)
        return repaired

    def compile_ahead(self, shapes: list[tuple[int, int]], wait_for: Callable[[], None] | None = None) -> None:
        """The kernels of inputs of these sizes, compiled (or loaded from the kernel cache) at
        once: a forward's first run compiles them one after another, seconds on a fresh box.
        Takes the graphs' lock, as their eager runs do: the forwards share per-shape constants.
        A failure here costs only that time: the kernels then compile at their first launch.
        `wait_for` is called once the forwards are recorded, before the compiling (and where the
        recording fails: whatever it waits for must be over before the warm-up's runs)."""
        inputs = [(1, 4, *self.padded_size(height, width)) for height, width in shapes]
        with self.graphs.lock:
            try:
                count, seconds = self.network.compile_kernels(inputs, parallel.cores(), wait_for)
            except Exception as error:  # noqa: BLE001 - Triton's compiler raises its own kinds
                log.warning("kernels: compiling ahead failed (%s: %s); each compiles at its first launch",
                            type(error).__name__, error)
                if wait_for is not None:
                    wait_for()
                return
            finally:
                # The recorded forwards' throw-away work done before any graph's run on another
                # stream reuses its memory.
                torch.cuda.current_stream(self.device.torch).synchronize()
        log.info("kernels: %d compiled or loaded from the cache in %.2f s, up to %d at once",
                 count, seconds, parallel.cores())

    def warming(self) -> contextlib.AbstractContextManager[None]:
        return self.repairs.capturing_every_shape()

    @property
    def fp16_fallbacks(self) -> int:
        return self.run_model.fallbacks if isinstance(self.run_model, Fp32Fallback) else 0


def _scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold_into(conv: nn.Conv2d | nn.ConvTranspose2d, scale: Tensor, shift: Tensor | None) -> None:
    """conv's output times `scale` plus `shift`, per output channel."""
    # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights are (in, out, kh, kw).
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
    shape = [1] * conv.weight.dim()
    shape[out_dim] = -1
    conv.weight.data.mul_(scale.reshape(shape))
    bias = conv.bias.data * scale if conv.bias is not None else torch.zeros_like(scale)
    if shift is not None:
        bias = bias + shift
    conv.bias = nn.Parameter(bias)


def _fold_ffc_bn(layer: FFC_BN_ACT) -> None:
    """bn(l2l(x_l) + g2l(x_g)) = scaled l2l + scaled g2l + shift (the shift once)."""
    ffc = layer.ffc
    for bn_name, producers in (("bn_l", (ffc.convl2l, ffc.convg2l)),
                               ("bn_g", (ffc.convl2g, ffc.convg2g.conv2 if ffc.convg2g else None))):
        bn = getattr(layer, bn_name)
        if bn is None:
            continue
        scale, shift = _scale_shift(bn)
        convs = [conv for conv in producers if conv is not None]
        for index, conv in enumerate(convs):
            _fold_into(conv, scale, shift if index == 0 else None)
        setattr(layer, bn_name, nn.Identity())


def fold_batchnorm(generator: FFCResNetGenerator) -> FFCResNetGenerator:
    """A copy of an eval-mode generator with every BatchNorm folded away (same outputs)."""
    folded = copy.deepcopy(generator).eval()
    with torch.no_grad():
        for module in folded.modules():
            if isinstance(module, FFC_BN_ACT):
                _fold_ffc_bn(module)
            elif isinstance(module, SpectralTransform):
                _fold_into(module.conv1[0], *_scale_shift(module.conv1[1]))
                module.conv1[1] = nn.Identity()
            elif isinstance(module, FourierUnit):
                _fold_into(module.conv_layer, *_scale_shift(module.bn))
                module.bn = nn.Identity()
        layers = folded.model
        for index in range(len(layers) - 1):
            if isinstance(layers[index], nn.ConvTranspose2d) and isinstance(layers[index + 1], nn.BatchNorm2d):
                _fold_into(layers[index], *_scale_shift(layers[index + 1]))
                layers[index + 1] = nn.Identity()
    return folded


MAX_INDEX_SHAPES = 32  # image sizes whose padding indices stay on the GPU (a graph holds its own)


class DeviceRepair:
    """The backend's repair on the device, from the uploaded pixels to the result: the official
    padding and the network's input (lama.reference.network_input), the network, the composite
    and the conversion to uint8, as the reference runs them one by one; and the network output's
    overflow flag (nonfinite_flag: nan where fp16 overflowed). One call, so that one graph
    replays all of it."""

    def __init__(self, network: FastGenerator, padded_size: Callable[[int, int], tuple[int, int]]):
        self.network = network
        self.padded_size = padded_size
        self._indices: OrderedDict[tuple[int, int], tuple[Tensor, Tensor]] = OrderedDict()

    def __call__(self, pixels: Tensor, holes: Tensor) -> tuple[Tensor, Tensor]:
        """`pixels`: H×W×3 uint8 and `holes`: H×W bool, on the device. Returns the repaired
        H×W×3 uint8 image and the 0-d flag."""
        height, width = holes.shape
        rows, cols = self.indices(height, width)
        x, m, net_input = network_input(pixels, holes, rows, cols, self.network.dtype)
        predicted = self.network(net_input)
        return to_uint8(composite(x, m, predicted, (height, width))), nonfinite_flag(predicted)

    def indices(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """The padding's source rows and columns for an image of this size, kept for the last
        MAX_INDEX_SHAPES sizes. Made on the default stream, as the network's constants are
        (lama.fastnet.on_the_default_stream): the GPU workers' streams all read them."""
        key = (height, width)
        if key in self._indices:
            self._indices.move_to_end(key)
        else:
            padded_height, padded_width = self.padded_size(height, width)
            device = self.network.device
            with on_the_default_stream(device):
                self._indices[key] = (symmetric_index(height, padded_height, device),
                                      symmetric_index(width, padded_width, device))
            while len(self._indices) > MAX_INDEX_SHAPES:
                self._indices.popitem(last=False)
        return self._indices[key]

    def keepalive(self, pixels_shape: torch.Size) -> object:
        """What a graph of this input shape reads but does not own: its padding indices and the
        network's constants for its bottleneck."""
        height, width = pixels_shape[0], pixels_shape[1]
        return self.indices(height, width), self.network.constants_for_input((1, 4, *self.padded_size(height, width)))


# Model inputs up to this many pixels run through CUDA graphs (GraphRunner's default): up to
# 2560×1920, the largest size the warm-up sees. An eager run launches hundreds of kernels, each
# from Python with the GIL, which the request threads of a loaded server hold most of the time:
# at 16 clients on the H200, 2560×1920 served 1.55× as many repairs through a graph as eagerly
# with the limit at 1536² (docs/BENCHMARKS.md). The graphs' shared pool then holds a 2560×1920
# run's activations (about 1.5 GB in fp16), counted in what the service holds at rest.
GRAPH_MAX_PIXELS = 2560 * 1920


class ShapeSightings:
    """Which input shapes deserve a graph: one seen before among the last `remembered` shapes
    that ran without one, or any while `capturing_every_shape` (the warm-up's)."""

    def __init__(self, remembered: int):
        self.remembered = remembered
        self._recent: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._every_shape = False

    @contextlib.contextmanager
    def capturing_every_shape(self) -> Iterator[None]:
        self._every_shape = True
        try:
            yield
        finally:
            self._every_shape = False

    def wants_graph(self, shape: tuple[int, ...]) -> bool:
        """True for a shape to capture now; else it is remembered as seen, and runs eagerly."""
        if self._every_shape or shape in self._recent:
            self._recent.pop(shape, None)
            return True
        self._recent[shape] = None
        while len(self._recent) > self.remembered:
            self._recent.popitem(last=False)
        return False


class GraphRunner:
    """Calls `module` through CUDA graphs for inputs up to `max_pixels`, eagerly above, and
    eagerly for a shape the first time it comes (ShapeSightings).

    Larger inputs run eagerly: the shared pool would grow to hold their activations for good.
    """

    def __init__(self, module: Callable[..., Tensor | tuple[Tensor, ...]], max_graphs: int = 8,
                 max_pixels: int = GRAPH_MAX_PIXELS, keepalive: Callable[[torch.Size], object] | None = None,
                 model_shape: Callable[[torch.Size], tuple[int, int]] = lambda shape: (shape[-2], shape[-1]),
                 lock: threading.Lock | None = None):
        """`module` takes one or more tensors and returns a tensor or a tuple of them; graphs are
        keyed on its first input's shape (the others' follow from it), which `model_shape` maps
        to the (height, width) of the network's input (max_pixels bounds that). `lock`: shared
        with another runner over the same network, whose eager runs share its per-shape constants."""
        self.module = module
        # What a graph reads but does not own (tensors the module caches per shape): held
        # with the graph, so that the module dropping it from its cache cannot free it.
        self.keepalive = keepalive
        self.model_shape = model_shape
        self.max_graphs = max_graphs
        self.max_pixels = max_pixels
        # A shape back within twice as many eager runs as graphs are kept is likely to come back
        # again before its graph is evicted; one coming back less often runs eagerly each time
        # rather than costing a capture each time.
        self.sightings = ShapeSightings(remembered=2 * max_graphs)
        self._graphs: OrderedDict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...],
                                                          Tensor | tuple[Tensor, ...], object]] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle()
        # One warm-up stream for all captures: the module may keep per-stream state (its side
        # streams), which a new stream per capture would grow without bound.
        self._warmup_stream: torch.cuda.Stream | None = None
        # Graphs of one shape share their input and output buffers, and all graphs share one
        # pool: callers on several threads (the service's GPU workers) take turns here, and
        # as each issues its work on a stream of its own, each run waits on its stream for the
        # run before it (this event) to be done with them. Eager runs take turns too: the
        # module's per-shape constants, made by one run, are read by the next.
        self.lock = lock if lock is not None else threading.Lock()
        self._last_run: torch.cuda.Event | None = None

    def uses_graph(self, height: int, width: int) -> bool:
        return height * width <= self.max_pixels

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return list(self._graphs)

    def capturing_every_shape(self) -> contextlib.AbstractContextManager[None]:
        """While it lasts, every shape is captured the first time it comes (the warm-up's sizes)."""
        return self.sightings.capturing_every_shape()

    def __call__(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        with self.lock:
            stream = torch.cuda.current_stream(inputs[0].device)
            if self._last_run is not None:
                stream.wait_event(self._last_run)
            out = self._run(inputs)
            self._last_run = torch.cuda.Event()
            self._last_run.record(stream)
            return out

    def _run(self, inputs: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        if not self.uses_graph(*self.model_shape(inputs[0].shape)):
            return self.module(*inputs)
        key = tuple(inputs[0].shape)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        elif not self.sightings.wants_graph(key):
            return self.module(*inputs)
        else:
            self._graphs[key] = self._capture(inputs)
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        graph, static_in, static_out, _ = self._graphs[key]
        for static, given in zip(static_in, inputs, strict=True):
            static.copy_(given)
        graph.replay()
        # The next replay overwrites static_out: hand out a copy (the outputs are small).
        return static_out.clone() if isinstance(static_out, Tensor) else tuple(t.clone() for t in static_out)

    def _capture(self, inputs: tuple[Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...],
                                                              Tensor | tuple[Tensor, ...], object]:
        static_in = tuple(x.clone() for x in inputs)
        device = inputs[0].device
        if self._warmup_stream is None:
            self._warmup_stream = torch.cuda.Stream(device)
        side = self._warmup_stream
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            # Warm-up outside the capture: lazy initialisations (cuFFT plans, cuDNN
            # handles, the module's per-shape constants) must not happen inside it.
            for _ in range(2):
                self.module(*static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another worker thread allocating or launching while this one captures
        # must not invalidate the capture (it uses its own, non-blocking stream).
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            static_out = self.module(*static_in)
        keep = self.keepalive(inputs[0].shape) if self.keepalive else None
        return graph, static_in, static_out, keep


class Fp32Fallback:
    """The fp16 fast path, with any input whose output is not finite computed again in fp32.

    fp16 stops at 65,504. The fast path's transforms are scaled to stay within the activations'
    own range (lama.fastnet.dft_matrices), but trained weights may still push an activation
    past it; FastGenerator then answers all nan, and this sees that in the output. The fp32
    generator is made at the first overflow from the folded fp16 weights (the same rounded
    weights, fp32's range; 204 MB for big-lama) and kept, since weights that overflowed once
    will again. `fallbacks` counts the inputs computed twice (the service's
    inpaint_fp16_fallbacks_total).
    """

    def __init__(self, fast: Callable[[Tensor], Tensor], generator: nn.Module):
        self.fast = fast
        self._generator = generator
        self._fp32: nn.Module | None = None
        self._lock = threading.Lock()
        self.fallbacks = 0

    def __call__(self, x: Tensor) -> Tensor:
        out = self.fast(x)
        # Waits for the GPU: the caller copies the result back next anyway.
        if not math.isnan(float(nonfinite_flag(out))):
            return out
        with self._lock:
            self.fallbacks += 1
            if self._fp32 is None:
                self._fp32 = copy.deepcopy(self._generator).float()
            fp32 = self._fp32
        log.warning("fp16 overflowed on a %d×%d model input: computed again in fp32 (%d so far)",
                    x.shape[-1], x.shape[-2], self.fallbacks)
        return fp32(x.float())
