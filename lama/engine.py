"""InpaintEngine: numpy image + mask in, repaired image out, through one backend.

What a backend does not do lives here, once (the way IOPaint's base model does it), so that
every backend gets the same behaviour:
- the mask: binarized, dilated, kept as its region (lama.masks.RegionMask);
- the HD strategies, run as lama.planning plans them;
- image layouts: grayscale and RGBA in, the same layout out, alpha untouched;
- feathering, and the guarantee that pixels outside the (refined) mask come back bit-identical.
Only the masked region costs CPU time: refining, feathering and pasting work on the mask's
bounding box; the whole frame is read once to find that box and copied once for the result.

The memory the service admits jobs by is learned here too (`warmup`): the engine is what knows
which model runs a job makes. It imports no web code; the service and the CLI are thin layers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np

from lama import masks, parallel
from lama.backend import Backend
from lama.errors import EngineError
from lama.layout import Layout, layout_of
from lama.memory import MemoryModel
from lama.planning import STRATEGIES, HDSettings, Run, peak_pixels, plan, whole_run
from lama.stages import Stage
from lama.units import format_bytes

# The modules that import torch are imported where a model is loaded: the engine's CPU steps
# (planning, preparing, composing) run without it in service.cpu_workers' processes.
if TYPE_CHECKING:
    from lama.device import Device

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "EngineError", "HDSettings", "InpaintEngine", "MaskPlan", "RepairJob", "WARMUP_SIZES"]

# Sizes (width, height) warmed at start-up: what phones, screenshots and the crop strategy
# (800-px regions plus margins) send most, and the longest side the default preset lets the
# model see (a size's first run picks cuDNN's kernels; the memory model learns from it too).
WARMUP_SIZES = ((512, 512), (640, 480), (1024, 768), (1280, 960), (2560, 1920))
# A feather ramp of at most twice this many pixels is blended in the calling thread; a longer one in
# chunks of at least this many on lama.parallel's pool (a 2560×1920 stroke mask's is about 75,000).
FEATHER_CHUNK_PIXELS = 8_192


class InpaintEngine:
    """Repairs images with big-lama, or with OpenCV's Telea method when no weights exist.

    `model`: a checkpoint path in any format `lama.checkpoint` reads, or None to use the
    first of lama.loading.DEFAULT_MODEL_CANDIDATES that exists (else the OpenCV fallback).
    """

    # Learned by the first warm-up on CUDA; None on the CPU, where nothing is budgeted.
    memory: MemoryModel | None = None
    steady_gpu_bytes: int | None = None

    def __init__(self, model: str | Path | None = None, device: str = "auto", precision: str = "auto",
                 hd: HDSettings = HDSettings(), fast: bool = True, *, backend: Backend | None = None):
        if backend is None:
            from lama.loading import load_backend
            backend = load_backend(model, device, precision, fast)
        self.backend = backend
        self.hd = hd

    @classmethod
    def with_random_weights(cls, device: str = "auto", precision: str = "auto", seed: int = 0,
                            hd: HDSettings = HDSettings(), fast: bool = True) -> InpaintEngine:
        """Full-size big-lama with random weights: benchmarks and GPU checks without a download."""
        from lama.device import Device
        from lama.loading import lama_backend
        from lama.reference import Weights
        return cls(hd=hd, backend=lama_backend(Weights(seed=seed), Device.resolve(device), precision, fast))

    def reference(self) -> InpaintEngine:
        """The same weights as the plain fp32 eager path on the same device."""
        try:
            return InpaintEngine(hd=self.hd, backend=self.backend.reference())
        except NotImplementedError as error:
            raise EngineError(str(error)) from None

    @property
    def device(self) -> Device:
        return self.backend.device

    @property
    def precision(self) -> str:
        return self.backend.precision

    def describe(self) -> dict[str, Any]:
        """What is serving requests, for logs, /healthz and `python -m lama info`."""
        return self.backend.describe()

    @property
    def fp16_fallbacks(self) -> int:
        """Model runs whose fp16 output overflowed and that were computed again in fp32."""
        return self.backend.fp16_fallbacks

    # ------------------------------------------------------------------ a repair

    def inpaint(self, image: np.ndarray, mask: np.ndarray, strategy: str = "crop", dilate: int = 0,
                feather: int = 0, timings: dict[str, float] | None = None) -> np.ndarray:
        """Repair `image` where `mask` is nonzero; returns an array of the same shape and layout.

        image: uint8 H×W (gray), H×W×1, H×W×3 (RGB) or H×W×4 (RGBA; alpha is kept as is).
        mask: uint8/bool H×W or H×W×C, nonzero = repair. dilate/feather: pixels.
        Pixels outside the dilated mask are returned bit-identical.
        `timings`, when given, receives seconds spent in "preprocess" (layout, mask refinement,
        the plan and the model inputs), "infer" (the plan's model runs, transfers included) and
        "postprocess" (scaling back, feathering, layout back, the final paste).

        The three steps are also methods of their own (prepare, run_models, compose), so that
        the service runs only the model's step on its GPU workers and the CPU's beside them.
        """
        if feather < 0:
            raise EngineError("dilate and feather must be zero or positive pixel counts")
        job = self.prepare(image, mask, strategy, dilate, timings)
        if job is None:
            return np.asarray(image).copy()
        return self.compose(job, self.run_models(job, timings), feather, timings)

    def plan_mask(self, mask: np.ndarray, strategy: str = "crop", dilate: int = 0,
                  timings: dict[str, float] | None = None, shape: tuple[int, int] | None = None) -> MaskPlan:
        """The part of `prepare` that needs the mask alone: the refined mask and the plan, for an
        image of `shape` (the mask's own by default). A caller that decodes the image meanwhile
        (the service) does it beside that, and hands it to `prepare`."""
        clock = _StageClock(timings)
        if strategy not in STRATEGIES:
            raise EngineError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        shape = tuple(shape or np.shape(mask)[:2])
        region = self.refined_mask(mask, dilate, shape)
        runs = self._plan(region, strategy) if region is not None else []
        clock.lap(Stage.PREPROCESS)
        return MaskPlan(shape, strategy, dilate, region, runs)

    def prepare(self, image: np.ndarray, mask: np.ndarray, strategy: str = "crop", dilate: int = 0,
                timings: dict[str, float] | None = None, *, planned: MaskPlan | None = None) -> RepairJob | None:
        """The CPU's work before the model: the refined mask, the plan and each run's input
        (scaled down where the plan says so). None when nothing is to be repaired. `planned`:
        `plan_mask`'s for this mask, strategy and dilation, done ahead (else it is done here)."""
        image = np.asarray(image)
        if planned is None or planned.key != (image.shape[:2], strategy, dilate):
            planned = self.plan_mask(mask, strategy, dilate, timings, image.shape[:2])
        clock = _StageClock(timings)
        layout = layout_of(image)
        region = planned.region
        if region is None:
            return None
        inputs = [_model_input(run, layout.to_rgb(image[run.box.slices]), region.over(run.box)) for run in planned.runs]
        clock.lap(Stage.PREPROCESS)
        return RepairJob(image, layout, region, planned.runs, inputs, {})

    def run_models(self, job: RepairJob, timings: dict[str, float] | None = None) -> list[np.ndarray]:
        """The plan's model runs, one after another (a job's peak memory is its largest run's):
        the only step that needs the model's device."""
        return self.run_inputs(job.inputs, timings)

    def run_inputs(self, inputs: list[tuple[np.ndarray, np.ndarray]],
                   timings: dict[str, float] | None = None) -> list[np.ndarray]:
        """`run_models` on a job's model inputs alone (a job prepared in another process)."""
        clock = _StageClock(timings)
        outputs = [self.backend.repair(rgb, mask) for rgb, mask in inputs]
        clock.lap(Stage.INFER)
        return outputs

    def feather_ahead(self, job: RepairJob, feather: int, timings: dict[str, float] | None = None) -> None:
        """Computes the feather ramp `compose` will blend along (it depends on the refined mask
        alone, not on the model's output) and keeps it in the job, so that a caller with nothing
        else to do while the model runs does this part of the postprocessing then. Its time
        counts as postprocessing."""
        if feather and feather not in job.ramps:
            clock = _StageClock(timings)
            job.ramps[feather] = job.region.feather_ramp(feather)
            clock.lap(Stage.POSTPROCESS)

    def compose(self, job: RepairJob, outputs: list[np.ndarray], feather: int = 0,
                timings: dict[str, float] | None = None, *, in_place: bool = False) -> np.ndarray:
        """The CPU's work after the model: the runs' repairs pasted into the input's copy, inside
        the refined mask only, feathered over `feather` px (0: not feathered). The outputs are
        `run_models`' own: compose may change them. `in_place`: pasted into the job's image
        itself, which is returned, for a caller that owns it and needs the original no more (the
        copy of a large photo, and the pages it faults in, are a share of one client's wait)."""
        clock = _StageClock(timings)
        image, region = job.image, job.region
        # Only the region's box is repaired: every masked pixel lies in it.
        area = region.box
        original = job.layout.to_rgb(image[area.slices])
        filled = _repairs_over(area, job.runs, outputs, original)
        if feather:
            self.feather_ahead(job, feather)  # a no-op where the caller computed it ahead; timed here otherwise
            _feather(filled, original, job.ramps[feather])
        # The guarantee, enforced rather than hoped for: layout round trips must not touch a
        # single pixel outside the mask, so only masked pixels are copied into the input's copy
        # (cv2.copyTo writes into the view in one pass; numpy's masked copy took 100× longer).
        result = image if in_place else image.copy()
        cv2.copyTo(job.layout.from_rgb(filled, image[area.slices]), region.pixels.view(np.uint8), result[area.slices])
        clock.lap(Stage.POSTPROCESS)
        return result

    def refined_mask(self, mask: np.ndarray, dilate: int, shape: tuple[int, ...]) -> masks.RegionMask | None:
        """The mask as the repair uses it (binarized, dilated by `dilate` px) for an image of
        `shape`; None when nothing is to be repaired."""
        if dilate < 0:
            raise EngineError("dilate and feather must be zero or positive pixel counts")
        binary = masks.binarize(np.asarray(mask))
        if binary.shape != tuple(shape):
            raise EngineError(f"mask is {binary.shape[1]}×{binary.shape[0]} but the image is "
                              f"{shape[1]}×{shape[0]}: they must be the same size")
        region = masks.RegionMask.of(binary)
        return region.dilated(dilate) if region is not None else None

    def _plan(self, region: masks.RegionMask, strategy: str) -> list[Run]:
        return plan(region, strategy, self.hd, snap=self.backend.prefers_few_shapes)

    def _repair_whole(self, rgb: np.ndarray, mask: np.ndarray) -> None:
        """The model on the whole of `rgb`, as the plan would run it (the warm-up's runs: what
        they repair is not kept)."""
        self.backend.repair(*_model_input(whole_run(masks.Box(0, 0, *mask.shape), self.hd), rgb, mask))

    # ------------------------------------------------------------------ memory admission

    def model_input_shapes(self, mask: np.ndarray, strategy: str) -> list[tuple[int, int]]:
        """(height, width) of every model run `inpaint` makes for this refined (binarized and
        dilated) mask and strategy, in order: the plan inpaint runs, without running it."""
        region = masks.RegionMask.of(mask)
        return [] if region is None else [run.model_shape for run in self._plan(region, strategy)]

    def peak_model_pixels(self, mask: np.ndarray, strategy: str, dilate: int = 0) -> int:
        """The largest model input, in pixels, that inpaint(image, mask, strategy, dilate) runs."""
        region = self.refined_mask(mask, dilate, np.shape(mask)[:2])
        return peak_pixels(self._plan(region, strategy) if region is not None else [])

    def memory_estimate(self, mask: np.ndarray, strategy: str, dilate: int = 0) -> int | None:
        """GPU bytes the repair will need above what the process holds at rest; None where
        nothing is budgeted (the CPU, the OpenCV fallback, before the warm-up)."""
        if self.memory is None:
            return None
        return self.memory.bytes_for(self.peak_model_pixels(mask, strategy, dilate))

    def memory_for(self, job: RepairJob | None) -> int | None:
        """GPU bytes a prepared job (None: nothing to repair) needs above what the process holds
        at rest; None where nothing is budgeted."""
        return self.memory_for_pixels(job.peak_model_pixels if job is not None else 0)

    def memory_for_pixels(self, pixels: int) -> int | None:
        """GPU bytes a job whose largest model input has `pixels` needs; None where nothing is budgeted."""
        return None if self.memory is None else self.memory.bytes_for(pixels)

    def gpu_budget(self) -> int | None:
        """Bytes concurrent jobs may hold together under the device's memory share
        (Device.limit_memory); None until the warm-up has measured the memory at rest."""
        if self.steady_gpu_bytes is None:
            return None
        return self.device.budget_bytes(self.steady_gpu_bytes)

    def warmup(self, sizes: tuple[tuple[int, int], ...] = WARMUP_SIZES,
               wait_for: Callable[[], None] | None = None) -> None:
        """Repairs at the common sizes (width, height) so that the CUDA context, cuDNN/cuFFT
        plans, allocator pools and the fast path's graphs exist before the first request.

        On CUDA the first warm-up also learns the memory model (`self.memory`) from the peak of
        each size, and then measures what the process holds at rest (`self.steady_gpu_bytes`):
        together they are what the service's memory budget needs. It must run alone on the GPU,
        or another job's memory would count as the warm-up's. `wait_for`: see compile_ahead.
        """
        device = self.device
        sizes = sizes if device.is_cuda else sizes[:1]
        cases = [_warmup_case(width, height) for width, height in sizes]
        self.compile_ahead(sizes, wait_for)
        with self.backend.warming():
            self._warm(cases)
        device.synchronize()

    def compile_ahead(self, sizes: tuple[tuple[int, int], ...] = WARMUP_SIZES,
                      wait_for: Callable[[], None] | None = None) -> None:
        """What the first repairs of pictures of these sizes (width, height), repaired whole, would
        each prepare in turn, prepared at once (the fast path's GPU kernels, into the kernel cache):
        the warm-up's first step, and all that lama.kernel_helper's process does. `wait_for` is
        called before the preparing proper (lama.kernel_helper's process, compiling the same)."""
        self.backend.compile_ahead([self._whole_model_shape((height, width)) for width, height in sizes], wait_for)

    def _warm(self, cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
        device = self.device
        if device.is_cuda and self.memory is None:
            self.memory = self.learn_memory(cases, device.peak_above_baseline)
            # Last, after every graph exists: their pools are part of what stays.
            self.steady_gpu_bytes = device.steady_reserved_bytes()
            log.info("GPU memory model: %.0f bytes per model-input pixel + %s; %s held at rest",
                     self.memory.per_pixel_bytes, format_bytes(self.memory.fixed_bytes),
                     format_bytes(self.steady_gpu_bytes))
        else:
            for image, mask in cases:
                self._repair_whole(image, mask)

    def learn_memory(self, cases: list[tuple[np.ndarray, np.ndarray]],
                     measure: Callable[[Callable[[], object]], int]) -> MemoryModel:
        """Repairs each (image, mask) as a whole, `measure(run)` giving each run's peak bytes, and
        fits the memory model on (model-input pixels, peak).

        On CUDA each of these runs is the fast path's graph capture (the warm-up captures every
        size it runs), which runs the generator eagerly first: its peak bounds what a job costs at
        a size without a graph, which runs eagerly or is being captured, or above the graph
        limit, where everything runs eagerly. A replayed graph needs less, so the estimate errs
        on the safe side for those.
        """
        samples = []
        for image, mask in cases:
            height, width = self._whole_model_shape(mask.shape)
            started = time.perf_counter()
            samples.append((height * width, measure(lambda: self._repair_whole(image, mask))))
            # Each size's first run is most of the start-up's wait: an operator sees which.
            log.info("warm-up: %d×%d in %.2f s", mask.shape[1], mask.shape[0], time.perf_counter() - started)
        return MemoryModel.fit(samples)

    def _whole_model_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The model's input size (height, width) when a picture of `shape` is repaired whole."""
        return whole_run(masks.Box(0, 0, *shape), self.hd).model_shape


class RepairJob(NamedTuple):
    """What `prepare` hands to `run_models` and `compose`: the input, its refined mask, the plan
    and each run's model input (RGB and mask at the size the model sees)."""

    image: np.ndarray
    layout: Layout
    region: masks.RegionMask
    runs: list[Run]
    inputs: list[tuple[np.ndarray, np.ndarray]]
    ramps: dict[int, masks.Ramp]  # feather width -> the region's feather ramp, computed ahead (feather_ahead)

    @property
    def peak_model_pixels(self) -> int:
        """The largest model input, in pixels: what the job's GPU memory follows."""
        return peak_pixels(self.runs)


class MaskPlan(NamedTuple):
    """What `plan_mask` found for a mask: its refined region (None: nothing to repair) and the
    plan's runs, for an image of `shape` with `strategy` and `dilate`."""

    shape: tuple[int, int]
    strategy: str
    dilate: int
    region: masks.RegionMask | None
    runs: list[Run]

    @property
    def key(self) -> tuple[tuple[int, int], str, int]:
        """What the plan was made for: `prepare` uses it only for the same."""
        return self.shape, self.strategy, self.dilate


def _model_input(run: Run, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A run's box as the model sees it, scaled down when the plan says so; otherwise the image's
    own pixels (a view of the box): the backend copies them once, on its way to the device."""
    if not run.scaled:
        return rgb, mask
    height, width = run.model_shape
    small_rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    # Any coverage of a small pixel counts, so the hole never shrinks when scaled down.
    small_mask = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_AREA) > 0
    return small_rgb, small_mask


def _repairs_over(area: masks.Box, runs: list[Run], outputs: list[np.ndarray], original: np.ndarray) -> np.ndarray:
    """The runs' repairs over `area`, RGB, scaled back to the image's size where they were
    scaled down. Where one run covers all of it (one region, or a whole-image strategy: most
    repairs) that is a window of its output, not a copy: a large repair's box is megabytes, and
    every pass over it is a share of one client's wait. Otherwise the runs are pasted in order
    over a copy of `original` (a later run's pixels win where boxes overlap)."""
    repairs = []
    for run, repaired in zip(runs, outputs, strict=True):
        if run.scaled:
            height, width = run.box.shape
            repaired = cv2.resize(repaired, (width, height), interpolation=cv2.INTER_CUBIC)
        repairs.append(repaired)
    if len(runs) == 1 and area.intersection(runs[0].box) == area:
        return repairs[0][area.within(runs[0].box)]
    filled = original.copy()
    for run, repaired in zip(runs, repairs, strict=True):
        if (common := area.intersection(run.box)) is not None:
            filled[common.within(area)] = repaired[common.within(run.box)]
    return filled


def _feather(filled: np.ndarray, original: np.ndarray, ramp: masks.Ramp) -> None:
    """Blends `filled` (the repair over the region's box) with `original` where the feather
    weight is below 1 (the region's `ramp`), in place. Only the ramp blends: deeper inside the
    mask the weight is 1 (the repair as it is) and outside it nothing is copied; per pixel, the
    arithmetic of a whole-frame blend. The ramp is a thin band along the mask's edge (a small
    share of the box), so its pixels are gathered by their coordinates rather than by boolean
    masks, each of which would scan the whole box again. Its pixels are distinct, so a long one
    is blended in chunks that share nothing, on lama.parallel's pool (numpy's gathers, scatters
    and arithmetic release the GIL): on one core it was most of a large repair's compose."""
    rows, cols, share = ramp
    chunks = max(1, min(parallel.cores(), len(rows) // FEATHER_CHUNK_PIXELS))
    edges = np.linspace(0, len(rows), chunks + 1).astype(int)
    repaired, kept = _RampPixels(filled, rows, cols), _RampPixels(original, rows, cols)

    def blend(span: slice) -> None:
        weight = share[span, None]
        repaired.put(span, np.rint(weight * repaired.get(span) + (1 - weight) * kept.get(span)).astype(np.uint8))

    if len(rows):
        parallel.run_all(blend, [slice(start, stop) for start, stop in zip(edges[:-1], edges[1:], strict=True)])


_PIXEL = np.dtype((np.void, 3))  # an RGB pixel's three bytes as one item


class _RampPixels:
    """An RGB image's pixels at (rows, cols), read and written a span of them at a time. Where the
    image's pixels are 3 contiguous bytes on rows a whole number of pixels apart (an image, or a
    window of one: every RGB box compose meets), they are gathered and scattered as 3-byte items
    by their positions in one run of the image's pixels: numpy indexes an H×W×3 array by rows and
    columns a byte at a time, which took most of the blend (docs/PROFILING.md); other layouts are
    indexed as they are."""

    def __init__(self, image: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        row_bytes, pixel_bytes, channel_bytes = image.strides
        self._flat = (pixel_bytes == 3 and channel_bytes == 1 and row_bytes > 0 and row_bytes % 3 == 0
                      and image.size > 0)
        if self._flat:
            height, width = image.shape[:2]
            row_pixels = row_bytes // 3
            # The pixels from the first to the last, each 3 bytes after the one before: contiguous.
            self._pixels = np.lib.stride_tricks.as_strided(image.view(_PIXEL), ((height - 1) * row_pixels + width,), (3,))
            self._index = rows * row_pixels + cols
        else:
            self._pixels, self._rows, self._cols = image, rows, cols

    def get(self, span: slice) -> np.ndarray:
        """The span's pixels, (n, 3) uint8."""
        if self._flat:
            return np.take(self._pixels, self._index[span]).view(np.uint8).reshape(-1, 3)
        return self._pixels[self._rows[span], self._cols[span]]

    def put(self, span: slice, values: np.ndarray) -> None:
        """Writes (n, 3) uint8 `values` to the span's pixels."""
        if self._flat:
            np.put(self._pixels, self._index[span], np.ascontiguousarray(values).view(_PIXEL).reshape(-1))
        else:
            self._pixels[self._rows[span], self._cols[span]] = values


def _warmup_case(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A random picture with a quarter of it masked: the same one at every start."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4: height // 2, width // 4: width // 2] = True
    return image, mask


class _StageClock:
    """Accumulates the seconds between laps into a caller's dict (or does nothing without one)."""

    def __init__(self, timings: dict[str, float] | None):
        self._timings = timings
        self._last = time.perf_counter()

    def lap(self, stage: Stage) -> None:
        if self._timings is None:
            return
        now = time.perf_counter()
        self._timings[stage] = self._timings.get(stage, 0.0) + now - self._last
        self._last = now
