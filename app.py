"""Composition root: settings (configs/*.yaml + flags + environment) -> engine, service, web app.

    python app.py [--host H] [--port P] [--model M] [--device D] [--precision P] [--preset fast|balanced|hd]
                  [--config FILE] [--outputs-dir DIR] [--logs-dir DIR] [--api-token T] [--auth USER:PASS]
                  [--outputs-keep-days D] [--outputs-keep-gb G] [--ui-cache-dir DIR] [--ui-cache-max-age-s S]
                  [--ui-cache-max-mb MB]
                  [--shutdown-timeout-s S] [--gpu-workers auto|N] [--allowed-hosts NAMES] [--allowed-origins ORIGINS]
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import logging.handlers
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

# Before gradio is imported: the server must start and run with no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Before numpy is imported: its OpenBLAS starts a thread per core at load, and the service does
# no linear algebra in numpy (lama/resources.py counts the threads the server holds).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"
PRESETS = ("fast", "balanced", "hd")
APP_LOG_MAX_BYTES = 10 * 2**20
APP_LOG_BACKUPS = 5

log = logging.getLogger("app")


@dataclass(frozen=True)
class Settings:
    """Every setting; values come from configs/default.yaml, which names and explains each."""

    host: str
    port: int
    model: str | None
    device: str
    precision: str
    preset: str
    outputs_dir: str
    logs_dir: str
    queue_capacity: int
    queue_stuck_after_s: float  # 0: no watchdog
    gpu_workers: int | str  # a count, or "auto"
    max_upload_mb: int
    max_pixels: int
    max_side: int
    strategy: str
    dilate: int
    feather: int
    mask_threshold: int
    keep_metadata: bool
    api_token: str | None
    auth: str | None
    allowed_hosts: list[str]  # Host names accepted besides loopback names (and IP addresses on a public bind)
    allowed_origins: list[str]  # origins of other sites' pages that may send requests and read answers
    monitor_interval: float
    monitor_log_max_bytes: int
    monitor_log_backups: int
    outputs_keep_days: float
    outputs_keep_gb: float
    ui_cache_dir: str
    ui_cache_max_age_s: float
    ui_cache_max_mb: float
    kernel_cache_dir: str  # Triton's compiled kernels, kept between restarts
    shutdown_timeout_s: float
    gpu_memory_fraction: float  # from the preset
    model_max_side: int | None  # from the preset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LaMa inpainting service: web UI + HTTP API")
    parser.add_argument("--config", type=Path, help="YAML overriding configs/default.yaml")
    # Flags default to None so that only the ones given override the files.
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--model", help="checkpoint (official dir, .ckpt, big-lama.pt, .safetensors)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16"))
    parser.add_argument("--preset", choices=PRESETS)
    parser.add_argument("--outputs-dir")
    parser.add_argument("--logs-dir")
    parser.add_argument("--queue-capacity", type=int)
    parser.add_argument("--queue-stuck-after-s", type=float,
                        help="a repair running longer than this makes /readyz 503 until it ends (0: never)")
    parser.add_argument("--gpu-workers", type=_workers, metavar="auto|N",
                        help="repairs that may run at once, within the GPU memory budget (auto: 2 on CUDA, 1 on CPU)")
    parser.add_argument("--strategy", choices=("original", "resize", "crop"), help="default for repairs")
    parser.add_argument("--dilate", type=int, help="default mask dilation, px")
    parser.add_argument("--feather", type=int, help="default edge feather, px")
    parser.add_argument("--mask-threshold", type=int, help="default: mask values above it are repaired (0..254)")
    parser.add_argument("--api-token", help="or LAMA_API_TOKEN; protects /api/v1/*")
    parser.add_argument("--auth", help="USER:PASS, or LAMA_AUTH; protects the UI")
    parser.add_argument("--allowed-hosts", type=_names, metavar="NAMES",
                        help="comma-separated Host names the server answers to besides localhost (and IP addresses "
                             "when not bound to loopback); '*': any")
    parser.add_argument("--allowed-origins", type=_names, metavar="ORIGINS",
                        help="comma-separated origins (https://app.example) whose pages may call the service")
    parser.add_argument("--monitor-interval", type=float, help="seconds between resource samples (0: off)")
    parser.add_argument("--monitor-log-max-bytes", type=int, help="rotate monitor/request logs at this size")
    parser.add_argument("--monitor-log-backups", type=int, help="rotated log files kept")
    parser.add_argument("--outputs-keep-days", type=float, help="delete results older than this (0: keep)")
    parser.add_argument("--outputs-keep-gb", type=float, help="delete the oldest results beyond this (0: no limit)")
    parser.add_argument("--ui-cache-dir", help="the UI's upload cache (GRADIO_TEMP_DIR)")
    parser.add_argument("--ui-cache-max-age-s", type=float, help="delete cached uploads after this (0: keep)")
    parser.add_argument("--ui-cache-max-mb", type=float, help="UI uploads refused while the cache holds this (0: no limit)")
    parser.add_argument("--shutdown-timeout-s", type=float, help="SIGTERM: longest wait for in-flight repairs")
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


GPU_WORKERS_EXPECTED = "'auto' or a whole number of at least 1"


def _is_gpu_workers(value: object) -> bool:
    """The rule for gpu_workers, from the command line or a config file alike."""
    return value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _workers(text: str) -> int | str:
    try:
        value: object = text if text == "auto" else int(text)
    except ValueError:
        value = text
    if not _is_gpu_workers(value):
        raise argparse.ArgumentTypeError(f"expected {GPU_WORKERS_EXPECTED}, got {text!r}")
    return value


def resolve_gpu_workers(setting: int | str, on_cuda: bool) -> int:
    """'auto': two on CUDA, where one job's CPU stages overlap another's GPU work; one on the
    CPU, where the model's own threads already use every core and a second job would only
    compete for them."""
    if setting == "auto":
        return 2 if on_cuda else 1
    return int(setting)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise SystemExit(f"error: cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SystemExit(f"error: {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} must be a mapping of settings")
    return data


def load_settings(args: argparse.Namespace) -> Settings:
    """configs/default.yaml < --config < the preset's file < environment (secrets) < flags."""
    values = _read_yaml(CONFIGS / "default.yaml")
    if args.config:
        values.update(_read_yaml(args.config))
    flags = {key: value for key, value in vars(args).items() if key != "config" and value is not None}
    preset = flags.get("preset", values.get("preset"))
    if preset not in PRESETS:
        raise SystemExit(f"error: unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    values.update(_read_yaml(CONFIGS / f"{preset}.yaml"))
    values.update(flags)
    for key, variable in (("api_token", "LAMA_API_TOKEN"), ("auth", "LAMA_AUTH")):
        if os.environ.get(variable) and key not in flags:
            values[key] = os.environ[variable]
    names = {f.name for f in dataclasses.fields(Settings)}
    if unknown := sorted(set(values) - names):
        raise SystemExit(f"error: unknown setting(s) {', '.join(unknown)} in {args.config or 'the config'}")
    settings = Settings(**values)
    if settings.auth is not None and ":" not in settings.auth:
        raise SystemExit("error: --auth must be USER:PASS")
    if not _is_gpu_workers(settings.gpu_workers):
        raise SystemExit(f"error: gpu_workers must be {GPU_WORKERS_EXPECTED}, got {settings.gpu_workers!r}")
    if not (isinstance(settings.mask_threshold, int) and 0 <= settings.mask_threshold <= 254):
        raise SystemExit(f"error: mask_threshold must be a whole number from 0 to 254, got {settings.mask_threshold!r}")
    if not isinstance(settings.keep_metadata, bool):
        raise SystemExit(f"error: keep_metadata must be true or false, got {settings.keep_metadata!r}")
    _check_edge_names(settings)
    return settings


def _check_edge_names(settings: Settings) -> None:
    from webui.edge import normalise_host_name, normalise_origin

    for key, normalise in (("allowed_hosts", normalise_host_name), ("allowed_origins", normalise_origin)):
        values = getattr(settings, key)
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise SystemExit(f"error: {key} must be a list of strings, got {values!r}")
        try:
            for value in values:
                normalise(value)
        except ValueError as error:
            raise SystemExit(f"error: {key}: {error}") from None


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


def build_app(settings: Settings):
    """Engine, service, API and UI, ready to serve; the warm-up runs in the background."""
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

    import gradio as gr

    from lama import resources
    from lama.engine import HDSettings, InpaintEngine
    from lama.errors import ModelError
    from lama.imageio import ImageLimits
    from monitor.metrics import ServiceMetrics
    from monitor.requestlog import RequestLog
    from monitor.sampler import Sampler
    from service.batch_jobs import BatchJobs
    from service.jobs import JobQueue
    from service.lifecycle import Lifecycle
    from service.pipeline import RepairOptions, RepairService
    from service.storage import OutputStore, Retention
    from service.warmup import WarmUp
    from webui.api import create_api
    from webui.edge import EdgeMiddleware
    from webui.errors import status_of
    from webui.ui import build_ui
    from webui.ui_guard import UIGuard

    # The GPU kernels compiled at warm-up are kept on disk: a restart loads them instead of
    # compiling them again (an operator's TRITON_CACHE_DIR wins).
    os.environ.setdefault("TRITON_CACHE_DIR", str(Path(settings.kernel_cache_dir).resolve()))
    try:
        engine = InpaintEngine(settings.model, settings.device, settings.precision,
                               HDSettings(max_side=settings.model_max_side))
    except ModelError as error:
        raise SystemExit(f"error: {error}") from None
    # The preset's share of the card: the limit of what the process may allocate, and what the
    # memory budget is computed from once the warm-up has measured the memory at rest.
    engine.device.limit_memory(settings.gpu_memory_fraction)
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
    service = RepairService(engine, outputs, queue, metrics, limits, sampler=sampler, requests=requests,
                            status_of=status_of)
    # Batch jobs' records go with their results; the UI's upload cache is swept with the outputs too.
    jobs = BatchJobs(service, settings.queue_capacity, settings.outputs_keep_days)
    sweep_ui_cache = [partial(ui_cache.sweep, cache_dir, settings.ui_cache_max_age_s)] \
        if settings.ui_cache_max_age_s > 0 else []
    # And the C heap's free pages go back to the kernel, so that RSS at rest is what the process holds.
    retention = Retention(outputs, [*sweep_ui_cache, jobs.sweep, resources.release_free_heap])
    # Every thread's owner (service/lifecycle.py): started by the app's lifespan, stopped after the last response.
    lifecycle = Lifecycle()
    if sampler is not None:
        lifecycle.add("monitor sampler", sampler.start, sampler.stop)
    lifecycle.add("outputs retention", retention.start, retention.stop)
    # Stopped after the queue: the jobs it finishes or cancels then still get their records.
    lifecycle.add("batch job finishers", None, jobs.shutdown)
    # At shutdown the drain has already waited its bound: jobs still queued have lost their
    # requests, and one still running gets a second more, not another bound.
    lifecycle.add("GPU queue", None, partial(queue.shutdown, cancel_waiting=True, timeout_s=1.0))
    warm_up = WarmUp(engine, queue, service, settings.preset)
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
    # Gradio's routes are guarded before Gradio reads a request (webui.ui_guard): with --auth every
    # route but the login page, login throttling, the cache quota of its upload route. A file
    # there may be as large as the API's per-file limit; the cache folder's marker is not served.
    guard = UIGuard.middleware(cache_dir, upload_max_bytes=limits.max_bytes,
                               cache_max_bytes=int(settings.ui_cache_max_mb * 2**20))
    return gr.mount_gradio_app(api, build_ui(service, defaults, settings.ui_cache_max_age_s), path="/", auth=auth,
                               max_file_size=limits.max_bytes, blocked_paths=[str(cache_dir / ui_cache.MARKER)],
                               # Gradio's "Use via API" would list only its private events: scripts
                               # have the HTTP API, which the page links to (/docs).
                               footer_links=["gradio", "settings"],
                               app_kwargs={"middleware": [guard]})


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


def bound_process(settings: Settings) -> None:
    """Threads and heap arenas bounded before any pool starts (lama/resources.py says what holds
    threads and why these bounds); a server's process-wide settings, so here and not in build_app."""
    from lama import resources
    from lama.device import Device
    from lama.errors import ModelError

    try:
        on_cuda = Device.resolve(settings.device).is_cuda
    except ModelError as error:
        raise SystemExit(f"error: {error}") from None
    resources.bound_process(on_cuda, resolve_gpu_workers(settings.gpu_workers, on_cuda))


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(parse_args(argv))
    setup_logging(Path(settings.logs_dir))
    warn_if_exposed(settings)
    bound_process(settings)
    app = build_app(settings)
    make_server(app, settings).run()


if __name__ == "__main__":
    main()
