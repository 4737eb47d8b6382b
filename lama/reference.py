"""big-lama as a backend: the official LaMa prediction around a generator, run eagerly.

The official pipeline pads bottom/right to a multiple of 8 by mirroring (numpy's 'symmetric'),
composites mask·G(x) + (1 − mask)·x and crops back; the fixtures check this path to 1e-4. It is
the CPU backend and the reference the GPU fast path (lama/fastpath.py) is measured against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lama.backend import Backend
from lama.checkpoint import build_generator, load_checkpoint
from lama.device import DTYPES, Device
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator, GeneratorConfig, parameter_count


@dataclass(frozen=True)
class Weights:
    """Where a generator's weights come from, so that a reference can load them again:
    a checkpoint file, or big-lama's architecture with random weights from `seed`."""

    path: Path | None = None
    format: str = "random"  # the checkpoint's source format
    seed: int = 0

    def generator(self) -> FFCResNetGenerator:
        if self.path is None:
            torch.manual_seed(self.seed)
            return FFCResNetGenerator(BIG_LAMA_CONFIG).eval()
        return build_generator(load_checkpoint(self.path))


def model_name(config: GeneratorConfig, parameters: int) -> str:
    """'big-lama' only for big-lama's own architecture; a smaller network (the test checkpoint)
    is named by its size, so that /healthz and the report never pass it off as big-lama."""
    return "big-lama" if config == BIG_LAMA_CONFIG else f"lama-{parameters / 1e6:.1f}M"


class LamaReference(Backend):
    """The generator as the checkpoint defines it, eager, in `precision` on `device`."""

    model_loaded = True
    fast_path = False

    def __init__(self, weights: Weights, device: Device, precision: str, generator: FFCResNetGenerator | None = None):
        """`generator`: the weights already loaded (else they are loaded from `weights`)."""
        self.weights, self.device, self.precision = weights, device, precision
        generator = generator if generator is not None else weights.generator()
        # Counted as the checkpoint holds them, before the fast path folds some away.
        self._info = self._describe(generator)
        # Weights are converted once, here, and stay in the target dtype.
        self.generator = self.prepare(generator).to(device.torch, DTYPES[precision]).eval()
        self.generator.requires_grad_(False)
        self.run_model = self.runner()

    # The two steps the fast path replaces.

    def prepare(self, generator: FFCResNetGenerator) -> FFCResNetGenerator:
        """The generator as it goes to the device (the fast path folds its BatchNorms). On the
        CPU, channels-last: oneDNN's convolutions then take and give activations in their own
        layout instead of reordering each one in and out (the same arithmetic; big-lama in 0.8× the
        time on two cores, `python -m lama bench --model random --device cpu`, docs/BENCHMARKS.md)."""
        return generator if self.device.is_cuda else generator.to(memory_format=torch.channels_last)

    def runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What runs the network on a prepared input (1×4×H×W in the weights' dtype)."""
        if self.device.is_cuda:
            return self.generator
        return lambda net_input: self.generator(net_input.contiguous(memory_format=torch.channels_last))

    # ------------------------------------------------------------------ the Backend interface

    def repair(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # On the calling thread's own CUDA stream: the service's GPU workers overlap their
        # transfers with each other's model runs.
        with torch.inference_mode(), self.device.worker_stream():
            return to_host(to_uint8(self._predict_on_device(rgb, mask)))

    def stepwise(self) -> contextlib.AbstractContextManager[None]:
        """While it lasts, `repair` runs the network through `run_model`, where lama.bench times
        it: what this reference always does (the fast path otherwise replays the whole repair as
        one graph)."""
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        return dict(self._info)

    def reference(self) -> LamaReference:
        """Loaded again rather than cast from these weights, so that the reference for an fp16
        backend has the original, unrounded weights and no fast-path rewrites."""
        return LamaReference(self.weights, self.device, "fp32")

    def _describe(self, generator: FFCResNetGenerator) -> dict[str, Any]:
        parameters = parameter_count(generator)
        return {
            "name": model_name(generator.config, parameters), "loaded": True, "fallback": False,
            "device": str(self.device), "precision": self.precision, "source": self.weights.format,
            "path": str(self.weights.path) if self.weights.path else None, "parameters": parameters,
            "fast_path": self.fast_path,
        }

    # ------------------------------------------------------------------ the official prediction

    def predict(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The official LaMa prediction on the whole image, as float32 H×W×3 in 0..1.

        `image` is RGB uint8, `mask` boolean H×W. This is the exact reference pipeline
        (the fixtures check it to 1e-4); `repair` converts it to uint8.
        """
        with torch.inference_mode():
            return self._predict_on_device(image, mask).cpu().numpy()

    def _predict_on_device(self, image: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        x, m, net_input = self.model_input(image, mask)
        return composite(x, m, self.run_model(net_input), mask.shape)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The generator's input size for an image of this size: the official multiple of
        2^downsamplings, but at least two bottleneck pixels (the reflect padding there needs
        them; the official code fails on an 8×8 image)."""
        modulo = 2 ** self.generator.config.n_downsampling
        return tuple(max(-(-size // modulo) * modulo, 2 * modulo) for size in (height, width))

    def model_input(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pad as the official pipeline does and build the generator's input, on the device.

        Returns (image 1×3×H'×W' in 0..1, fp32), (mask 1×1×H'×W', 0/1, fp32) and the network
        input (masked image and mask, 1×4×H'×W', in the weights' dtype).
        """
        height, width = mask.shape
        padded_height, padded_width = self.padded_size(height, width)
        device = self.device.torch
        return network_input(to_device(image, device), to_device(mask, device),
                             symmetric_index(height, padded_height, device),
                             symmetric_index(width, padded_width, device), DTYPES[self.precision])


def network_input(pixels: torch.Tensor, holes: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`LamaReference.model_input` from the image (H×W×3 uint8) and mask (H×W) already on the
    device, padded by `rows` and `cols` (`symmetric_index`'s). Padded on the device: the uint8
    image travels as it is, and the mirroring is one gather per axis with numpy's own 'symmetric'
    index order (any pad, even beyond the image's size, comes out exactly as np.pad would make it)."""
    pixels = pixels.index_select(0, rows).index_select(1, cols)
    holes = holes.index_select(0, rows).index_select(1, cols)
    x = pixels.permute(2, 0, 1)[None].float().div_(255)
    m = holes[None, None].float()
    return x, m, torch.cat((x * (1 - m), m), dim=1).to(dtype)


def composite(x: torch.Tensor, m: torch.Tensor, predicted: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The official composite mask·G(x) + (1 − mask)·x of `model_input`'s x and m and the
    generator's output, cropped back to `shape` (height, width): H×W×3, fp32, in 0..1."""
    height, width = shape
    out = m * predicted.float() + (1 - m) * x
    return out[0, :, :height, :width].permute(1, 2, 0)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """`composite`'s image as uint8, as the official pipeline converts it (clip(x·255),
    truncated), but on the device: a quarter of the bytes to copy back and no float pass on
    the CPU. Contiguous, ready for the copy to the host. Changes `image`."""
    return image.mul_(255).clamp_(0, 255).to(torch.uint8).contiguous()


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """`array` (a view of a larger image, often: the crop strategy's box) on `device`. To a GPU
    through page-locked memory, asynchronously on the current stream: a DMA twice as fast as a
    copy from pageable memory, which would also hold the calling thread until it is done (the
    pinned buffer returns to torch's cache once the copy has run). The view is copied once,
    straight into that buffer: a 2560×1920 box is 15 MB, and each copy a share of the wait."""
    tensor = torch.from_numpy(array)  # strided like the view
    if device.type != "cuda":
        return tensor.contiguous()
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return pinned.copy_(tensor).to(device, non_blocking=True)


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """`tensor` as a numpy array in host memory. From a GPU into page-locked memory from torch's
    cache of it, then waited for: a copy into pageable memory goes through a bounce buffer at a
    fraction of the DMA's speed and faults in fresh pages for every result (a 2560×1920 repair
    is 15 MB). The array holds the block until it is dropped, then the block goes back to the cache."""
    if tensor.device.type != "cuda":
        return tensor.numpy()
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return pinned.numpy()


def symmetric_index(size: int, padded: int, device: torch.device) -> torch.Tensor:
    """Source rows (or columns) of np.pad(..., (0, padded - size), mode='symmetric')."""
    index = np.pad(np.arange(size), (0, padded - size), mode="symmetric")
    return torch.from_numpy(index).to(device)
