"""`python -m lama inpaint|convert|download|info|bench`.

A thin layer: parse arguments, call the engine and the checkpoint tools, and turn every
error a user can cause into one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from tqdm import tqdm

# None of these imports torch: `--help`, a mistyped option, a missing photo or mask and
# `download` answer at once instead of after torch's import (3-4 s on a small machine). The
# commands that need torch import what needs it where they start.
from lama import batch, imageio, masks
from lama.device_choices import DEVICES, PRECISIONS
from lama.download import BIG_LAMA, download_big_lama
from lama.engine import STRATEGIES, InpaintEngine
from lama.errors import InpaintError, UsageError
from lama.output_formats import CHOICES as FORMAT_CHOICES

log = logging.getLogger("lama")

# The service's settings (app.py reads them): `lama info` describes the model it would load.
SERVICE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"

# What a user can get wrong, or their disk (missing, read-only or full); anything else is a bug
# and keeps its traceback.
USER_ERRORS = (InpaintError, OSError)


# ---------------------------------------------------------------------------- inpaint

def cmd_inpaint(args: argparse.Namespace) -> int:
    jobs = batch.plan(args.image, args.mask, args.output, args.format)
    jobs, existing = batch.sort_out_existing(jobs, args.existing)
    single = args.image.is_file()
    if args.mask.is_file() and not single:
        imageio.read_mask(args.mask)  # the one mask of a folder: a broken one is said once, before the model loads
    settings = batch.Settings(args.strategy, args.dilate, args.feather, args.mask_threshold, args.keep_metadata)

    def load_engine() -> InpaintEngine:
        return InpaintEngine(args.model or service_model(), device=args.device, precision=args.precision)

    with tqdm(total=len(jobs), disable=single or not jobs, unit="image") as progress:
        summary = batch.run(load_engine, jobs, settings, stop_on_error=single, on_photo=progress.update,
                            report=lambda path, message: tqdm.write(f"error: {path.name}: {message}", file=sys.stderr))
    if existing:
        summary.skipped["output exists"] = existing
    if not single:
        summary.skipped[batch.UNREAD] = batch.unread_pictures(args.image)
        print("\n".join(summary.lines()))
    return 1 if summary.failed else 0


# ---------------------------------------------------------------------------- the others

def cmd_convert(args: argparse.Namespace) -> int:
    if args.dst.suffix != ".safetensors":
        raise UsageError(f"destination must end in .safetensors, got {args.dst.name}")
    import torch

    from lama.checkpoint import load_checkpoint, save_safetensors

    checkpoint = load_checkpoint(args.src)
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    save_safetensors(checkpoint, args.dst, dtype=dtype)
    print(f"wrote {args.dst} ({args.dtype}, from {checkpoint.source_format})")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    path = download_big_lama(args.dest, url=args.url, md5=args.md5)
    print(f"big-lama is at {path}")
    return 0


def service_model() -> Path | None:
    """The model `python app.py` loads when started without --model: configs/default.yaml's
    `model`, or where that is null, the engine's own search (DEFAULT_MODEL_CANDIDATES)."""
    from lama.loading import find_default_model

    try:
        configured = (yaml.safe_load(SERVICE_CONFIG.read_text()) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError):
        configured = None  # a copy without the service's configs: the engine's search alone
    return Path(configured) if configured else find_default_model()


def cmd_info(args: argparse.Namespace) -> int:
    from lama.checkpoint import describe_checkpoint, load_checkpoint
    from lama.loading import DEFAULT_MODEL_CANDIDATES

    model = args.model or service_model()
    if model is None:
        raise UsageError("no model given, and the service would find none (configs/default.yaml's model is null and "
                         f"none of {', '.join(map(str, DEFAULT_MODEL_CANDIDATES))} exists: it would repair with the "
                         "OpenCV fallback); run `python -m lama download`, or name a checkpoint")
    if args.model is None:
        print(f"the service's model: {model}", file=sys.stderr)
    info = describe_checkpoint(load_checkpoint(model))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lama import bench

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

    p = commands.add_parser("inpaint", help="repair an image (or a folder of images) where the mask is set",
                            description="A folder of photos takes one mask file for all of them, or a folder of "
                                        "masks matched by name (STEM.* or STEM_mask.*); masks are resized to "
                                        "their photo. Photos without a mask are skipped and listed. Results are "
                                        "STEM_repaired.EXT in the --output folder. Exit status 1 only when a photo "
                                        "failed.")
    p.add_argument("--model", type=Path, default=None,
                   help="official big-lama dir, .ckpt, IOPaint big-lama.pt or .safetensors "
                        "(default: the service's, as for `info`; none: the OpenCV fallback)")
    p.add_argument("--image", type=Path, required=True, help="image file or folder")
    p.add_argument("--mask", type=Path, required=True,
                   help="mask file (for a folder: the same mask for every photo) or folder of masks matched by "
                        "name (STEM.* or STEM_mask.*); values above --mask-threshold = repair")
    p.add_argument("--output", type=Path, required=True, help="output file, or folder (STEM_repaired.EXT)")
    p.add_argument("--format", choices=FORMAT_CHOICES, type=str.lower, default=None,
                   help="output format (jpg = jpeg; same: the photo's own, PNG for BMP/TIFF); default: the "
                        "--output file's suffix, or same for a folder")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", dest="existing", action="store_const", const="overwrite",
                          help="replace outputs that exist")
    existing.add_argument("--skip-existing", dest="existing", action="store_const", const="skip",
                          help="leave outputs that exist and repair the rest")
    p.set_defaults(existing="refuse")
    p.add_argument("--no-keep-metadata", dest="keep_metadata", action="store_false",
                   help="write no EXIF or ICC profile (default: carried from the photo, orientation normalised)")
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
    p.add_argument("model", type=Path, nargs="?", default=None,
                   help="default: the model `python app.py` loads (configs/default.yaml's model, else models/big-lama.*)")
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
        print(f"error: {batch.one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
