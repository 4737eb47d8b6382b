"""Worker processes for a repair's CPU steps, beside the one process that holds the GPU.

One process's threads share one GIL: at 16 clients the CPU steps of a single server process, not
the GPU, limit how many repairs it serves (docs/BENCHMARKS.md). With `cpu_workers` N > 0 the
HTTP API's repairs are decoded, prepared, composed and encoded in N processes of their own; the
server keeps HTTP, the queue, the memory budget and the model. So there is still one CUDA
context, one copy of the weights and one GPU memory budget, whatever N is.

A repair through a worker (each arrow a message on the worker's socket pair: a pickled header,
then the raw bytes of its arrays):

    server                                  worker (python -m service.cpu_workers FD)
    prepare: the uploads, options   ----->  decode, binarize, plan, the model inputs (job kept by id)
            <-----  prepared: sizes, the model inputs, timings
                                            then the feather ramp and the PNG segments
                                            the repair leaves alone, while the GPU runs
    admission, queue, the model runs
    finish: the model outputs       ----->  compose, encode
            <-----  finished: the encoded file, its format, timings
    save, record, respond
    replan (crop): when the request's strategy does not fit the GPU budget
    drop: when the server gives up on a prepared job

A worker imports neither torch nor the GPU's modules (lama.engine's CPU steps need none). A
worker that dies fails the repairs it held (503, retry) and is started again for the next.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lama import errors, png
from lama.backend import Backend
from lama.engine import InpaintEngine, RepairJob
from lama.errors import InpaintError, ShuttingDownError, UnavailableError
from lama.heap import MALLOC_ARENAS, release_free_heap
from lama.imageio import ImageLimits
from lama.output_formats import OutputFormat
from lama.planning import HDSettings
from lama.stages import Stage
from service.upload import (Decoded, RepairOptions, check_pair, compose_and_encode, decode, encode_ahead,
                            mask_fraction)

log = logging.getLogger(__name__)

IDLE_TRIM_S = 1.0  # a worker given nothing for this long returns its heap's free pages
CHECK_SIDE = 16  # the start-up check's photo: tiny, and still every step of a repair's preparation

Arrays = list[np.ndarray]
_LENGTH = struct.Struct("<Q")  # a message's header length, first on the wire


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to do the engine's CPU steps as the server's engine would."""

    hd: HDSettings
    snap: bool  # the backend prefers few input shapes (lama.planning's ladder of sides)
    limits: ImageLimits
    threads: int  # the worker's pool for codec and mask pieces (lama.parallel), and OpenCV's


@dataclass
class Prepared:
    """A request decoded and prepared in `worker`, which keeps its job until finished or dropped."""

    worker: Worker
    id: int
    width: int
    height: int
    mask_fraction: float | None
    decode_s: float
    received: float  # time.perf_counter() in the server's process as the request was handed over
    peak_pixels: int  # the largest model input: what the job's GPU memory follows
    inputs: list[tuple[np.ndarray, np.ndarray]]  # (RGB, mask) of each model run; [] if nothing to repair
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    data: bytes
    format: OutputFormat
    timings: dict[str, float]  # postprocess and encode, seconds


def threads_per_worker(workers: int, cores: int) -> int:
    """Each worker's pool for codec and mask pieces (and OpenCV's): the cores shared between the
    workers, as one process's pool would have them, so that a full load does not oversubscribe them."""
    return max(1, cores // workers)


class WorkerLostError(UnavailableError):
    code = "worker_lost"


class Worker:
    """One worker process and the server's side of its socket: calls from any thread, a reader
    thread resolving them as replies come."""

    def __init__(self, index: int, config: WorkerConfig):
        self.index = index
        self._config = config
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._held: set[int] = set()  # the repairs prepared here and not yet finished or dropped
        ours, theirs = socket.socketpair()
        with theirs:
            # Not multiprocessing's spawn, which would import the server's __main__ (app.py) again.
            self.process = subprocess.Popen([sys.executable, "-m", "service.cpu_workers", str(theirs.fileno())],
                                            pass_fds=(theirs.fileno(),), env=_worker_environment())
        # The reader thread blocks in a read on the socket: only shutting the socket down (not
        # closing it) wakes it, and tells the worker it is done.
        self._socket = ours
        _send(ours, {"config": config}, [])
        self._reader = threading.Thread(target=self._read, name=f"cpu-worker-{index}-reader", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def in_flight(self) -> int:
        """Repairs this worker holds (prepared, on the GPU or being finished) or is preparing."""
        with self._pending_lock:
            return len(self._held | self._pending.keys())

    # ------------------------------------------------------------------ the calls

    def prepare(self, image_bytes: bytes, mask_bytes: bytes, upload_name: str | None,
                options: RepairOptions) -> Prepared:
        received = time.perf_counter()
        request_id = next(self._ids)
        header, arrays = self._call({"op": "prepare", "id": request_id, "name": upload_name, "options": options},
                                    [np.frombuffer(image_bytes, np.uint8), np.frombuffer(mask_bytes, np.uint8)])
        with self._pending_lock:
            self._held.add(request_id)
        return self._prepared(request_id, header, arrays, received)

    def replan(self, prepared: Prepared, strategy: str) -> Prepared:
        """The same request prepared again with `strategy` (the service's fallback to crop)."""
        header, arrays = self._call({"op": "replan", "id": prepared.id, "strategy": strategy}, [])
        return replace(prepared, peak_pixels=header["peak_pixels"], inputs=_pairs(arrays), timings=header["timings"])

    def finish(self, prepared: Prepared, outputs: Arrays) -> Finished:
        try:
            header, (data,) = self._call({"op": "finish", "id": prepared.id}, outputs)
        finally:
            self._forget(prepared)  # the worker has, either way
        return Finished(data.tobytes(), header["format"], header["timings"])

    def drop(self, prepared: Prepared) -> None:
        """Forget a prepared job (the server gave up on it); no reply."""
        self._forget(prepared)
        with self._send_lock:
            try:
                _send(self._socket, {"op": "drop", "id": prepared.id}, [])
            except OSError:
                pass  # the worker is gone, and its jobs with it

    def stop(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # the worker's read ends: it exits
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout_s)
        self._socket.close()

    def _forget(self, prepared: Prepared) -> None:
        with self._pending_lock:
            self._held.discard(prepared.id)

    def _prepared(self, request_id: int, header: dict, arrays: Arrays, received: float) -> Prepared:
        return Prepared(self, request_id, header["width"], header["height"], header["mask_fraction"],
                        header["decode_s"], received, header["peak_pixels"], _pairs(arrays), header["timings"])

    def _call(self, header: dict, arrays: Arrays) -> tuple[dict, Arrays]:
        future: Future = Future()
        with self._pending_lock:
            self._pending[header["id"]] = future
        try:
            with self._send_lock:
                _send(self._socket, header, arrays)
        except OSError:
            self._fail_pending()
        reply, arrays = future.result()
        if "error" in reply:
            raise _error_from(reply["error"])
        if "crash" in reply:
            raise RuntimeError(f"CPU worker {self.index}: {reply['crash']}")
        return reply, arrays

    # ------------------------------------------------------------------ the replies

    def _read(self) -> None:
        while True:
            try:
                header, arrays = _receive(self._socket)
            except (EOFError, OSError):
                break
            with self._pending_lock:
                future = self._pending.pop(header["id"], None)
            if future is not None:
                future.set_result((header, arrays))
        self._fail_pending()

    def _fail_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(WorkerLostError("a CPU worker process stopped during this repair; retry it",
                                                     retry_after_s=1))


class CpuWorkers:
    """`count` worker processes, started with the server and stopped with it; a dead one is
    replaced when next picked."""

    def __init__(self, count: int, config: WorkerConfig):
        self.count = count
        self.restarts = 0  # workers found dead and started again
        self._config = config
        self._workers: list[Worker] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._workers = [Worker(index, self._config) for index in range(self.count)]

    def stop(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    @property
    def in_flight(self) -> int:
        """Repairs the workers hold or are preparing."""
        return sum(worker.in_flight for worker in self._workers)

    def check(self) -> None:
        """Each worker decodes and prepares a tiny repair, then drops it; a worker that cannot
        serve (its process is gone, or its steps fail) raises its error here: WorkerLostError, an
        InpaintError, or RuntimeError for a worker's crash."""
        photo = png.encode(np.zeros((CHECK_SIDE, CHECK_SIDE, 3), np.uint8))
        mask = np.zeros((CHECK_SIDE, CHECK_SIDE), np.uint8)
        mask[CHECK_SIDE // 4: CHECK_SIDE // 2, CHECK_SIDE // 4: CHECK_SIDE // 2] = 255
        brush = png.encode(mask)
        for worker in list(self._workers):
            worker.drop(worker.prepare(photo, brush, None, RepairOptions()))

    def pick(self) -> Worker:
        """The worker with the fewest repairs in hand (started again if it died)."""
        with self._lock:
            if not self._workers:
                raise ShuttingDownError("the server is shutting down; retry in a moment")
            for index, worker in enumerate(self._workers):
                if not worker.alive:
                    log.warning("CPU worker %d (pid %d) exited with %s: starting another", index,
                                worker.process.pid, worker.process.returncode)
                    worker.stop(timeout_s=0)
                    self._workers[index] = Worker(index, self._config)
                    self.restarts += 1
            return min(self._workers, key=lambda worker: worker.in_flight)


def _worker_environment() -> dict[str, str]:
    """The server's environment, with the project importable whatever the working directory, and
    the C heap's arenas bounded as the server bounds its own (lama.resources), whoever launched
    it: glibc reads the bound at a process's start, which for a worker is here."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS), **os.environ,
            "PYTHONPATH": root + (os.pathsep + path if path else "")}


# --------------------------------------------------------------------------- the wire


def _send(sock: socket.socket, header: dict, arrays: Arrays) -> None:
    """A message: the pickled header's length and the header (which lists the arrays' shapes and
    types), then each array's bytes as they lie in memory, written from there (no copy; the GIL
    is released while the kernel takes them)."""
    arrays = [np.ascontiguousarray(array) for array in arrays]
    head = pickle.dumps({**header, "arrays": [(array.shape, array.dtype.str) for array in arrays]})
    sock.sendall(_LENGTH.pack(len(head)) + head)
    for array in arrays:
        sock.sendall(_bytes_of(array))


def _receive(sock: socket.socket) -> tuple[dict, Arrays]:
    """`_send`'s message; each array read straight into one allocated for it. EOFError at the end."""
    (length,) = _LENGTH.unpack(_read_into(sock, bytearray(_LENGTH.size)))
    header = pickle.loads(_read_into(sock, bytearray(length)))
    arrays = []
    for shape, dtype in header.pop("arrays"):
        array = np.empty(shape, dtype)
        _read_into(sock, _bytes_of(array))
        arrays.append(array)
    return header, arrays


def _read_into(sock: socket.socket, buffer: bytearray | memoryview) -> bytearray | memoryview:
    view = memoryview(buffer).cast("B")
    while view.nbytes:
        count = sock.recv_into(view)
        if not count:
            raise EOFError("the other side closed the socket")
        view = view[count:]
    return buffer


def _pairs(arrays: Arrays) -> list[tuple[np.ndarray, np.ndarray]]:
    """The model inputs as sent, RGB and mask after one another, as (RGB, mask) pairs."""
    return list(zip(arrays[0::2], arrays[1::2], strict=True))


def _bytes_of(array: np.ndarray) -> memoryview:
    """A contiguous array's memory as bytes."""
    return memoryview(array.reshape(-1).view(np.uint8))


def _error_state(error: InpaintError) -> tuple[str, str, dict]:
    return type(error).__name__, str(error), dict(vars(error))


def _error_from(state: tuple[str, str, dict]) -> InpaintError:
    """The worker's error as the class it raised (lama.errors' tree: the web layer maps it)."""
    name, message, attributes = state
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, InpaintError)):
        cls = InpaintError
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


# --------------------------------------------------------------------------- the worker's side


class _Held(NamedTuple):
    """A request a worker keeps between prepare and finish."""

    decoded: Decoded
    job: RepairJob | None  # None: nothing to repair, or not prepared yet
    options: RepairOptions
    timings: dict[str, float]


class _Jobs:
    """A worker's requests between prepare and finish."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.engine = InpaintEngine(hd=config.hd, backend=_PlanningOnly(config.snap))
        self.held: dict[int, _Held] = {}

    def prepare(self, header: dict, arrays: Arrays) -> tuple[dict, Arrays]:
        options = header["options"]
        options.validate()
        image_bytes, mask_bytes = (array.tobytes() for array in arrays)
        decoded = decode(image_bytes, mask_bytes, self.config.limits, self.engine, header["name"], options)
        check_pair(decoded.image, decoded.mask, self.config.limits)
        height, width = decoded.image.shape[:2]
        self.held[header["id"]] = _Held(decoded, None, options, dict(decoded.timings))
        reply, inputs = self._prepare(header["id"], options.strategy)
        return {**reply, "width": width, "height": height, "mask_fraction": mask_fraction(decoded.mask),
                "decode_s": decoded.decode_s}, inputs

    def replan(self, header: dict) -> tuple[dict, Arrays]:
        return self._prepare(header["id"], header["strategy"])

    def _prepare(self, request_id: int, strategy: str) -> tuple[dict, Arrays]:
        decoded, _, options, timings = self.held[request_id]
        planned = decoded.plan if strategy == options.strategy else None
        job = self.engine.prepare(decoded.image, decoded.mask, strategy, options.dilate, timings, planned=planned)
        self.held[request_id] = _Held(decoded, job, options, timings)
        inputs = [array for pair in (job.inputs if job is not None else []) for array in pair]
        return {"id": request_id, "peak_pixels": job.peak_model_pixels if job is not None else 0,
                "timings": dict(timings)}, inputs

    def after_prepare(self, request_id: int) -> None:
        """While the server runs the model: the part of the postprocessing that needs the mask
        alone, and the encoding of what the repair leaves as it was."""
        decoded, job, options, timings = self.held[request_id]
        if job is not None:
            self.engine.feather_ahead(job, options.feather, timings)
            encode_ahead(decoded, job, options, timings)

    def finish(self, header: dict, outputs: Arrays) -> tuple[dict, Arrays]:
        decoded, job, options, timings = self.held.pop(header["id"])
        done: dict[str, float] = {}
        if job is not None:
            # The feather ramp's and the encoding's time ahead, then the compose's and the rest's.
            done[Stage.POSTPROCESS] = timings.get(Stage.POSTPROCESS, 0.0)
            done[Stage.ENCODE] = timings.get(Stage.ENCODE, 0.0)
        _, data, fmt = compose_and_encode(self.engine, decoded, job, outputs, options, done)
        return {"id": header["id"], "format": fmt, "timings": done}, [np.frombuffer(data, np.uint8)]


class _PlanningOnly(Backend):
    """What the engine's CPU steps need of a backend: whether it prefers few input shapes."""

    device = None
    precision = "none"
    model_loaded = False

    def __init__(self, snap: bool):
        self.prefers_few_shapes = snap

    def repair(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise RuntimeError("a CPU worker runs no model")

    def describe(self) -> dict[str, Any]:
        return {"name": "planning only", "loaded": False}


def serve(connection: socket.socket) -> None:
    """The worker's loop: one request's step at a time, until the server shuts the socket down."""
    config: WorkerConfig = _receive(connection)[0]["config"]
    import cv2

    from lama import parallel

    parallel.resize(config.threads)
    cv2.setNumThreads(config.threads)
    jobs = _Jobs(config)
    while True:
        try:
            if not jobs.held and not select.select([connection], [], [], IDLE_TRIM_S)[0]:
                # Idle: the heap keeps the buffers of the last repairs (tens of MB at 2560×1920)
                # for the next ones; give them back to the kernel while nothing comes.
                release_free_heap()
            header, arrays = _receive(connection)
        except (EOFError, OSError):
            return
        op, request_id = header["op"], header["id"]
        if op == "drop":
            jobs.held.pop(request_id, None)
            continue
        try:
            if op == "prepare":
                reply = jobs.prepare(header, arrays)
            elif op == "replan":
                reply = jobs.replan(header)
            else:
                reply = jobs.finish(header, arrays)
        except InpaintError as error:
            jobs.held.pop(request_id, None)
            _send(connection, {"id": request_id, "error": _error_state(error)}, [])
            continue
        except Exception as error:  # noqa: BLE001 - the server answers 500 and logs it; the worker goes on
            jobs.held.pop(request_id, None)
            log.exception("CPU worker: %s failed", op)
            _send(connection, {"id": request_id, "crash": f"{type(error).__name__}: {error}"}, [])
            continue
        _send(connection, *reply)
        if op != "finish":
            jobs.after_prepare(request_id)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s cpu-worker: %(message)s")
    serve(socket.socket(fileno=int(sys.argv[1])))
