"""Batch jobs: repairs that scripts submit now and fetch later, without holding a connection each.

A job is accepted once its upload has passed the same checks as a direct repair and is in the
same GPU queue; from then on it lives as files under the outputs folder,

    outputs/jobs/<id>.json    its record: status, error, result, timings (atomic writes)
    outputs/jobs/<id>.lock    flock-ed by the process that runs it, until the record is final
    outputs/jobs/<id>.deleted the job was deleted (DELETE): it reads as not found from then on, and
                              its files go as soon as it is not pending (its owner removes them)
    outputs/YYYY-MM-DD/...    its result, saved by OutputStore like every repair's

so that every replica sharing the outputs volume answers for every job and a restart leaves
finished jobs readable. A record still `queued` or `running` whose lock nobody holds was lost
with its process (killed or restarted before the job ran): it reads as failed (`interrupted`).
A deleted job that still waits in its owner's queue never runs; one already running ends, and its
result is removed with its record. The tombstone, not the record, says a job is gone: whichever
of owner and deleter comes second removes the files, and the sweep does where the owner died.
Locks, not clocks, as in lama.files: the kernel drops a dead process's lock, whatever its host's
time.

Where the server has CPU worker processes (service.cpu_workers) and other repairs are in flight,
a job's upload is decoded, prepared, composed and encoded in a worker, as the HTTP API's
repairs are: a script's jobs then do not queue for the server process's GIL.

Bounds: at most `capacity` jobs of this process pending at once (accepted, not yet final), each
holding its decoded upload in memory (this process's or its worker's) until it has run and its
result is saved; beyond that a job is refused as the full queue refuses a repair. Records go with
their results: the retention sweep removes a done job's record once its result is gone, a failed
one's after `keep_days`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

from lama import resources
from lama.errors import InpaintError, JobNotFinishedError, JobNotFoundError, QueueFullError, StorageError
from lama.files import TEMP_NAME, remove_if_abandoned, write_bytes_atomic
from lama.output_formats import output_format
from service.jobs import Timed
from service.pipeline import Decoded, RepairOptions, RepairResult, RepairService
from service.storage import DAY_FOLDER, RESULT_NAME

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
PENDING = (QUEUED, RUNNING)
JOB_ID = re.compile(r"[0-9a-f]{32}")  # 128 random bits: unguessable, and a safe file name
JOBS_FOLDER = "jobs"
INTERRUPTED = {"code": "interrupted", "message": "the server that ran this job stopped before it finished; "
                                                 "submit it again"}


class _Deleted(Exception):
    """Raised as a job starts that was deleted while it waited: its model runs are skipped."""


def _not_found(job_id: str, why: str = "no such job") -> JobNotFoundError:
    return JobNotFoundError(f"{why}: {job_id[:40]!r}", job_id)


def _not_finished(job: Job) -> JobNotFinishedError:
    if job.status == FAILED:
        message = f"job {job.id} failed, it has no result: {job.error['message']}"
    else:
        message = f"job {job.id} is {job.status}, its result is not ready yet: poll the job until it is done"
    return JobNotFinishedError(message, job.id, job.status)


@dataclass(frozen=True)
class Job:
    id: str
    status: str  # queued | running | done | failed
    format: str
    error: dict[str, str] | None = None  # {"code", "message"} once failed
    saved_as: str | None = None  # the result under the outputs folder, once done
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, once done

    @property
    def media_type(self) -> str:
        return output_format(self.format).media_type

    def to_record(self) -> bytes:
        return json.dumps({"id": self.id, "status": self.status, "format": self.format, "error": self.error,
                           "saved_as": self.saved_as, "timings": self.timings}).encode()

    @classmethod
    def from_record(cls, data: bytes) -> Job:
        record = json.loads(data)
        return cls(record["id"], record["status"], record["format"], record["error"], record["saved_as"],
                   record["timings"])


class _Queued(NamedTuple):
    """An accepted job's repair as it was queued."""

    ran: Future[Timed] | None  # its model runs; None: nothing to run (an empty mask, in a worker)
    finish: Callable[[Timed | None], RepairResult]  # composes, encodes and saves it once they ran
    forget: Callable[[], None]  # lets go of its upload where they failed or never ran


class BatchJobs:
    def __init__(self, service: RepairService, capacity: int, keep_days: float = 0):
        """`capacity`: pending jobs at most (the queue's); `keep_days`: how long a failed job's
        record stays (0: as long as the outputs are kept)."""
        self.service = service
        self.capacity = capacity
        self.keep_days = keep_days
        self.folder = service.outputs.root / JOBS_FOLDER
        self._pending = 0
        self._model_runs: dict[str, Future[Timed]] = {}  # this process's pending jobs' queued runs, to cancel
        self._recent_s = 1.0  # moving estimate of a job's time from acceptance to its final record, for Retry-After
        self._lock = threading.Lock()
        # Off the GPU workers, which are free for the next job meanwhile.
        workers = service.cpu_workers.count if service.cpu_workers is not None else 0
        self._finisher = ThreadPoolExecutor(resources.job_finishers(workers), thread_name_prefix="job-finisher")

    # ------------------------------------------------------------------ submitting

    def submit(self, decoded: Decoded, options: RepairOptions) -> Job:
        """Accept a decoded upload as a job, its CPU steps in this process: its record is written
        and it is queued before this returns; refused as a direct repair would be (queue full,
        draining, too large, ...)."""
        def queue(on_start: Callable[[], None]) -> _Queued:
            ran = self.service.submit(decoded, options, on_start=on_start)
            return _Queued(ran, lambda timed: self.service.finish(decoded, timed, options), lambda: None)

        return self._accept(options, queue, decoded)

    def submit_to_worker(self, image_bytes: bytes, mask_bytes: bytes, upload_name: str | None,
                         options: RepairOptions) -> Job:
        """`submit` for an upload a CPU worker process decodes, prepares, composes and encodes
        (RepairService.submit_to_worker); refused as `submit` refuses, the upload's own errors
        (400) included. Blocks while the worker prepares: call it off the event loop."""
        def queue(on_start: Callable[[], None]) -> _Queued:
            repair = self.service.submit_to_worker(image_bytes, mask_bytes, upload_name, options, on_start)
            return _Queued(repair.queued, partial(self.service.finish_in_worker, repair),
                           partial(self.service.abandon, repair))

        return self._accept(options, queue)

    def _accept(self, options: RepairOptions, queue: Callable[[Callable[[], None]], _Queued],
                decoded: Decoded | None = None) -> Job:
        """A job accepted: counted, admitted, recorded, then `queue(on_start)`d (`decoded`: its
        upload, where this process decoded it, for the request log)."""
        with self._lock:
            if self._pending >= self.capacity:
                # Jobs end about every recent_s / pending seconds: that is when a place frees.
                retry = max(1, round(self._recent_s / self._pending))
                raise QueueFullError(f"{self._pending} jobs are pending, the limit is {self.capacity}; retry in "
                                     f"{retry} s", retry)
            self._pending += 1
        accepted = time.monotonic()
        # Until its record is final the job counts as a repair in flight: a SIGTERM drain waits for it.
        held = contextlib.ExitStack()
        job = Job(secrets.token_hex(16), QUEUED, options.format)
        try:
            held.enter_context(self.service.admit())
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                held.enter_context(_owner_lock(self._lock_path(job.id)))
                self._write(job)
            except OSError as error:
                log.error("job refused: cannot write its record under %s: %s", self.folder, error)
                raise StorageError("the server cannot write to its outputs folder now (full or not writable); "
                                   "the operator has the details") from None
            queued = queue(lambda: self._note_running(job))
        except BaseException:
            # Nothing of a refused job stays behind: not its record, not its lock.
            with contextlib.suppress(OSError):
                self._record_path(job.id).unlink(missing_ok=True)
            self._finished(held)
            raise
        finish = partial(self._hand_to_finisher, job, queued, decoded, options, held, accepted)
        if queued.ran is None:
            finish()
        else:
            with self._lock:
                self._model_runs[job.id] = queued.ran
            _call_once_done(queued.ran, finish)
        return job

    def _note_running(self, job: Job) -> None:
        """On the GPU worker, as the job starts: best effort, the job runs whatever the disk says,
        unless it was deleted while it waited (by a replica that could not cancel it)."""
        if self._deleted_path(job.id).exists():
            raise _Deleted
        try:
            self._write(Job(job.id, RUNNING, job.format))
        except OSError as error:
            log.warning("job %s: could not record that it runs: %s", job.id, error)

    def _hand_to_finisher(self, job: Job, queued: _Queued, decoded: Decoded | None, options: RepairOptions,
                          held: contextlib.ExitStack, accepted: float) -> None:
        complete = partial(self._complete, job, queued, decoded, options, held, accepted)
        try:
            self._finisher.submit(complete)
        except RuntimeError:  # the finishers are shut down (the interpreter is exiting): here, then
            complete()

    def _complete(self, job: Job, queued: _Queued, decoded: Decoded | None, options: RepairOptions,
                  held: contextlib.ExitStack, accepted: float) -> None:
        try:
            try:
                result = queued.finish(_model_runs(queued))
            except (CancelledError, _Deleted):  # the server stopped before the job ran, or it was deleted
                final = Job(job.id, FAILED, job.format, INTERRUPTED)
            except InpaintError as error:
                self.service.record(self.service.status_of(error), options, decoded, error=error.message)
                final = Job(job.id, FAILED, job.format, {"code": error.code, "message": error.message})
            except Exception as error:
                log.exception("job %s failed", job.id)
                self.service.record(500, options, decoded, error=f"{type(error).__name__}: {error}")
                final = Job(job.id, FAILED, job.format, {"code": "internal_error", "message": "the repair failed on "
                                                         "the server (the log has the details); submit it again"})
            else:
                if result.saved_as is None:
                    final = Job(job.id, FAILED, job.format, {"code": "result_not_saved", "message": "the result could "
                                                             "not be written to the server's outputs folder"})
                else:
                    # The format that was written: `same` and `jpg` resolved.
                    final = Job(job.id, DONE, result.format.name, saved_as=result.saved_as, timings=result.timings)
            self._write(final)
            # After the final record: either this sees a deletion's tombstone, or its deleter sees
            # the record final and removes the files itself.
            if self._deleted_path(job.id).exists():
                self._remove(final)
        except OSError as error:
            # With its lock released below, readers will see the job as interrupted.
            log.error("job %s: could not write its record under %s: %s", job.id, self.folder, error)
        finally:
            with self._lock:
                self._model_runs.pop(job.id, None)
            self._finished(held, accepted)

    def _finished(self, held: contextlib.ExitStack, accepted: float | None = None) -> None:
        """No longer pending; `accepted`: when a job that ran was accepted (None: it was refused)."""
        held.close()
        with self._lock:
            self._pending -= 1
            if accepted is not None:
                self._recent_s = 0.8 * self._recent_s + 0.2 * (time.monotonic() - accepted)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> Job:
        """The job as its record says, a lost one as failed; JobNotFoundError if there is none
        (or it was deleted)."""
        if not JOB_ID.fullmatch(job_id) or self._deleted_path(job_id).exists():
            raise _not_found(job_id)
        job = self._read(job_id)
        return self._settle(job) if job.status in PENDING else job

    def result(self, job_id: str) -> tuple[Job, bytes]:
        """The job and its result's bytes; JobNotFinishedError before it is done, JobNotFoundError
        once retention has removed the result."""
        job = self.get(job_id)
        if job.status != DONE:
            raise _not_finished(job)
        path = self._result_path(job)
        if path is None:  # a record edited by hand
            raise _not_found(job_id, "this job's record is damaged")
        try:
            return job, path.read_bytes()
        except FileNotFoundError:
            raise _not_found(job_id, "this job's result is no longer kept (outputs retention)") from None

    # ------------------------------------------------------------------ deleting

    def delete(self, job_id: str) -> None:
        """Delete a job, whichever replica accepted it: from now on it reads as not found. A final
        job's result and record go at once. A pending one that still waits in this process's queue
        is cancelled; otherwise its owner skips its model runs if they have not started, or lets
        them end and removes the result. JobNotFoundError if there is no such job (or it was
        deleted already)."""
        self.get(job_id)
        try:
            # O_EXCL: of two deletions of one job, the second is told there is none.
            os.close(os.open(self._deleted_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        except FileExistsError:
            raise _not_found(job_id) from None
        except OSError as error:
            log.error("job %s: cannot delete it under %s: %s", job_id, self.folder, error)
            raise StorageError("the server cannot write to its outputs folder now (full or not writable); "
                               "the operator has the details") from None
        with self._lock:
            model_runs = self._model_runs.get(job_id)
        if model_runs is not None:
            model_runs.cancel()  # a no-op once they run; its completion then removes the job
        self._remove_if_final(job_id)

    def _remove_if_final(self, job_id: str) -> None:
        """A deleted job's files, once it is no longer pending (a lost one counts as final)."""
        try:
            job = self._read(job_id)
            if job.status in PENDING:
                job = self._settle(job)
        except JobNotFoundError:  # removed by its owner meanwhile
            self._deleted_path(job_id).unlink(missing_ok=True)
            return
        if job.status not in PENDING:
            self._remove(job)

    def _remove(self, job: Job) -> None:
        """A deleted job's result, its record, then the tombstone that hid them (idempotent)."""
        if (path := self._result_path(job)) is not None:
            path.unlink(missing_ok=True)
        self._record_path(job.id).unlink(missing_ok=True)
        self._deleted_path(job.id).unlink(missing_ok=True)

    def _settle(self, job: Job) -> Job:
        """A pending job whose owner is alive as it is; one whose owner is gone as failed (and recorded so)."""
        try:
            fd = os.open(self._lock_path(job.id), os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:  # its owner finished (and removed its lock) since the read, or died
            return self._read_or_interrupt(job.id)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return job  # held: the job is alive
            # Under its lock: the record is final now, or its owner is gone.
            job = self._read_or_interrupt(job.id)
            self._lock_path(job.id).unlink(missing_ok=True)
            return job
        finally:
            os.close(fd)

    def _read_or_interrupt(self, job_id: str) -> Job:
        job = self._read(job_id)
        if job.status in PENDING:
            job = Job(job.id, FAILED, job.format, INTERRUPTED)
            with contextlib.suppress(OSError):  # a read-only volume: every reader concludes the same
                self._write(job)
        return job

    # ------------------------------------------------------------------ retention

    def sweep(self, now: float | None = None) -> int:
        """Records whose result retention removed, failed ones older than keep_days, abandoned
        locks and temporary files; lost jobs recorded as failed. Returns how many records went."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            stem, _, suffix = entry.name.partition(".")
            if TEMP_NAME.fullmatch(entry.name) or (suffix == "lock" and not self._record_path(stem).exists()):
                remove_if_abandoned(entry.path)  # a writer killed mid-write, or before the record existed
            elif suffix == "deleted" and JOB_ID.fullmatch(stem):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self._remove_if_final(stem)  # whose owner died, or finished before it was deleted
            elif suffix == "json" and JOB_ID.fullmatch(stem):
                with contextlib.suppress(JobNotFoundError, OSError, ValueError, KeyError):
                    if self._expired(self.get(stem), entry, now):
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            log.info("jobs retention: removed %d job record(s)", removed)
        return removed

    def _expired(self, job: Job, entry: os.DirEntry, now: float) -> bool:
        if job.status == DONE:
            return not (self.service.outputs.root / (job.saved_as or "")).is_file()
        return (job.status == FAILED and self.keep_days > 0
                and entry.stat().st_mtime < now - self.keep_days * 86400)

    def shutdown(self) -> None:
        """Once the queue has stopped: wait for the finishers to write the last records."""
        self._finisher.shutdown(wait=True)

    # ------------------------------------------------------------------ files

    def _record_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _lock_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.lock"

    def _deleted_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.deleted"

    def _result_path(self, job: Job) -> Path | None:
        """A done job's result file; None where there is none or the record names no result file."""
        day, _, name = (job.saved_as or "").partition("/")
        if job.status != DONE or not (DAY_FOLDER.fullmatch(day) and RESULT_NAME.fullmatch(name)):
            return None
        return self.service.outputs.root / day / name

    def _write(self, job: Job) -> None:
        write_bytes_atomic(self._record_path(job.id), job.to_record())

    def _read(self, job_id: str) -> Job:
        try:
            return Job.from_record(self._record_path(job_id).read_bytes())
        except FileNotFoundError:
            raise _not_found(job_id) from None


def _call_once_done(future: Future, then: Callable[[], None]) -> None:
    """`then()` once `future` is done, holding on to `then` only until it is called. A future keeps
    its callbacks after calling them, and a job's completion refers to its upload and, through
    the queued job, to the future itself: kept, that cycle held the decoded photo, its mask and
    the model's output until the garbage collector's next full pass, which a process allocating
    mostly numpy arrays (not tracked by the collector) seldom makes. The server's RSS at rest
    grew by about the uploads' size with every batch."""
    pending = [then]
    future.add_done_callback(lambda _done: pending.pop()())


def _model_runs(queued: _Queued) -> Timed | None:
    """The queued model runs' value (None: there were none); where they failed or never ran
    (the server stopped first), the job's upload is let go of before the error goes on."""
    if queued.ran is None:
        return None
    try:
        return queued.ran.result()
    except BaseException:
        queued.forget()
        raise


@contextlib.contextmanager
def _owner_lock(path: Path):
    """Create `path` and hold an exclusive flock on it; on the way out remove it, then let go."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        # Removed while still held: a reader that opened it meanwhile finds the record final once it gets the lock.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
