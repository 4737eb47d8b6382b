"""Issue 15, item 3: what each way of overlapping the pipeline buys, measured on the real server.

    python tools/pipeline_probe.py serve VARIANT [app.py flags...]   # the server, one option switched on
    python tools/pipeline_probe.py summary RUN.json...               # one table over the load runs
                                                                     # (VARIANT.ROUND.json: rounds of a variant)
    python tools/pipeline_probe.py names                             # the variants, one a line

`bash tools/gpu_soak.sh OUT pipeline` runs the whole comparison on the GPU box: for each variant
it starts the server with `serve`, runs the load benchmark (python -m loadreport load) against
it, records the server's RSS and threads after the load, stops it, and prints `summary`. With
PIPELINE_ROUNDS=N it does that N times, the variants taking turns in each round, and the
summary gives each cell's median over the N servers and their range.

The variants are switched on here, in the probe's process, so that the service's code carries
no experiment: `serve` changes what a variant needs, then runs app.py's main as it is.
- base: the service as it is (simplejpeg decoding, a CUDA stream per GPU worker with pinned
  uploads, Gradio's queue polling every 5 ms, CUDA graphs up to 2560×1920: earlier runs of this
  probe measured those best and the service adopted them; GPU workers as configured). Variants
  measured and retired are in docs/BENCHMARKS.md with the commit that had them.
- opencv-codecs: uploads decoded by OpenCV, as before item 4: what the codec change buys.
- feather-one-strip: the feather ramp's distance transform on the whole box in the request's
  thread, as before it was cut into strips for lama.parallel's pool.
- ramp-after-model: the feather ramp computed after the model, as before the request's thread
  computed it while the model ran.
- contiguous-inputs: the model's input copied out of the image as the request prepares it, as
  before the GPU worker copied the image's view straight into page-locked memory.
- capture-first-sighting: every model input shape captured into a CUDA graph the first time it
  comes, as before a shape had to come back for it.
- exact-crop-boxes: the crop strategy's boxes as the masks make them, as before they snapped to
  a ladder of sides on the fast path.
- planned-after-decode: the mask binarized, refined and planned in the request's thread after
  both uploads are decoded, as before that was done in the mask's decoding thread.
- composed-on-a-copy: the repair pasted into a copy of the decoded photo, as before it was
  pasted into the photo itself.
- pageable-outputs: the model's output copied back into pageable memory, as before it went
  through page-locked memory.
- python-zlib: lama.png's PNGs compressed and read on Python's own zlib, as before zlib-ng's.
- zlib-ng-deflate: lama.png's segments compressed by zlib-ng (level 1, run-length strategy), as
  before ISA-L's deflate (the server's process only: under load the CPU workers keep ISA-L's).
- opencv-masks: every mask decoded by OpenCV, as before lama.mask_png read the sparse gray ones.
- png-after-model: a PNG result's segments all compressed after the model, as before those outside
  the mask's box were compressed while it ran (the server's process only).
- gradio-stubs: Gradio imported rewriting its components' type stubs, as before
  webui.gradio_import left that out (for the start to /readyz).
- gradio-listener-docs: Gradio's event listeners' docstrings rendered as Jinja templates as its
  component classes are defined, as before webui.gradio_import left that out (for the start to
  /readyz).
- interim-gradio-apps: the UI's Blocks building a FastAPI app when made and when laid out, each
  replaced by the next, as before webui.gradio_import.without_interim_apps left them out (for the
  start to /readyz).
- first-run-in-loader: the engine's first model run (the CUDA libraries' set-up) in the
  model-load thread beside Gradio's import, not in the warm-up after it (for the start to /readyz).
- jobs-callback-kept: a batch job's completion kept by the queue's future after it ran, as before
  a4513ff (a reference cycle through the job's upload, freed only by a full garbage collection).
- matplotlib-switch: Gradio's switch of matplotlib's backend around every queued event kept, as
  before webui.gradio_import left it out (the first queued event imports matplotlib: for
  tools/first_ui_repair.py).
- unsynced-saves: results saved without the fsync before their rename (the server's process
  only): what the fsync costs a repair's save stage, a question, not a way the service ran.
- saved-before-answer: /api/v1/inpaint's results written before their answers, as before the
  result-saver thread wrote them after (the server's process and its CPU workers' repairs alike).
- kernels-in-turn: the warm-up's Triton kernels compiled one after another as its runs first
  launch them, as before they were compiled ahead, all at once (for the start to /readyz with
  an empty kernel cache: gpu_soak.sh readyz with READYZ_COLD=1).
- launchers-at-first-run: the warm-up's kernels compiled ahead but their launchers (a C stub
  gcc compiles, cached on disk like the kernels) built, and the kernels loaded, at their first
  launch, one after another, as before (for the start to /readyz with an empty kernel cache).
- kernels-in-server: the warm-up's kernels compiled in the server's process after the model's
  load, as before lama.kernel_helper's process compiled them beside the start-up (for a fresh
  box's first start: gpu_soak.sh readyz with READYZ_COLD=1).
- triton-key-computed: Triton's version key (a SHA-256 of its 416 MB native library and its
  Python files) computed in the process, as before lama.triton_key kept it in the kernel cache
  folder (for the start to /readyz with the kernels cached: gpu_soak.sh readyz).
- read-ahead: first thing, a thread asks the kernel to read ahead (posix_fadvise WILLNEED) the
  runs of the libraries and the checkpoint that the start before had in the page cache, as
  tools/evict_page_cache.py --record kept them in $READAHEAD_RECORD (gpu_soak.sh readyz with
  READYZ_EVICT=1): what reading them ahead would buy a box that has just booted.
- triton-key-each-thread: every thread that needs Triton's version key before one has it finds
  it itself (walking Triton's folders to read the kept key), as before lama.triton_key made them
  wait for the first (the warm-up loads its cached kernels on every core at once: gpu_soak.sh readyz).
- unfused-convs: the fast path's convolutions with a ReLU (and a residual) as cuDNN's plain
  convolution and elementwise passes, not its fused operations: a question (do their execution
  plans hold the heap the warm-up adds?), not a way the service ran.
The number of GPU workers (several jobs' transfers overlapping one GPU's model runs) is app.py's
--gpu-workers flag, which gpu_soak.sh passes per variant.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# ------------------------------------------------------------------ the variants


def base() -> None:
    """Nothing changed."""


def opencv_codecs() -> None:
    """Every upload decoded by OpenCV (imagecodecs' array shape withheld, as before item 4)."""
    import dataclasses

    from lama import imageio

    check = imageio._check
    imageio._check = lambda data, limits: dataclasses.replace(check(data, limits), shape=None)


def feather_one_strip() -> None:
    """The feather ramp computed on the whole box in the request's thread, as before it was cut
    into strips for lama.parallel's pool."""
    from lama import masks

    masks.MIN_STRIP_PIXELS = 2**62


def ramp_after_model() -> None:
    """The feather ramp computed after the model's output came back, in compose, as before the
    request's thread computed it while the model ran."""
    from lama.engine import InpaintEngine

    feather_ahead, compose = InpaintEngine.feather_ahead, InpaintEngine.compose
    InpaintEngine.feather_ahead = lambda self, job, feather, timings=None: None  # the request thread's call

    def ramp_then_compose(self, job, outputs, feather=0, timings=None, **kwargs):
        feather_ahead(self, job, feather, timings)
        return compose(self, job, outputs, feather, timings, **kwargs)

    InpaintEngine.compose = ramp_then_compose


def contiguous_inputs() -> None:
    """Each run's input copied into an array of its own while the request prepares it (the GPU
    worker then copies that into page-locked memory), as before the worker copied the image's
    view straight into page-locked memory."""
    import numpy as np

    from lama import engine

    model_input = engine._model_input
    engine._model_input = lambda run, rgb, mask: tuple(np.ascontiguousarray(a) for a in model_input(run, rgb, mask))


def capture_first_sighting() -> None:
    """Every input shape captured into a CUDA graph the first time it comes, as before a shape
    had to come back for it (run with the load benchmark's --masks to see what that costs)."""
    from lama import fastpath

    fastpath.ShapeSightings.wants_graph = lambda self, shape: True


def exact_crop_boxes() -> None:
    """The crop strategy's boxes as the masks make them, as before they snapped to a ladder of
    sides for the fast path (run with the load benchmark's --masks to see what that costs)."""
    from lama.fastpath import LamaFastPath

    LamaFastPath.prefers_few_shapes = False


def planned_after_decode() -> None:
    """The mask's part of the preparation in the request's thread after decoding, as before the
    mask's decoding thread did it while the photo decoded."""
    from service.pipeline import RepairService

    decode = RepairService.decode
    RepairService.decode = lambda self, image, mask, name=None, options=None: decode(self, image, mask, name)


def composed_on_a_copy() -> None:
    """The repair pasted into a copy of the decoded photo, as before it was pasted into the photo."""
    from service.pipeline import RepairService

    decode = RepairService.decode

    def not_owned(self, *args, **kwargs):
        decoded = decode(self, *args, **kwargs)
        decoded.owned = False
        return decoded

    RepairService.decode = not_owned


def pageable_outputs() -> None:
    """The model's output copied back into pageable memory, as before page-locked memory."""
    from lama import reference

    reference.to_host = lambda tensor: tensor.cpu().numpy()


def run_length_deflate(zlib_module):
    """lama.png's segment deflate as it was before ISA-L's: `zlib_module`'s (zlib-ng's, or Python's
    zlib) level 1 with the run-length strategy (lama.png.deflate_segment's contract). Also for
    tools/codec_bench.py's rows."""
    def deflate_segment(raw, last: bool) -> list[bytes]:
        compressor = zlib_module.compressobj(1, zlib_module.DEFLATED, -15, 8, zlib_module.Z_RLE)
        return [compressor.compress(raw), compressor.flush(zlib_module.Z_FINISH if last else zlib_module.Z_SYNC_FLUSH)]

    return deflate_segment


def python_zlib() -> None:
    """lama.png on Python's own zlib, as before zlib-ng's (its deflate too, as then)."""
    import zlib

    from lama import png

    png.zlib_ng = zlib
    png.deflate_segment = run_length_deflate(zlib)


def zlib_ng_deflate() -> None:
    """lama.png's segments compressed by zlib-ng's deflate, as before ISA-L's."""
    from zlib_ng import zlib_ng

    from lama import png

    png.deflate_segment = run_length_deflate(zlib_ng)


def opencv_masks() -> None:
    """Every mask decoded by OpenCV, as before lama.mask_png read the sparse gray ones."""
    from lama import mask_png

    mask_png.decode = lambda data: None


def png_after_model() -> None:
    """A PNG result's segments all compressed after the model, as before the request's thread
    compressed those outside the mask's box while the model ran (in the server's process, which
    repairs one client's requests; the CPU workers' own processes are not switched)."""
    from service import pipeline

    pipeline.encode_ahead = lambda *args, **kwargs: None


def gradio_stubs() -> None:
    """Gradio imported as it imports itself, rewriting its components' type stubs, as before
    webui.gradio_import left that out (what it buys the start to /readyz)."""
    import importlib

    from webui import gradio_import

    gradio_import.import_gradio = lambda: importlib.import_module("gradio")


def gradio_listener_docs() -> None:
    """Gradio's listeners' docstrings rendered as it renders them, as before webui.gradio_import
    left that out (what it buys the start to /readyz). Set before the server imports Gradio."""
    from webui import gradio_import

    gradio_import.AFTER_IMPORT.pop(gradio_import.EVENTS_MODULE)


def interim_gradio_apps() -> None:
    """The UI's Blocks build their interim FastAPI apps (when made, when laid out), as before
    webui.gradio_import.without_interim_apps left them out (what that buys the start to /readyz).
    Set before webui.ui imports it, without importing Gradio here."""
    import contextlib

    from webui import gradio_import

    gradio_import.without_interim_apps = contextlib.nullcontext


def first_run_in_loader() -> None:
    """The engine's first model run (cuDNN's, cuBLAS's and cuFFT's set-up, the kernels' first
    use: most of the warm-up's first size) done by the model-load thread as soon as the weights
    are on the GPU, beside Gradio's import in the main thread (torch's ops release the GIL),
    instead of by the warm-up once the app is built. A small eager run: no graph captured."""
    import numpy as np

    from lama.engine import InpaintEngine

    load = InpaintEngine.__init__

    def load_then_run_once(self, *args, **kwargs):
        load(self, *args, **kwargs)
        if self.device.is_cuda:
            mask = np.zeros((256, 256), bool)
            mask[64:192, 64:192] = True
            self._repair_whole(np.zeros((256, 256, 3), np.uint8), mask)

    InpaintEngine.__init__ = load_then_run_once


def jobs_callback_kept() -> None:
    """The queue's future keeps a batch job's completion after calling it, as before a4513ff: a
    reference cycle through the job's upload and output, which only a full collection frees."""
    from service import batch_jobs

    batch_jobs._call_once_done = lambda future, then: future.add_done_callback(lambda _done: then())


def matplotlib_switch() -> None:
    """Gradio's own switch of matplotlib's backend around each queued event: the server's import of
    Gradio looks for a switch of a name Gradio does not have, so it replaces none."""
    from webui import gradio_import

    gradio_import.BACKEND_SWITCH = "kept: Gradio's own switch"


def unsynced_saves() -> None:
    """Results written and renamed without the fsync between (lama.files), in this process."""
    import os

    os.fsync = lambda _fd: None


def saved_before_answer() -> None:
    """/api/v1/inpaint's results written (and fsynced) before their answers, as before the
    result-saver thread wrote them after."""
    from service.pipeline import RepairService

    finish, finish_in_worker = RepairService.finish, RepairService.finish_in_worker
    RepairService.finish = lambda self, decoded, timed, options, answer_first=False: finish(self, decoded, timed,
                                                                                           options)
    RepairService.finish_in_worker = lambda self, repair, timed, answer_first=False: finish_in_worker(self, repair,
                                                                                                     timed)


def unfused_convs() -> None:
    """The fast path's convolutions followed by a ReLU (and a residual) as cuDNN's plain
    convolution and then elementwise passes, not cuDNN's fused operations, whose execution plans,
    one for each shape, are built at first use and kept (tools/rss_steps.py weighs them)."""
    from lama import fastnet

    fastnet._Conv.relu = lambda self, padded: self(padded).relu_()
    fastnet._Conv.add_relu = lambda self, padded, addend: self(padded).add_(addend).relu_()


def kernels_in_turn() -> None:
    """The fast path's compiling ahead left out: each kernel compiles at its first launch."""
    from lama.backend import Backend
    from lama.fastpath import LamaFastPath

    LamaFastPath.compile_ahead = Backend.compile_ahead  # nothing, but waiting for the kernel helper


def launchers_at_first_run() -> None:
    """The compiling ahead without its launchers: each is built at its kernel's first launch."""
    from lama import kernels

    kernels._load = lambda compiled: None


def kernels_in_server() -> None:
    """No helper process: the server's warm-up compiles its kernels itself."""
    from lama.kernel_helper import KernelHelper

    KernelHelper.start = classmethod(lambda cls, *args: None)


def triton_key_computed() -> None:
    """Triton's own version key function left in place (lama.kernels installs it at import)."""
    from lama import triton_key

    triton_key.kept_key = lambda package, cache_folder, compute: compute


def read_ahead() -> None:
    """The recorded runs of pages read ahead by the kernel, from a thread of their own."""
    import os
    import threading

    record = os.environ.get("READAHEAD_RECORD")
    if record is None:  # nothing recorded (gpu_soak.sh records only with READYZ_EVICT=1): as base
        print("read-ahead: no READAHEAD_RECORD, nothing read ahead", file=sys.stderr)
        return
    ranges = json.loads(Path(record).read_text())

    def advise() -> None:
        for name, runs in ranges.items():
            try:
                descriptor = os.open(name, os.O_RDONLY)
            except OSError:
                continue
            try:
                for offset, length in runs:
                    os.posix_fadvise(descriptor, offset, length, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(descriptor)

    threading.Thread(target=advise, name="read-ahead", daemon=True).start()


def triton_key_each_thread() -> None:
    """lama.triton_key's kept key without its lock: each thread asking before one has it reads it."""
    from lama import triton_key

    def kept_key(package, cache_folder, compute):
        known = []

        def key():
            if not known:
                known.append(triton_key.kept_or_computed(package, Path(cache_folder()) / triton_key.KEPT_FILE,
                                                          compute))
            return known[0]

        return key

    triton_key.kept_key = kept_key


def worker_threads_all() -> None:
    """Each CPU worker's pools with a thread per core, instead of its share of the cores."""
    from service import cpu_workers

    cpu_workers.threads_per_worker = lambda workers, cores: cores


VARIANTS = {"base": base, "opencv-codecs": opencv_codecs, "feather-one-strip": feather_one_strip,
            "ramp-after-model": ramp_after_model, "contiguous-inputs": contiguous_inputs,
            "capture-first-sighting": capture_first_sighting, "exact-crop-boxes": exact_crop_boxes,
            "planned-after-decode": planned_after_decode, "composed-on-a-copy": composed_on_a_copy,
            "pageable-outputs": pageable_outputs, "python-zlib": python_zlib, "zlib-ng-deflate": zlib_ng_deflate,
            "opencv-masks": opencv_masks,
            "worker-threads-all": worker_threads_all, "png-after-model": png_after_model,
            "gradio-stubs": gradio_stubs, "gradio-listener-docs": gradio_listener_docs,
            "interim-gradio-apps": interim_gradio_apps,
            "first-run-in-loader": first_run_in_loader,
            "jobs-callback-kept": jobs_callback_kept, "matplotlib-switch": matplotlib_switch,
            "unsynced-saves": unsynced_saves, "saved-before-answer": saved_before_answer,
            "unfused-convs": unfused_convs, "kernels-in-turn": kernels_in_turn,
            "launchers-at-first-run": launchers_at_first_run, "kernels-in-server": kernels_in_server,
            "triton-key-computed": triton_key_computed, "triton-key-each-thread": triton_key_each_thread,
            "read-ahead": read_ahead}


# ------------------------------------------------------------------ the summary


def summary(paths: list[Path]) -> str:
    """One row per variant and cell: throughput, latency, the server's infer stage and total (the
    medians of its Server-Timing: one client's total is what issue 15 sets targets for), GPU busy,
    share of model-only, and throughput against the base runs' same cell. A run named
    VARIANT.ROUND is one of several servers of that variant (gpu_soak.sh's PIPELINE_ROUNDS): a
    row gives the median over its rounds and the range of their throughputs, since one server's
    cells can differ from the next one's by more than a change does. Each run's .proc file
    (beside its JSON, written by gpu_soak.sh) adds the server's RSS and threads after its load
    (the last round's)."""
    cells: dict[str, dict[tuple, list[dict[str, Any]]]] = {}
    processes: dict[str, dict[str, str]] = {}
    for path in paths:
        name = path.stem.partition(".")[0]  # variants' names have no dots
        for cell in json.loads(path.read_text())["cells"]:
            cells.setdefault(name, {}).setdefault(_cell_key(cell), []).append(cell["summary"])
        processes[name] = _proc(path.with_suffix(".proc"))
    base_rate = {key: _median(rounds, "requests_per_s") for key, rounds in cells.get("base", {}).items()}
    lines = ["| variant | size | clients | servers | req/s | range | vs base | p50 ms | infer ms | server total ms |"
             " GPU busy | share of model-only | RSS after, MB | threads after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_cell in cells.items():
        process = processes[name]
        for (width, height, settings, clients), rounds in by_cell.items():
            rates = [figures["requests_per_s"] for figures in rounds]
            rate, reference = statistics.median(rates), base_rate.get((width, height, settings, clients))
            lines.append(" | ".join([
                f"| {name}", f"{width}×{height} {settings}", str(clients), str(len(rounds)), f"{rate:.1f}",
                f"{min(rates):.1f}–{max(rates):.1f}" if len(rounds) > 1 else "–",
                f"{rate / reference:.2f}×" if reference else "–",
                _ms(_median(rounds, "latency_p50_s")), _ms(_stage_median(rounds, "infer")),
                _ms(_stage_median(rounds, "total")),
                _percent(_median(rounds, "gpu_busy_ratio")), _percent(_median(rounds, "capacity_ratio")),
                process.get("rss_mb", "–"), process.get("threads", "–")]) + " |")
    return "\n".join(lines)


def _median(rounds: list[dict[str, Any]], figure: str) -> float | None:
    values = [figures[figure] for figures in rounds if figures.get(figure) is not None]
    return statistics.median(values) if values else None


def _stage_median(rounds: list[dict[str, Any]], stage: str) -> float | None:
    """The median over the rounds of a Server-Timing stage's median (None where none has it)."""
    values = [figures["stage_medians_s"][stage] for figures in rounds
              if figures["stage_medians_s"].get(stage) is not None]
    return statistics.median(values) if values else None


def _cell_key(cell: dict[str, Any]) -> tuple:
    return cell["width"], cell["height"], cell["settings"], cell["clients"]


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f}"


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.0%}"


def _proc(path: Path) -> dict[str, str]:
    """The server's `VmRSS:` and `Threads:` from /proc/PID/status, as gpu_soak.sh saved them."""
    text = path.read_text() if path.exists() else ""
    rss, threads = re.search(r"VmRSS:\s*(\d+)", text), re.search(r"Threads:\s*(\d+)", text)
    return {**({"rss_mb": f"{int(rss.group(1)) / 1024:.0f}"} if rss else {}),
            **({"threads": threads.group(1)} if threads else {})}


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "serve" and argv[1] in VARIANTS:
        VARIANTS[argv[1]]()
        import app

        app.main(argv[2:])
    elif len(argv) >= 2 and argv[0] == "summary":
        print(summary([Path(path) for path in argv[1:]]))
    elif argv == ["names"]:  # for tools/gpu_soak.sh
        print("\n".join(VARIANTS))
    else:
        raise SystemExit(f"usage: pipeline_probe.py serve {{{'|'.join(VARIANTS)}}} [app.py flags...]\n"
                         "       pipeline_probe.py summary RUN.json...\n"
                         "       pipeline_probe.py names")


if __name__ == "__main__":
    main(sys.argv[1:])
