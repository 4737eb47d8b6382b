"""What the server process holds at rest: its threads and its C heap, bounded once at start-up.

The composition root (app.py) calls :func:`bound_process` before anything starts a thread, and
hands :func:`lama.heap.release_free_heap` to the periodic sweep. Library code (the CLI, the benchmarks)
keeps the libraries' defaults.

Threads, on a machine where the process may use C cores (the H200 box: C = 16). Native pools
start when first used and then stay; Python pools (``thread_budget`` counts them all):
- torch's intra-op pool: on CUDA the CPU side of torch only copies and indexes a few tensors per
  repair, which are too small to be split, so 2; on the CPU the model runs there: C.
- torch's inter-op pool: 1 (it serves torch.jit.fork, which nothing here uses).
- numpy's OpenBLAS: 1 (app.py sets OPENBLAS_NUM_THREADS before numpy loads; it would start
  C − 1 threads at import, and the service does no linear algebra in numpy).
- OpenCV's pool: C − 1 (its own default; the calling thread is the C-th). One parallel loop
  runs on it at a time; concurrent callers run theirs in their own thread.
- lama.parallel's pool (PNG segments, the feather ramp's strips): C. imageio's mask pool:
  DECODE_SLOTS (at most that many decodes run at once, so more mask threads would only wait).
- AnyIO's worker threads, for the blocking calls of the HTTP API and of Gradio: up to 40 (its
  default limiter), each ending after 10 s idle.
- The service's own: the main thread (uvicorn's event loop), the GPU workers (2 on CUDA), the
  outputs sweep, the resource sampler, the warm-up (it ends) and the GPU probe after a CUDA
  error; CUDA's driver adds a few of its own.
- The batch jobs' finishers (service.batch_jobs), which compose, encode and save a job once its
  model runs are done: 2, or one per CPU worker where those do that work, so that each worker
  can finish a job at once.
Each bound is a count of threads that can do useful work at once; none grows with requests.
The CPU workers (service.cpu_workers) are processes of their own, outside this budget but for the
thread here that reads each one's replies: each worker sizes lama.parallel's pool and OpenCV's to
its share of the cores (C / workers) and holds 5 threads.

The C heap: glibc gives each thread that allocates its own arena, up to 8 per core, and an
arena keeps what a repair freed for its thread's next one. With a hundred threads touching
multi-megabyte image buffers, the free memory of all those arenas is what made a server started
without start_app.sh hold about twice its resting RSS after a load run (issue 15). Two arenas
(whoever launches the process; the CPU workers get the same bound through their environment),
and free pages given back to the kernel by the sweep, keep it near what it holds at rest. A lower
mmap threshold would give every large buffer back at once, but each repair would then pay the
page faults of every image buffer it allocates.

The GPU transfers' staging buffers: page-locked blocks from torch's cache (lama.reference), one
per image in flight and rounded up to a power of two (16 MB for a 2560×1920 photo), which the
cache keeps for the next transfer. They are resident and never paged out; `/metrics` shows them
(inpaint_pinned_host_bytes), the warm-up gives its own back, and the sweep gives them back once
the GPU queue has been idle for half a minute (webui.compose), so that a server at rest does not
keep what its busiest minute needed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cv2
import torch

from lama import imageio, parallel
from lama.heap import M_ARENA_MAX, MALLOC_ARENAS, mallopt

log = logging.getLogger(__name__)

CUDA_TORCH_THREADS = 2
ANYIO_WORKER_THREADS = 40  # anyio.to_thread's default limiter (Starlette's run_in_threadpool, Gradio)
SERVICE_THREADS = 5  # the main thread (uvicorn's event loop), warm-up, outputs sweep, sampler, GPU probe
JOB_FINISHERS = 2  # the batch jobs' finishers where no CPU worker does their work
CUDA_DRIVER_THREADS = 6  # the driver's own (event handler, helpers): an allowance, checked by gpu_soak.sh startup


@dataclass(frozen=True)
class ThreadBudget:
    """The most threads each part of the server holds; ``total`` bounds the process."""

    torch_intra_op: int
    torch_inter_op: int
    numpy_blas: int
    opencv: int
    cpu_pieces: int
    mask_decodes: int
    anyio_workers: int
    gpu_workers: int
    cpu_worker_readers: int  # one per CPU worker process, reading its replies
    job_finishers: int
    service: int
    cuda_driver: int

    @property
    def total(self) -> int:
        return sum(vars(self).values())

    def describe(self) -> str:
        return ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in vars(self).items())


def job_finishers(cpu_workers: int) -> int:
    """The batch jobs' finishing threads with `cpu_workers` CPU worker processes."""
    return max(JOB_FINISHERS, cpu_workers)


def thread_budget(on_cuda: bool, gpu_workers: int, cpu_workers: int = 0) -> ThreadBudget:
    cores = parallel.cores()
    return ThreadBudget(torch_intra_op=CUDA_TORCH_THREADS if on_cuda else cores, torch_inter_op=1,
                        numpy_blas=int(os.environ.get("OPENBLAS_NUM_THREADS") or cores),
                        opencv=max(1, cv2.getNumThreads() - 1), cpu_pieces=cores,
                        mask_decodes=imageio.DECODE_SLOTS, anyio_workers=ANYIO_WORKER_THREADS,
                        gpu_workers=gpu_workers, cpu_worker_readers=cpu_workers,
                        job_finishers=job_finishers(cpu_workers), service=SERVICE_THREADS,
                        cuda_driver=CUDA_DRIVER_THREADS if on_cuda else 0)


def bound_process(on_cuda: bool, gpu_workers: int, cpu_workers: int = 0) -> ThreadBudget:
    """Set torch's pools and the heap's arenas for a server; returns the thread budget, which the
    caller logs once start-up has got past the settings' checks."""
    budget = thread_budget(on_cuda, gpu_workers, cpu_workers)
    torch.set_num_threads(budget.torch_intra_op)
    try:
        torch.set_num_interop_threads(budget.torch_inter_op)
    except RuntimeError:  # only possible before torch's first parallel work; the default is then kept
        log.warning("torch's inter-op pool had started already: its size stays %d", torch.get_num_interop_threads())
    if "MALLOC_ARENA_MAX" not in os.environ and not mallopt(M_ARENA_MAX, MALLOC_ARENAS):
        log.info("not glibc: the C heap keeps its own arena policy")
    return budget
