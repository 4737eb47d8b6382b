"""Composition root: settings (configs/*.yaml + flags + environment) -> engine, service, web app.

    python app.py [--host H] [--port P] [--model M] [--device D] [--precision P] [--preset fast|balanced|hd]
                  [--config FILE] [--outputs-dir DIR] [--logs-dir DIR] [--api-token T] [--auth USER:PASS]
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import logging.handlers
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before gradio is imported: the server must start and run with no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

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
    max_upload_mb: int
    max_pixels: int
    max_side: int
    strategy: str
    dilate: int
    feather: int
    api_token: str | None
    auth: str | None
    monitor_interval: float
    monitor_log_max_bytes: int
    monitor_log_backups: int
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
    parser.add_argument("--strategy", choices=("original", "resize", "crop"), help="default for repairs")
    parser.add_argument("--dilate", type=int, help="default mask dilation, px")
    parser.add_argument("--feather", type=int, help="default edge feather, px")
    parser.add_argument("--api-token", help="or LAMA_API_TOKEN; protects /api/v1/*")
    parser.add_argument("--auth", help="USER:PASS, or LAMA_AUTH; protects the UI")
    parser.add_argument("--monitor-interval", type=float, help="seconds between resource samples (0: off)")
    parser.add_argument("--monitor-log-max-bytes", type=int, help="rotate monitor/request logs at this size")
    parser.add_argument("--monitor-log-backups", type=int, help="rotated log files kept")
    return parser.parse_args(argv)


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
    return settings


def setup_logging(logs_dir: Path) -> None:
    logs_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(logs_dir / "app.log", maxBytes=APP_LOG_MAX_BYTES,
                                                        backupCount=APP_LOG_BACKUPS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), file_handler], force=True)


def build_app(settings: Settings):
    """Engine, service, API and UI, ready to serve; the warm-up runs in the background."""
    import gradio as gr
    import torch

    from lama.engine import EngineError, HDSettings, InpaintEngine
    from lama.checkpoint import CheckpointError
    from lama.imageio import ImageLimits
    from monitor.metrics import ServiceMetrics
    from monitor.requestlog import RequestLog
    from monitor.sampler import Sampler
    from webui.api import create_api
    from webui.jobs import JobQueue
    from webui.outputs import OutputStore
    from webui.service import RepairOptions, RepairService
    from webui.ui import build_ui

    try:
        engine = InpaintEngine(settings.model, settings.device, settings.precision,
                               HDSettings(max_side=settings.model_max_side))
    except (CheckpointError, EngineError) as error:
        raise SystemExit(f"error: {error}") from None
    if engine.device.type == "cuda":
        # The preset's share of the card: allocations beyond it fail (and are retried or
        # refused) instead of starving other processes on a shared GPU.
        torch.cuda.set_per_process_memory_fraction(settings.gpu_memory_fraction, engine.device)
    log.info("engine: %s", engine.describe())

    logs = Path(settings.logs_dir)
    sampler = None
    if settings.monitor_interval > 0:
        sampler = Sampler(settings.monitor_interval, log_path=logs / "monitor.jsonl",
                          log_max_bytes=settings.monitor_log_max_bytes, log_backups=settings.monitor_log_backups,
                          disk_path=Path(settings.outputs_dir),
                          torch_device=engine.device if engine.device.type == "cuda" else None)
        sampler.start()
    requests = RequestLog(logs / "requests.jsonl", max_bytes=settings.monitor_log_max_bytes,
                          backups=settings.monitor_log_backups)

    queue = JobQueue(settings.queue_capacity)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth,
                             model_loaded=lambda: 0.0 if engine.uses_fallback else 1.0,
                             gpu_available=lambda: 1.0 if engine.device.type == "cuda" else 0.0,
                             latest_sample=sampler.latest if sampler else (lambda: None))
    limits = ImageLimits(max_bytes=settings.max_upload_mb * 2**20, max_pixels=settings.max_pixels,
                         max_side=settings.max_side)
    service = RepairService(engine, OutputStore(Path(settings.outputs_dir)), queue, metrics, limits,
                            sampler=sampler, requests=requests)

    def warm_up() -> None:
        queue.run(engine.warmup)
        service.warm = True
        log.info("warm: ready to serve")

    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()

    defaults = RepairOptions(settings.strategy, settings.dilate, settings.feather)
    api = create_api(service, api_token=settings.api_token, defaults=defaults)
    auth = tuple(settings.auth.split(":", 1)) if settings.auth else None
    return gr.mount_gradio_app(api, build_ui(service, defaults), path="/", auth=auth,
                               max_file_size=f"{2 * settings.max_upload_mb}mb")


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


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings = load_settings(parse_args(argv))
    setup_logging(Path(settings.logs_dir))
    warn_if_exposed(settings)
    app = build_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
