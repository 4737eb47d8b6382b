"""The composition root: settings -> engine, service, lifecycle, API and UI, and the server that
runs them. app.py, the entry point, calls it; so do the tests that build the app in process."""

from __future__ import annotations

import ipaddress
import logging
import logging.handlers
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from webui.settings import Settings, resolve_cpu_workers, resolve_gpu_workers

if TYPE_CHECKING:  # lama (and torch) load when the app is built, after the settings are read
    from lama.kernel_helper import KernelHelper
    from lama.resources import ThreadBudget

APP_LOG_MAX_BYTES = 10 * 2**20
APP_LOG_BACKUPS = 5

# Files (the UI's results and uploads, batch results) go out in reads of this size. Starlette's
# FileResponse reads 64 KB at a time, each read a hop to a worker thread and back on the event
# loop that serves every request: 350 of them for a 22 MB 4000×3000 PNG (docs/EDITOR.md).
FILE_CHUNK_BYTES = 2**20
# NVIDIA's driver is loaded where this exists: a box without it gets no kernel helper process.
CUDA_CONTROL_DEVICE = "/dev/nvidiactl"

log = logging.getLogger("app")


# The GPU transfers' pinned buffers go back once the queue has been idle this long (the sweep runs
# every minute): the next repair pins its buffers again, a few milliseconds, so a server in use keeps them.
PINNED_RELEASE_IDLE_S = 30.0


def release_pinned_when_idle(queue, device) -> None:
    """The sweep's step for the engine's page-locked buffers (lama.device): RSS at rest without them.
    A failing GPU raises here; the sweep logs it and goes on (the probes report the GPU)."""
    if queue.idle_s >= PINNED_RELEASE_IDLE_S:
        device.release_pinned_host_memory()


def setup_logging(logs_dir: Path) -> None:
    logs_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(logs_dir / "app.log", maxBytes=APP_LOG_MAX_BYTES,
                                                        backupCount=APP_LOG_BACKUPS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), file_handler], force=True)


# Request bodies of every route but the two that take files: Gradio's JSON events and the login
# form. The UI's largest, a repair's queue/join, is about 1 kB (measured in Chromium).
OTHER_BODY_BYTES = 1 << 20


def edge_policy(settings: Settings):
    """What webui.edge lets in: Host names, other sites' origins, and each route's body size (a
    repair: two files at the per-file limit and their form; the UI's upload route: one file)."""
    from gradio.route_utils import API_PREFIX as GRADIO_API_PREFIX

    from webui.api import REPAIR_PATHS, UPLOAD_OVERHEAD_BYTES, inpaint_body_limit
    from webui.edge import BodyLimits, EdgePolicy

    per_file = settings.max_upload_mb * 2**20
    body_limits = BodyLimits(OTHER_BODY_BYTES, {**{path: inpaint_body_limit(per_file) for path in REPAIR_PATHS},
                                                f"{GRADIO_API_PREFIX}/upload": per_file + UPLOAD_OVERHEAD_BYTES})
    return EdgePolicy.create(settings.host, body_limits, settings.allowed_hosts, settings.allowed_origins)


def kernel_cache_folder(configured: str) -> Path:
    """Where Triton is to keep the kernels it compiles: the configured folder, or where that cannot
    be written (a read-only volume), one in the machine's temporary folder, with a warning. Triton
    compiles nothing without a cache it can write to: the fast path's first launch would fail."""
    folder = Path(configured).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return folder
    except OSError as error:
        fallback = Path(tempfile.gettempdir()) / f"lama-kernel-cache-{os.getuid()}"
        log.warning("kernel_cache_dir %s cannot be written (%s): the GPU kernels are compiled into %s, which a new "
                    "container or a reboot loses; give kernel_cache_dir a writable folder that outlives the process",
                    folder, error.strerror or error, fallback)
        return fallback


def use_kernel_cache(settings: Settings) -> None:
    """The GPU kernels compiled at warm-up are kept on disk: a restart loads them instead of
    compiling them again (an operator's TRITON_CACHE_DIR wins; the CPU compiles none)."""
    if "TRITON_CACHE_DIR" not in os.environ and settings.device != "cpu":
        os.environ["TRITON_CACHE_DIR"] = str(kernel_cache_folder(settings.kernel_cache_dir))


def start_kernel_helper(settings: Settings) -> KernelHelper | None:
    """Where the warm-up's kernels are not in the kernel cache yet, a process of their own
    compiles them from now on (lama/kernel_helper.py), beside this one's imports and model load;
    None where there is no GPU. First thing in a server's start: before torch is imported here."""
    if settings.device == "cpu" or not Path(CUDA_CONTROL_DEVICE).exists():
        return None
    use_kernel_cache(settings)
    from lama.kernel_helper import KernelHelper

    return KernelHelper.start(Path(os.environ["TRITON_CACHE_DIR"]), settings.model, settings.device,
                              settings.precision, settings.model_max_side, settings.gpu_memory_fraction)


def build_app(settings: Settings, kernels: KernelHelper | None = None):
    """Engine, service, API and UI, ready to serve; the warm-up runs in the background.
    `kernels`: start_kernel_helper's, which the warm-up waits for before it compiles."""
    # Gradio keeps the UI's uploads and results here and serves them to whoever holds their URL:
    # a folder of this app's own (not the machine-wide /tmp/gradio that other Gradio apps share),
    # emptied after ui_cache_max_age_s. Set before gradio is imported (some of it reads it then).
    cache_dir = Path(settings.ui_cache_dir).resolve()
    from webui import ui_cache

    try:
        ui_cache.claim(cache_dir)  # only a folder holding nothing but the service's own files
    except ui_cache.CacheFolderError as error:
        raise SystemExit(f"error: {error}") from None
    os.environ["GRADIO_TEMP_DIR"] = str(cache_dir)

    use_kernel_cache(settings)
    from service.startup import StartupTimeline

    timeline = StartupTimeline()  # logged by the warm-up once the server is ready
    # The model loads (CUDA's context, the weights, the kernels) while the web stack imports:
    # each took seconds of the start-up alone, and the loading waits mostly outside the GIL.
    # The engine's modules are imported here first, so that the two threads never import the
    # same modules at once.
    from lama.engine import HDSettings, InpaintEngine
    from lama.errors import ModelError

    timeline.mark("torch imported")  # app.py's bound_process imports it (its thread pools); the engine's modules now

    def load_engine() -> InpaintEngine:
        try:
            engine = InpaintEngine(settings.model, settings.device, settings.precision,
                                   HDSettings(max_side=settings.model_max_side))
        except ModelError as error:
            raise SystemExit(f"error: {error}") from None
        timeline.mark("model loaded")
        return engine

    with ThreadPoolExecutor(1, thread_name_prefix="model-load") as loader:
        loading = loader.submit(load_engine)
        from webui.gradio_import import import_gradio

        gr = import_gradio()  # first, so that the modules below find it imported
        timeline.mark("Gradio imported")
        from starlette.responses import FileResponse

        from lama import heap
        from lama.imageio import ImageLimits
        from monitor.metrics import ServiceMetrics
        from monitor.requestlog import RequestLog
        from monitor.sampler import Sampler
        from lama import parallel
        from service.batch_jobs import BatchJobs
        from service import cpu_workers
        from service.jobs import JobQueue
        from service.lifecycle import Lifecycle
        from service.pipeline import RepairOptions, RepairService
        from service.storage import OutputStore, Retention
        from service.warmup import WarmUp
        from webui.api import create_api
        from webui.edge import EdgeMiddleware
        from webui.errors import status_of
        from webui.ui import build_ui, gradio_cache_clean_up
        from webui.ui_guard import UIGuard

        engine = loading.result()
    # The preset's share of the card: the limit of what the process may allocate, and what the
    # memory budget is computed from once the warm-up has measured the memory at rest.
    engine.device.limit_memory(settings.gpu_memory_fraction)
    if kernels is not None and not engine.device.is_cuda:  # a driver, but no GPU torch can use
        kernels.stop()
        kernels = None
    log.info("engine: %s", engine.describe())

    logs = Path(settings.logs_dir)
    sampler = None
    if settings.monitor_interval > 0:
        sampler = Sampler(settings.monitor_interval, log_path=logs / "monitor.jsonl",
                          log_max_bytes=settings.monitor_log_max_bytes, log_backups=settings.monitor_log_backups,
                          disk_path=Path(settings.outputs_dir),
                          allocator=engine.device.allocator_reading)
    requests = RequestLog(logs / "requests.jsonl", max_bytes=settings.monitor_log_max_bytes,
                          backups=settings.monitor_log_backups)

    # The budget is known once the warm-up has measured what the process holds at rest.
    workers = resolve_gpu_workers(settings.gpu_workers, engine.device.is_cuda)
    queue = JobQueue(settings.queue_capacity, workers=workers,
                     stuck_after_s=settings.queue_stuck_after_s or None)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth,
                             model_loaded=lambda: float(engine.backend.model_loaded),
                             gpu_available=lambda: float(engine.device.is_cuda),
                             latest_sample=sampler.latest if sampler else (lambda: None),
                             gpu_admission=queue.admission,
                             fp16_fallbacks=lambda: engine.fp16_fallbacks)
    limits = ImageLimits(max_bytes=settings.max_upload_mb * 2**20, max_pixels=settings.max_pixels,
                         max_side=settings.max_side)
    outputs = OutputStore(Path(settings.outputs_dir), keep_days=settings.outputs_keep_days,
                          keep_bytes=int(settings.outputs_keep_gb * 1e9))
    # Writes are atomic, so a server killed mid-write leaves only a hidden temporary file, whose
    # lock died with it: removed now, whoever wrote it (files being written by others stay).
    try:
        outputs.remove_temp_files()
    except OSError as error:
        log.warning("outputs: cannot clean %s: %s", outputs.root, error)
    cpu_pool = None
    if count := resolve_cpu_workers(settings.cpu_workers, engine.device.is_cuda, parallel.cores()):
        config = cpu_workers.WorkerConfig(engine.hd, engine.backend.prefers_few_shapes, limits,
                              threads=cpu_workers.threads_per_worker(count, parallel.cores()))
        cpu_pool = cpu_workers.CpuWorkers(count, config)
        metrics.watch_cpu_workers(in_flight=lambda: cpu_pool.in_flight, restarts=lambda: cpu_pool.restarts)
        log.info("CPU workers: %d processes for the API's repairs under load, %d threads each", count, config.threads)
    service = RepairService(engine, outputs, queue, metrics, limits, sampler=sampler, requests=requests,
                            status_of=status_of, cpu_workers=cpu_pool)
    metrics.watch_saves(lambda: service.saves_pending)
    if engine.device.is_cuda:
        metrics.watch_pinned_host(engine.device.pinned_host_bytes)
    # Batch jobs' records go with their results; the UI's upload cache is swept with the outputs too,
    # for what Gradio's own clean-up of it misses (the files of a server that was killed). Two of
    # Gradio's rounds later than Gradio: it forgets the path of a file only where it removed the file
    # itself, and kept every path the service's sweep had removed first for good.
    jobs = BatchJobs(service, settings.queue_capacity, settings.outputs_keep_days)
    clean_up = gradio_cache_clean_up(settings.ui_cache_max_age_s)
    sweep_ui_cache = [partial(ui_cache.sweep, cache_dir, clean_up[1] + 2 * clean_up[0])] if clean_up else []
    # And the C heap's free pages go back to the kernel, so that RSS at rest is what the process holds,
    # as do the GPU transfers' page-locked buffers once the GPU has been idle a while.
    retention = Retention(outputs, [*sweep_ui_cache, jobs.sweep, partial(release_pinned_when_idle, queue, engine.device),
                                    heap.release_free_heap])
    # Every thread's owner (service/lifecycle.py): started by the app's lifespan, stopped after the last response.
    lifecycle = Lifecycle()
    if sampler is not None:
        lifecycle.add("monitor sampler", sampler.start, sampler.stop)
    lifecycle.add("outputs retention", retention.start, retention.stop)
    lifecycle.add("result savers", None, service.finish_saves)
    if cpu_pool is not None:
        lifecycle.add("CPU workers", cpu_pool.start, cpu_pool.stop)
    # Stopped after the queue: the jobs it finishes or cancels then still get their records.
    lifecycle.add("batch job finishers", None, jobs.shutdown)
    # At shutdown the drain has already waited its bound: jobs still queued have lost their
    # requests, and one still running gets a second more, not another bound.
    lifecycle.add("GPU queue", None, partial(queue.shutdown, cancel_waiting=True, timeout_s=1.0))
    warm_up = WarmUp(engine, queue, service, settings.preset,
                     settle=lambda: (engine.device.release_pinned_host_memory(), heap.release_free_heap()),
                     kernels=kernels, timeline=timeline)
    lifecycle.add("warm-up", warm_up.start, warm_up.stop)

    defaults = RepairOptions(settings.strategy, settings.dilate, settings.feather,
                             mask_threshold=settings.mask_threshold, keep_metadata=settings.keep_metadata)
    api = create_api(service, api_token=settings.api_token, defaults=defaults, jobs=jobs,
                     lifespan=lifecycle.lifespan)
    api.state.lifecycle = lifecycle
    # Added last, so outermost: Host, Origin, CORS and body size for every route, API and UI alike.
    api.add_middleware(EdgeMiddleware, policy=edge_policy(settings))
    auth = tuple(settings.auth.split(":", 1)) if settings.auth else None
    api.state.retention = retention
    api.state.ui_cache_dir = cache_dir  # where Gradio keeps the UI's uploads (tests and hooks)
    FileResponse.chunk_size = FILE_CHUNK_BYTES  # Starlette's class attribute: every file route's, Gradio's too
    # Gradio's routes are guarded before Gradio reads a request (webui.ui_guard): with --auth every
    # route but the login page, login throttling, the cache quota of its upload route. A file
    # there may be as large as the API's per-file limit; the cache folder's marker is not served.
    guard = UIGuard.middleware(cache_dir, upload_max_bytes=limits.max_bytes,
                               cache_max_bytes=int(settings.ui_cache_max_mb * 2**20))
    app = gr.mount_gradio_app(api, build_ui(service, defaults, settings.ui_cache_max_age_s), path="/", auth=auth,
                              max_file_size=limits.max_bytes, blocked_paths=[str(cache_dir / ui_cache.MARKER)],
                              # Gradio's "Use via API" would list only its private events: scripts
                              # have the HTTP API, which the page links to (/docs).
                              footer_links=["gradio", "settings"],
                              # Gradio's traffic page: the service has its own monitor (webui/ui.py).
                              enable_monitoring=False,
                              app_kwargs={"middleware": [guard]})
    timeline.mark("app built")
    return app


def warn_if_exposed(settings: Settings) -> None:
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and not (settings.auth and settings.api_token):
        log.warning("!!! listening on %s without %s: anyone who can reach this port can use it !!!",
                    settings.host, " and ".join(name for name, value in
                                                (("--auth", settings.auth), ("--api-token", settings.api_token))
                                                if not value))


def make_server(app, settings: Settings):
    """uvicorn with the drain of webui/server.py in front of its graceful shutdown."""
    import uvicorn

    from webui.server import DrainingServer, gradio_stream_ender

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)))
    return DrainingServer(config, app.state.service, settings.shutdown_timeout_s, gradio_stream_ender(app))


def bound_process(settings: Settings) -> ThreadBudget:
    """Threads and heap arenas bounded before any pool starts (lama/resources.py says what holds
    threads and why these bounds); a server's process-wide settings, so here and not in build_app."""
    from lama import parallel, resources
    from lama.device import Device
    from lama.errors import ModelError

    try:
        on_cuda = Device.resolve(settings.device).is_cuda
    except ModelError as error:
        raise SystemExit(f"error: {error}") from None
    return resources.bound_process(on_cuda, resolve_gpu_workers(settings.gpu_workers, on_cuda),
                                   resolve_cpu_workers(settings.cpu_workers, on_cuda, parallel.cores()))
