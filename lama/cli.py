"""`python -m lama inpaint|convert|download|info|bench`.

A thin layer: parse arguments, call the engine and the checkpoint tools, and turn every
error a user can cause into one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from lama import bench, imageio, masks
from lama.checkpoint import describe_checkpoint, load_checkpoint, save_safetensors
from lama.download import BIG_LAMA, download_big_lama
from lama.device import DEVICES, PRECISIONS
from lama.engine import STRATEGIES, InpaintEngine
from lama.errors import InpaintError, UsageError

log = logging.getLogger("lama")

# What a user can get wrong; anything else is a bug and keeps its traceback.
USER_ERRORS = (InpaintError, FileNotFoundError, NotADirectoryError, PermissionError)


# ---------------------------------------------------------------------------- inpaint

def _mask_for(image: Path, mask_dir: Path) -> Path:
    """The mask of `image` in `mask_dir`: same stem, or STEM_mask, any image suffix (any case)."""
    for stem in (image.stem, f"{image.stem}_mask"):
        for candidate in sorted(mask_dir.glob(f"{glob.escape(stem)}.*")):
            if (candidate.stem == stem and candidate.suffix.lower() in imageio.IMAGE_SUFFIXES
                    and candidate != image and candidate.is_file()):
                return candidate
    raise UsageError(f"no mask for {image.name} in {mask_dir} (looked for {image.stem}.* and {image.stem}_mask.*)")


def _jobs(image: Path, mask: Path, output: Path) -> list[tuple[Path, Path, Path]]:
    """(image, mask, output) triples for files or directories, as the CLI contract describes."""
    if not image.exists():
        raise UsageError(f"image not found: {image}")
    if not mask.exists():
        raise UsageError(f"mask not found: {mask}")
    if image.is_file():
        mask_file = _mask_for(image, mask) if mask.is_dir() else mask
        out_file = output / f"{image.stem}.png" if output.is_dir() else output
        return [(image, mask_file, out_file)]
    if mask.is_file():
        raise UsageError("--image is a directory, so --mask must be a directory of masks too")
    if output.exists() and not output.is_dir():
        raise UsageError("--image is a directory, so --output must be a directory")
    images = sorted(p for p in image.iterdir()
                    if p.suffix.lower() in imageio.IMAGE_SUFFIXES and not p.stem.endswith("_mask"))
    if not images:
        raise UsageError(f"no images ({', '.join(imageio.IMAGE_SUFFIXES)}) in {image}")
    return [(p, _mask_for(p, mask), output / f"{p.stem}.png") for p in images]


def cmd_inpaint(args: argparse.Namespace) -> int:
    jobs = _jobs(args.image, args.mask, args.output)
    engine = InpaintEngine(args.model, device=args.device, precision=args.precision)
    if engine.backend.warning:
        print(f"warning: {engine.backend.warning}", file=sys.stderr)
    failures = 0
    for image_path, mask_path, out_path in tqdm(jobs, disable=len(jobs) == 1, unit="image"):
        try:
            image = imageio.read_image(image_path)
            mask = masks.binarize(imageio.read_mask(mask_path), args.mask_threshold)
            result = engine.inpaint(image, mask, strategy=args.strategy, dilate=args.dilate, feather=args.feather)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            imageio.write_image_atomic(out_path, result)
        except InpaintError as error:
            if len(jobs) == 1:
                raise
            failures += 1
            tqdm.write(f"error: {image_path.name}: {error}", file=sys.stderr)
    if failures:
        print(f"error: {failures} of {len(jobs)} images failed", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- the others

def cmd_convert(args: argparse.Namespace) -> int:
    if args.dst.suffix != ".safetensors":
        raise UsageError(f"destination must end in .safetensors, got {args.dst.name}")
    checkpoint = load_checkpoint(args.src)
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    save_safetensors(checkpoint, args.dst, dtype=dtype)
    print(f"wrote {args.dst} ({args.dtype}, from {checkpoint.source_format})")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    path = download_big_lama(args.dest, url=args.url, md5=args.md5)
    print(f"big-lama is at {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = describe_checkpoint(load_checkpoint(args.model))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    sizes = bench.parse_sizes(args.sizes)
    if args.codecs_only:
        print(bench.format_codec_lines(bench.codec_timings(sizes, args.runs), args.runs))
        return 0
    if args.model == "random":
        engine = InpaintEngine.with_random_weights(device=args.device, precision=args.precision)
    else:
        engine = InpaintEngine(args.model, device=args.device, precision=args.precision)
    # The plain fp32 eager path of the same weights: what the fast path is measured against.
    reference = engine.reference() if args.compare_reference else None
    results = bench.run_bench(engine, sizes, runs=args.runs, warmup=args.warmup, reference=reference)
    print(bench.format_table(engine, results))
    if args.json:
        args.json.write_text(json.dumps(bench.results_json(engine, results), indent=2))
    return 0


# ---------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lama", description="big-lama inpainting tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and decisions")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_runtime(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", choices=DEVICES, default="auto")
        p.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: fp16 on CUDA, fp32 on CPU")

    p = commands.add_parser("inpaint", help="repair an image (or a directory of images) where the mask is set")
    p.add_argument("--model", type=Path, default=None,
                   help="official big-lama dir, .ckpt, IOPaint big-lama.pt or .safetensors "
                        "(default: models/big-lama.*, else OpenCV fallback)")
    p.add_argument("--image", type=Path, required=True, help="image file or directory")
    p.add_argument("--mask", type=Path, required=True,
                   help="mask file or directory (masks matched by stem or STEM_mask; values above "
                        "--mask-threshold = repair)")
    p.add_argument("--output", type=Path, required=True, help="output file or directory")
    add_runtime(p)
    p.add_argument("--strategy", choices=STRATEGIES, default="crop",
                   help="crop (default; only above 800 px), resize (above 1280 px) or original")
    p.add_argument("--dilate", type=_non_negative, default=0, help="grow the mask by N pixels")
    p.add_argument("--feather", type=_non_negative, default=0, help="blend the repair into the mask edge over N pixels")
    p.add_argument("--mask-threshold", type=_threshold, default=masks.DEFAULT_THRESHOLD, metavar="0..254",
                   help=f"mask values above it are repaired (default {masks.DEFAULT_THRESHOLD}; "
                        "0: any nonzero value, the official pipeline's rule)")
    p.set_defaults(run=cmd_inpaint)

    p = commands.add_parser("convert", help="write a checkpoint as .safetensors (with its config)")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp32")
    p.set_defaults(run=cmd_convert)

    p = commands.add_parser("download", help=f"fetch big-lama ({BIG_LAMA.filename}) with checksum verification")
    p.add_argument("--dest", type=Path, default=Path("models"))
    p.add_argument("--url", default=None, help=f"default: {BIG_LAMA.url}")
    p.add_argument("--md5", default=None, help="expected md5 (default: the release's)")
    p.set_defaults(run=cmd_download)

    p = commands.add_parser("info", help="architecture, parameter count, dtype and format of a checkpoint")
    p.add_argument("model", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)

    p = commands.add_parser("bench", help="model-only and end-to-end latency, peak GPU memory")
    p.add_argument("--model", default="random", help="a checkpoint, or 'random' (full-size, random weights)")
    add_runtime(p)
    p.add_argument("--sizes", default="640x480,1280x960,2560x1920")
    p.add_argument("--runs", type=_positive, default=10)
    p.add_argument("--warmup", type=_positive, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--compare-reference", action="store_true",
                   help="also run the plain fp32 eager path of the same weights: speed-up, memory, accuracy")
    p.add_argument("--codecs-only", action="store_true",
                   help="only the CPU image codecs: decode and encode times and PNG sizes, no model")
    p.set_defaults(run=cmd_bench)
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _threshold(text: str) -> int:
    value = int(text)
    if not 0 <= value <= masks.MAX_THRESHOLD:
        raise argparse.ArgumentTypeError(f"must be from 0 to {masks.MAX_THRESHOLD}, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
