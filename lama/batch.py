"""Many photos through one engine: what `python -m lama inpaint` does with a folder.

Planning decides, before a pixel is decoded or the model is loaded, everything that paths
can tell: the photos, the mask of each (one mask file for all of them, or the mask of the
same name in a folder of masks), the output path and format of each, and which outputs
exist already. A batch that cannot work as given (an output that exists, two photos that
would write one file) is refused before any work; a photo without a mask is skipped and
listed, not fatal. Then each photo is repaired on its own: one that fails is reported and
the others go on. Reading, repairing and writing overlap (:func:`run`).
"""

from __future__ import annotations

import functools
import glob
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lama import imageio, masks
from lama.engine import InpaintEngine
from lama.errors import InpaintError, UsageError
from lama.files import write_bytes_atomic
from lama.metadata import NO_METADATA
from lama.output_formats import RESULT_SUFFIX, OutputFormat, for_suffix, output_format, result_file_name

MASK_SUFFIX = "_mask"  # photo.jpg's mask may be photo.png or photo_mask.png
# What one photo can get wrong: reported, and the batch goes on.
PHOTO_ERRORS = (InpaintError, OSError)
READ_AHEAD = 2  # photos decoded ahead of the one being repaired
WRITE_BEHIND = 2  # repaired photos waiting to be encoded and written
CONVERT = "convert them to JPEG or PNG"
UNREAD = f"a format not read here: {CONVERT}"  # why a folder's HEIC or GIF files are skipped


@dataclass(frozen=True)
class Job:
    image: Path
    mask: Path | None  # None: no mask found for this photo (it is skipped)
    output: Path
    format: OutputFormat


@dataclass(frozen=True)
class Settings:
    strategy: str = "crop"
    dilate: int = 0
    feather: int = 0
    mask_threshold: int = masks.DEFAULT_THRESHOLD
    keep_metadata: bool = True


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: dict[str, list[Path]] = field(default_factory=dict)  # reason -> photos
    failed: list[tuple[Path, str]] = field(default_factory=list)  # photo, message
    seconds: float = 0.0

    def lines(self) -> list[str]:
        skipped = sum(map(len, self.skipped.values()))
        lines = [f"done {len(self.done)}, skipped {skipped}, failed {len(self.failed)} in {self.seconds:.1f} s"]
        lines += [f"skipped ({reason}): {', '.join(path.name for path in paths)}"
                  for reason, paths in self.skipped.items() if paths]
        lines += [f"failed: {path.name}: {message}" for path, message in self.failed]
        return lines


# ---------------------------------------------------------------------------- planning

def plan(image: Path, mask: Path, output: Path, format_name: str | None = None) -> list[Job]:
    """The jobs for `--image`, `--mask` and `--output` (files or folders) and `--format`
    (None: the output file's suffix, or for a folder "same", the photo's own format)."""
    if not image.exists():
        raise UsageError(f"image not found: {image}")
    if not mask.exists():
        raise UsageError(f"mask not found: {mask}")
    if image.is_file():
        mask_file = mask if mask.is_file() else mask_for(image, mask)
        if mask_file is None:
            raise UsageError(f"no mask for {image.name} in {mask} (looked for {image.stem}.* and "
                             f"{image.stem}{MASK_SUFFIX}.*)")
        if output.is_dir():
            return [_job_in(output, image, mask_file, format_name)]
        return [Job(image, mask_file, output, _file_format(output, image, format_name))]
    if output.exists() and not output.is_dir():
        raise UsageError("--image is a folder, so --output must be a folder")
    photos = photos_in(image, exclude=mask)
    if not photos:
        unread = unread_pictures(image)
        raise UsageError(f"no images ({', '.join(imageio.IMAGE_SUFFIXES)}) in {image}" + (
            f"; {len(unread)} picture(s) in a format not read here ({_names(unread)}): {CONVERT}" if unread else ""))
    jobs = [_job_in(output, photo, mask if mask.is_file() else mask_for(photo, mask), format_name)
            for photo in photos]
    _refuse_collisions(jobs)
    return jobs


def photos_in(folder: Path, exclude: Path) -> list[Path]:
    """The images in `folder`, by name; not masks (STEM_mask.*), not results of an earlier run
    (STEM_repaired.*) and not `exclude` (a mask file kept among the photos)."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in imageio.IMAGE_SUFFIXES and path.is_file()
                  and not path.stem.endswith((MASK_SUFFIX, RESULT_SUFFIX)) and path != exclude)


def unread_pictures(folder: Path) -> list[Path]:
    """The pictures in `folder` in a format not decoded here (HEIC, GIF, ...), by name."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in imageio.OTHER_PICTURE_SUFFIXES and path.is_file())


def _names(paths: list[Path], most: int = 3) -> str:
    names = ", ".join(path.name for path in paths[:most])
    return names + (f" and {len(paths) - most} more" if len(paths) > most else "")


def mask_for(image: Path, mask_dir: Path) -> Path | None:
    """The mask of `image` in `mask_dir`: same stem, or STEM_mask, any image suffix (any case)."""
    for stem in (image.stem, f"{image.stem}{MASK_SUFFIX}"):
        for candidate in sorted(mask_dir.glob(f"{glob.escape(stem)}.*")):
            if (candidate.stem == stem and candidate.suffix.lower() in imageio.IMAGE_SUFFIXES
                    and candidate != image and candidate.is_file()):
                return candidate
    return None


def _job_in(folder: Path, image: Path, mask: Path | None, format_name: str | None) -> Job:
    fmt = output_format(format_name or "same", _sniffed(image))
    return Job(image, mask, folder / result_file_name(image.stem, fmt), fmt)


def _file_format(output: Path, image: Path, format_name: str | None) -> OutputFormat:
    fmt = for_suffix(output.suffix)
    if fmt is None:
        raise UsageError(f"cannot write {output.name}: name a .png, .jpg, .jpeg or .webp file, or a folder")
    if format_name is not None and output_format(format_name, _sniffed(image)) != fmt:
        raise UsageError(f"--format {format_name} does not match --output {output.name}: leave one out")
    return fmt


def _sniffed(image: Path) -> str | None:
    """The photo's format by its first bytes (what "same" means), None when it is none we read."""
    try:
        with image.open("rb") as file:
            return imageio.sniff_format(file.read(16))
    except OSError:
        return None  # reading it will fail with its own message


def _refuse_collisions(jobs: list[Job]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise UsageError(f"{seen[job.output].name} and {job.image.name} would both be written to "
                             f"{job.output}: rename one, or choose --format same")
        seen[job.output] = job.image


def sort_out_existing(jobs: list[Job], existing: str) -> tuple[list[Job], list[Path]]:
    """(the jobs to run, the photos skipped because their output exists), as `existing`
    ("refuse", "skip" or "overwrite") says; "refuse" with outputs that exist raises UsageError,
    naming them, before any work."""
    present = [job for job in jobs if job.mask is not None and job.output.exists()]
    if not present or existing == "overwrite":
        return jobs, []
    if existing == "refuse":
        names = ", ".join(str(job.output) for job in present[:3]) + (", ..." if len(present) > 3 else "")
        raise UsageError(f"{len(present)} output(s) exist already ({names}): pass --overwrite to replace "
                         "them or --skip-existing to leave them and repair the rest")
    return [job for job in jobs if job not in present], [job.image for job in present]


# ---------------------------------------------------------------------------- running

def run(load_engine: Callable[[], InpaintEngine], jobs: Iterable[Job], settings: Settings,
        report: Callable[[Path, str], None] = lambda path, message: None, stop_on_error: bool = False,
        on_photo: Callable[[], None] = lambda: None) -> Summary:
    """Repair each job's photo with the engine `load_engine` gives and write its output
    (atomically); `report` hears of each failure, in the jobs' order, and `on_photo` of each
    photo finished (repaired, failed or skipped). With `stop_on_error` the first failure
    propagates (one photo asked for: its error is the command's), and a first photo that cannot
    be read fails before the engine loads: a user's mistake is said at once, not after seconds
    of loading a model. Otherwise the first photos are read while it loads.

    The photos go through three stages at once, as the service's repairs do: while one photo is
    repaired (on a GPU the model runs, and this thread waits), the next ones are read (decoded,
    their mask fitted) on a thread of their own and the ones before are encoded and written on
    another. The codecs release the GIL, so on a GPU the model rarely waits for them. At most
    READ_AHEAD photos are read ahead and WRITE_BEHIND results wait to be written: memory stays a
    few photos' worth, whatever the folder holds.
    """
    started = time.perf_counter()
    summary = Summary()
    read_mask = functools.lru_cache(maxsize=1)(imageio.read_mask)  # one mask for a folder: read once

    def fail(job: Job, error: Exception) -> None:
        if stop_on_error:
            raise error
        message = one_line(error).removeprefix(f"{job.image}: ")  # imageio names the file; so does the summary
        summary.failed.append((job.image, message))
        report(job.image, message)

    reader = ThreadPoolExecutor(1, thread_name_prefix="batch-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="batch-write")
    reads: deque[tuple[Job, Future[tuple[imageio.Photo, np.ndarray]] | None]] = deque()  # None: no mask, skipped
    writes: deque[tuple[Job, Future[None]]] = deque()
    queue = iter(jobs)

    def read_ahead() -> None:
        while len(reads) < READ_AHEAD and (job := next(queue, None)) is not None:
            reads.append((job, None if job.mask is None else reader.submit(read_one, job, read_mask, settings)))

    def settle_writes(leaving: int) -> None:
        """Waits for the oldest writes until `leaving` are pending; each one's photo is done or failed."""
        while len(writes) > leaving:
            job, written = writes.popleft()
            try:
                written.result()
            except PHOTO_ERRORS as error:
                fail(job, error)
            else:
                summary.done.append(job.image)
            on_photo()

    try:
        read_ahead()
        if stop_on_error and reads and (first := reads[0][1]) is not None:
            first.result()  # raises that photo's error, as the loop below would after the model loaded
        engine = load_engine()
        while reads:
            job, read = reads.popleft()
            read_ahead()
            if read is None:
                summary.skipped.setdefault("no mask", []).append(job.image)
                on_photo()
                continue
            try:
                photo, fill = read.result()
                repaired = engine.inpaint(photo.pixels, fill, strategy=settings.strategy, dilate=settings.dilate,
                                          feather=settings.feather)
            except PHOTO_ERRORS as error:
                settle_writes(0)  # the failures in the jobs' order
                fail(job, error)
                on_photo()
                continue
            # The writer gets the photo's source (format, metadata), not its pixels: those go with the next photo.
            writes.append((job, writer.submit(write_one, job, photo.source, repaired, settings)))
            settle_writes(WRITE_BEHIND)
        settle_writes(0)
    finally:
        reader.shutdown(cancel_futures=True)  # photos read ahead of a failure that stops the batch: dropped
        writer.shutdown()  # results repaired: written
    summary.seconds = time.perf_counter() - started
    return summary


def one_line(error: Exception) -> str:
    """What went wrong, in one line for a person: a disk's errors without Python's errno decoration."""
    if isinstance(error, OSError) and error.strerror:  # a disk problem: the reason, and where
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error)


def read_one(job: Job, read_mask: Callable[[Path], np.ndarray], settings: Settings) -> tuple[imageio.Photo, np.ndarray]:
    """A job's photo decoded, and its mask fitted to it: resized where it was drawn at another
    resolution (one watermark mask for photos of several sizes), then thresholded."""
    photo = imageio.read_photo(job.image)
    height, width = photo.pixels.shape[:2]
    fill = masks.binarize(masks.resized(read_mask(job.mask), height, width), settings.mask_threshold)
    return photo, fill


def write_one(job: Job, source: imageio.Source, repaired: np.ndarray, settings: Settings) -> None:
    """The repair encoded in the job's format, with the photo's metadata where kept, and written."""
    metadata = source.metadata if settings.keep_metadata else NO_METADATA
    data = imageio.encode_image(repaired, job.format, metadata=metadata)
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(job.output, data)
    except OSError as error:
        # Named after the file the user asked for, not the temporary one the write went through
        # (OSError picks the subclass by errno: a PermissionError stays one).
        raise OSError(error.errno, error.strerror, str(job.output)) from None
