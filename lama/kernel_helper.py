"""The warm-up's GPU kernels compiled in a process of its own while the server starts.

On a GPU box whose kernel cache is empty (a fresh box, a new node's first pod) the server's first
start compiled the fast path's Triton kernels after the model had loaded: 15 kernels in 2.9-3.4 s
on an H100's 16 cores (docs/BENCHMARKS.md). Everything before that point (torch's and Gradio's
imports, the model's load) keeps the server's one interpreter busy, so the compiling could
overlap none of it there. A helper process started first thing loads the same model, compiles the
same kernels into the same cache folder (`InpaintEngine.compile_ahead`) and exits, on cores the
server's imports leave idle; the server's warm-up waits for it, then finds every kernel in the
cache.

The helper is started only while the cache folder holds no record that a warm-up completed with
this engine code, this Triton, this model, device, precision and size limit: a restart, whose
kernels are cached, starts none. Torch-free to import: the server starts the helper before it
imports torch.

    python -m lama.kernel_helper [--model PATH] [--device cuda:0] [--precision fp16] [--model-max-side N]
                                 [--gpu-memory-fraction F]

It holds at most the server's share of the card (`--gpu-memory-fraction`): on a GPU shared with
other servers, its forwards must not take what theirs are using.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lama.files import write_bytes_atomic

log = logging.getLogger(__name__)

MARKER = "lama-kernels-complete.json"
# The sources whose change may change which kernels a warm-up launches.
CODE = ("engine.py", "planning.py", "fastpath.py", "fastnet.py", "kernels.py", "kernel_helper.py")
WAIT_S = 300.0  # a helper still compiling after this is stopped: the warm-up compiles what is left


def configuration(model: str | None, device: str, precision: str, model_max_side: int | None) -> dict[str, Any]:
    """What the kernels a warm-up compiles depend on, as the record of a completed one holds it."""
    here = Path(__file__).resolve().parent
    code = hashlib.sha256(b"".join((here / name).read_bytes() for name in CODE)).hexdigest()
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = None
    weights = None
    if model is not None:
        path = Path(model).resolve()
        status = path.stat() if path.exists() else None
        weights = [str(path), status.st_size if status else None, status.st_mtime_ns if status else None]
    return {"code": code, "triton": triton, "model": weights, "device": device, "precision": precision,
            "model_max_side": model_max_side}


class KernelHelper:
    """The helper process (or none, where the cache is complete) and the record of a completed warm-up."""

    def __init__(self, cache_dir: Path, record: dict[str, Any], process: subprocess.Popen | None):
        self.cache_dir, self.record, self.process = cache_dir, record, process

    @classmethod
    def start(cls, cache_dir: Path, model: str | None, device: str, precision: str, model_max_side: int | None,
              gpu_memory_fraction: float = 1.0) -> KernelHelper:
        """Starts the helper unless the cache folder records a completed warm-up of this
        configuration; `cache_dir` is the kernel cache folder the helper inherits (TRITON_CACHE_DIR)."""
        record = configuration(model, device, precision, model_max_side)
        if _recorded(cache_dir / MARKER) == record:
            return cls(cache_dir, record, None)
        command = [sys.executable, "-m", "lama.kernel_helper", "--device", device, "--precision", precision,
                   "--gpu-memory-fraction", str(gpu_memory_fraction)]
        command += ["--model", model] if model is not None else []
        command += ["--model-max-side", str(model_max_side)] if model_max_side is not None else []
        log.info("kernels: none recorded as compiled in %s; a helper process compiles them while the server starts",
                 cache_dir)
        return cls(cache_dir, record, subprocess.Popen(command, stdin=subprocess.DEVNULL))

    def wait(self, timeout_s: float = WAIT_S) -> None:
        """Returns once the helper has exited (at once where there is none); one still running
        after `timeout_s` is stopped. Either way the warm-up then compiles whatever is missing."""
        process = self.process
        if process is None:
            return
        started = time.perf_counter()
        try:
            code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            log.warning("kernels: the helper process was still compiling after %.0f s and was stopped", timeout_s)
            return
        self.process = None
        if code != 0:
            log.warning("kernels: the helper process exited with status %d; the warm-up compiles them", code)
        else:
            # What the start-up still waited for the helper, in the server's log (the helper's own
            # lines go to its standard error).
            log.info("kernels: the helper process is done; the warm-up waited %.2f s for it", time.perf_counter() - started)

    def stop(self) -> None:
        """Stops a running helper (the server stops before its warm-up ended; the warm-up's thread
        may be waiting for it meanwhile)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def mark_complete(self) -> None:
        """Records that a warm-up of this configuration completed: its kernels are in the cache.
        Written whole or not at all; a folder that cannot be written costs the next start a helper."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.cache_dir / MARKER, json.dumps(self.record).encode())
        except OSError as error:
            log.warning("kernels: cannot record the completed warm-up in %s: %s", self.cache_dir, error)


def _recorded(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lama.kernel_helper", description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--model-max-side", type=int)
    parser.add_argument("--gpu-memory-fraction", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s kernel helper: %(message)s")
    from lama.engine import HDSettings, InpaintEngine

    try:
        engine = InpaintEngine(args.model, args.device, args.precision, HDSettings(max_side=args.model_max_side))
        engine.device.limit_memory(args.gpu_memory_fraction)
        engine.compile_ahead()
    except Exception as error:  # noqa: BLE001 - the server's own load says what is wrong, in its log
        log.error("stopped: %s: %s", type(error).__name__, error)
        return 1
    return 0


if __name__ == "__main__":
    status = main()
    # Out at once: the server's warm-up waits for this process to end, and the interpreter's own
    # ending (torch's exit handlers, CUDA's context) is time it would wait for nothing.
    logging.shutdown()
    os._exit(status)
