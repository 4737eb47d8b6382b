"""What one upload to the UI costs as the UI cache folder fills up.

    python tools/ui_upload_cost.py                      # app.py with the tiny checkpoint on the CPU
    python tools/ui_upload_cost.py --files 0,1000,10000 --uploads 60
    python tools/ui_upload_cost.py --checkout /tmp/old   # another checkout's app.py, for a before and after

The folder keeps every upload and result of the editor (the photo, each mask, each result with its
preview and repaired rectangle) until the retention sweep removes it (ui_cache_max_age_s, half an
hour by default), so a busy half hour leaves thousands of files there. For each count the cache
is filled with that many small files, five to a folder as the editor's results lie, and a 480×360
JPEG of noise (about 170 kB) is then uploaded through Gradio's upload route (POST
/gradio_api/upload, the page's and gradio_client's way in) `--uploads` times, one after another
over one kept-alive connection.
Prints the median and 95th percentile of the upload's round trip for each count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from lama import imageio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' launcher of app.py
from support.liveserver import LiveServer  # noqa: E402
from support.paths import tiny_model  # noqa: E402

FILES_PER_FOLDER = 5
FILLER_BYTES = 1024


def fill(cache: Path, files: int) -> None:
    """Add small files to the cache folder until it holds `files` of ours."""
    existing = sum(1 for _ in cache.glob("filler-*/*"))
    for index in range(existing, files):
        folder = cache / f"filler-{index // FILES_PER_FOLDER:06d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{index % FILES_PER_FOLDER}.png").write_bytes(b"\0" * FILLER_BYTES)


def upload_times(client: httpx.Client, photo: bytes, uploads: int) -> list[float]:
    times = []
    for _ in range(uploads):
        started = time.perf_counter()
        client.post("/gradio_api/upload", files={"files": ("photo.jpg", photo, "image/jpeg")}).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="0,1000,10000", help="cache sizes in files, ascending")
    parser.add_argument("--uploads", type=int, default=60, help="uploads timed per cache size")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose app.py is timed (default: this one)")
    args = parser.parse_args()
    counts = [int(count) for count in args.files.split(",")]
    rng = np.random.default_rng(0)
    photo = imageio.encode_image(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8), "jpg", quality=92)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "quota.yaml"
        config.write_text("ui_cache_max_mb: 100000\n")  # the quota's own refusals are not what is measured
        with LiveServer.start(tiny_model(), Path(folder), "--config", str(config),
                              app=args.checkout / "app.py") as server, \
                httpx.Client(base_url=server.url(""), timeout=60) as client:
            print(f"server {server.url('')} ({args.checkout / 'app.py'}) · one {len(photo) / 1000:.0f} kB JPEG per upload · "
                  f"{args.uploads} uploads per row after 5 to warm up")
            print(f"{'cache files':>12} {'median ms':>10} {'p95 ms':>8}")
            for count in counts:
                fill(server.folder / "cache", count)
                upload_times(client, photo, 5)
                times = sorted(upload_times(client, photo, args.uploads))
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(f"{count:>12} {statistics.median(times) * 1000:>10.1f} {p95 * 1000:>8.1f}")


if __name__ == "__main__":
    main()
