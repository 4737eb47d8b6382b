"""InpaintEngine: numpy image + mask in, repaired image out, on CPU or GPU.

The engine owns everything between pixels and the generator, as one place (the way
IOPaint's base model does) so that every backend gets the same behaviour:
- the official LaMa pipeline: pad bottom/right to a multiple of 8 by mirroring, binarize
  the mask, composite mask·G(x) + (1 − mask)·x, crop back;
- the HD strategies (original, resize, crop) and the mask refinements (dilate, feather);
- image layouts: grayscale and RGBA in, the same layout out, alpha untouched;
- the guarantee that pixels outside the (refined) mask come back bit-identical.

It imports no web code; the service and the CLI are thin layers over it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from lama import fastpath, masks
from lama.checkpoint import build_generator, load_checkpoint
from lama.errors import EngineError
from lama.fallback import telea_inpaint
from lama.fastnet import FastGenerator
from lama.memory import MemoryModel, budget_bytes, format_bytes, peak_above_baseline, steady_reserved_bytes
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator, GeneratorConfig, parameter_count

log = logging.getLogger(__name__)

STRATEGIES = ("original", "resize", "crop")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}

# Where the engine looks for weights when none is named, in order (relative to the
# working directory; `python -m lama download` writes the second one).
DEFAULT_MODEL_CANDIDATES = (
    Path("models/big-lama.safetensors"),
    Path("models/big-lama.pt"),
    Path("models/big-lama"),
)


# Sizes (width, height) warmed at start-up: what phones, screenshots and the crop strategy
# (800-px regions plus margins) send most, and the longest side the default preset lets the
# model see (a size's first run picks cuDNN's kernels; the memory model learns from it too).
WARMUP_SIZES = ((512, 512), (640, 480), (1024, 768), (1280, 960), (2560, 1920))


class CheckpointSource(NamedTuple):
    path: Path
    format: str


@dataclass(frozen=True)
class HDSettings:
    """When and how large images are handled; defaults as in the well-known LaMa tools."""

    crop_trigger: int = 800  # crop only when the long side exceeds this
    crop_margin: int = 128  # context around each masked region
    resize_limit: int = 1280  # resize: long side the model sees at most
    # Whatever the strategy, the model never runs on a longer side than this: larger
    # inputs are downscaled for it and the repair upscaled into the mask. It bounds the
    # GPU memory of one job (the service's presets set it); None means no bound.
    max_side: int | None = None


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is an error, not a silent CPU run."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineError(f"device {device!r} requested but CUDA is not available "
                              "(no GPU, or torch was installed without CUDA); use --device cpu")
        resolved = torch.device(device)
        # Always with an index: memory queries and limits want to know which GPU.
        return resolved if resolved.index is not None else torch.device("cuda", torch.cuda.current_device())
    raise EngineError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is fp16 on CUDA (half the memory, tensor cores) and fp32 on CPU."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in DTYPES:
        raise EngineError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise EngineError("fp16 needs a CUDA device; on the CPU use --precision fp32 (or auto)")
    return precision


def find_default_model() -> Path | None:
    return next((path for path in DEFAULT_MODEL_CANDIDATES if path.exists()), None)


def model_name(config: GeneratorConfig, parameters: int) -> str:
    """'big-lama' only for big-lama's own architecture; a smaller network (the test checkpoint)
    is named by its size, so that /healthz and the report never pass it off as big-lama."""
    return "big-lama" if config == BIG_LAMA_CONFIG else f"lama-{parameters / 1e6:.1f}M"


class InpaintEngine:
    """Repairs images with big-lama, or with OpenCV's Telea method when no weights exist.

    `model`: a checkpoint path in any format `lama.checkpoint` reads, or None to use the
    first of DEFAULT_MODEL_CANDIDATES that exists (else the OpenCV fallback).
    """

    def __init__(self, model: str | Path | None = None, device: str = "auto", precision: str = "auto",
                 hd: HDSettings = HDSettings(), fast: bool = True):
        self._init_runtime(device, precision, hd, fast)
        path = Path(model) if model is not None else find_default_model()
        if path is None:
            log.warning("no big-lama weights found (looked for %s); repairing with OpenCV Telea "
                        "inpainting instead. Run `python -m lama download` to get the model.",
                        ", ".join(str(p) for p in DEFAULT_MODEL_CANDIDATES))
            return
        checkpoint = load_checkpoint(path)
        self.source = CheckpointSource(checkpoint.path, checkpoint.source_format)
        # The checkpoint's tensors are dropped once copied into the generator: the
        # service should not carry a second, CPU-side copy of the weights in its RSS.
        self._set_generator(build_generator(checkpoint))
        log.info("loaded big-lama from %s (%s) on %s in %s", path, checkpoint.source_format,
                 self.device, self.precision)

    @classmethod
    def with_random_weights(cls, device: str = "auto", precision: str = "auto", seed: int = 0,
                            hd: HDSettings = HDSettings(), fast: bool = True) -> InpaintEngine:
        """Full-size big-lama with random weights: benchmarks and GPU checks without a download."""
        engine = cls.__new__(cls)
        engine._init_runtime(device, precision, hd, fast)
        engine._random_seed = seed
        torch.manual_seed(seed)
        engine._set_generator(FFCResNetGenerator(BIG_LAMA_CONFIG).eval())
        return engine

    def _init_runtime(self, device: str, precision: str, hd: HDSettings, fast: bool) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.hd = hd
        # The fast path (lama.fastpath) exists for CUDA; on the CPU the engine is the plain
        # reference implementation.
        self.fast = fast and self.device.type == "cuda"
        self.source: CheckpointSource | None = None
        self.generator: FFCResNetGenerator | None = None
        self._runner: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._random_seed: int | None = None

    def reference(self) -> InpaintEngine:
        """The same weights, freshly loaded, as the plain fp32 eager path on the same device.

        Loaded again rather than cast from this engine's weights, so that the reference for
        an fp16 engine has the original, unrounded weights and no fast-path rewrites.
        """
        device = str(self.device)
        if self._random_seed is not None:
            return InpaintEngine.with_random_weights(device, "fp32", self._random_seed, self.hd, fast=False)
        if self.source is None:
            raise EngineError("the OpenCV fallback has no reference path")
        return InpaintEngine(self.source.path, device, "fp32", self.hd, fast=False)

    def _set_generator(self, generator: FFCResNetGenerator) -> None:
        if self.fast:
            generator = fastpath.fold_batchnorm(generator)
        # Weights are converted once, here, and stay in the target dtype.
        self.generator = generator.to(self.device, DTYPES[self.precision]).eval().requires_grad_(False)
        if self.fast:
            fast = FastGenerator(self.generator)
            self._runner = fastpath.GraphRunner(fast, keepalive=fast.constants_for_input)
        else:
            self._runner = self.generator

    # ------------------------------------------------------------------ reporting

    @property
    def uses_fallback(self) -> bool:
        return self.generator is None

    def describe(self) -> dict[str, Any]:
        """What is serving requests, for logs, /healthz and `python -m lama info`."""
        if self.generator is None:
            return {
                "name": "opencv-telea", "loaded": True, "fallback": True, "device": "cpu",
                "precision": "uint8", "source": "embedded", "path": None, "parameters": 0,
                "note": "no big-lama weights found: using OpenCV Telea inpainting "
                        "(run `python -m lama download` for the real model)",
            }
        parameters = parameter_count(self.generator)
        return {
            "name": model_name(self.generator.config, parameters), "loaded": True, "fallback": False,
            "device": str(self.device), "precision": self.precision,
            "source": self.source.format if self.source else "random",
            "path": str(self.source.path) if self.source else None,
            "parameters": parameters,
        }

    # ------------------------------------------------------------------ inference

    def predict(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The official LaMa prediction on the whole image, as float32 H×W×3 in 0..1.

        `image` is RGB uint8, `mask` boolean H×W. This is the exact reference pipeline
        (the fixtures check it to 1e-4); `inpaint` builds the user-facing result on it.
        """
        with torch.inference_mode():
            return self._predict_on_device(image, mask).cpu().numpy()

    def _predict_on_device(self, image: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        if self.generator is None:
            raise EngineError("no model loaded: predict() needs big-lama weights")
        height, width = mask.shape
        x, m, net_input = self.model_input(image, mask)
        predicted = self.run_model(net_input).float()
        out = m * predicted + (1 - m) * x
        return out[0, :, :height, :width].permute(1, 2, 0)

    def run_model(self, net_input: torch.Tensor) -> torch.Tensor:
        """The generator on a prepared input: through the fast path where it is on."""
        if self._runner is None:
            raise EngineError("no model loaded: the OpenCV fallback has no generator")
        return self._runner(net_input)

    def model_input(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pad as the official pipeline does and build the generator's input, on the device.

        Returns (image 1×3×H'×W' in 0..1, fp32), (mask 1×1×H'×W', 0/1, fp32) and the network
        input (masked image and mask, 1×4×H'×W', in the weights' dtype).
        """
        height, width = mask.shape
        modulo = 2 ** self.generator.config.n_downsampling

        def padded(size: int) -> int:
            # The official multiple of `modulo`, but at least two bottleneck pixels: the
            # reflect padding there needs them (the official code fails on an 8×8 image).
            return max(-(-size // modulo) * modulo, 2 * modulo)

        # Padded on the device: the uint8 image travels as it is, and the mirroring is one
        # gather per axis with numpy's own 'symmetric' index order (any pad, even beyond
        # the image's size, comes out exactly as np.pad would make it).
        rows = _symmetric_index(height, padded(height), self.device)
        cols = _symmetric_index(width, padded(width), self.device)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        pixels = pixels.index_select(0, rows).index_select(1, cols)
        holes = torch.from_numpy(np.ascontiguousarray(mask)).to(self.device)
        holes = holes.index_select(0, rows).index_select(1, cols)
        x = pixels.permute(2, 0, 1)[None].float().div_(255)
        m = holes[None, None].float()
        return x, m, torch.cat((x * (1 - m), m), dim=1).to(DTYPES[self.precision])

    def inpaint(self, image: np.ndarray, mask: np.ndarray, strategy: str = "crop", dilate: int = 0,
                feather: int = 0, timings: dict[str, float] | None = None) -> np.ndarray:
        """Repair `image` where `mask` is nonzero; returns an array of the same shape and layout.

        image: uint8 H×W (gray), H×W×1, H×W×3 (RGB) or H×W×4 (RGBA; alpha is kept as is).
        mask: uint8/bool H×W or H×W×C, nonzero = repair. dilate/feather: pixels.
        Pixels outside the dilated mask are returned bit-identical.
        `timings`, when given, receives seconds spent in "preprocess" (layout, mask
        refinement), "infer" (the strategy's model runs, transfers included) and
        "postprocess" (feathering, layout back, the final paste).
        """
        clock = _StageClock(timings)
        rgb, restore = _split_layout(image)
        if strategy not in STRATEGIES:
            raise EngineError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if dilate < 0 or feather < 0:
            raise EngineError("dilate and feather must be zero or positive pixel counts")
        fill_mask = masks.binarize(np.asarray(mask))
        if fill_mask.shape != rgb.shape[:2]:
            raise EngineError(f"mask is {fill_mask.shape[1]}×{fill_mask.shape[0]} but the image is "
                              f"{rgb.shape[1]}×{rgb.shape[0]}: they must be the same size")
        fill_mask = masks.dilate(fill_mask, dilate)
        clock.lap("preprocess")
        if not fill_mask.any():
            return image.copy()

        filled = self._fill(rgb, fill_mask, strategy)
        clock.lap("infer")
        if feather:
            weights = masks.feather_weights(fill_mask, feather)[..., None]
            filled = np.rint(weights * filled + (1 - weights) * rgb).astype(np.uint8)
        result = restore(filled)
        # The guarantee, enforced rather than hoped for: float round trips and colour
        # conversions must not touch a single pixel outside the mask.
        # (cv2.copyTo: one vectorised pass, where np.where took tens of ms at 5 MP.)
        result = _canonical(result)
        result = cv2.copyTo(image, np.logical_not(fill_mask).view(np.uint8), result)
        clock.lap("postprocess")
        return result

    def _fill(self, rgb: np.ndarray, mask: np.ndarray, strategy: str) -> np.ndarray:
        """A full-size RGB image whose pixels inside `mask` are the repair (outside: anything)."""
        how = self._fill_mode(mask.shape, strategy)
        if how == "resize":
            return self._repair_downscaled(rgb, mask, self._resize_limit(mask.shape))
        if how == "crop":
            return self._fill_cropped(rgb, mask)
        return self._repair(rgb, mask)

    # The decisions of _fill and the helpers it calls, by shape alone, so that
    # model_input_shapes can tell what a job will run without running it.

    def _fill_mode(self, shape: tuple[int, int], strategy: str) -> str:
        """'resize', 'crop' (per region) or 'whole': what the strategy does at this size."""
        long_side = max(shape)
        if strategy == "resize" and long_side > self.hd.resize_limit:
            return "resize"
        if strategy == "crop" and long_side > self.hd.crop_trigger:
            return "crop"
        return "whole"

    def _resize_limit(self, shape: tuple[int, int]) -> int:
        """The long side the resize strategy scales to: its limit, within max_side."""
        return min(self.hd.resize_limit, self.hd.max_side or max(shape))

    def _crop_boxes(self, mask: np.ndarray) -> list[masks.Box]:
        return masks.region_boxes(mask, self.hd.crop_margin)

    def _exceeds_max_side(self, shape: tuple[int, int]) -> bool:
        return bool(self.hd.max_side) and max(shape) > self.hd.max_side

    def _repair_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the model sees when _repair gets an image or crop of `shape`."""
        return _scaled_shape(shape, self.hd.max_side) if self._exceeds_max_side(shape) else tuple(shape)

    def _repair_downscaled(self, rgb: np.ndarray, mask: np.ndarray, limit: int) -> np.ndarray:
        height, width = mask.shape
        small_height, small_width = _scaled_shape(mask.shape, limit)
        size = (small_width, small_height)
        small_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        # Any coverage of a small pixel counts, so the hole never shrinks when scaled down.
        small_mask = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) > 0
        small = self._run_backend(small_rgb, small_mask)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)

    def _fill_cropped(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        filled = rgb.copy()
        for box in self._crop_boxes(mask):
            rows, cols = box.slices
            filled[rows, cols] = self._repair(rgb[rows, cols], mask[rows, cols])
        return filled

    def _repair(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Repair this image or crop as a whole, within the max_side bound."""
        if self._exceeds_max_side(mask.shape):
            return self._repair_downscaled(rgb, mask, self.hd.max_side)
        return self._run_backend(rgb, mask)

    def _run_backend(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.generator is None:
            return telea_inpaint(rgb, mask.astype(np.uint8))
        with torch.inference_mode():
            # uint8 as the official pipeline converts (clip(x·255), truncated), but on the
            # device: a quarter of the bytes to copy back and no float pass on the CPU.
            out = self._predict_on_device(rgb, mask).mul_(255).clamp_(0, 255).to(torch.uint8)
            return out.contiguous().cpu().numpy()

    def warmup(self, sizes: tuple[tuple[int, int], ...] = WARMUP_SIZES) -> None:
        """Inferences at the common sizes (width, height) so that the CUDA context, cuDNN/cuFFT
        plans, allocator pools and the fast path's graphs exist before the first request.

        On CUDA the first warm-up also learns the memory model (`self.memory`) from the peak of
        each size, and then measures what the process holds at rest (`self.steady_gpu_bytes`):
        together they are what the service's memory budget needs. It must run alone on the GPU,
        or another job's memory would count as the warm-up's.
        """
        on_gpu = self.device.type == "cuda"
        cases = [_warmup_case(width, height) for width, height in (sizes if on_gpu else sizes[:1])]
        if on_gpu and self.generator is not None and self.memory is None:
            self.memory = self.learn_memory(cases, partial(peak_above_baseline, self.device))
            # Last, after every graph exists: their pools are part of what stays.
            self.steady_gpu_bytes = steady_reserved_bytes(self.device)
            log.info("GPU memory model: %.0f bytes per model-input pixel + %s; %s held at rest",
                     self.memory.per_pixel_bytes, format_bytes(self.memory.fixed_bytes),
                     format_bytes(self.steady_gpu_bytes))
        else:
            for image, mask in cases:
                self._repair(image, mask)
        if on_gpu:
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ memory admission

    # Learned by the first warm-up on CUDA; None on the CPU, where nothing is budgeted.
    memory: MemoryModel | None = None
    steady_gpu_bytes: int | None = None

    def learn_memory(self, cases: list[tuple[np.ndarray, np.ndarray]],
                     measure: Callable[[Callable[[], object]], int]) -> MemoryModel:
        """Repairs each (image, mask) as a whole, `measure` giving each run's peak bytes, and fits
        the memory model on (model-input pixels, peak).

        On CUDA the first run at a size is the fast path's graph capture, which runs the
        generator eagerly first: its peak is what a job costs at a size whose graph does not
        exist yet, or above the graph limit, where everything runs eagerly. A replayed graph
        needs less, so the estimate errs on the safe side for those.
        """
        samples = []
        for image, mask in cases:
            height, width = self._repair_shape(mask.shape)
            samples.append((height * width, measure(lambda: self._repair(image, mask))))
        return MemoryModel.fit(samples)

    def model_input_shapes(self, mask: np.ndarray, strategy: str) -> list[tuple[int, int]]:
        """(height, width) of every generator run `inpaint` makes for this refined (binarized
        and dilated) mask and strategy, in order, decided as _fill decides, without running."""
        if not mask.any():
            return []  # inpaint returns the input as it is
        how = self._fill_mode(mask.shape, strategy)
        if how == "resize":
            return [_scaled_shape(mask.shape, self._resize_limit(mask.shape))]
        regions = ([(int(box.bottom - box.top), int(box.right - box.left)) for box in self._crop_boxes(mask)]
                   if how == "crop" else [mask.shape])
        # Crops run one after another: the job's peak is its largest run's.
        return [self._repair_shape(region) for region in regions]

    def peak_model_pixels(self, mask: np.ndarray, strategy: str, dilate: int = 0) -> int:
        """The largest model input, in pixels, that inpaint(image, mask, strategy, dilate) runs."""
        refined = masks.dilate(masks.binarize(np.asarray(mask)), dilate)
        return max((height * width for height, width in self.model_input_shapes(refined, strategy)), default=0)

    def memory_estimate(self, mask: np.ndarray, strategy: str, dilate: int = 0) -> int | None:
        """GPU bytes the repair will need above what the process holds at rest; None where
        nothing is budgeted (the CPU, the OpenCV fallback, before the warm-up)."""
        if self.memory is None:
            return None
        return self.memory.bytes_for(self.peak_model_pixels(mask, strategy, dilate))

    def gpu_budget(self, fraction: float) -> int | None:
        """Bytes concurrent jobs may hold together under a per-process share `fraction` of the
        card (the preset's); None until the warm-up has measured the memory at rest."""
        if self.device.type != "cuda" or self.steady_gpu_bytes is None:
            return None
        total = torch.cuda.mem_get_info(self.device)[1]
        return budget_bytes(total, fraction, self.steady_gpu_bytes)


def _warmup_case(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A random picture with a quarter of it masked: the same one at every start."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4: height // 2, width // 4: width // 2] = True
    return image, mask


def _scaled_shape(shape: tuple[int, int], limit: int) -> tuple[int, int]:
    """(height, width) of `shape` scaled so that its long side is `limit`, at least 1×1."""
    height, width = shape
    scale = limit / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _canonical(array: np.ndarray) -> np.ndarray:
    """`array`, or a copy of it with plain C strides: OpenCV refuses output arrays whose
    strides are unusual even where numpy calls them contiguous (size-1 axes from torch)."""
    if array.flags.writeable and array.strides == np.empty(array.shape, array.dtype).strides:
        return array
    return array.copy()


def _symmetric_index(size: int, padded: int, device: torch.device) -> torch.Tensor:
    """Source rows (or columns) of np.pad(..., (0, padded - size), mode='symmetric')."""
    index = np.pad(np.arange(size), (0, padded - size), mode="symmetric")
    return torch.from_numpy(index).to(device)


class _StageClock:
    """Accumulates the seconds between laps into a caller's dict (or does nothing without one)."""

    def __init__(self, timings: dict[str, float] | None):
        self._timings = timings
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self._timings is None:
            return
        now = time.perf_counter()
        self._timings[stage] = self._timings.get(stage, 0.0) + now - self._last
        self._last = now


def _split_layout(image: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """RGB view of any supported layout, and the function that puts a result back in that layout."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise EngineError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
        return _split_gray(image, lambda gray: gray[..., None])
    if image.ndim == 2:
        return _split_gray(image, lambda gray: gray)
    if image.ndim == 3 and image.shape[2] == 3:
        return image, lambda rgb: rgb
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:]
        return np.ascontiguousarray(image[..., :3]), lambda rgb: np.concatenate((rgb, alpha), axis=2)
    raise EngineError(f"unsupported image shape {image.shape}: expected H×W, H×W×3 (RGB) or H×W×4 (RGBA)")


def _split_gray(gray: np.ndarray, reshape: Callable[[np.ndarray], np.ndarray]
                ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return rgb, lambda result: reshape(cv2.cvtColor(result, cv2.COLOR_RGB2GRAY))
