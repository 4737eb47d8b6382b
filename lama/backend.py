"""What every way of repairing pixels implements: big-lama's reference path (lama/reference.py),
its GPU fast path (lama/fastpath.py) and OpenCV's Telea method (lama/fallback.py).

A backend repairs one whole RGB image. Everything around that lives once, in the engine, so
every backend gets the same behaviour: the HD strategies (lama/planning.py), mask refinement,
image layouts and the guarantee that pixels outside the mask come back bit-identical. (IOPaint's
model classes are built the same way.)
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch's import is the device's; planning with a backend needs none (service.cpu_workers)
    from lama.device import Device


class Backend(ABC):
    device: Device  # where it runs: what /healthz, /metrics and the sampler report
    precision: str  # "fp32", "fp16", or "uint8" for a classical method
    model_loaded: bool  # big-lama's weights serve the repairs (False: a stand-in)
    # What an operator must know about this backend (the CLI prints it, the UI shows it); None: nothing.
    warning: str | None = None
    # Model runs whose fp16 output overflowed and were computed again in fp32 (the fast path's guard).
    fp16_fallbacks: int = 0
    # It prepares work per input shape (the fast path's CUDA graphs): the crop strategy's boxes
    # then snap to a ladder of sides, so that repairs of different masks share shapes (lama.planning).
    prefers_few_shapes: bool = False

    @abstractmethod
    def repair(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 RGB (possibly a view of a larger image: rows apart) and an H×W boolean
        mask (True: repair) in; H×W×3 uint8 out, repaired inside the mask (what it holds outside
        is not used)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What is serving requests, for logs, /healthz and `python -m lama info`: name, loaded,
        fallback, device, precision, source, path, parameters (and a note where there is a warning)."""

    def compile_ahead(self, shapes: list[tuple[int, int]], wait_for: Callable[[], None] | None = None) -> None:
        """Prepares at once what the first runs at these model input sizes (height, width) would
        each prepare in turn (the fast path's GPU kernels); nothing by default. `wait_for` is called
        before the preparing proper: by default at once."""
        if wait_for is not None:
            wait_for()

    def warming(self) -> contextlib.AbstractContextManager[None]:
        """Entered around the engine's warm-up runs: a backend that prepares something per input
        size for sizes that come back (the fast path's CUDA graphs) prepares it for these at once."""
        return contextlib.nullcontext()

    def reference(self) -> Backend:
        """The same weights as the plain fp32 eager path on the same device (what the fast path
        is measured against)."""
        raise NotImplementedError(f"{type(self).__name__} has no reference path")
