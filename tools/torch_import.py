"""Where `import torch` spends a start's time and memory: torch's native libraries loaded one by
one (what the dynamic loader and their static initialisers cost, CUDA's libraries pulled in with
libtorch_cuda), then the Python import on top, each with the process's RSS split into anonymous
and file-backed pages; then, in a fresh process, the Python modules that took longest
(`python -X importtime`, cumulative).

    python tools/torch_import.py [--top N]

The server's start to /readyz begins with this import (issue 15 asks for 10 s); prints, never asserts.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

# libtorch's libraries in the order torch/__init__.py's loading reaches them; CPU-only wheels
# have no CUDA ones.
LIBRARIES = ("libtorch_global_deps.so", "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so",
             "libtorch.so", "libtorch_python.so")


def memory() -> str:
    status = Path("/proc/self/status").read_text()

    def mb(key: str) -> float:
        return int(re.search(key + r":\s+(\d+)", status).group(1)) / 1024

    return f"RSS {mb('VmRSS'):6.0f} MB (anonymous {mb('RssAnon'):5.0f}, files {mb('RssFile'):5.0f})"


def load_steps() -> None:
    """This process: each native library, then `import torch`, timed."""
    library_dir = Path(importlib.util.find_spec("torch").origin).parent / "lib"
    print(f"{'start':26s} {'':>7s}  {memory()}")
    started = time.perf_counter()
    for name in LIBRARIES:
        if not (library_dir / name).exists():
            continue
        step = time.perf_counter()
        ctypes.CDLL(str(library_dir / name), mode=ctypes.RTLD_GLOBAL)
        print(f"{name:26s} {time.perf_counter() - step:5.2f} s  {memory()}", flush=True)
    step = time.perf_counter()
    import torch  # noqa: F401 - the step is the import
    print(f"{'import torch (Python)':26s} {time.perf_counter() - step:5.2f} s  {memory()}")
    print(f"{'in all':26s} {time.perf_counter() - started:5.2f} s")


def slowest_modules(top: int) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of `import torch` in a fresh process, the `top` longest."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import torch"], capture_output=True,
                          text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[1].strip().isdigit():
            rows.append((int(fields[1]) / 1e6, fields[2].strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=12, help="how many of the slowest modules to print")
    args = parser.parse_args()
    load_steps()
    print(f"\nthe {args.top} slowest modules of `import torch` in a fresh process (cumulative seconds):")
    for seconds, module in slowest_modules(args.top):
        print(f"{seconds:6.2f}  {module}")


if __name__ == "__main__":
    main()
