"""Which backend serves: big-lama from a checkpoint (the fast path on CUDA, the reference path
elsewhere), big-lama with random weights (benchmarks, GPU checks) or, without weights, OpenCV."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lama.backend import Backend
from lama.checkpoint import build_generator, load_checkpoint
from lama.device import Device
from lama.fallback import OpenCVTelea
from lama.fastpath import LamaFastPath
from lama.model import FFCResNetGenerator
from lama.reference import LamaReference, Weights

log = logging.getLogger(__name__)

# Where the engine looks for weights when none is named, in order (relative to the
# working directory; `python -m lama download` writes the second one).
DEFAULT_MODEL_CANDIDATES = (
    Path("models/big-lama.safetensors"),
    Path("models/big-lama.pt"),
    Path("models/big-lama"),
)


def find_default_model() -> Path | None:
    return next((path for path in DEFAULT_MODEL_CANDIDATES if path.exists()), None)


def load_backend(model: str | Path | None, device: str = "auto", precision: str = "auto",
                 fast: bool = True) -> Backend:
    """`model`: a checkpoint in any format lama.checkpoint reads, or None for the first of
    DEFAULT_MODEL_CANDIDATES that exists, else the OpenCV fallback (which runs on the CPU)."""
    resolved = Device.resolve(device)
    resolved.precision(precision)  # a bad device/precision pair is refused even without weights
    path = Path(model) if model is not None else find_default_model()
    if path is None:
        log.warning("no big-lama weights found (looked for %s); repairing with OpenCV Telea "
                    "inpainting instead. Run `python -m lama download` to get the model.",
                    ", ".join(str(p) for p in DEFAULT_MODEL_CANDIDATES))
        return OpenCVTelea()
    started = time.perf_counter()
    checkpoint = load_checkpoint(path)
    weights = Weights(checkpoint.path, checkpoint.source_format)
    read = time.perf_counter()
    # The generator takes the checkpoint's tensors, and nothing else keeps them: the service
    # carries no second, CPU-side copy of the weights in its RSS.
    generator = build_generator(checkpoint)
    built = time.perf_counter()
    backend = lama_backend(weights, resolved, precision, fast, generator)
    done = time.perf_counter()
    # The phases, so that an operator (and gpu_soak.sh startup) sees where a slow start goes.
    log.info("loaded big-lama from %s (%s) on %s in %s in %.1f s (file %.1f s, generator %.1f s, device %.1f s)",
             path, weights.format, backend.device, backend.precision, done - started, read - started,
             built - read, done - built)
    return backend


def lama_backend(weights: Weights, device: Device, precision: str = "auto", fast: bool = True,
                 generator: FFCResNetGenerator | None = None) -> LamaReference:
    """The fast path exists for CUDA; on the CPU big-lama runs as the plain reference path.
    `generator`: the weights already loaded (else `weights` loads them)."""
    kind = LamaFastPath if fast and device.is_cuda else LamaReference
    return kind(weights, device, device.precision(precision), generator)
