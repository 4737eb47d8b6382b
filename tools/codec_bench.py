"""The image codecs the service could use, timed on the same photos: which decodes and encodes fastest.

    python tools/codec_bench.py [--sizes 640x480,1280x960,2560x1920] [--runs 7] [--content real,synthetic]
                                [--threads 16] [--seconds 2]
    python tools/codec_bench.py --masks [--sizes ...] [--runs 7]

Prints Markdown tables (docs/BENCHMARKS.md keeps one): milliseconds per call, the best of
`--runs` after one unmeasured call, in this process, one call at a time; and for each decoder
whether it releases the GIL (item 3 of the throughput issue: a codec that holds it stalls every
other request's Python while it runs).

The files are written as other programs write them, since foreign files are the slow case:
a JPEG at quality 92 (OpenCV, as a phone would), a PNG from Pillow at its defaults (level 6,
adaptive filters), a PNG from OpenCV at its defaults (level 1, run-length strategy), and the
PNG this service writes (lama.png). Content: `real` is the photos that installed packages ship
(gradio's, matplotlib's), scaled up to each size with bicubic interpolation, so smoother than
a camera's full-resolution photo; `synthetic` is the load benchmark's photo-like picture
(loadreport.images.photo, with sensor grain, which makes files larger and decoding slower).

Codecs that are not installed are left out; imagecodecs and pyspng are not the service's
dependencies and are only measured here, for comparison, where someone installed them.

`--masks` times the masks' decoders instead: the load benchmark's brush strokes (8 % of the
picture) as OpenCV writes them (8-bit, every row filtered Sub), as Pillow does (adaptive filters),
as the browser editor sends them (1-bit, unfiltered) and softened (a 5-px blur, OpenCV), through
the service's decode_mask, OpenCV and Pillow.

GPU codecs (item 3 again): where torchvision imports and CUDA is available, nvJPEG through
torchvision.io joins the JPEG rows. Decoding takes the file's bytes and is timed twice: to the
host (H×W×3 uint8 in memory, what the service's pipeline takes today: the device-to-host copy
waits for the decode) and left on the GPU (CHW on the device, after a synchronize: what a
pipeline that fed the model on the GPU would pay). Encoding takes the host's pixels, copies them
to the GPU and returns the file's bytes on the host; torchvision's nvJPEG writes 4:4:4 chroma,
the service (lama.jpeg) and Pillow 4:2:0, so its files are larger at the same quality. A last table
per content is what a loaded server would see: `--threads` threads decoding the largest size's
JPEG again and again for `--seconds`, decodes per second, for the service's decoder (which lets
lama.imageio.DECODE_SLOTS decode at once) and for nvJPEG to the host (torchvision decodes one
call at a time on a GPU, behind a lock). Where torchvision or CUDA is missing, one line says so
and why. torchvision is not a dependency of the service; it is imported only here, lazily.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import os
import statistics
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other tools (pipeline_probe)

import lama  # noqa: F401  (OpenCV's caps before cv2 loads)
import cv2
import numpy as np
from PIL import Image
from zlib_ng import zlib_ng

from lama import imageio, parallel, png
from loadreport import images
from pipeline_probe import run_length_deflate  # tools/: the deflate lama.png had before ISA-L's

SIZES = ((640, 480), (1280, 960), (2560, 1920))
# Photos shipped inside installed packages: (package, path inside it).
REAL_PHOTOS = (("gradio", "test_data/cheetah2.jpg"), ("gradio", "media_assets/images/groot.jpeg"),
               ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"))
JPEG_QUALITY = 92
CONTENT = {"real": "Real photos (shipped by installed packages), scaled up: smooth, small files",
           "synthetic": "The load benchmark's photo-like pictures, with sensor grain: camera-sized files"}
GIL_FREE_SHARE = 0.25  # another thread ran for at least this share of the call: the codec released the GIL
NVJPEG = "nvJPEG (torchvision)"


def optional(name: str):
    if importlib.util.find_spec(name) is None:
        return None
    return __import__(name)


imagecodecs = optional("imagecodecs")
pyspng = optional("pyspng")
simplejpeg = optional("simplejpeg")


# ------------------------------------------------------------------ the pictures


def real_photo(width: int, height: int, index: int) -> np.ndarray | None:
    """The index-th shipped photo, cropped to the aspect and scaled to width×height (RGB)."""
    package, inside = REAL_PHOTOS[index % len(REAL_PHOTOS)]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / inside
    if not path.exists():
        return None
    picture = np.asarray(Image.open(path).convert("RGB"))
    rows, cols = picture.shape[:2]
    aspect = width / height
    if cols / rows > aspect:
        keep = round(rows * aspect)
        picture = picture[:, (cols - keep) // 2:(cols - keep) // 2 + keep]
    else:
        keep = round(cols / aspect)
        picture = picture[(rows - keep) // 2:(rows - keep) // 2 + keep]
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_CUBIC)


def pictures(width: int, height: int, content: list[str]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    if "real" in content:
        for index in range(len(REAL_PHOTOS)):
            picture = real_photo(width, height, index)
            if picture is not None:
                found[f"real-{index}"] = picture
    if "synthetic" in content:
        found["synthetic"] = np.ascontiguousarray(images.photo(width, height, seed=1)[..., ::-1])
    return found


def pillow_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def files(rgb: np.ndarray) -> dict[str, bytes]:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return {"JPEG q92": cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes(),
            "PNG (Pillow)": pillow_png(rgb), "PNG (OpenCV)": cv2.imencode(".png", bgr)[1].tobytes(),
            "PNG (lama.png)": png.encode(rgb)}


# ------------------------------------------------------------------ the codecs


@functools.cache
def gpu_codecs() -> tuple[object | None, str]:
    """(torchvision.io, a line on the versions and the GPU) where nvJPEG runs here, else (None,
    why not). A tiny decode and encode on the GPU prove it (a torchvision built without nvJPEG,
    or for another torch, imports but fails at the first call) and start CUDA and nvJPEG's
    handles, which would otherwise weigh on the first timed call."""
    if importlib.util.find_spec("torchvision") is None:
        return None, "torchvision is not installed"
    try:
        import torch
        import torchvision
        import torchvision.io
    except Exception as error:  # a torchvision built for another torch fails in many ways
        return None, f"torchvision does not import ({type(error).__name__}: {error})"
    if not torch.cuda.is_available():
        return None, f"CUDA is not available to torch {torch.__version__}"
    # torch.frombuffer warns that the file's bytes are read-only; nvJPEG only reads them.
    warnings.filterwarnings("ignore", message="The given buffer is not writable")
    try:
        tiny = np.full((16, 16, 3), 128, np.uint8)
        torchvision.io.decode_jpeg(torch.frombuffer(cv2.imencode(".jpg", tiny)[1].tobytes(), dtype=torch.uint8),
                                   device="cuda")
        torchvision.io.encode_jpeg(torch.from_numpy(tiny).cuda().permute(2, 0, 1), quality=95)
        torch.cuda.synchronize()
    except Exception as error:
        return None, f"nvJPEG fails through torchvision {torchvision.__version__} ({type(error).__name__}: {error})"
    return torchvision.io, (f"nvJPEG through torchvision {torchvision.__version__}, torch {torch.__version__}, "
                            f"on {torch.cuda.get_device_name()}")


def nvjpeg_decoders() -> dict[str, Callable[[bytes], object]]:
    """name -> decode(bytes) on the GPU, to the host and left there; none where nvJPEG is absent."""
    tvio, _ = gpu_codecs()
    if tvio is None:
        return {}
    import torch

    def on_gpu(data: bytes):
        return tvio.decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=tvio.ImageReadMode.RGB,
                                device="cuda")

    def to_host(data: bytes) -> np.ndarray:
        # H×W×3 as the service's arrays are (the transpose on the GPU costs microseconds). A copy
        # to pageable memory returns once it is done, and it follows the decode on this thread's
        # stream: a synchronize of the stream, not the device's, which would make concurrent
        # threads wait for each other's decodes.
        return on_gpu(data).permute(1, 2, 0).contiguous().cpu().numpy()

    def left_on_gpu(data: bytes):
        image = on_gpu(data)
        torch.cuda.current_stream().synchronize()  # the decode is queued, not done, when it returns
        return image

    return {f"{NVJPEG}, to the host": to_host, f"{NVJPEG}, left on the GPU": left_on_gpu}


def nvjpeg_encode(rgb: np.ndarray) -> bytes:
    """The host's pixels to the GPU, nvJPEG's file back to the host, at the service's quality."""
    import torch

    tvio, _ = gpu_codecs()
    pixels = torch.from_numpy(rgb).cuda().permute(2, 0, 1)  # CHW view; torchvision makes it contiguous there
    return tvio.encode_jpeg(pixels, quality=95).cpu().numpy().tobytes()  # the file is on the GPU until .cpu()


def on_python_zlib(call: Callable[..., object]) -> Callable[..., object]:
    """`call` with lama.png on Python's own zlib instead of zlib-ng's, as before the service took zlib-ng."""
    @functools.wraps(call)
    def with_python_zlib(*args):
        kept, png.zlib_ng = png.zlib_ng, zlib
        try:
            return call(*args)
        finally:
            png.zlib_ng = kept
    return with_python_zlib


def on_zlib_ng_deflate(call: Callable[..., object]) -> Callable[..., object]:
    """`call` with lama.png's segments compressed by zlib-ng (level 1, run-length), as before ISA-L's."""
    @functools.wraps(call)
    def with_zlib_ng_deflate(*args):
        kept, png.deflate_segment = png.deflate_segment, run_length_deflate(zlib_ng)
        try:
            return call(*args)
        finally:
            png.deflate_segment = kept
    return with_zlib_ng_deflate


def decoders(kind: str) -> dict[str, Callable[[bytes], object]]:
    """name -> decode(bytes) for a file kind ('JPEG ...' or 'PNG ...')."""
    def opencv(data: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    def pillow(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)))

    found: dict[str, Callable[[bytes], object]] = {"lama.imageio (the service)": imageio.decode_image,
                                                   "OpenCV": opencv, "Pillow": pillow}
    if kind.startswith("JPEG"):
        if imagecodecs:
            found["imagecodecs jpeg8 (libjpeg-turbo)"] = imagecodecs.jpeg8_decode
        if simplejpeg:
            found["simplejpeg (libjpeg-turbo)"] = simplejpeg.decode_jpeg
        return found | nvjpeg_decoders()
    if kind == "PNG (lama.png)":
        found["lama.png"] = png.decode
        found["lama.png on Python's zlib"] = on_python_zlib(png.decode)
    if imagecodecs:
        found["imagecodecs png (libpng)"] = imagecodecs.png_decode
        found["imagecodecs spng (libspng)"] = imagecodecs.spng_decode
    if pyspng:
        found["pyspng (libspng)"] = pyspng.load
    return found


def encoders() -> dict[str, Callable[[np.ndarray], object]]:
    """name -> encode(RGB array); PNG ones at their fastest level, JPEG at quality 95 (the service's)."""
    def pillow(rgb: np.ndarray, **options) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, **options)
        return buffer.getvalue()

    found: dict[str, Callable[[np.ndarray], object]] = {
        "PNG lama.png (the service: ISA-L's deflate)": png.encode,
        "PNG lama.png on zlib-ng's deflate (level 1, run-length)": on_zlib_ng_deflate(png.encode),
        "PNG OpenCV (level 1, RLE)": lambda rgb: cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
        "PNG Pillow (level 1)": lambda rgb: pillow(rgb, format="PNG", compress_level=1),
    }
    if imagecodecs:
        found["PNG imagecodecs png (level 1)"] = lambda rgb: imagecodecs.png_encode(rgb, level=1)
        found["PNG imagecodecs spng (level 1)"] = lambda rgb: imagecodecs.spng_encode(rgb, level=1)
    found["JPEG OpenCV"] = lambda rgb: cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    found["JPEG Pillow"] = lambda rgb: pillow(rgb, format="JPEG", quality=95)
    if imagecodecs:
        found["JPEG imagecodecs jpeg8"] = lambda rgb: imagecodecs.jpeg8_encode(rgb, level=95)
    if simplejpeg:
        found["JPEG simplejpeg"] = lambda rgb: simplejpeg.encode_jpeg(rgb, 95)
    found["JPEG lama.jpeg (the service: libjpeg-turbo in strips)"] = lambda rgb: imageio.encode_image(rgb, "jpeg",
                                                                                                      quality=95)
    if gpu_codecs()[0] is not None:
        found[f"JPEG {NVJPEG}, host to host"] = nvjpeg_encode
    return found


# ------------------------------------------------------------------ measuring


def file_bytes(encoded: object) -> int:
    """The length of an encoder's file: bytes, or OpenCV's (ok, array) pair."""
    return len(encoded[1]) if isinstance(encoded, tuple) else len(encoded)


def best_ms(call: Callable[[], object], runs: int) -> float:
    """The fastest of `runs` calls after an unmeasured one: on a shared machine the other calls
    measure the neighbours as much as the codec."""
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def releases_gil(call: Callable[[], object], runs: int = 3) -> bool:
    """Whether another Python thread runs while `call` does. A counting thread runs through a
    pause, the calls and another pause of the calls' length; a codec that holds the GIL stops it
    for the whole of each call, one that releases it lets it count about as fast as in the
    pauses (which are measured around the calls, so that other load on the machine weighs on
    both alike). The switch interval is made short, so that the moments between calls, when
    the counter gets the GIL anyway, add little."""
    counted, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counted[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    thread = threading.Thread(target=spin)
    thread.start()
    try:
        started = time.perf_counter()
        for _ in range(runs):
            call()
        pause = time.perf_counter() - started  # these calls only set the pauses' length
        marks = [(time.perf_counter(), counted[0])]
        for step in ("pause", "calls", "pause"):
            if step == "pause":
                time.sleep(pause)
            else:
                for _ in range(runs):
                    call()
            marks.append((time.perf_counter(), counted[0]))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    rates = [(c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in zip(marks, marks[1:])]
    return rates[1] >= GIL_FREE_SHARE * (rates[0] + rates[2]) / 2


def decodes_per_second(decode: Callable[[], object], threads: int, seconds: float) -> float:
    """Decodes a second that `threads` threads, each decoding again and again for `seconds`,
    complete together: what a server under load gets from a decoder, locks and GIL included."""
    decode()
    counts = [0] * threads
    started = time.perf_counter()
    deadline = started + seconds

    def work(index: int) -> None:
        while time.perf_counter() < deadline:
            decode()
            counts[index] += 1

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)  # the calls that ended after the deadline count too


def table(title: str, columns: list[str], rows: dict[str, list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in rows.items()]
    return "\n".join(lines)


def run(sizes: list[tuple[int, int]], runs: int, content: str, threads: int, seconds: float) -> str:
    """The tables for one kind of content ('real' or 'synthetic')."""
    size_names = [f"{w}×{h}" for w, h in sizes]
    decode_rows: dict[str, dict[str, list[float]]] = {}
    encode_rows: dict[str, list[float]] = {}
    sizes_kb: dict[str, list[float]] = {}
    encoded_kb: dict[str, list[list[float]]] = {}
    gil: dict[str, bool] = {}
    loaded_jpeg = b""  # the largest size's first JPEG: the one the threads decode
    for index, (width, height) in enumerate(sizes):
        largest = index == len(sizes) - 1
        print(f"{content} {width}×{height} ...", file=sys.stderr)
        for picture in pictures(width, height, [content]).values():
            for kind, data in files(picture).items():
                sizes_kb.setdefault(kind, [[] for _ in sizes])[index].append(len(data) / 1024)
                if largest and kind.startswith("JPEG") and not loaded_jpeg:
                    loaded_jpeg = data
                for name, decode in decoders(kind).items():
                    cells = decode_rows.setdefault(kind, {}).setdefault(name, [[] for _ in sizes])
                    call = partial(decode, data)
                    cells[index].append(best_ms(call, runs))
                    if largest and name not in gil:
                        gil[name] = releases_gil(call)
            for name, encode in encoders().items():
                encode_rows.setdefault(name, [[] for _ in sizes])[index].append(best_ms(partial(encode, picture), runs))
                encoded_kb.setdefault(name, [[] for _ in sizes])[index].append(file_bytes(encode(picture)) / 1024)

    def mean(values: list[float]) -> str:
        return f"{statistics.fmean(values):.1f}" if values else "–"

    out = [(f"### {CONTENT[content]}\n\nCodecs on {os.cpu_count()} cores ({parallel.cores()} usable; lama.png's threads "
            f"{parallel.cores()}, OpenCV's {cv2.getNumThreads()}): mean over the pictures of each codec's best of {runs} "
            f"calls, ms. OpenCV {cv2.__version__}, Pillow {Image.__version__}, simplejpeg "
            f"{getattr(simplejpeg, '__version__', 'absent')}, imagecodecs {getattr(imagecodecs, '__version__', 'absent')}"
            + (f"; {gpu_codecs()[1]}." if gpu_codecs()[0] else "."))]
    for kind, rows in decode_rows.items():
        kb = " / ".join(mean(values) for values in sizes_kb[kind])
        out.append(table(f"Decode {kind} (files of {kb} KB)", ["decoder", *size_names, "releases the GIL"],
                         {name: [mean(v) for v in cells] + ["yes" if gil.get(name) else "no"]
                          for name, cells in rows.items()}))
    out.append(table("Encode (RGB array in, bytes out)", ["encoder", *size_names],
                     {name: [mean(v) for v in cells] for name, cells in encode_rows.items()}))
    out.append(table("The encoders' files, KB", ["encoder", *size_names],
                     {name: [mean(v) for v in cells] for name, cells in encoded_kb.items()}))
    if gpu_codecs()[0] is not None and loaded_jpeg:
        out.append(loaded(loaded_jpeg, size_names[-1], threads, seconds))
    return "\n\n".join(out)


def loaded(data: bytes, size_name: str, threads: int, seconds: float) -> str:
    """Decodes per second of one JPEG, one thread against `threads`: the service's decoder and nvJPEG."""
    print(f"{threads} threads decoding a {size_name} JPEG ...", file=sys.stderr)
    contenders = {f"lama.imageio (the service; {imageio.DECODE_SLOTS} decode at once)": imageio.decode_image,
                  f"{NVJPEG}, to the host": nvjpeg_decoders()[f"{NVJPEG}, to the host"]}
    rows = {name: [f"{decodes_per_second(partial(decode, data), count, seconds):.0f}" for count in (1, threads)]
            for name, decode in contenders.items()}
    return table(f"Decodes per second of one {size_name} JPEG q92 ({len(data) / 1024:.0f} KB), "
                 f"each thread decoding it again and again for {seconds:g} s",
                 ["decoder", "1 thread", f"{threads} threads"], rows)


MASK_COVERAGE = 0.08  # as the load benchmark's


def mask_files(width: int, height: int) -> dict[str, bytes]:
    strokes = images.stroke_mask(width, height, MASK_COVERAGE, seed=7)
    return {"OpenCV (8-bit, Sub)": images.png(strokes), "Pillow (8-bit, adaptive)": pillow_png(strokes),
            "the editor (1-bit)": images.editor_mask_png(strokes),
            "OpenCV, soft edges (8-bit, Sub)": images.png(cv2.GaussianBlur(strokes, (5, 5), 0))}


def masks_table(sizes: list[tuple[int, int]], runs: int) -> str:
    """One table per way of writing a mask: each decoder's best of `runs` at each size."""
    decoders = {"lama.imageio.decode_mask (the service)": imageio.decode_mask,
                "OpenCV": lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
                "Pillow": lambda data: np.asarray(Image.open(io.BytesIO(data)))}
    cells: dict[str, dict[str, list[str]]] = {}
    sizes_kb: dict[str, list[str]] = {}
    gil: dict[str, dict[str, bool]] = {}
    for index, (width, height) in enumerate(sizes):
        print(f"masks {width}×{height} ...", file=sys.stderr)
        for kind, data in mask_files(width, height).items():
            sizes_kb.setdefault(kind, []).append(f"{len(data) / 1024:.1f}")
            for name, decode in decoders.items():
                call = partial(decode, data)
                cells.setdefault(kind, {}).setdefault(name, []).append(f"{best_ms(call, runs):.2f}")
                if index == len(sizes) - 1:
                    gil.setdefault(kind, {})[name] = releases_gil(call)
    columns = ["decoder", *(f"{w}×{h}" for w, h in sizes), "releases the GIL"]
    return "\n\n".join(
        table(f"Decode a mask written by {kind} (files of {' / '.join(sizes_kb[kind])} KB), best of {runs}, ms",
              columns, {name: [*row, "yes" if gil[kind][name] else "no"] for name, row in rows.items()})
        for kind, rows in cells.items())


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES),
                        help="WxH,... (default: 640x480,1280x960,2560x1920)")
    parser.add_argument("--runs", type=int, default=7, help="timed calls per codec and file (default 7)")
    parser.add_argument("--content", default="real,synthetic", help="real and/or synthetic pictures")
    parser.add_argument("--threads", type=int, default=16,
                        help="threads decoding at once in the GPU codecs' loaded table (default 16)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="how long each decoder is loaded in that table (default 2)")
    parser.add_argument("--masks", action="store_true", help="time the masks' decoders instead of the photos' codecs")
    args = parser.parse_args(argv)
    sizes = [_size(text) for text in args.sizes.split(",")]
    if args.masks:
        print(f"Mask decoders on {os.cpu_count()} cores, OpenCV {cv2.__version__}, Pillow {Image.__version__}\n")
        print(masks_table(sizes, args.runs))
        return
    content = [name for name in args.content.split(",") if name]
    if not set(content) <= set(CONTENT) or not content:
        parser.error("--content takes real and/or synthetic")
    print("\n\n".join(run(sizes, args.runs, name, args.threads, args.seconds) for name in content))
    tvio, why = gpu_codecs()
    if tvio is None:
        print(f"\nGPU codecs (nvJPEG through torchvision) not measured: {why}.")


if __name__ == "__main__":
    main()
