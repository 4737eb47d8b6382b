"""Capacity planning from the load benchmark: how many replicas (GPUs) a request rate and size mix
needs, and how fast those requests fill the shared outputs volume. Prints what docs/SCALING.md
quotes:

    python deploy/capacity.py [--rate 100] [--mix 640x480=0.6,1280x960=0.3,2560x1920=0.1]
                              [--clients 4] [--utilization 0.7] [--benchmarks docs/BENCHMARKS.md]

A replica's capacity at a size is the load benchmark's req/s with default settings at --clients
clients, read from docs/BENCHMARKS.md's load table (the first table of that file with the load
benchmark's columns). A result's size is the PNG the service saves (`format` png, the default) for
the benchmark's own photo at that size, encoded here: a repair changes only the masked pixels.
"""

from __future__ import annotations

import argparse
import io
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from lama.imageio import encode_image
from loadreport.load import make_upload

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 10, 100)
DAY_S = 86_400


def load_table(benchmarks: Path, clients: int) -> dict[str, float]:
    """req/s by size ("1280×960") for default settings at `clients` clients."""
    lines = benchmarks.read_text().splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| size | settings | clients |")), None)
    if header is None:
        raise SystemExit(f"error: no load-benchmark table (| size | settings | clients | ...) in {benchmarks}")
    columns = [cell.strip() for cell in lines[header].strip("|").split("|")]
    rates = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        row = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|"))))
        if row["settings"] == "default" and int(row["clients"]) == clients:
            rates[row["size"]] = float(row["req/s"])
    return rates


def result_bytes(size: str) -> int:
    width, height = (int(side) for side in re.split("[×x]", size))
    upload = make_upload(width, height, seed=0, coverage=0.08)
    photo = np.asarray(Image.open(io.BytesIO(upload.image_jpeg)).convert("RGB"))
    return len(encode_image(photo, "png"))


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for item in text.split(","):
        size, _, share = item.partition("=")
        mix[size.strip().replace("x", "×")] = float(share)
    if not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-6):
        raise SystemExit(f"error: the mix's shares add up to {sum(mix.values()):g}, not 1")
    return mix


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="repairs per second, all replicas together")
    parser.add_argument("--mix", type=parse_mix, default="640x480=0.6,1280x960=0.3,2560x1920=0.1",
                        help="share of each size (the load table's sizes)")
    parser.add_argument("--clients", type=int, default=4, help="the load table's column that counts as capacity")
    parser.add_argument("--utilization", type=float, default=0.7, help="share of capacity to plan for")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)

    capacity = load_table(args.benchmarks, args.clients)
    if missing := set(args.mix) - set(capacity):
        raise SystemExit(f"error: no load-table row for {', '.join(sorted(missing))} at {args.clients} clients")
    sizes = {size: result_bytes(size) for size in args.mix}
    print(f"Per replica (one GPU), {args.benchmarks.name}'s load table, default settings, {args.clients} clients:")
    print("| size | share | req/s | replica-ms per repair | saved PNG |")
    print("|---|---|---|---|---|")
    for size, share in args.mix.items():
        print(f"| {size} | {share:.0%} | {capacity[size]:g} | {1000 / capacity[size]:.1f} | "
              f"{sizes[size] / 1e6:.2f} MB |")
    seconds_per_repair = sum(share / capacity[size] for size, share in args.mix.items())
    bytes_per_repair = sum(share * sizes[size] for size, share in args.mix.items())
    print(f"\nThe mix: {seconds_per_repair * 1000:.1f} replica-ms and {bytes_per_repair / 1e6:.2f} MB of outputs "
          f"per repair; replicas planned at {args.utilization:.0%} of capacity, plus one spare.")
    print("| rate | busy replicas | replicas | outputs written | outputs per day |")
    print("|---|---|---|---|---|")
    for scale in SCALES:
        rate = args.rate * scale
        busy = rate * seconds_per_repair
        planned = math.ceil(busy / args.utilization) + 1
        print(f"| {rate:g} req/s | {busy:.1f} | {planned} | {rate * bytes_per_repair / 1e6:.0f} MB/s | "
              f"{rate * bytes_per_repair * DAY_S / 1e12:.2f} TB |")


if __name__ == "__main__":
    main()
