"""The service's settings: configs/default.yaml, then --config FILE, a preset and the flags, then
LAMA_API_TOKEN / LAMA_AUTH from the environment; each key is explained in configs/default.yaml."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lama.device_choices import DEVICES, PRECISIONS
from lama.masks import MAX_THRESHOLD
from lama.planning import STRATEGIES
from service.upload import MAX_REFINE_PX

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/ lies beside app.py
CONFIGS = ROOT / "configs"
PRESETS = ("fast", "balanced", "hd")


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
    cpu_workers: int | str  # processes for the API's CPU steps under load, or "auto"; 0: none (service.cpu_workers)
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
    gpu_memory_fraction: float  # from the preset, unless --gpu-memory-fraction says otherwise
    model_max_side: int | None  # from the preset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LaMa inpainting service: web UI + HTTP API")
    parser.add_argument("--config", type=Path, help="YAML overriding configs/default.yaml")
    # Flags default to None so that only the ones given override the files.
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--model", help="checkpoint (official dir, .ckpt, big-lama.pt, .safetensors)")
    parser.add_argument("--device", choices=DEVICES)
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--preset", choices=PRESETS)
    parser.add_argument("--gpu-memory-fraction", type=_fraction, metavar="SHARE",
                        help="share of the card this process may take (default: the preset's); "
                             "replicas sharing one GPU split it, e.g. 0.45 each for two")
    parser.add_argument("--outputs-dir")
    parser.add_argument("--logs-dir")
    parser.add_argument("--queue-capacity", type=int)
    parser.add_argument("--queue-stuck-after-s", type=float,
                        help="a repair running longer than this makes /readyz 503 until it ends (0: never)")
    parser.add_argument("--gpu-workers", type=GPU_WORKERS, metavar="auto|N",
                        help="repairs that may run at once, within the GPU memory budget (auto: 2 on CUDA, 1 on CPU)")
    parser.add_argument("--cpu-workers", type=CPU_WORKERS, metavar="auto|N",
                        help="processes that decode, compose and encode the API's repairs while others are in "
                             "flight (auto: one per two cores on CUDA, at most 8; none on CPU; 0: none)")
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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share above 0 and at most 1, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass(frozen=True)
class AutoOrCount:
    """A setting that is "auto" or a whole number of at least `minimum` (the worker counts), with
    one rule for the command line and the config files."""

    minimum: int

    @property
    def expected(self) -> str:
        return f"'auto' or a whole number of at least {self.minimum}"

    def accepts(self, value: object) -> bool:
        return value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum)

    def __call__(self, text: str) -> int | str:
        """argparse's type: the flag's text as the setting."""
        try:
            value: object = text if text == "auto" else int(text)
        except ValueError:
            value = text
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")
        return value


GPU_WORKERS = AutoOrCount(1)
CPU_WORKERS = AutoOrCount(0)


MAX_AUTO_CPU_WORKERS = 8  # with eight the H200 was busy 85-87 % of the time: more feed it no faster


def resolve_cpu_workers(setting: int | str, on_cuda: bool, cores: int) -> int:
    """'auto': on CUDA one worker process per two cores, up to MAX_AUTO_CPU_WORKERS, which
    measured best of two, four and eight on the H200's 16 cores (docs/BENCHMARKS.md, fifteenth
    run); none on the CPU, where the model's own threads use every core and the CPU steps are a
    small part of a repair."""
    if setting == "auto":
        return min(MAX_AUTO_CPU_WORKERS, max(1, cores // 2)) if on_cuda else 0
    return int(setting)


def resolve_gpu_workers(setting: int | str, on_cuda: bool) -> int:
    """'auto': two on CUDA, where one job's CPU stages overlap another's GPU work (four served
    0.84-1.00x as many repairs at 16 clients: more jobs in flight share one process's GIL and
    cores more ways; docs/BENCHMARKS.md, fourteenth run); one on the CPU, where the model's own
    threads already use every core and a second job would only compete for them."""
    if setting == "auto":
        return 2 if on_cuda else 1
    return int(setting)


# The numeric settings' ranges, for the files' values and the flags' alike: (key, whole, lowest,
# highest or None). A value outside stops the start with one line, not a traceback from deep inside
# (or a service that refuses every repair: a default dilate over what a request may ask).
NUMBERS = (
    ("port", True, 0, 65535),  # 0: a free one the system picks (tests)
    ("queue_capacity", True, 1, None),
    ("queue_stuck_after_s", False, 0, None),
    ("max_upload_mb", True, 1, None),
    ("max_pixels", True, 1, None),
    ("max_side", True, 1, None),
    ("dilate", True, 0, MAX_REFINE_PX),
    ("feather", True, 0, MAX_REFINE_PX),
    ("mask_threshold", True, 0, MAX_THRESHOLD),
    ("monitor_interval", False, 0, None),
    ("monitor_log_max_bytes", True, 1024, None),
    ("monitor_log_backups", True, 0, None),
    ("outputs_keep_days", False, 0, None),
    ("outputs_keep_gb", False, 0, None),
    ("ui_cache_max_age_s", False, 0, None),
    ("ui_cache_max_mb", False, 0, None),
    ("shutdown_timeout_s", False, 0, None),
    ("gpu_memory_fraction", False, 0.01, 1),
    ("model_max_side", True, 64, None),
)
TEXTS = ("host", "model", "outputs_dir", "logs_dir", "ui_cache_dir", "kernel_cache_dir", "api_token", "auth")
OPTIONAL = {"model_max_side", "model", "api_token", "auth"}  # null: no limit, the default model, no protection


def _in_range(value: object, whole: bool, low: float, high: float | None) -> bool:
    kinds = (int,) if whole else (int, float)
    return (isinstance(value, kinds) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


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
    _check_values(settings)
    _check_edge_names(settings)
    return settings


def _check_values(settings: Settings) -> None:
    """Each setting's type and range, whether from a file or a flag: SystemExit with one line."""
    for key, rule in (("gpu_workers", GPU_WORKERS), ("cpu_workers", CPU_WORKERS)):
        if not rule.accepts(getattr(settings, key)):
            raise SystemExit(f"error: {key} must be {rule.expected}, got {getattr(settings, key)!r}")
    for key, whole, low, high in NUMBERS:
        value = getattr(settings, key)
        if not (value is None and key in OPTIONAL) and not _in_range(value, whole, low, high):
            kind = "a whole number" if whole else "a number"
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise SystemExit(f"error: {key} must be {kind} {bounds}, got {value!r}")
    for key in TEXTS:
        value = getattr(settings, key)
        if not (value is None and key in OPTIONAL) and not (isinstance(value, str) and value):
            raise SystemExit(f"error: {key} must be {'a text or null' if key in OPTIONAL else 'a text'}, got {value!r}")
    if settings.auth is not None and ":" not in settings.auth:
        raise SystemExit("error: --auth must be USER:PASS")
    if settings.strategy not in STRATEGIES:
        raise SystemExit(f"error: unknown strategy {settings.strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if not isinstance(settings.keep_metadata, bool):
        raise SystemExit(f"error: keep_metadata must be true or false, got {settings.keep_metadata!r}")


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
