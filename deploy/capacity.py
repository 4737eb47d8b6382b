"""Capacity planning from the load benchmark: how many replicas (GPUs) a request rate and size mix
needs, and how fast those requests fill the shared outputs volume. Prints what docs/SCALING.md
quotes:

    python deploy/capacity.py [--rate 100] [--mix 640x480=0.6,1280x960=0.3,2560x1920=0.1]
                              [--clients 4] [--utilization 0.7] [--benchmarks docs/BENCHMARKS.md]

A replica's capacity at a size is the load benchmark's req/s with default settings at --clients
clients, read from docs/BENCHMARKS.md: the first of its tables with the load benchmark's columns
that has those rows for every size of the mix (the file keeps the newest runs first; runs that
measured other client counts are passed over). The output names the run it read. A result's
size is the PNG the service saves (`format` png, the default) for the benchmark's own photo at
that size, encoded here: a repair changes only the masked pixels.
"""

from __future__ import annotations

import argparse
import io
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from lama.imageio import encode_image
from loadreport.load import make_upload

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 10, 100)
DAY_S = 86_400


LOAD_TABLE_HEADER = "| size | settings | clients |"


def load_tables(benchmarks: Path, clients: int) -> list[tuple[str, dict[str, float]]]:
    """Every load-benchmark table of the file, in its order: (the headings it stands under, the
    run's and its section's, req/s by size ("1280×960") for default settings at `clients` clients;
    empty where it has none)."""
    lines = benchmarks.read_text().splitlines()
    tables, headings = [], {}
    for index, line in enumerate(lines):
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            headings = {depth: text for depth, text in headings.items() if depth < level}
            headings[level] = line.lstrip("#").strip()
        if not line.startswith(LOAD_TABLE_HEADER):
            continue
        columns = [cell.strip() for cell in line.strip("|").split("|")]
        rates = {}
        for row_line in lines[index + 2:]:
            if not row_line.startswith("|"):
                break
            row = dict(zip(columns, (cell.strip() for cell in row_line.strip("|").split("|"))))
            if row["settings"] == "default" and int(row["clients"]) == clients:
                rates[row["size"]] = float(row["req/s"])
        tables.append((" › ".join(headings[depth] for depth in sorted(headings) if depth > 1), rates))
    return tables


def capacity_for(benchmarks: Path, clients: int, sizes: Iterable[str]) -> tuple[str, dict[str, float]]:
    """(the run's heading, req/s by size) from the first load table with every one of `sizes` at
    `clients` clients."""
    tables = load_tables(benchmarks, clients)
    if not tables:
        raise SystemExit(f"error: no load-benchmark table ({LOAD_TABLE_HEADER} ...) in {benchmarks}")
    wanted = set(sizes)
    found = next(((heading, rates) for heading, rates in tables if wanted <= set(rates)), None)
    if found is None:
        raise SystemExit(f"error: no load table in {benchmarks} has rows for {', '.join(sorted(wanted))} "
                         f"at {clients} clients (default settings)")
    return found


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

    run, capacity = capacity_for(args.benchmarks, args.clients, args.mix)
    sizes = {size: result_bytes(size) for size in args.mix}
    print(f"Per replica (one GPU), {args.benchmarks.name}'s load table of \"{run}\", default settings, "
          f"{args.clients} clients:")
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
