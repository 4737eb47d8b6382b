"""RepairService: what one repair request goes through, shared by the HTTP API and the UI.

upload -> decode (validate) -> GPU memory admission -> queue -> engine.inpaint -> encode
-> atomic save -> result. Everything a user can get wrong raises an error of lama.errors' tree
(a stable code, a message for people, data such as retry_after_s); the web layer maps it to a
status code, the UI to a message. The service speaks no HTTP: the request log and the request
metrics label outcomes with the `status_of` the composition root hands in (the web's table).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NamedTuple, TypeVar

import numpy as np
import psutil

from lama import imageio, masks
from lama.device import GpuFailure, GpuOutOfMemory
from lama.engine import InpaintEngine, RepairJob
from lama.errors import (GpuFailedError, GpuOutOfMemoryError, ImageTooLargeError, InpaintError,
                         QueueFullError, ShuttingDownError, TooLargeForGpuError)
from lama.output_formats import OutputFormat
from lama.stages import MODEL_STAGES, Stage
from lama.units import format_bytes
from monitor.metrics import ServiceMetrics
from monitor.records import RequestRecord
from monitor.requestlog import RequestLog
from monitor.sampler import Sampler
from service.cpu_workers import CpuWorkers, Prepared
from service.jobs import JobQueue, Timed
from service.storage import OutputStore, result_name
from service.upload import (Decoded, RepairOptions, check_pair, compose_and_encode, decode, encode_ahead,
                            mask_fraction)

log = logging.getLogger(__name__)

Job = TypeVar("Job")  # a job prepared for the model: the engine's RepairJob, or a CPU worker's Prepared

GPU_PROBE_INTERVAL_S = 5.0  # after a CUDA error, how often readiness checks whether the GPU works again
# Results written after their answers at most (each holds its file's bytes): beyond that a request
# waits for a place, as it would for its own write. The writes themselves go one at a time.
SAVES_PENDING_MAX = 8


class Inference(NamedTuple):
    """What a queued repair hands back to `finish`, which composes the result from it."""

    job: RepairJob | None  # as the engine prepared it; None: nothing to repair
    outputs: list[np.ndarray]  # the model runs' repairs
    peak_gpu_bytes: int | None
    timings: dict[str, float]  # the engine's stages so far (preprocess, infer), seconds
    strategy: str  # the one that ran: the request's, or crop when the request's did not fit the GPU


class WorkerRepair(NamedTuple):
    """`submit_to_worker`'s repair, held by a CPU worker until `finish_in_worker` or `abandon`."""

    prepared: Prepared
    upload_name: str | None
    options: RepairOptions
    strategy: str  # the one that runs: the request's, or crop when the request's did not fit the GPU
    timings: dict[str, float]  # the worker's stages so far, then the model's
    queued: Future[Timed] | None  # the model runs on the queue; None: nothing to repair


@dataclass
class RepairResult:
    image: np.ndarray | None  # None where a CPU worker composed it (finish_in_worker): `data` is the result
    data: bytes
    format: OutputFormat
    name: str  # for the download: '<upload's stem>_repaired.<ext>'
    saved_as: str | None  # relative to the outputs folder; None when saving failed
    device: str
    peak_gpu_bytes: int | None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    strategy: str = "crop"  # the strategy that ran
    requested_strategy: str = "crop"  # differs when the request's was too large for the GPU budget
    record_id: str | None = None  # its line in the request log (the UI adds the user's wait to it)

    @property
    def summary(self) -> str:
        """One line for people: '1280×960 · 38 ms on GPU · peak 1.1 GB'."""
        height, width = self.image.shape[:2]
        where = "GPU" if self.device.startswith("cuda") else "CPU"
        line = f"{width}×{height} · {self.timings['infer'] * 1000:.0f} ms on {where}"
        if self.peak_gpu_bytes is not None:
            line += f" · peak {self.peak_gpu_bytes / 1e9:.1f} GB"
        if self.strategy != self.requested_strategy:
            line += f" · {self.strategy} (too large for the GPU as {self.requested_strategy})"
        return line


class RepairService:
    def __init__(self, engine: InpaintEngine, outputs: OutputStore, queue: JobQueue, metrics: ServiceMetrics,
                 limits: imageio.ImageLimits = imageio.DEFAULT_LIMITS, sampler: Sampler | None = None,
                 requests: RequestLog | None = None, *, status_of: Callable[[BaseException], int],
                 cpu_workers: CpuWorkers | None = None):
        self.engine = engine
        self.cpu_workers = cpu_workers  # None: every repair's CPU steps run in this process
        self.status_of = status_of
        self.metrics = metrics
        self.sampler = sampler  # None: resource monitoring is off
        self.requests = requests
        self.outputs = outputs
        self.queue = queue
        self.limits = limits
        self.started = time.monotonic()
        self.warm = False
        self.draining = False  # set on SIGTERM: readiness 503, new repairs refused, in-flight ones finish
        self.gpu_error: str | None = None  # a CUDA error seen by a repair, until the GPU works again
        self._gpu_probe_at = 0.0
        self._gpu_probe: Future | None = None
        self._in_flight = 0
        self._lock = threading.Lock()
        # Results written after their answers (`finish(..., answer_first=True)`).
        self._saver = ThreadPoolExecutor(1, thread_name_prefix="result-saver")
        self._save_places = threading.BoundedSemaphore(SAVES_PENDING_MAX)
        self._saves_pending = 0

    # ------------------------------------------------------------------ admission and draining

    @contextlib.contextmanager
    def admit(self):
        """Counts one repair request (API or UI) in flight, from upload to response; refuses it
        with 503 once the server is draining."""
        with self._lock:
            if self.draining:
                raise ShuttingDownError("the server is shutting down; retry in a moment")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def saves_pending(self) -> int:
        """Results answered whose files are still being written."""
        return self._saves_pending

    @property
    def hands_to_workers(self) -> bool:
        """Whether an upload's CPU steps go to a worker process now: there are workers, and another
        repair is in flight beside the caller's (counted in `admit`), so that they would queue for
        this process's GIL. A repair alone is quicker here: no hand-over."""
        return self.cpu_workers is not None and self.in_flight > 1

    def start_draining(self) -> None:
        with self._lock:
            self.draining = True

    # ------------------------------------------------------------------ the three stages

    def check_before_decode(self, options: RepairOptions, upload_bytes: dict[str, int | None]) -> None:
        """What refuses a request without decoding it, cheapest first: the options, each
        upload's size (part -> bytes; None: unknown) and room in the queue. Decoding costs
        up to the image limits in memory and time; a request refused anyway must not spend it.
        (Submitting checks the queue again: it may fill up while this one decodes.)"""
        options.validate()
        for part, size in upload_bytes.items():
            if size is not None and size > self.limits.max_bytes:
                too_large = ImageTooLargeError(f"{part}: file is {size / 2**20:.1f} MB, the limit is "
                                               f"{self.limits.max_bytes / 2**20:g} MB")
                too_large.part = part
                raise too_large
        self.queue.check_room()

    def decode(self, image_bytes: bytes, mask_bytes: bytes, upload_name: str | None = None,
               options: RepairOptions | None = None) -> Decoded:
        """service.upload.decode with this service's limits and engine."""
        return decode(image_bytes, mask_bytes, self.limits, self.engine, upload_name, options)

    def submit(self, decoded: Decoded, options: RepairOptions,
               on_start: Callable[[], None] | None = None) -> Future[Timed]:
        """Validate, prepare the engine's job, fit it to the GPU memory budget, then queue its model
        runs; the future's value is Timed(Inference, wait_s, run_s); `on_start` runs on the worker
        as the job starts. The preparation (mask refinement, the plan, the model inputs) is CPU
        work done here, on the caller's thread: call it off the event loop. A GPU worker then
        runs only the model, and `finish` the rest on the caller's thread again, so that the GPU
        workers are never busy with what other cores can do beside them."""
        options.validate()
        check_pair(decoded.image, decoded.mask, self.limits)
        # Decided once: the memory estimate, the engine and the request log see the same pixels.
        if decoded.mask_threshold is None:
            decoded.mask = masks.binarize(decoded.mask, options.mask_threshold)
            decoded.mask_threshold = options.mask_threshold
        elif decoded.mask_threshold != options.mask_threshold:
            raise ValueError(f"the mask was binarized above {decoded.mask_threshold}, not {options.mask_threshold}: "
                             "decode with the options it is submitted with")
        timings = dict(decoded.timings)
        height, width = decoded.image.shape[:2]
        run_options, job, estimate = self._fit_to_gpu(
            (width, height), options,
            lambda strategy: self.engine.prepare(decoded.image, decoded.mask, strategy, options.dilate, timings,
                                                 planned=decoded.plan),
            lambda job: job.peak_model_pixels if job is not None else 0)

        def run_on_gpu() -> Inference:
            if on_start is not None:
                on_start()
            return self._infer(decoded, job, run_options, estimate, timings)

        queued = self.queue.submit(run_on_gpu, cost_bytes=estimate)
        if job is not None:
            # While the model runs (or waits for the GPU), this thread does the part of the
            # postprocessing that needs the mask alone, and encodes what the repair leaves as it
            # was: one client's repair waits that much less.
            self.engine.feather_ahead(job, options.feather, timings)
            encode_ahead(decoded, job, run_options, timings)
        return queued

    def _fit_to_gpu(self, size: tuple[int, int], options: RepairOptions, prepare: Callable[[str], Job],
                    peak_pixels: Callable[[Job], int]) -> tuple[RepairOptions, Job, int | None]:
        """The options to run with, the job prepared for them (`prepare(strategy)`, whose largest
        model input has `peak_pixels(job)` pixels) and its GPU memory estimate (None: nothing
        budgeted). `size`: the image's (width, height).

        A job that fits the whole budget alone is queued as asked (it waits there while others
        hold the memory). One that does not is repaired with the crop strategy when that fits
        (each masked region on its own), else refused with 413 before it reaches the GPU.
        """
        job = prepare(options.strategy)
        budget = self.queue.budget_bytes
        estimate = None if budget is None else self.engine.memory_for_pixels(peak_pixels(job))
        if estimate is None or estimate <= budget:
            return options, job, estimate
        width, height = size
        if options.strategy != "crop":
            cropped_job = prepare("crop")
            cropped = self.engine.memory_for_pixels(peak_pixels(cropped_job))
            if cropped <= budget:
                log.warning("a %d×%d repair with strategy %s would need %s of GPU memory, more than the budget of "
                            "%s: repairing it with the crop strategy instead (%s)", width, height, options.strategy,
                            format_bytes(estimate), format_bytes(budget), format_bytes(cropped))
                return replace(options, strategy="crop"), cropped_job, cropped
        pixels = peak_pixels(job)
        # Here crop does not fit either (or was the strategy already): only less input helps.
        raise TooLargeForGpuError(f"a {width}×{height} image with strategy {options.strategy} runs the model on "
                                  f"{pixels / 1e6:.1f} MP at once, which needs about {format_bytes(estimate)} of GPU "
                                  f"memory; this server can give a repair at most {format_bytes(budget)}, even cropped "
                                  "to the masked regions: send a smaller image or mask", estimate, budget)

    def finish(self, decoded: Decoded, timed: Timed, options: RepairOptions, answer_first: bool = False) -> RepairResult:
        """The repair composed from the model's outputs, encoded and saved (on the caller's thread).
        `answer_first`: the file is written (and the request recorded) after this returns, for a
        caller that answers with the result's bytes and needs no file: see `_save_and_record`."""
        job, outputs, peak, engine_timings, strategy = timed.value
        repaired, data, fmt = compose_and_encode(self.engine, decoded, job, outputs, options, engine_timings)
        height, width = decoded.image.shape[:2]
        fraction = mask_fraction(decoded.mask)
        saved_as, timings, record_id = self._save_and_record(
            data, fmt, decoded.upload_name, options, strategy, peak, decoded.received,
            {Stage.DECODE: decoded.decode_s, Stage.QUEUE: timed.wait_s, **engine_timings}, (width, height, fraction),
            answer_first)
        return RepairResult(repaired, data, fmt, result_name(decoded.upload_name, fmt), saved_as,
                            str(self.engine.device), peak, timings, strategy, options.strategy, record_id)

    def submit_to_worker(self, image_bytes: bytes, mask_bytes: bytes, upload_name: str | None,
                         options: RepairOptions, on_start: Callable[[], None] | None = None) -> WorkerRepair:
        """An upload's repair with its CPU steps in a worker process (service.cpu_workers): the
        worker decodes and prepares it, then its model runs are queued here as any repair's are
        (the queue's future is the repair's `queued`; None: nothing to repair). `on_start` as in
        `submit`. Blocks while the worker prepares: call it off the event loop; then
        `finish_in_worker` (or `abandon`)."""
        options.validate()
        worker = self.cpu_workers.pick()
        first = worker.prepare(image_bytes, mask_bytes, upload_name, options)
        try:
            size = (first.width, first.height)
            run_options, prepared, estimate = self._fit_to_gpu(
                size, options, lambda strategy: first if strategy == options.strategy else worker.replan(first, strategy),
                lambda job: job.peak_pixels)
            timings = dict(prepared.timings)
            queued = None
            if prepared.inputs:
                model_runs = partial(self.engine.run_inputs, prepared.inputs)

                def run_on_gpu() -> tuple[list[np.ndarray], int | None]:
                    if on_start is not None:
                        on_start()
                    return self._run_on_gpu(model_runs, size, run_options.strategy, estimate, timings)

                queued = self.queue.submit(run_on_gpu, cost_bytes=estimate)
        except BaseException:
            worker.drop(first)
            raise
        return WorkerRepair(prepared, upload_name, options, run_options.strategy, timings, queued)

    def finish_in_worker(self, repair: WorkerRepair, timed: Timed | None, answer_first: bool = False) -> RepairResult:
        """The worker composes and encodes the queued repair's outputs (`timed`: the queue's value;
        None when nothing was queued); the file is saved and recorded here (`answer_first` as in
        `finish`). The result carries the file, not the pixels (`image` is None). Blocks: call it
        off the event loop."""
        prepared = repair.prepared
        outputs, peak = timed.value if timed else ([], None)
        wait_s = timed.wait_s if timed else 0.0
        finished = prepared.worker.finish(prepared, outputs)
        saved_as, timings, record_id = self._save_and_record(
            finished.data, finished.format, repair.upload_name, repair.options, repair.strategy, peak,
            prepared.received, {Stage.DECODE: prepared.decode_s, Stage.QUEUE: wait_s, **repair.timings,
                                **finished.timings}, (prepared.width, prepared.height, prepared.mask_fraction),
            answer_first)
        return RepairResult(None, finished.data, finished.format, result_name(repair.upload_name, finished.format),
                            saved_as, str(self.engine.device), peak, timings, repair.strategy,
                            repair.options.strategy, record_id)

    @staticmethod
    def abandon(repair: WorkerRepair) -> None:
        """A repair the caller gives up on between submit and finish: its worker forgets it."""
        repair.prepared.worker.drop(repair.prepared)

    def _save_and_record(self, data: bytes, fmt: OutputFormat, upload_name: str | None, options: RepairOptions,
                         strategy: str, peak: int | None, received: float, stages: dict[str, float],
                         pixels: tuple[int, int, float], answer_first: bool = False,
                         ) -> tuple[str | None, dict[str, float], str | None]:
        """A repair's file saved (None: saving failed, which is logged), its stages observed and
        recorded: (saved as, the timings in the stages' order, the request log's id).

        `answer_first`: the file is named now and written on the saver's thread after this
        returns, and the request is observed and recorded then (with the `save` stage its
        timings here lack; the id is None). A write is made durable before the file takes its
        name (lama.files), and that flush to the disk was a share of one client's wait that an
        answer carrying the result's bytes has no need of. The file appears a moment after
        the answer; if writing it fails, that is logged as here."""
        # In the stages' order (Server-Timing's, the tables'), whichever was timed first.
        timings = {stage: stages[stage] for stage in (Stage.DECODE, Stage.QUEUE, *MODEL_STAGES, Stage.ENCODE)
                   if stage in stages}
        observe = partial(self._observe_repair, options, strategy, peak, pixels)
        if not answer_first:
            saved_as, timings[Stage.SAVE] = self._save(data, fmt, upload_name)
            # As the request waited, not the stages' sum: postprocessing begins while the model runs.
            timings[Stage.TOTAL] = time.perf_counter() - received
            return saved_as, timings, observe(timings)
        named = self.outputs.name_for(fmt, upload_name)
        waited = {Stage.TOTAL: time.perf_counter() - received}
        self._save_places.acquire()
        with self._lock:
            self._saves_pending += 1

        def save_then_record() -> None:
            try:
                _, saving_s = self._save(data, fmt, upload_name, named)
                observe({**timings, Stage.SAVE: saving_s, **waited})
            except Exception:  # a thread's exception would go nowhere
                log.exception("recording a repair after its answer failed")
            finally:
                with self._lock:
                    self._saves_pending -= 1
                self._save_places.release()

        try:
            self._saver.submit(save_then_record)
        except RuntimeError:  # shut down (the interpreter is exiting): here, then
            save_then_record()
        return named, {**timings, **waited}, None

    def _save(self, data: bytes, fmt: OutputFormat, upload_name: str | None,
              named: str | None = None) -> tuple[str | None, float]:
        """(saved as, seconds): the file written; None where that failed, which is logged."""
        started = time.perf_counter()
        try:
            saved_as = self.outputs.save(data, fmt, upload_name, named)
        except OSError as error:
            # The user still gets the result; the operator gets the log line.
            log.error("could not save a result under %s: %s (the result was still returned; "
                      "outputs retention: --outputs-keep-days/--outputs-keep-gb)",
                      self.outputs.root, _os_error_text(error))
            saved_as = None
        return saved_as, time.perf_counter() - started

    def _observe_repair(self, options: RepairOptions, strategy: str, peak: int | None,
                        pixels: tuple[int, int, float], timings: dict[str, float]) -> str | None:
        """A repaired request's stages observed and recorded; the request log's id."""
        self.metrics.observe_stages(timings)
        if peak is not None:
            self.metrics.observe_peak_gpu(peak)
        return self.record(200, options, timings=timings, peak_gpu_bytes=peak, strategy=strategy, pixels=pixels)

    def finish_saves(self) -> None:
        """Wait for the results still being written after their answers (at shutdown)."""
        self._saver.shutdown(wait=True)

    def record(self, status: int, options: RepairOptions, decoded: Decoded | None = None,
               timings: dict[str, float] | None = None, peak_gpu_bytes: int | None = None,
               error: str | None = None, strategy: str | None = None,
               pixels: tuple[int, int, float] | None = None) -> str | None:
        """One line in logs/requests.jsonl (and the in-memory list the dashboard reads); its id.
        The image's width, height and mask share come from `pixels`, else from `decoded`."""
        if self.requests is None:
            return None
        record_id = uuid.uuid4().hex[:12]
        if pixels is None and decoded is not None:
            pixels = (decoded.image.shape[1], decoded.image.shape[0], mask_fraction(decoded.mask))
        width, height, fraction = pixels or (None, None, None)
        self.requests.record(RequestRecord(
            id=record_id, ts=time.time(), width=width, height=height,
            mask_fraction=fraction, strategy=strategy or options.strategy,
            requested_strategy=options.strategy, device=str(self.engine.device),
            precision=self.engine.precision, status=status, error=error,
            timings=timings or {}, peak_gpu_bytes=peak_gpu_bytes,
            rss_bytes=psutil.Process().memory_info().rss,
        ))
        return record_id

    # ------------------------------------------------------------------ whole repairs

    def repair(self, image: np.ndarray, mask: np.ndarray, options: RepairOptions,
               source: imageio.Source | None = None, upload_name: str | None = None) -> RepairResult:
        """Arrays in (the UI's path); blocks until done. Counted in the request metrics. `source` and
        `upload_name` as in Decoded: what the result's format (for "same"), metadata and name come from.
        The arrays stay the caller's: the repair goes to a copy."""
        return self.repair_decoded(Decoded(image, mask, source=source, upload_name=upload_name), options)

    def repair_decoded(self, decoded: Decoded, options: RepairOptions) -> RepairResult:
        """`decode`'s upload (or arrays, as `repair` hands them) repaired; blocks until done.
        Counted in the request metrics."""
        started = time.perf_counter()
        status = 500
        try:
            with self.admit():
                result = self.finish(decoded, self.submit(decoded, options).result(), options)
            status = 200
            return result
        except InpaintError as error:
            status = self.status_of(error)
            self.record(status, options, error=error.message)
            raise
        except Exception as error:
            self.record(500, options, error=f"{type(error).__name__}: {error}")
            raise
        finally:
            self.metrics.observe_request(status, time.perf_counter() - started)

    # ------------------------------------------------------------------ internals

    def _infer(self, decoded: Decoded, job: RepairJob | None, options: RepairOptions, estimate: int | None,
               timings: dict[str, float]) -> Inference:
        """Runs on a queue worker, admitted with `estimate` bytes of the GPU budget: the job's model
        runs, nothing else."""
        if job is None:
            return Inference(None, [], None, timings, options.strategy)
        height, width = decoded.image.shape[:2]
        outputs, peak = self._run_on_gpu(partial(self.engine.run_models, job), (width, height), options.strategy,
                                         estimate, timings)
        return Inference(job, outputs, peak, timings, options.strategy)

    def _run_on_gpu(self, model_runs: Callable[[dict[str, float]], list[np.ndarray]], size: tuple[int, int],
                    strategy: str, estimate: int | None,
                    timings: dict[str, float]) -> tuple[list[np.ndarray], int | None]:
        """A job's `model_runs(timings)` on a queue worker, with the GPU's failures handled: the
        outputs and the allocator's peak. An image of `size` (width, height) repaired with
        `strategy`, for the log.

        The allocator's peak counter is the process's: it is reset only by a job that runs
        alone, so that a reset never hides the peak of a job running beside this one. The peak
        reported is then at least this job's, and may include a neighbour's.
        """
        device = self.engine.device

        def run() -> list[np.ndarray]:
            timings.pop(Stage.INFER, None)
            return model_runs(timings)

        def retrying() -> None:
            log.warning("out of GPU memory on a %d×%d image (strategy %s, estimated %s, budget %s); cache "
                        "freed, retrying once", *size, strategy, _bytes_or_none(estimate),
                        _bytes_or_none(self.queue.budget_bytes))

        try:
            if self.queue.running <= 1:
                device.reset_peak()
            outputs = device.run(run, on_retry=retrying)
            peak = device.peak_bytes()
        except GpuOutOfMemory:
            raise GpuOutOfMemoryError("the GPU ran out of memory for this image twice; try again, or a smaller "
                                      "image or the crop strategy") from None
        except GpuFailure as failure:
            self._note_gpu_error(failure)
            raise GpuFailedError("the GPU failed during this repair; the server reports itself not ready until "
                                 "the GPU works again: retry shortly") from None
        self._clear_gpu_error("a repair")
        return outputs, peak

    # ------------------------------------------------------------------ a failing GPU

    def _note_gpu_error(self, failure: GpuFailure) -> None:
        self.gpu_error = str(failure)
        self._gpu_probe_at = time.monotonic() + GPU_PROBE_INTERVAL_S
        log.error("GPU error during a repair (%s): /readyz answers 503 and /healthz degraded until the GPU "
                  "works again", self.gpu_error, exc_info=failure.__cause__ or failure)

    def _clear_gpu_error(self, what: str) -> None:
        if self.gpu_error is not None:
            log.info("the GPU works again (%s succeeded): ready", what)
            self.gpu_error = None

    def probe_gpu(self) -> None:
        """Runs on the queue's worker: the smallest GPU work there is; raises while the GPU fails."""
        self.engine.device.probe()

    def _schedule_gpu_probe(self) -> None:
        """After a CUDA error, readiness checks now and then (on the GPU queue, so as not to compete
        with repairs) whether the GPU works again; a sticky CUDA error keeps failing the probe."""
        if self.gpu_error is None or time.monotonic() < self._gpu_probe_at:
            return
        if self._gpu_probe is not None and not self._gpu_probe.done():
            return
        self._gpu_probe_at = time.monotonic() + GPU_PROBE_INTERVAL_S

        def probe() -> None:
            try:
                self.probe_gpu()
            except Exception as error:  # noqa: BLE001 - any failure means: still broken
                log.warning("GPU probe failed: %s: %s", type(error).__name__, error)
                return
            self._clear_gpu_error("a probe")

        try:
            self._gpu_probe = self.queue.submit(probe)
        except QueueFullError:
            pass

    # ------------------------------------------------------------------ health

    def gpu_budget(self) -> dict[str, Any]:
        """The memory budget, what it admits now and what waits, and the engine's memory model
        (budget_bytes and memory_model are None where nothing is budgeted: the CPU)."""
        model = self.engine.memory
        return {**self.queue.admission(), "memory_model": model.describe() if model else None}

    @property
    def gpu_healthy(self) -> bool:
        """False while the sampler sees NVML fail (a lost GPU) or after a repair hit a CUDA error."""
        return self.gpu_error is None and (self.sampler is None or self.sampler.healthy)

    def ready(self) -> bool:
        """Warm, not draining, room in the queue, the GPU works and no job holds a worker past
        the queue's bound (`JobQueue.stuck`: /healthz says which)."""
        ready = (self.warm and not self.draining and self.queue.has_room and self.gpu_healthy
                 and self.queue.stuck() is None)
        self._schedule_gpu_probe()  # after the answer: the probe's outcome shows in a later one
        return ready

    def health(self) -> dict[str, Any]:
        info = self.engine.describe()
        try:
            gpu = self.engine.device.memory_report()
        except Exception as error:  # noqa: BLE001 - a lost GPU makes /healthz degraded, not a 500
            if isinstance(error, GpuFailure) and self.gpu_error is None:
                self._note_gpu_error(error)
            gpu = None
        sample = self.sampler.latest() if self.sampler else None
        stuck = self.queue.stuck()
        health = {
            "status": "degraded" if info["fallback"] or not self.gpu_healthy or stuck is not None else "ok",
            "model": {key: info[key] for key in ("name", "loaded", "device", "precision", "source", "parameters")},
            # The form the seed's probes already parse (nvidia-smi's "used" of our GPU).
            "gpu_mem": f"{_gpu_memory_used(self.engine.device.index, gpu, sample) / 1e9:.1f}GB",
            "gpu": gpu,
            "queue": {"depth": self.queue.depth, "capacity": self.queue.capacity},
            "gpu_budget": self.gpu_budget(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "sample": sample,
        }
        if self.cpu_workers is not None:
            health["cpu_workers"] = {"count": self.cpu_workers.count, "in_flight": self.cpu_workers.in_flight,
                                     "restarts": self.cpu_workers.restarts}
        if not self.gpu_healthy:
            health["gpu_error"] = self.gpu_error or self.sampler.last_error
        if self.draining:
            health["draining"] = True
        if stuck is not None:
            health["stuck"] = str(stuck)
        return health


def _bytes_or_none(count: int | None) -> str:
    return "none" if count is None else format_bytes(count)


def _os_error_text(error: OSError) -> str:
    """'No space left on device (ENOSPC)': the reason first, without the temporary file's name."""
    code = errno.errorcode.get(error.errno or 0)
    return f"{error.strerror or error} ({code})" if code else str(error)


def _gpu_memory_used(cuda_index: int | None, gpu: dict[str, Any] | None, sample: dict[str, Any] | None) -> int:
    """NVML's memory used on the engine's GPU (what operators compare with nvidia-smi);
    the allocator's reserved memory where NVML has no reading; 0 without a GPU."""
    if gpu is None:
        return 0
    for reading in (sample or {}).get("gpu") or []:
        # The sampler indexes GPUs by CUDA ordinal, as torch does.
        if reading.get("index") == cuda_index and reading.get("memory_used_bytes") is not None:
            return reading["memory_used_bytes"]
    return gpu["memory_reserved_bytes"]
