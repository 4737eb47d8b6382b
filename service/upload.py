"""What a repair request brings: its options (RepairOptions), its uploads decoded (Decoded) and
the checks of its pixels that need no model. Shared by the server's process and the CPU workers'
(service.cpu_workers), which import neither torch nor the GPU's modules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lama import imageio, masks, png
from lama.engine import STRATEGIES, InpaintEngine, MaskPlan, RepairJob
from lama.errors import ImageError, ImageTooLargeError, MaskError, OptionError
from lama.imageio import ImageLimits
from lama.metadata import NO_METADATA
from lama.output_formats import OutputFormat, output_format
from lama.stages import Stage

MAX_REFINE_PX = 256  # dilate/feather beyond this is a typo, not a wish


@dataclass(frozen=True)
class RepairOptions:
    strategy: str = "crop"
    dilate: int = 0
    feather: int = 0
    format: str = "png"  # a name of lama.output_formats: png, jpeg (jpg), webp, or same (the upload's)
    mask_threshold: int = masks.DEFAULT_THRESHOLD  # mask values above it are repaired; 0: any nonzero
    keep_metadata: bool = True  # carry the upload's EXIF (orientation 1) and ICC profile to the result

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise OptionError("strategy", f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("dilate", "feather"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_REFINE_PX:
                raise OptionError(name, f"{name} must be between 0 and {MAX_REFINE_PX} px, got {value}")
        if not 0 <= self.mask_threshold <= masks.MAX_THRESHOLD:
            raise OptionError("mask_threshold", f"mask_threshold must be between 0 and {masks.MAX_THRESHOLD}, "
                                                f"got {self.mask_threshold}")
        output_format(self.format)  # OptionError for a name it does not know


def result_format(decoded: Decoded, options: RepairOptions) -> OutputFormat:
    """The format the request's result is encoded in (`same`: the upload's; arrays given: PNG)."""
    return output_format(options.format, decoded.source.format if decoded.source else None)


def encode_ahead(decoded: Decoded, job: RepairJob | None, options: RepairOptions,
                 timings: dict[str, float]) -> None:
    """What `compose_and_encode` can encode before the model's outputs exist, done now (for a
    caller with nothing else to do while the model runs): a PNG result differs from the upload
    only in the rows of the refined mask's box, so the PNG segments above and below it are
    compressed ahead and kept in `decoded`. Its time counts as encoding."""
    if job is None or result_format(decoded, options).name != "png" or _made_for(decoded.png_ahead, job):
        return
    started = time.perf_counter()
    decoded.png_ahead = png.compress_ahead(decoded.image, _rows_changed(job))
    timings[Stage.ENCODE] = timings.get(Stage.ENCODE, 0.0) + time.perf_counter() - started


def compose_and_encode(engine: InpaintEngine, decoded: Decoded, job: RepairJob | None, outputs: list[np.ndarray],
                       options: RepairOptions, timings: dict[str, float]) -> tuple[np.ndarray, bytes, OutputFormat]:
    """The repair composed from `job`'s model outputs (None: nothing was repaired), into the upload's
    own pixels where the request owns them, then encoded as the request asked: in its format
    (`result_format`) with the upload's metadata unless `keep_metadata` is off, with what
    `encode_ahead` did. The compose's time is added to `timings`' postprocess, the encoding's
    to its encode. Returns (the repaired image, the file, its format)."""
    if job is not None:
        repaired = engine.compose(job, outputs, options.feather, timings, in_place=decoded.owned)
    else:
        repaired = decoded.image if decoded.owned else decoded.image.copy()
    started = time.perf_counter()
    source = decoded.source
    fmt = result_format(decoded, options)
    metadata = source.metadata if source and options.keep_metadata else NO_METADATA
    ahead = decoded.png_ahead if _made_for(decoded.png_ahead, job) else None
    data = imageio.encode_image(repaired, fmt, metadata=metadata, png_ahead=ahead)
    timings[Stage.ENCODE] = timings.get(Stage.ENCODE, 0.0) + time.perf_counter() - started
    return repaired, data, fmt


def _rows_changed(job: RepairJob) -> tuple[int, int]:
    """The rows [start, stop) in which the compose may change the upload: its refined mask's box."""
    return job.region.box.top, job.region.box.bottom


def _made_for(ahead: png.Ahead | None, job: RepairJob | None) -> bool:
    """Whether `ahead` left out the rows `job`'s compose changes (else it cannot be used)."""
    return ahead is not None and job is not None and ahead.changing == _rows_changed(job)


def mask_fraction(mask: np.ndarray) -> float | None:
    """The share of the image a (binarized) mask repairs, for the request log; None for an empty array."""
    return float(np.count_nonzero(mask) / mask.size) if mask.size else None


def check_pair(image: np.ndarray, mask: np.ndarray, limits: ImageLimits) -> None:
    """The image within the limits and the mask its size (arrays handed in are not gated by a decoder)."""
    height, width = image.shape[:2]
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageTooLargeError(f"image is {width}×{height}, the limit is {limits.max_pixels / 1e6:.1f} MP "
                                 f"and {limits.max_side} px per side")
    if mask.shape[:2] != image.shape[:2]:
        raise MaskError(f"mask is {mask.shape[1]}×{mask.shape[0]} but the image is {width}×{height}: "
                        "they must be the same size", code="mask_size_mismatch")


@dataclass
class Decoded:
    image: np.ndarray
    mask: np.ndarray
    decode_s: float = 0.0
    source: imageio.Source | None = None  # the upload's format and metadata; None: arrays were given
    upload_name: str | None = None  # the upload's file name, which names the result
    # When the server began on it (time.perf_counter): decoding's start, or the arrays' arrival.
    received: float = field(default_factory=time.perf_counter)
    # The image is the request's own (decoded from its upload): the repair is pasted into it.
    # Arrays handed in (the UI's) are the caller's, which keeps them: the repair goes to a copy.
    owned: bool = False
    mask_threshold: int | None = None  # what `mask` was binarized with; None: its values as uploaded
    plan: MaskPlan | None = None  # the mask's part of the preparation, done while the image decoded
    png_ahead: png.Ahead | None = None  # the result's PNG segments outside the repair's rows (encode_ahead)
    timings: dict[str, float] = field(default_factory=dict)  # the stages done so far (that preparation)


def decode(image_bytes: bytes, mask_bytes: bytes, limits: ImageLimits, engine: InpaintEngine,
           upload_name: str | None = None, options: RepairOptions | None = None) -> Decoded:
    """A request's two uploads decoded within `limits`. `upload_name`: the image's file name as the
    client gave it (only its stem names the result). `options`: the request's, to be submitted
    with the result: the mask's part of the preparation (binarizing it, `engine`'s refinement and
    plan) is then done in the mask's thread while the image decodes, which takes longer."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def binarized_and_planned(mask: np.ndarray) -> tuple[np.ndarray, MaskPlan]:
        binary = masks.binarize(mask, options.mask_threshold)
        return binary, engine.plan_mask(binary, options.strategy, options.dilate, timings)

    try:
        # The mask decodes in another thread while the image does (the codecs release the GIL).
        photo, mask = imageio.decode_photo_and_mask(image_bytes, mask_bytes, limits,
                                                    then=binarized_and_planned if options else None)
    except ImageError as error:
        # The same class with the part named first: which of the two uploads is wrong.
        named = type(error)(f"{error.part}: {error}")
        named.part = error.part
        raise named from None
    plan = threshold = None
    if options is not None:
        mask, plan = mask
        threshold = options.mask_threshold
    return Decoded(photo.pixels, mask, time.perf_counter() - started, photo.source, upload_name, started,
                   owned=True, mask_threshold=threshold, plan=plan, timings=timings)
