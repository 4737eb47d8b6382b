"""Start to /readyz of the real server, variants of tools/pipeline_probe.py taking turns, on any box:

    python tools/readyz_times.py [--variants base,gradio-stubs] [--starts 3] [--port 7871] [--probe livez]
                                 [-- app.py flags...]

Each start is `python tools/pipeline_probe.py serve VARIANT` with the app.py flags given (by default
the tiny test checkpoint on the CPU, $LAMA_FIXTURES/tiny-lama, and folders of its own under a
temporary one), timed from the process's start to the first 200 from /readyz, then stopped
(SIGTERM). The variants take turns, in reverse order every other round, so that a drift of the
machine falls on all alike. Prints each start, then each variant's median. With `--probe livez`,
up to the first 200 from /livez instead: the start up to serving, without the warm-up (full-size
weights on the CPU, whose warm-up takes minutes). On the GPU box `bash tools/gpu_soak.sh OUT readyz`
does the same with full-size weights and the model load's phases.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tests' helpers: where the test fixtures are (tests/support/paths.py).
sys.path.insert(0, str(ROOT / "tests"))
from support.paths import tiny_model  # noqa: E402

READY_TIMEOUT_S = 300.0


def ready(url: str, probe: str = "readyz") -> bool:
    try:
        with urllib.request.urlopen(f"{url}/{probe}", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serving(variant: str, flags: list[str], port: int, folder: Path,
            probe: str = "readyz") -> Iterator[tuple[subprocess.Popen, float]]:
    """The variant's server (its folders under `folder`, its log in folder/server.log) until the block
    ends, then stopped with SIGTERM: (the process, seconds from its start to `probe` answering 200)."""
    log = folder / "server.log"
    command = [sys.executable, str(ROOT / "tools" / "pipeline_probe.py"), "serve", variant, "--port", str(port),
               "--outputs-dir", str(folder / "outputs"), "--logs-dir", str(folder / "logs"),
               "--ui-cache-dir", str(folder / "ui-cache"), *flags]
    with log.open("wb") as output:
        started = time.perf_counter()
        server = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            while not ready(f"http://127.0.0.1:{port}", probe):
                if server.poll() is not None or time.perf_counter() - started > READY_TIMEOUT_S:
                    raise SystemExit(f"{variant}: the server did not get ready; its log:\n"
                                     + log.read_text(errors="replace")[-3000:])
                time.sleep(0.02)
            yield server, time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(60)


def start_to_ready(variant: str, flags: list[str], port: int, folder: Path, probe: str = "readyz") -> float:
    """Seconds from starting the variant's server to its `probe` answering 200; the server is stopped after."""
    with serving(variant, flags, port, folder, probe) as (_, seconds):
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="base,gradio-stubs", help="tools/pipeline_probe.py's, comma-separated")
    parser.add_argument("--starts", type=int, default=3, help="starts of each variant")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--probe", choices=("readyz", "livez"), default="readyz",
                        help="timed to this probe's first 200 (livez: serving, before the warm-up ends)")
    parser.add_argument("flags", nargs="*", help="app.py's flags (after --)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    flags = args.flags or ["--device", "cpu", "--model", str(tiny_model())]
    seconds: dict[str, list[float]] = {variant: [] for variant in variants}
    print(f"{os.cpu_count()} cores; app.py {' '.join(flags)}; {args.starts} starts of each, taking turns")
    with tempfile.TemporaryDirectory(prefix="readyz-") as temporary:
        for round_ in range(args.starts):
            for variant in variants if round_ % 2 == 0 else variants[::-1]:
                folder = Path(temporary) / f"{variant}-{round_}"
                folder.mkdir()
                seconds[variant].append(start_to_ready(variant, flags, args.port, folder, args.probe))
                print(f"{variant}: /{args.probe} after {seconds[variant][-1] * 1000:.0f} ms", flush=True)
    print("| variant | median ms | fastest | slowest |")
    print("|---|---|---|---|")
    for variant, values in seconds.items():
        print(f"| {variant} | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} | "
              f"{max(values) * 1000:.0f} |")


if __name__ == "__main__":
    main()
