"""The device a backend runs on, and everything the rest of the project asks of it.

The service, the composition root and the monitor never touch torch: what they need of the GPU
(its share of memory and the budget that follows from it, peak measurement, the out-of-memory
retry, recognising a CUDA failure, a probe that tells whether the GPU works again, the
allocator's readings) are methods of `Device`, and its failures are this module's two errors.
On the CPU every method is a cheap no-op or answers None, so callers never ask which it is.

The CUDA-only lines are few and kept plain: they run on the GPU box (tests/gpu/), not in CI.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from lama.device_choices import DEVICES, PRECISIONS
from lama.errors import EngineError
from lama.memory import budget_bytes

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# How a CUDA failure reads when torch raises it as a plain RuntimeError (older torch, cuFFT, cuBLAS).
GPU_ERROR_MARKERS = ("CUDA error", "CUDA driver error", "cuDNN error", "CUBLAS_STATUS_", "CUFFT_", "CUDNN_STATUS_")

T = TypeVar("T")


# The device's two failures are signals for the service, which answers them with the error tree's
# GpuOutOfMemoryError and GpuFailedError (messages for people) and notes the failure for readiness.

class GpuOutOfMemory(Exception):
    """The GPU ran out of memory for a job twice in a row, its cache freed in between."""


class GpuFailure(Exception):
    """The GPU itself failed (lost device, illegal access, driver error): not the job's fault.
    The message is the first line of torch's (for operators); the original error is the cause."""


def is_gpu_error(error: BaseException) -> bool:
    """A CUDA failure rather than a bug or bad input."""
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in GPU_ERROR_MARKERS)


@contextlib.contextmanager
def gpu_failures() -> Iterator[None]:
    """Re-raises a CUDA failure inside the block as GpuFailure; anything else passes untouched."""
    try:
        yield
    except Exception as error:
        if not is_gpu_error(error):
            raise
        text = str(error).strip()
        raise GpuFailure(f"{type(error).__name__}: {text.splitlines()[0] if text else ''}") from error


class Device:
    """A torch device as the service sees it. Use `Device.resolve(name)` or `Device.cpu()`."""

    def __init__(self, device: torch.device):
        self.torch = device
        self.memory_fraction: float | None = None  # the share of the card set by limit_memory
        self._threads = threading.local()  # each thread's own CUDA stream (worker_stream)

    @classmethod
    def resolve(cls, name: str) -> Device:
        """'auto' picks CUDA when present; asking for CUDA without it is an error, not a silent CPU run."""
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cpu":
            return cls.cpu()
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"device {name!r} requested but CUDA is not available "
                                  "(no GPU, or torch was installed without CUDA); use --device cpu")
            resolved = torch.device(name)
            # Always with an index: memory queries and limits want to know which GPU.
            index = resolved.index if resolved.index is not None else torch.cuda.current_device()
            return cls(torch.device("cuda", index))
        raise EngineError(f"unknown device {name!r}: expected one of {', '.join(DEVICES)}")

    @classmethod
    def cpu(cls) -> Device:
        return cls(torch.device("cpu"))

    def precision(self, name: str) -> str:
        """'auto' is fp16 on CUDA (half the memory, tensor cores) and fp32 on CPU."""
        if name == "auto":
            return "fp16" if self.is_cuda else "fp32"
        if name not in DTYPES:
            raise EngineError(f"unknown precision {name!r}: expected one of {', '.join(PRECISIONS)}")
        if name == "fp16" and not self.is_cuda:
            raise EngineError("fp16 needs a CUDA device; on the CPU use --precision fp32 (or auto)")
        return name

    @property
    def is_cuda(self) -> bool:
        return self.torch.type == "cuda"

    @property
    def index(self) -> int | None:
        """The CUDA ordinal (what NVML's readings are matched by); None on the CPU."""
        return self.torch.index

    def __str__(self) -> str:
        return str(self.torch)

    def __repr__(self) -> str:
        return f"Device({str(self.torch)!r})"

    # ------------------------------------------------------------------ memory share and budget

    def limit_memory(self, fraction: float) -> None:
        """Let this process reserve at most `fraction` of the card: allocations beyond it fail (and
        are retried or refused) instead of starving other processes on a shared GPU. The same
        number is what budget_bytes divides, so the limit and the budget cannot disagree."""
        self.memory_fraction = fraction
        if self.is_cuda:
            torch.cuda.set_per_process_memory_fraction(fraction, self.torch)

    def budget_bytes(self, steady_bytes: int) -> int | None:
        """The bytes concurrent jobs may hold together: the share set by limit_memory less what the
        process holds at rest; None on the CPU or before a share was set."""
        if not self.is_cuda or self.memory_fraction is None:
            return None
        return budget_bytes(torch.cuda.mem_get_info(self.torch)[1], self.memory_fraction, steady_bytes)

    # ------------------------------------------------------------------ streams

    def worker_stream(self) -> contextlib.AbstractContextManager[object]:
        """The calling thread's own CUDA stream, made the current one for the block (nothing on
        the CPU). On one stream, every GPU worker's copies and kernels queue behind each other's;
        on a stream per worker, one job's uploads, downloads and waits overlap another's model run
        (measured: docs/BENCHMARKS.md, "Which pipeline change buys throughput"). What the model
        itself shares between workers (lama.fastpath.GraphRunner) orders their runs with events.
        """
        if not self.is_cuda:
            return contextlib.nullcontext()
        stream = getattr(self._threads, "stream", None)
        if stream is None:
            stream = self._threads.stream = torch.cuda.Stream(self.torch)
        # Whatever was issued on the default stream before (the weights, the warm-up) comes first.
        stream.wait_stream(torch.cuda.default_stream(self.torch))
        return torch.cuda.stream(stream)

    # ------------------------------------------------------------------ measuring

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.torch)

    def reset_peak(self) -> None:
        """GpuFailure when the GPU fails (a lost GPU fails its allocator's counters too)."""
        if self.is_cuda:
            with gpu_failures():
                torch.cuda.reset_peak_memory_stats(self.torch)

    def peak_bytes(self) -> int | None:
        """The allocator's peak since the last reset_peak (the process's, all threads); None on the
        CPU; GpuFailure when the GPU fails."""
        if not self.is_cuda:
            return None
        with gpu_failures():
            return torch.cuda.max_memory_allocated(self.torch)

    def peak_above_baseline(self, run: Callable[[], object]) -> int | None:
        """Peak bytes allocated during `run` above what was held before it; None on the CPU."""
        if not self.is_cuda:
            run()
            return None
        torch.cuda.synchronize(self.torch)
        baseline = torch.cuda.memory_allocated(self.torch)
        torch.cuda.reset_peak_memory_stats(self.torch)
        run()
        torch.cuda.synchronize(self.torch)
        return max(0, torch.cuda.max_memory_allocated(self.torch) - baseline)

    def free_cache(self) -> None:
        """Hands the allocator's unused blocks back to the driver, once the device is idle."""
        if self.is_cuda:
            torch.cuda.synchronize(self.torch)
            torch.cuda.empty_cache()

    def pinned_host_bytes(self) -> int | None:
        """Page-locked host memory in torch's pinned-block cache (blocks in use and cached): the
        transfers' staging buffers (lama.reference), part of the process's RSS that the kernel can
        never page out. None on the CPU, or where this torch keeps no such statistics."""
        if not self.is_cuda:
            return None
        with gpu_failures():
            held = torch.cuda.host_memory_stats().get("allocated_bytes.current")
        return None if held is None else int(held)

    def release_pinned_host_memory(self) -> None:
        """Hands torch's cached page-locked blocks that no transfer uses back to the system. Each
        cudaFreeHost waits for the device, and the next transfer of that size pins its pages
        again (milliseconds): for a service that has been idle a while, not between requests."""
        if not self.is_cuda:
            return
        # torch.accelerator's in recent PyTorch; the private hook it replaced in older ones.
        empty = getattr(torch.accelerator, "empty_host_cache", None) or getattr(torch._C, "_host_emptyCache", None)
        if empty is not None:
            with gpu_failures():
                empty()

    def steady_reserved_bytes(self) -> int | None:
        """What the process keeps on the GPU once nothing runs: the weights, the CUDA graphs'
        private pools and whatever the allocator cannot give back (free_cache frees the rest)."""
        if not self.is_cuda:
            return None
        self.free_cache()
        return torch.cuda.memory_reserved(self.torch)

    def allocator_reading(self) -> dict[str, int] | None:
        """This process's CUDA allocator, for the monitor's samples; None on the CPU."""
        if not self.is_cuda:
            return None
        return {"memory_allocated_bytes": torch.cuda.memory_allocated(self.torch),
                "memory_reserved_bytes": torch.cuda.memory_reserved(self.torch),
                "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(self.torch)}

    def memory_report(self) -> dict[str, Any] | None:
        """The card's name and memory, for /healthz; None on the CPU; GpuFailure when the GPU fails."""
        if not self.is_cuda:
            return None
        with gpu_failures():
            free, total = torch.cuda.mem_get_info(self.torch)
            return {"name": self.gpu_name(),
                    "memory_allocated_bytes": torch.cuda.memory_allocated(self.torch),
                    "memory_reserved_bytes": torch.cuda.memory_reserved(self.torch),
                    "memory_free_bytes": free, "memory_total_bytes": total}

    def gpu_name(self) -> str | None:
        """'NVIDIA H200'; None on the CPU."""
        return torch.cuda.get_device_name(self.torch) if self.is_cuda else None

    # ------------------------------------------------------------------ failures

    def run(self, job: Callable[[], T], on_retry: Callable[[], None] = lambda: None) -> T:
        """`job()`, with the device's failures as this module's errors.

        Out of memory is often fragmentation or another process's burst: the cache is freed,
        `on_retry` called (to log it) and the job run once more; a second time raises
        GpuOutOfMemory. A CUDA failure raises GpuFailure. (The cache call is harmless on a
        process that never used CUDA, so this does not ask which device it is.)
        """
        with gpu_failures():
            try:
                return job()
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
            on_retry()
            try:
                return job()
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
        raise GpuOutOfMemory("the GPU ran out of memory twice") from None

    def probe(self) -> None:
        """The smallest GPU work there is; raises GpuFailure while the GPU fails (nothing on the CPU)."""
        if self.is_cuda:
            with gpu_failures():
                torch.ones(8, device=self.torch).sum().item()
                torch.cuda.synchronize(self.torch)
