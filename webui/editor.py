"""The photo editor of the Repair tab and the repair handler behind it.

The editor is a Gradio custom HTML component (gr.HTML with a template, CSS and JavaScript of
its own, files in webui/static/ read once at start-up: no Node build). Its page side does
everything that needs no model in the browser: showing and zooming the photo, painting
the mask, undo, the history of results. What travels per repair is small: the photo is
uploaded once per editing session (Gradio's upload route) and the server keeps it decoded
(ImageCache); a repair uploads only the mask, a 1-bit PNG at the photo's resolution, and
triggers the component's "repair" event with the paths of both. The answer is the
component's new value: where the full-resolution result is (the very file RepairService
encoded and saved under outputs/, linked into the UI cache that Gradio serves), a downscaled
JPEG preview, and the repaired rectangle at full resolution for the canvas. Why this rather
than gr.ImageEditor, with measurements: docs/EDITOR.md.

The handlers are plain functions of their arguments (no Gradio request needed), so that
tests can call them without a browser.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder

from lama import imageio, masks
from lama.errors import ImageError, ImageTooLargeError, InpaintError, MaskError, OptionError
from lama.files import write_bytes_atomic
from lama.metadata import Metadata
from lama.output_formats import OutputFormat
from lama.stages import MODEL_STAGES
from monitor.records import UserWait
from monitor.requestlog import RequestLog
from service.pipeline import Decoded, RepairOptions, RepairService

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PREVIEW_SIDE_PX = 1600  # the long side of the preview the page shows; the download is full size
PREVIEW_QUALITY = 88
PATCH_PNG_MAX_PIXELS = 1_000_000  # a repaired rectangle up to this size is sent exact (PNG)
PATCH_SIDE_PX = 2048  # a larger one as a JPEG with at most this long side
RESULTS_FOLDER = "editor"  # under the UI cache: one unguessable folder per result
# A full disk: the result goes to the page inline, the download too up to this size.
INLINE_DOWNLOAD_MAX_BYTES = 64 * 2**20
MAX_WAIT_S = 3600.0  # a reported wait beyond this is not a wait for one repair

PHOTO_GONE = "The photo is no longer on the server (uploads expire after a while)."
FAILED = "The repair failed on the server (the log has the details); please try again."


class EditorRequestError(Exception):
    """A repair request the editor's page should never send (a missing or foreign file)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- decoded photos

class ImageCache:
    """Decoded images by the path of their file in the UI cache, least recently used first out.

    A session's photo is decoded once (through lama.imageio, with the service's limits: the
    same gate as the API) and every later repair of it, and of its results, skips the decode.
    Bounded by count and bytes; an image larger than the byte bound is simply not kept.
    """

    def __init__(self, max_entries: int = 6, max_bytes: int = 512 * 2**20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, limits: imageio.ImageLimits) -> np.ndarray:
        key = str(path)
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                return image
        image = imageio.read_image(path, limits)  # outside the lock: other sessions go on meanwhile
        self.put(path, image)
        return image

    def put(self, path: Path, image: np.ndarray) -> None:
        key = str(path)
        with self._lock:
            old = self._images.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if image.nbytes > self.max_bytes:
                return
            self._images[key] = image
            self._bytes += image.nbytes
            while len(self._images) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._images.popitem(last=False)
                self._bytes -= evicted.nbytes

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, path: Path) -> bool:
        return str(path) in self._images


# ---------------------------------------------------------------- files the page may name

class EditorFiles:
    """The UI cache folder (Gradio's upload folder, which /gradio_api/file= serves): where the
    page's uploads arrive and where results are published for it."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def resolve(self, value: Any, what: str, known: Callable[[Path], bool] = lambda path: False) -> Path:
        """The file `value` ({"path": ...} as the page sends it) names, if it is a regular file
        inside the cache; the page only ever names its own uploads and published results, so
        anything else is refused (Gradio checks event data the same way; this is the second lock).
        `known`: a path whose file is missing but whose image the server still holds (a result
        it could not write, see publish) counts as there."""
        path = value.get("path") if isinstance(value, dict) else None
        if not isinstance(path, str) or not path:
            raise EditorRequestError("invalid_request", f"the request names no {what} file")
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root):
            raise EditorRequestError("invalid_request", f"the {what} must be a file uploaded to this editor")
        if not resolved.is_file() and not known(resolved):
            raise EditorRequestError(f"{what}_gone", PHOTO_GONE if what == "photo" else
                                     f"the {what} upload is no longer on the server; please try again")
        return resolved

    def message(self, error: imageio.ImageError) -> str:
        """lama.imageio's message for a file in the cache, without the server's folder in it."""
        return str(error).replace(str(self.root) + os.sep, "")

    def new_folder(self, create: bool = True) -> Path:
        folder = self.root / RESULTS_FOLDER / secrets.token_hex(16)
        if create:
            folder.mkdir(parents=True)
        return folder


# ---------------------------------------------------------------- what the page shows

def preview(image: np.ndarray, max_side: int = PREVIEW_SIDE_PX, icc_profile: bytes | None = None) -> bytes:
    """A JPEG of `image` with its long side at most `max_side` (transparency on white), with the
    photo's colour profile: a browser then shows it in the photo's colours, as it shows the photo."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return imageio.encode_image(image, "jpeg", PREVIEW_QUALITY, metadata=Metadata(icc_profile=icc_profile))


def repaired_box(mask: np.ndarray, grow: int) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the painted pixels grown by `grow` px, clipped to the image:
    the engine leaves every pixel outside the dilated mask as it was, so this rectangle holds
    all that changed. None when nothing is painted."""
    x, y, width, height = cv2.boundingRect(mask.view(np.uint8) if mask.dtype == bool else mask)
    if width == 0 or height == 0:
        return None
    rows, cols = mask.shape[:2]
    left, top = max(0, x - grow), max(0, y - grow)
    right, bottom = min(cols, x + width + grow), min(rows, y + height + grow)
    return left, top, right - left, bottom - top


def patch(image: np.ndarray, box: tuple[int, int, int, int], icc_profile: bytes | None = None) -> tuple[bytes, str]:
    """The repaired rectangle for the page's canvas, and its file extension: a PNG, exact, up
    to PATCH_PNG_MAX_PIXELS (the usual stroke; JPEG would smear the fill into the untouched
    rim around it) and wherever there is transparency; beyond, a JPEG scaled down past
    PATCH_SIDE_PX (the page scales it back): the canvas only shows it, the download is exact.
    With the photo's colour profile: the browser converts the photo it draws from its profile
    (an iPhone's Display P3), and a rectangle without one would show, untouched rim and all, in
    other colours than the picture around it."""
    metadata = Metadata(icc_profile=icc_profile)
    x, y, width, height = box
    crop = np.ascontiguousarray(image[y:y + height, x:x + width])
    has_alpha = image.ndim == 3 and image.shape[2] == 4
    if width * height <= PATCH_PNG_MAX_PIXELS or has_alpha:
        if max(width, height) > PATCH_SIDE_PX:
            scale = PATCH_SIDE_PX / max(width, height)
            crop = cv2.resize(crop, (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        return imageio.encode_image(crop, "png", metadata=metadata), "png"
    return preview(crop, PATCH_SIDE_PX, icc_profile), "jpg"


def publish(files: EditorFiles, service: RepairService, result_image: np.ndarray, data: bytes, saved_as: str | None,
            fmt: OutputFormat, mask: np.ndarray, grow: int, name: str, for_page: bool = True,
            icc_profile: bytes | None = None) -> dict[str, Any]:
    """Put the result where the page can fetch it: the file the service saved (hard-linked,
    not re-encoded: it is what the user downloads), a preview and the repaired rectangle (with
    `for_page`: what the page draws; a script only fetches the file), in a new folder of the UI
    cache. Where that cannot be written (a full disk), the page gets them inline instead: the
    user still sees and downloads the result. `name`: the download's; `icc_profile`: the photo's,
    for the preview and the rectangle.

    "image" names the result for the next repair (ImageCache keeps it decoded under that
    path, whether or not the file could be written)."""
    folder = files.new_folder(create=False)
    full = folder / name
    published: dict[str, Any] = {"image": {"path": str(full)}, "name": full.name, "width": result_image.shape[1],
                                 "height": result_image.shape[0]}
    preview_data = preview(result_image, icc_profile=icc_profile) if for_page else None
    box = repaired_box(mask, grow) if for_page else None
    patch_data, extension = patch(result_image, box, icc_profile) if box is not None else (None, "")
    try:
        folder.mkdir(parents=True)
        try:
            if saved_as is None:
                raise FileNotFoundError("the service could not save the result")
            os.link(service.outputs.root / saved_as, full)
        except OSError:
            # Another filesystem (or the save failed): the same encoded bytes, written once more.
            write_bytes_atomic(full, data)
        if preview_data is not None:
            (folder / "preview.jpg").write_bytes(preview_data)
            published["preview"] = {"path": str(folder / "preview.jpg")}
        if patch_data is not None:
            (folder / f"patch.{extension}").write_bytes(patch_data)
            published["patch"] = {"path": str(folder / f"patch.{extension}"), "box": list(box)}
        return published
    except OSError as error:
        log.error("editor: could not write a result into the UI cache %s: %s; it went to the page inline",
                  files.root, error.strerror or error)
        shutil.rmtree(folder, ignore_errors=True)
    published["image"]["url"] = _data_url(data, fmt.media_type) if len(data) <= INLINE_DOWNLOAD_MAX_BYTES else None
    if preview_data is not None:
        published["preview"] = {"url": _data_url(preview_data, "image/jpeg")}
    if patch_data is not None:
        published["patch"] = {"url": _data_url(patch_data, f"image/{'png' if extension == 'png' else 'jpeg'}"),
                              "box": list(box)}
    published["unsaved"] = True
    return published


def _data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


# ---------------------------------------------------------------- the user's wait

class WaitReports:
    """Repairs whose page will report how long the user waited, by an unguessable token the
    page got with the result: each token is good for one report, for its own record only.
    Bounded: the oldest of more than `max_pending` unreported repairs is forgotten (a page
    that was closed never reports)."""

    def __init__(self, max_pending: int = 256):
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[str, float]] = OrderedDict()  # token -> (record id, server s)
        self._lock = threading.Lock()

    def expect(self, record_id: str, server_s: float) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[token] = (record_id, server_s)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
        return token

    def report(self, report: Any, requests: RequestLog | None) -> bool:
        """`report`: {"token", "waited_ms", "upload_ms", "transfer_ms"} as the page measured them.
        False, and nothing recorded, for an unknown token or numbers that cannot be a wait:
        parts beyond the whole, a whole shorter than the server's own part or over MAX_WAIT_S."""
        if not isinstance(report, dict) or not isinstance(report.get("token"), str) or requests is None:
            return False
        parts = {}
        for key in ("waited_ms", "upload_ms", "transfer_ms"):
            value = report.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            parts[key] = value / 1000
        waited, upload, transfer = parts["waited_ms"], parts["upload_ms"], parts["transfer_ms"]
        with self._lock:
            record_id, server_s = self._pending.get(report["token"], (None, 0.0))
            if record_id is None or not server_s <= waited <= MAX_WAIT_S or not (
                    0 <= upload and 0 <= transfer and upload + transfer <= waited):
                return False
            del self._pending[report["token"]]
        return requests.amend(record_id, UserWait(total=round(waited, 4), upload=round(upload, 4),
                                                  transfer=round(transfer, 4)))


# ---------------------------------------------------------------- the handlers

def _refine_px(name: str, value: Any) -> int:
    """A slider's value as whole pixels; OptionError for what is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise OptionError(name, f"{name} must be a number of pixels, got {value!r}")
    return int(number)


class EditorBackend:
    """What the editor's page asks of the server: repair (its event) and prepare (a server
    function). Both answer with dicts for the page and never raise: an error must reach the
    editor's own message line, with the last good result left on screen, not Gradio's error
    badges."""

    def __init__(self, service: RepairService, cache_dir: Path | None = None, images: ImageCache | None = None):
        """`cache_dir`: Gradio's upload folder (GRADIO_TEMP_DIR, which app.py sets) unless given."""
        self.service = service
        self.files = EditorFiles(cache_dir or Path(get_upload_folder()))
        self.images = images or ImageCache()
        self.waits = WaitReports()

    def repair(self, request: Any, strategy: str, dilate: Any, feather: Any, fmt: str = "png",
               mask_threshold: Any = masks.DEFAULT_THRESHOLD, for_page: bool = True) -> dict[str, Any]:
        """`request` is what the page sends: {"request": id, "photo": {"path"}, "mask": {"path"},
        "name": the photo's file name}. Returns the editor's new value: {"request": id,
        "result": {...}, "wait_token": ...} or {"request": id, "error": message, "code": code}.
        `mask_threshold`: the page sends black and white, which any threshold reads the same;
        a mask file from a script (webui/client_api.py) is read with it. `for_page` False: a
        script's repair (webui/client_api.py), which only fetches the file: no preview or
        rectangle, no wait to report, and its images are not kept decoded (they would push the
        editing sessions' photos out of ImageCache for a repair that is never continued)."""
        started = time.perf_counter()
        request = request if isinstance(request, dict) else {}
        request_id = str(request.get("request", ""))[:40]
        try:
            photo_path = self.files.resolve(request.get("photo"), "photo", known=self.images.__contains__)
            mask_path = self.files.resolve(request.get("mask"), "mask")
            options = RepairOptions(strategy, _refine_px("dilate", dilate), _refine_px("feather", feather), fmt,
                                    mask_threshold=_refine_px("mask_threshold", mask_threshold))
            options.validate()
            if for_page:
                image, mask = self._read(photo_path, mask_path, options.mask_threshold)
                read = time.perf_counter()
                source = self._source(photo_path)
                # The download is named after the photo's file (service.storage.result_name).
                result = self.service.repair(image, mask, options, source, upload_name=request.get("name"))
            else:
                source = None
                decoded = self._decode(photo_path, mask_path, options, request.get("name"))
                mask = decoded.mask
                read = time.perf_counter()
                result = self.service.repair_decoded(decoded, options)
            repaired = time.perf_counter()
            published = publish(self.files, self.service, result.image, result.data, result.saved_as, result.format,
                                mask, options.dilate + 1, result.name, for_page,
                                source.metadata.icc_profile if source else None)
            if for_page:
                self.images.put(Path(published["image"]["path"]), result.image)
        except (EditorRequestError, InpaintError) as error:
            return {"request": request_id, "error": error.message, "code": error.code}
        except Exception:
            # The user learns it failed; the operator gets the traceback.
            log.exception("editor repair failed")
            return {"request": request_id, "error": FAILED, "code": "internal_error"}
        timings = result.timings
        model = sum(timings.get(stage, 0.0) for stage in MODEL_STAGES)
        server = time.perf_counter() - started
        published["summary"] = result.summary
        published["timings"] = {
            "server": server, "queue": timings["queue"], "model": model,
            # Everything else the server did: read the mask (and the photo, the first time),
            # encode and save the result, publish it with its preview.
            "save": server - timings["queue"] - model,
            "read": read - started, "encode": timings["encode"], "publish": time.perf_counter() - repaired,
        }
        answer = {"request": request_id, "result": published}
        if result.record_id is not None and for_page:  # the page reports the user's wait
            answer["wait_token"] = self.waits.expect(result.record_id, server)
        return answer

    def on_repair(self, strategy: str, dilate: float, feather: float, fmt: str, evt: gr.EventData) -> dict[str, Any]:
        """The Gradio listener of the editor's "repair" event: the request is the event's data."""
        return self.repair(evt._data, strategy, dilate, feather, fmt)

    def prepare(self, photo: Any) -> dict[str, Any]:
        """Called by the page as soon as the photo is uploaded: decodes it into the cache (so
        that the first repair does not wait for that) and says at once when the server refuses it."""
        try:
            image = self.images.get(self.files.resolve(photo, "photo"), self.service.limits)
        except EditorRequestError as error:
            return {"error": error.message, "code": error.code}
        except imageio.ImageError as error:
            return {"error": self.files.message(error), "code": "invalid_image"}
        except Exception:
            log.exception("editor: preparing a photo failed")
            return {"error": FAILED, "code": "internal_error"}
        return {"width": image.shape[1], "height": image.shape[0]}

    def _source(self, photo_path: Path) -> imageio.Source | None:
        """The photo file's format (what "same" means) and the EXIF and profile its result keeps;
        None for a photo held only decoded (a result the cache could not write: see publish)."""
        try:
            return imageio.read_source(photo_path, self.service.limits)
        except ImageError:  # it decoded before, so its file is gone, not broken
            return None

    def report_wait(self, report: Any) -> dict[str, bool]:
        """Called by the page once a result is on screen: how long the user waited, which only the
        browser can measure; added to the repair's record (logs/requests.jsonl, the Resources tab)."""
        return {"recorded": self.waits.report(report, self.service.requests)}

    def _read(self, photo_path: Path, mask_path: Path, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """The page's photo decoded into ImageCache (or found there), and its mask."""
        try:
            image = self.images.get(photo_path, self.service.limits)
            mask = masks.binarize(imageio.read_mask(mask_path, self.service.limits), threshold)
        except imageio.ImageTooLargeError as error:
            raise ImageTooLargeError(self.files.message(error)) from None
        except imageio.ImageError as error:
            raise ImageError(self.files.message(error)) from None
        _check_painted(mask)
        return image, mask

    def _decode(self, photo_path: Path, mask_path: Path, options: RepairOptions, name: str | None) -> Decoded:
        """A script's photo and mask, read once, as the API decodes an upload: both at once, the
        mask planned in its thread, the photo the request's own (the result is pasted into it).
        What refuses it without decoding (sizes, a full queue) refuses it first."""
        try:
            sizes = {part: path.stat().st_size for part, path in (("image", photo_path), ("mask", mask_path))}
            self.service.check_before_decode(options, sizes)
            decoded = self.service.decode(photo_path.read_bytes(), mask_path.read_bytes(), name, options)
        except OSError as error:
            raise ImageError(f"the upload could not be read: {error.strerror or error}") from None
        _check_painted(decoded.mask)
        return decoded


def _check_painted(mask: np.ndarray) -> None:
    if not mask.any():
        raise MaskError("Paint over what should be removed first, then click Repair.", code="empty_mask")


# ---------------------------------------------------------------- the component

@dataclass(frozen=True)
class Assets:
    """The page side, read once at start-up from the package."""

    html: str
    css: str
    js: str

    @classmethod
    def load(cls, folder: Path = STATIC) -> Assets:
        return cls(*((folder / f"editor.{kind}").read_text(encoding="utf-8") for kind in ("html", "css", "js")))


def build_editor(backend: EditorBackend, mask_threshold: int = masks.DEFAULT_THRESHOLD,
                 assets: Assets | None = None, **kwargs: Any) -> gr.HTML:
    """The editor component, placed in the current Blocks: its value is the last answer of
    the "repair" event (EditorBackend.repair); listen to it with `editor.repair(...)`.

    The page gets the upload limits as props (a photo over them is caught at upload, with
    the offer to repair a downscaled copy) and the threshold for uploaded mask files. A plain
    gr.HTML rather than a subclass: Gradio writes a .pyi stub beside the module of every
    component class, which would shadow this module for type checkers.
    """
    assets = assets or Assets.load()
    limits = backend.service.limits

    # The page calls server.prepare(photo) and server.report_wait(report): Gradio names them by
    # their function's name and, with one argument, hands over that argument.
    def prepare(photo: Any) -> dict[str, Any]:
        return backend.prepare(photo)

    def report_wait(report: Any) -> dict[str, bool]:
        return backend.report_wait(report)

    return gr.HTML(value=None, html_template=assets.html, css_template=assets.css, js_on_load=assets.js,
                   apply_default_css=False, server_functions=[prepare, report_wait],
                   max_pixels=limits.max_pixels, max_side=limits.max_side, max_bytes=limits.max_bytes,
                   mask_threshold=mask_threshold, **kwargs)
