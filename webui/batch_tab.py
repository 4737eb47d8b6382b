"""The Batch tab: several photos, one mask for all of them or one per photo (matched by name),
repaired one after another through RepairService's queue (the API's and the editor's), shown
as a gallery while they finish and downloaded as one zip.

What a batch may hold is bounded before any decode (BatchLimits: photos and bytes in all); each
file then goes through lama.imageio's gate with the service's limits, as an API upload does. A
photo that cannot be repaired (not an image, too large, no mask named like it) is listed with
the reason and the batch goes on. One photo at a time: a batch takes one place in the GPU queue,
so the editor's repairs are served between its photos, and one batch runs at a time (its Gradio
event has a concurrency limit of one; the next waits in Gradio's queue, shown its place).

Files: the uploads are Gradio's (its upload folder, each file within the API's per-file
limit); the previews and the zip go into a new folder of it, which the UI cache's retention
sweeps like the uploads. The zip is written beside its final name and renamed when complete:
a batch broken off half-way leaves no zip that looks whole. The Stop button ends the page's
batch before its next photo, and the zip then holds what was repaired. The handlers are plain functions
(tests call them without a browser); build_batch_tab lays out the components.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
import pandas as pd

from lama import imageio, masks
from lama.errors import ImageError, InpaintError, InputError, MaskError
from service.pipeline import RepairOptions, RepairService
from webui.editor import EditorFiles, EditorRequestError, preview

log = logging.getLogger(__name__)

BATCH_FOLDER = "batch"  # under the UI cache: one unguessable folder per batch
PREVIEW_SIDE_PX = 512  # the gallery's thumbnails; the zip holds the full results
MASK_SUFFIXES = ("", "_mask", "-mask", ".mask")  # photo.jpg's mask: photo.png, photo_mask.png, ...
ZIP_NAME = "repaired.zip"
FAILED = "the repair failed on the server (the log has the details)"
UNWRITABLE = "The server could not write the batch's results (its disk may be full); try again later."


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold, checked before anything is decoded; each file also has the
    service's per-file limits (ImageLimits)."""

    max_photos: int = 50
    max_total_bytes: int = 512 * 2**20


class BatchError(InputError):
    """A batch refused as a whole (nothing repaired): too many photos, too many bytes, no mask."""

    code = "invalid_batch"


@dataclass(frozen=True)
class Job:
    photo: Path
    mask: Path


@dataclass
class Plan:
    jobs: list[Job]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)


def _stem(path: Path) -> str:
    return path.stem.lower()


def plan(photos: Sequence[Path], mask_files: Sequence[Path], limits: BatchLimits) -> Plan:
    """Which mask each photo gets: the one mask, else the mask named like the photo (holiday.jpg:
    holiday.png, holiday_mask.png, holiday-mask.png; case ignored). Photos without one are skipped,
    and so are masks named like no photo, each with the reason."""
    if not photos:
        raise BatchError("Add the photos to repair first.")
    if not mask_files:
        raise BatchError("Add a mask: one for every photo, or one per photo named like it "
                         "(or paint one in the editor and choose More → Use mask for a batch).")
    if len(photos) > limits.max_photos or len(mask_files) > limits.max_photos:
        raise BatchError(f"{len(photos)} photos and {len(mask_files)} masks: a batch holds at most "
                         f"{limits.max_photos} of each.")
    try:
        total = sum(path.stat().st_size for path in (*photos, *mask_files))
    except OSError:
        raise BatchError("Some of the files are no longer on the server (uploads expire after a while): "
                         "add them again.") from None
    if total > limits.max_total_bytes:
        raise BatchError(f"The files add up to {total / 2**20:.0f} MB; a batch holds at most "
                         f"{limits.max_total_bytes / 2**20:.0f} MB: split it.")
    if len(mask_files) == 1:
        return Plan([Job(photo, mask_files[0]) for photo in photos])
    by_name = {_stem(mask): mask for mask in mask_files}
    jobs, skipped, used = [], [], set()
    for photo in photos:
        mask = next((by_name[_stem(photo) + suffix] for suffix in MASK_SUFFIXES if _stem(photo) + suffix in by_name),
                    None)
        if mask is None:
            skipped.append((photo.name, f"no mask named like it ({photo.stem}.png or {photo.stem}_mask.png)"))
        else:
            jobs.append(Job(photo, mask))
            used.add(mask)
    skipped += [(mask.name, "a mask named like none of the photos") for mask in mask_files if mask not in used]
    return Plan(jobs, skipped)


def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`mask` at the photo's size (height, width): resized nearest, so that it stays black and
    white for the threshold."""
    if mask.shape[:2] == shape:
        return mask
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


@dataclass
class Progress:
    """What the tab shows while a batch runs and after: the gallery, the problems, the zip."""

    total: int
    gallery: list[tuple[str, str]] = field(default_factory=list)  # (preview path, caption)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file name, message)
    zip_path: Path | None = None
    stopped: bool = False  # by its Stop button, before its last photo

    @property
    def done(self) -> int:
        return len(self.gallery)

    def summary(self) -> str:
        failed = len(self.problems)
        line = f"{self.done} of {self.total} repaired" + (f", {failed} not (listed below)" if failed else "")
        if not self.stopped:
            return line
        return f"Stopped: {line}" + ("; the zip holds those repaired" if self.done else "")


class BatchRunner:
    """Runs planned batches through the service, writing into a new folder of the UI cache; a
    session's running batch stops at its next photo when `stop(session)` is called (its Stop
    button), with what it repaired so far zipped."""

    def __init__(self, service: RepairService, files: EditorFiles):
        self.service, self.files = service, files
        self._stops: dict[str, threading.Event] = {}  # the running batches' by their session
        self._lock = threading.Lock()

    def stop(self, session: str) -> bool:
        """Asks `session`'s running batch to stop before its next photo; False if none runs."""
        with self._lock:
            stopping = self._stops.get(session)
        if stopping is not None:
            stopping.set()
        return stopping is not None

    @contextlib.contextmanager
    def stoppable(self, session: str) -> Iterator[threading.Event]:
        """The event that `stop(session)` sets, for as long as the session's batch runs."""
        stopping = threading.Event()
        with self._lock:
            self._stops[session] = stopping
        try:
            yield stopping
        finally:
            with self._lock:
                if self._stops.get(session) is stopping:
                    del self._stops[session]

    def run(self, batch: Plan, options: RepairOptions, stopping: threading.Event | None = None) -> Iterator[Progress]:
        """Yields the progress after each photo; the last one names the zip (None when nothing
        was repaired). A photo's failure is listed, never raised. Once `stopping` is set, no
        further photo is started: the last progress says so, its zip holds what was done."""
        options.validate()
        progress = Progress(len(batch.jobs) + len(batch.skipped), problems=list(batch.skipped))
        folder = self.files.root / BATCH_FOLDER / secrets.token_hex(16)
        folder.mkdir(parents=True)
        partial = folder / f".{ZIP_NAME}.part"
        names: set[str] = set()
        decoded_masks: dict[Path, np.ndarray] = {}
        try:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:  # PNG/JPEG/WebP: compressed already
                for index, job in enumerate(batch.jobs):
                    if stopping is not None and stopping.is_set():
                        progress.stopped = True
                        break
                    try:
                        result_name, data, thumbnail = self._repair(job, options, decoded_masks)
                    except InpaintError as error:
                        progress.problems.append((job.photo.name, error.message))
                    except Exception:
                        # The user learns which photo failed; the operator gets the traceback.
                        log.exception("batch: repairing %s failed", job.photo.name)
                        progress.problems.append((job.photo.name, FAILED))
                    else:
                        result_name = _unique(result_name, names)
                        archive.writestr(result_name, data)
                        thumbnail_path = folder / f"{index:03d}.jpg"
                        thumbnail_path.write_bytes(thumbnail)
                        progress.gallery.append((str(thumbnail_path), result_name))
                    yield progress
            if progress.gallery:
                os.replace(partial, folder / ZIP_NAME)
                progress.zip_path = folder / ZIP_NAME
        finally:
            partial.unlink(missing_ok=True)
        yield progress

    def _repair(self, job: Job, options: RepairOptions, decoded_masks: dict[Path, np.ndarray]
                ) -> tuple[str, bytes, bytes]:
        """(the result's name in the zip, its file's bytes, a JPEG thumbnail); InpaintError for
        what the user can fix, the file's name left to the caller."""
        limits = self.service.limits
        try:
            photo = imageio.read_photo(job.photo, limits)  # its pixels, format and metadata
            image = photo.pixels
            if job.mask not in decoded_masks:
                decoded_masks.clear()  # one shared mask, or one per photo: keep one at a time
                decoded_masks[job.mask] = imageio.read_mask(job.mask, limits)
            mask = fit_mask(decoded_masks[job.mask], image.shape[:2])
        except imageio.ImageError as error:
            # lama.imageio names the file by its path: here by its name, which the user gave it.
            message = str(error).replace(f"{job.photo}: ", "").replace(str(job.mask), job.mask.name)
            raise ImageError(message) from None
        if not masks.binarize(mask, options.mask_threshold).any():
            raise MaskError(f"its mask ({job.mask.name}) marks nothing above the threshold {options.mask_threshold}",
                            code="empty_mask")
        # Named after the photo: <stem>_repaired.<ext> (service.storage.result_name); its format
        # for "same", its EXIF and colour profile kept, as the editor's and the API's results.
        result = self.service.repair(image, mask, options, photo.source, upload_name=job.photo.name)
        return result.name, result.data, preview(result.image, PREVIEW_SIDE_PX, photo.source.metadata.icc_profile)


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or name-2, name-3 ... when two photos of the batch share a name."""
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    taken.add(candidate)
    return candidate


def _paths(files: Any) -> list[Path]:
    """gr.File(file_count="multiple", type="filepath")'s value: a list of paths, or None."""
    return [Path(str(file)) for file in files or []]


# ---------------------------------------------------------------- the tab

PROBLEM_COLUMNS = ["file", "why it was not repaired"]


def repair_all_handler(runner: BatchRunner, limits: BatchLimits) -> Callable[..., Iterator[list[Any]]]:
    """The Repair all button's handler: the tab's inputs in, after each photo the status line,
    the gallery, the zip (at the end) and the problems table out. Refusals as one line (gr.Error)."""

    def repair_all(photo_files: Any, masks_given: Any, strategy_name: str, dilate_px: float, feather_px: float,
                   fmt: str, threshold_value: float, request: gr.Request | None = None,
                   progress: gr.Progress = gr.Progress()) -> Iterator[list[Any]]:
        try:
            batch = plan(_paths(photo_files), _paths(masks_given), limits)
            options = RepairOptions(strategy_name, int(dilate_px), int(feather_px), fmt,
                                    mask_threshold=int(threshold_value))
            options.validate()
        except InpaintError as error:  # BatchError among them
            raise gr.Error(error.message, print_exception=False) from None
        except (TypeError, ValueError):  # not numbers: only a hand-made request sends them
            raise gr.Error("dilation, feather and threshold must be numbers", print_exception=False) from None
        progress(0, desc=f"0 of {len(batch.jobs)}")
        try:
            with runner.stoppable(_session(request)) as stopping:
                yield from _shown(runner.run(batch, options, stopping), len(batch.jobs), len(batch.skipped), progress)
        except OSError as error:  # the UI cache's disk: full, or gone
            log.error("batch: cannot write its results under %s: %s", runner.files.root, error.strerror or error)
            raise gr.Error(UNWRITABLE, print_exception=False) from None

    return repair_all


def _shown(states: Iterator[Progress], jobs: int, skipped: int, progress: gr.Progress) -> Iterator[list[Any]]:
    """The tab's outputs after each photo: the status line, the gallery, the zip, the problems."""
    for state in states:
        handled = state.done + len(state.problems) - skipped
        progress((handled, jobs), desc=f"{handled} of {jobs}", unit="photos")
        yield [state.summary(), state.gallery, str(state.zip_path) if state.zip_path else None,
               gr.update(value=pd.DataFrame(state.problems, columns=PROBLEM_COLUMNS), visible=bool(state.problems))]


def _session(request: gr.Request | None) -> str:
    """The page's Gradio session (a batch's Stop button stops its own page's batch only)."""
    return str(getattr(request, "session_hash", None) or "")


def stop_handler(runner: BatchRunner) -> Callable[..., Any]:
    """The Stop button's handler: this page's running batch stops before its next photo."""

    def stop(request: gr.Request | None = None) -> Any:
        return "Stopping after the photo being repaired…" if runner.stop(_session(request)) else gr.update()

    return stop


def build_batch_tab(service: RepairService, files: EditorFiles, defaults: RepairOptions,
                    options_row: Callable[[], tuple[gr.Radio, gr.Slider, gr.Slider, gr.Dropdown]],
                    limits: BatchLimits = BatchLimits()) -> gr.File:
    """The tab's layout and its Run event, inside the current gr.Tabs; returns the masks' file
    input, which the editor's "Use mask for a batch" fills."""
    with gr.Tab("Batch", id="batch-tab", elem_id="batch-tab"):
        gr.Markdown(f"Drop up to {limits.max_photos} photos and either **one mask** for all of them or "
                    "**one mask per photo**, named like it (`holiday.jpg` → `holiday.png` or `holiday_mask.png`); "
                    "masks of another size are resized to their photo. Or paint a mask in the Repair tab and "
                    "choose *More → Use mask for a batch*.")
        with gr.Row():
            photos = gr.File(file_count="multiple", file_types=["image"], type="filepath", label="Photos",
                             elem_id="batch-photos")
            mask_files = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                 label="Masks (white: repair)", elem_id="batch-masks")
        strategy, dilate, feather, fmt = options_row()
        threshold = gr.Slider(0, masks.MAX_THRESHOLD, value=defaults.mask_threshold, step=1, label="Mask threshold",
                              info="mask pixels brighter than this are repaired (0: any that is not black)")
        with gr.Row():
            run = gr.Button("Repair all", variant="primary", elem_id="batch-run")
            stop = gr.Button("Stop", variant="stop", elem_id="batch-stop")
        status = gr.Markdown(elem_id="batch-status")
        gallery = gr.Gallery(label="Repaired", columns=6, height="auto", interactive=False, elem_id="batch-gallery")
        download = gr.File(label="All results (zip)", interactive=False, elem_id="batch-zip")
        problems = gr.Dataframe(headers=PROBLEM_COLUMNS, label="Not repaired", interactive=False, visible=False,
                                elem_id="batch-problems")

    # One batch at a time; the editor's repairs go on beside it (the service's queue interleaves them).
    runner = BatchRunner(service, files)
    run.click(repair_all_handler(runner, limits),
              inputs=[photos, mask_files, strategy, dilate, feather, fmt, threshold],
              outputs=[status, gallery, download, problems], concurrency_limit=1, concurrency_id="batch",
              api_visibility="private")
    # Not queued: it must get through while the batch holds the batch group's one place.
    stop.click(stop_handler(runner), outputs=status, queue=False, api_visibility="private")
    return mask_files


def editor_mask_for_batch(files: EditorFiles, request: Any) -> list[str]:
    """The editor's "Use mask for a batch": the mask it uploaded ({"mask": {"path"}}) becomes the
    batch's one mask. Only a file of the UI cache is taken (EditorFiles.resolve)."""
    try:
        mask = files.resolve(request.get("mask") if isinstance(request, dict) else None, "mask")
    except EditorRequestError as error:
        raise gr.Error(error.message, print_exception=False) from None
    return [str(mask)]

