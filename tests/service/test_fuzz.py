"""Malformed input: hundreds of mutated uploads, and every answer is a 2xx with a correct
image or a 4xx with a message. Zero 5xx, the process never dies, memory stays bounded.

Inputs come from the fixed corpus in tests/corpus/ (written by make_corpus.py; manifest.json
says what each file must give) and from hypothesis, which mutates them: truncations, flipped
bytes, overwritten, inserted and deleted spans, trailing junk, header sizes rewritten to
absurd values (with valid checksums, so the parsers believe them), random bytes behind a
real signature, and garbage form fields. "Correct image" means: the body decodes, in the
format asked for, at the size of the input as a viewer shows it (EXIF orientation applied).

Most requests go through FastAPI's TestClient on app.build_app (fast); a smaller sample
goes to a live `python app.py`, whose RSS is watched. The UI editor's repair gets mutated
requests the same way: it may only answer with an error message or a valid result.
Hypothesis runs derandomized (a fixed sequence of examples) with no example database, so
every run sends the same inputs.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections import Counter
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from corpus.make_corpus import tiff_tiled
from lama import imageio
from lama.output_formats import output_format
from support.liveserver import LiveServer
from support.reliability import record
from support.app import make_settings, serve, service_of
from webui.editor import EditorBackend

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
IMAGES = [entry for entry in MANIFEST if entry["role"] == "image"]
VALID_IMAGES = [entry for entry in IMAGES if entry["expect"] == "ok"]
MASKS = [entry for entry in MANIFEST if entry["role"] == "mask"]
STANDARD = (64, 48)  # the corpus's size: every corpus mask has it

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MUTATED_EXAMPLES = 800
RANDOM_EXAMPLES = 200
FORGED_EXAMPLES = 300
UI_EXAMPLES = 500
LIVE_EXAMPLES = 150
LIVE_RSS_GROWTH_BOUND = 256 * 2**20
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\x00\x10\x00\x00WEBPVP8X",
              b"RIFF\x40\x00\x00\x00WEBPVP8L", b"RIFF\x40\x00\x00\x00WEBPVP8 ", b"BM", b"II*\x00", b"MM\x00*",
              b"GIF89a", b"")


def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


# ------------------------------------------------------------------ inputs


def mask_png(width: int, height: int) -> bytes:
    """A gray mask of any size with a box painted (the whole picture when it is tiny)."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: max(height // 4 + 1, height // 2), width // 4: max(width // 4 + 1, width // 2)] = 255
    return cv2.imencode(".png", mask)[1].tobytes()


def mask_for(size: tuple[int, int] | None, draw) -> tuple[bytes, str]:
    """A valid mask for an image of `size`: any corpus mask (every mode) at the standard size."""
    if size is None or tuple(size) == STANDARD:
        entry = draw(st.sampled_from(MASKS))
        return read(entry["file"]), entry["file"]
    return mask_png(*size), f"mask {size[0]}×{size[1]}"


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR size and fix its CRC, so the header looks genuine."""
    if not data.startswith(b"\x89PNG") or len(data) < 33:
        return data
    out = bytearray(data)
    struct.pack_into(">II", out, 16, width, height)
    struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = out.find(marker)
        if at >= 0 and at + 9 <= len(out):
            struct.pack_into(">HH", out, at + 5, height & 0xFFFF, width & 0xFFFF)
            break
    return bytes(out)


def bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    if len(out) >= 26:
        struct.pack_into("<II", out, 18, width % 2**32, height % 2**32)  # sizes ≥ 2³¹ read as negative
    return bytes(out)


def webp_with_size(data: bytes, width: int, height: int) -> bytes:
    """Put a VP8X chunk claiming width×height in front of the WebP's first chunk."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return data
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x10\0\0\0" + ((width - 1) % 2**24).to_bytes(3, "little") + \
        ((height - 1) % 2**24).to_bytes(3, "little")
    body = b"WEBP" + vp8x + data[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_with_size(data: bytes, width: int, height: int) -> bytes:
    if data[:4] != b"II*\x00":
        return data
    out = bytearray(data)
    ifd = struct.unpack_from("<I", out, 4)[0]
    if ifd + 2 > len(out):
        return data
    for index in range(struct.unpack_from("<H", out, ifd)[0]):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(out):
            break
        tag = struct.unpack_from("<H", out, entry)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", out, entry, tag, 4, 1, (width if tag == 256 else height) % 2**32)
    return bytes(out)


RESIZERS = {".png": png_with_size, ".jpg": jpeg_with_size, ".bmp": bmp_with_size, ".webp": webp_with_size,
            ".tiff": tiff_with_size}
SIZES = st.one_of(st.integers(0, 70), st.sampled_from([1, 4095, 4096, 4097, 8192, 8193, 65535, 65536, 2**24,
                                                       2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))


@st.composite
def mutation(draw, data: bytes, name: str) -> tuple[bytes, str]:
    """One mutation of `data`, and a short description of it."""
    kind = draw(st.sampled_from(["as-is", "truncate", "flip", "overwrite", "insert", "delete", "append",
                                 "header-size", "flip"]))
    if not data or kind == "as-is":
        return data, "as-is"
    if kind == "truncate":
        cut = draw(st.integers(0, len(data) - 1))
        return data[:cut], f"truncated at {cut}"
    if kind == "flip":
        out = bytearray(data)
        positions = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8))
        for position in positions:
            out[position] ^= draw(st.integers(1, 255))
        return bytes(out), f"flipped {positions}"
    if kind == "overwrite":
        at = draw(st.integers(0, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=32))
        return data[:at] + junk + data[at + len(junk):], f"overwrote {len(junk)} at {at}"
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=1, max_size=64))
        return data[:at] + junk + data[at:], f"inserted {len(junk)} at {at}"
    if kind == "delete":
        at = draw(st.integers(0, len(data) - 1))
        length = draw(st.integers(1, 64))
        return data[:at] + data[at + length:], f"deleted {length} at {at}"
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=256)), "trailing junk"
    resize = RESIZERS.get(Path(name).suffix)
    if resize is None:
        return data, "as-is"
    width, height = draw(SIZES), draw(SIZES)
    return resize(data, width, height), f"header claims {width}×{height}"


@st.composite
def form_fields(draw) -> dict[str, str]:
    """Mostly the defaults; sometimes valid choices, sometimes garbage."""
    fields: dict[str, str] = {}
    if draw(st.integers(0, 3)) == 0:
        fields["strategy"] = draw(st.sampled_from(["crop", "original", "resize", "", "CROP", "../x", "\0"]))
    if draw(st.integers(0, 3)) == 0:
        fields["format"] = draw(st.sampled_from(["png", "jpeg", "webp", "jpg", "same", "JPG", "gif", ""]))
    for name in ("dilate", "feather"):
        if draw(st.integers(0, 4)) == 0:
            fields[name] = draw(st.one_of(st.integers(-10, 300).map(str),
                                          st.sampled_from(["", "1.5", "nan", "1e9", "-0", "0x10", "٣"])))
    return fields


@st.composite
def mutated_request(draw) -> dict:
    """A corpus image (or mask) mutated, with a partner that is valid for the unmutated size."""
    if draw(st.integers(0, 3)) == 0:  # mutate the mask, keep a valid image
        mask = draw(st.sampled_from(MASKS))
        mask_bytes, how = draw(mutation(read(mask["file"]), mask["file"]))
        image = draw(st.sampled_from([e for e in VALID_IMAGES if tuple(e["size"]) == STANDARD]))
        return {"image": read(image["file"]), "mask": mask_bytes, "size": STANDARD, "fields": draw(form_fields()),
                "what": f"{image['file']} + {mask['file']} ({how})"}
    image = draw(st.sampled_from(IMAGES))
    image_bytes, how = draw(mutation(read(image["file"]), image["file"]))
    size = tuple(image["size"]) if image["size"] else STANDARD
    mask_bytes, mask_name = mask_for(size, draw)
    return {"image": image_bytes, "mask": mask_bytes, "size": size, "fields": draw(form_fields()),
            "what": f"{image['file']} ({how}) + {mask_name}"}


@st.composite
def random_request(draw) -> dict:
    """Random bytes, often behind a real signature so that a header parser reads them."""
    junk = draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=512))
    if draw(st.booleans()):
        return {"image": junk, "mask": read("mask-L.png"), "size": STANDARD, "fields": {}, "what": "random image"}
    return {"image": read("rgb.png"), "mask": junk, "size": STANDARD, "fields": {}, "what": "random mask"}


@st.composite
def forged_request(draw) -> dict:
    """A valid corpus file whose header now claims another size (absurd ones included), or a
    TIFF whose tiles claim one."""
    if draw(st.integers(0, 4)) == 0:
        tile = (draw(SIZES.filter(lambda v: v < 2**32)), draw(SIZES.filter(lambda v: v < 2**32)))
        return {"image": tiff_tiled(*STANDARD, tile), "mask": read("mask-L.png"), "size": STANDARD, "fields": {},
                "what": f"TIFF in {tile[0]}×{tile[1]} tiles"}
    entry = draw(st.sampled_from([e for e in VALID_IMAGES if Path(e["file"]).suffix in RESIZERS]))
    width, height = draw(SIZES), draw(SIZES)
    data = RESIZERS[Path(entry["file"]).suffix](read(entry["file"]), width, height)
    return {"image": data, "mask": read("mask-L.png"), "size": STANDARD, "fields": {},
            "what": f"{entry['file']} claiming {width}×{height}"}


# ------------------------------------------------------------------ answers


def viewer_size(data: bytes) -> tuple[int, int] | None:
    """The size a photo viewer shows (Pillow, EXIF orientation applied); None if Pillow cannot."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return ImageOps.exif_transpose(image).size
    except Exception:
        return None


def check_answer(response, request: dict, counts: Counter) -> None:
    """A 2xx with a correct image, or a 4xx JSON error with a message; nothing else."""
    status = response.status_code
    assert status < 500, f"{status} for {request['what']}: {response.text[:300]}"
    if 200 <= status < 300:
        fmt = output_format(request["fields"].get("format") or "png",  # an empty form field is a missing one
                            imageio.sniff_format(request["image"]))
        assert response.headers["content-type"] == fmt.media_type, request["what"]
        result = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert result is not None, f"the 2xx body does not decode: {request['what']}"
        # The mask was made for the unmutated input's size, and a repair needs both the same:
        # a 2xx is the picture at that size, however it was mutated.
        assert (result.shape[1], result.shape[0]) == tuple(request["size"]), request["what"]
        counts["2xx"] += 1
    else:
        assert 400 <= status < 500, f"{status} for {request['what']}"
        assert response.headers["content-type"].startswith("application/json"), request["what"]
        error = response.json()["error"]
        assert error["code"] and isinstance(error["message"], str) and error["message"].strip(), request["what"]
        counts[f"{status} {error['code']}"] += 1
    counts["total"] += 1


def post(client, request: dict):
    return client.post("/api/v1/inpaint", files={"image": ("upload.bin", request["image"]),
                                                "mask": ("mask.bin", request["mask"])},
                       data=request["fields"])


def summary(counts: Counter) -> str:
    refused = sum(value for key, value in counts.items() if key[:1] == "4")
    return f"{counts['total']}: {counts['2xx']} × 2xx, {refused} × 4xx, 0 × 5xx"


# ------------------------------------------------------------------ the app in-process


@pytest.fixture(scope="module")
def client(tiny_dir, tmp_path_factory):
    with serve(make_settings(tiny_dir, tmp_path_factory.mktemp("fuzz"))) as client:
        yield client


@pytest.fixture(scope="module")
def totals():
    counts: Counter = Counter()
    yield counts
    if counts["total"]:
        record("Malformed input: all fuzzed API uploads to the in-process app", "answers", summary(counts),
               "only 2xx with a correct image or 4xx with a message", test="tests/service/test_fuzz.py (the in-process tests)")


def still_serving(client) -> None:
    assert client.get("/readyz").status_code == 200
    response = client.post("/api/v1/inpaint", files={"image": ("a.png", read("rgb.png")),
                                                    "mask": ("m.png", read("mask-L.png"))})
    assert response.status_code == 200


@pytest.mark.parametrize("entry", IMAGES, ids=[entry["file"] for entry in IMAGES])
def test_corpus_image_gives_what_the_manifest_says(client, totals, entry):
    data = read(entry["file"])
    size = tuple(entry["size"]) if entry["size"] else STANDARD
    # Standard-size images meet each mask mode in turn.
    mask = read(MASKS[IMAGES.index(entry) % len(MASKS)]["file"]) if size == STANDARD else mask_png(*size)
    request = {"image": data, "mask": mask, "size": size, "fields": {}, "what": entry["file"]}
    response = post(client, request)
    check_answer(response, request, totals)
    if entry["expect"] == "ok":
        assert response.status_code == 200, f"{entry['file']}: {response.text}"
        assert viewer_size(data) == size, "the manifest's size is not what Pillow shows"
    else:
        assert response.status_code == entry["expect"], f"{entry['file']}: {response.text}"


@pytest.mark.parametrize("entry", MASKS, ids=[entry["file"] for entry in MASKS])
def test_every_mask_mode_is_accepted(client, totals, entry):
    request = {"image": read("rgb.jpg"), "mask": read(entry["file"]), "size": STANDARD, "fields": {},
               "what": entry["file"]}
    response = post(client, request)
    check_answer(response, request, totals)
    assert response.status_code == 200, response.text


def fuzz_api(client, requests: st.SearchStrategy, examples: int) -> Counter:
    """Send `examples` requests drawn from `requests`; every answer is checked; counts by class."""
    counts: Counter = Counter()

    @settings(FUZZ, max_examples=examples)
    @given(requests)
    def check(request):
        check_answer(post(client, request), request, counts)

    check()
    return counts


def test_mutated_uploads(client, totals):
    counts = fuzz_api(client, mutated_request(), MUTATED_EXAMPLES)
    totals.update(counts)
    record("Malformed input: mutated corpus uploads (hypothesis)", "answers", summary(counts),
           "only 2xx with a correct image or 4xx with a message")
    still_serving(client)


def test_random_bytes_behind_real_signatures(client, totals):
    counts = fuzz_api(client, random_request(), RANDOM_EXAMPLES)
    totals.update(counts)
    assert counts["2xx"] == 0, "random bytes were repaired"
    record("Malformed input: random bytes after a PNG/JPEG/WebP/BMP/TIFF/GIF signature", "answers",
           summary(counts), "4xx with a message")
    still_serving(client)


def test_forged_header_sizes(client, totals):
    counts = fuzz_api(client, forged_request(), FORGED_EXAMPLES)
    totals.update(counts)
    record("Malformed input: headers forged to claim 0 … 2³²−1 pixels per side", "answers", summary(counts),
           "4xx (413 over the limits) or a correct 2xx")
    still_serving(client)


def test_a_tiff_tile_bomb_is_refused_from_its_header(monkeypatch):
    """Regression: OpenCV allocated (and filled) a 1 GB tile for a 914-byte TIFF whose tags
    declare a 64×48 image in 16384×16368 tiles; the header check now refuses it."""
    from lama import imageio

    decoded = []
    real_decode = imageio._decode_pixels
    monkeypatch.setattr(imageio, "_decode_pixels", lambda data: decoded.append(data) or real_decode(data))
    with pytest.raises(imageio.ImageTooLargeError, match="TIFF tiles are 16384×16368"):
        imageio.decode_image(read("forged-tiff-tile-16384x16368.tiff"))
    assert decoded == [], "the tile bomb reached the pixel decoder"
    # Tiles within the pixel limit still reach the decoder (this one's data is too short: 400).
    with pytest.raises(imageio.ImageError, match="truncated or corrupt"):
        imageio.decode_image(tiff_tiled(*STANDARD, (256, 256)))
    assert len(decoded) == 1


# ------------------------------------------------------------------ the UI's editor


def rgba(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(height * 1000 + width)
    return np.dstack([rng.integers(0, 256, (height, width, 3)), np.full((height, width), 255)]).astype(np.uint8)


EDITOR_PHOTO = (24, 32)  # height, width


@pytest.fixture(scope="module")
def editor_files(client) -> dict[str, dict]:
    """Files the editor's page could name, as it names them ({"path": ...}): its photo and mask
    in the UI cache, and wrong ones (a mask of another size, a text file, a decompression bomb's
    header, a folder, a file outside the cache)."""
    folder = client.app.state.ui_cache_dir / "fuzz"
    folder.mkdir()
    mask = np.zeros(EDITOR_PHOTO, np.uint8)
    mask[8:16, 10:20] = 255
    contents = {"photo": imageio.encode_image(rgba(*EDITOR_PHOTO)), "mask": imageio.encode_image(mask),
                "small mask": imageio.encode_image(np.full((8, 8), 255, np.uint8)), "text": b"not an image",
                "bomb": png_with_size(read("rgb.png"), 40000, 40000)}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    paths = {name: folder / name for name in contents} | {"folder": folder, "outside": ROOT_FILE}
    return {name: {"path": str(path)} for name, path in paths.items()}


ROOT_FILE = Path("/etc/passwd")
JUNK = [None, "x", 3, {}, {"path": None}, {"path": 5}, {"path": ""}, {"path": "../../etc/passwd"}]


@st.composite
def editor_requests(draw, files: dict[str, dict]):
    """Repair requests as a broken or hostile editor page might send them: the valid shape with
    one part broken, or junk."""
    kind = draw(st.sampled_from(["valid", "valid", "bad-photo", "bad-mask", "junk"]))
    request = {"request": draw(st.one_of(st.text(max_size=60), st.integers(), st.none())),
               "photo": files["photo"], "mask": files["mask"],
               "name": draw(st.one_of(st.text(max_size=300), st.none(), st.integers()))}
    wrong = st.one_of(st.sampled_from([files[name] for name in ("small mask", "text", "bomb", "folder", "outside")]),
                      st.sampled_from(JUNK))
    if kind == "bad-photo":
        request["photo"] = draw(wrong)
    elif kind == "bad-mask":
        request["mask"] = draw(st.one_of(wrong, st.just(files["photo"])))
    elif kind == "junk":
        request = draw(st.sampled_from([None, {}, "text", 0, [files["photo"], files["mask"]], {"photo": files["photo"]}]))
    return request


SLIDER_VALUES = st.one_of(st.integers(0, 64), st.sampled_from([-1, 257, 1e12, float("nan"), float("inf"), 2.5,
                                                                "3", "x", None]))


@pytest.mark.parametrize(("photo", "mask", "dilate", "words"), [
    ("photo", "mask", float("nan"), "dilate must be a number"),
    ("photo", "mask", float("inf"), "dilate must be a number"),
    ("photo", "mask", None, "dilate must be a number"),
    ("outside", "mask", 0, "must be a file uploaded to this editor"),
    ("text", "mask", 0, "not an image"),
    ("bomb", "mask", 0, "40000×40000"),
    ("photo", "small mask", 0, "the same size"),
    ("folder", "mask", 0, "no longer on the server"),
], ids=["nan", "inf", "none", "outside the cache", "text", "bomb", "mask size", "folder"])
def test_the_editor_refuses_broken_requests_with_a_message(client, editor_files, photo, mask, dilate, words):
    backend = EditorBackend(service_of(client), client.app.state.ui_cache_dir)
    answer = backend.repair({"request": "r", "photo": editor_files[photo], "mask": editor_files[mask]},
                            "crop", dilate, 0)
    assert "result" not in answer and words in answer["error"], answer


def test_the_editor_answers_with_a_message_or_a_valid_result(client, editor_files):
    backend = EditorBackend(service_of(client), client.app.state.ui_cache_dir)
    counts: Counter = Counter()

    @settings(FUZZ, max_examples=UI_EXAMPLES)
    @given(editor_requests(editor_files), st.sampled_from(["crop", "original", "resize", "bogus", None, 3]),
           SLIDER_VALUES, SLIDER_VALUES)
    def check(request, strategy, dilate, feather):
        answer = backend.repair(request, strategy, dilate, feather)  # it never raises
        assert isinstance(answer, dict) and isinstance(answer["request"], str)
        if "error" in answer:
            assert isinstance(answer["error"], str) and answer["error"].strip() and answer["code"]
            assert str(client.app.state.ui_cache_dir) not in answer["error"]
            counts["error"] += 1
            return
        result = answer["result"]
        assert (result["height"], result["width"]) == EDITOR_PHOTO and result["summary"]
        counts["result"] += 1

    check()
    record("Malformed input: the UI editor's repair with mutated requests", "answers",
           f"{counts['result'] + counts['error']}: {counts['result']} results, {counts['error']} errors with a "
           "message, 0 exceptions", "an error with a message or a valid result")
    assert counts["result"] > 0 and counts["error"] > 0
    still_serving(client)


# ------------------------------------------------------------------ a live server


def test_a_live_server_survives_the_corpus_and_mutations_with_bounded_memory(tiny_dir, tmp_path):
    """The whole corpus, then a hypothesis sample, one request at a time; after each, the
    server must be alive and its RSS high-water mark (which sees an allocation that came
    and went between two readings) must not have risen by more than the bound."""
    counts: Counter = Counter()
    with LiveServer.start(tiny_dir, tmp_path) as server, \
            httpx.Client(base_url=server.base, timeout=60) as http:
        rss_start = server.rss()
        high_water_start = server.peak_rss()  # start-up and warm-up included

        def send(request: dict) -> None:
            response = post(http, request)
            check_answer(response, request, counts)
            assert server.alive(), f"the server died on {request['what']}:\n{server.log_tail()}"
            growth = server.peak_rss() - high_water_start
            assert growth < LIVE_RSS_GROWTH_BOUND, f"peak RSS +{growth / 2**20:.0f} MiB after {request['what']}"

        for index, entry in enumerate(IMAGES):
            size = tuple(entry["size"]) if entry["size"] else STANDARD
            mask = read(MASKS[index % len(MASKS)]["file"]) if size == STANDARD else mask_png(*size)
            send({"image": read(entry["file"]), "mask": mask, "size": size, "fields": {}, "what": entry["file"]})

        @settings(FUZZ, max_examples=LIVE_EXAMPLES)
        @given(st.one_of(mutated_request(), forged_request(), random_request()))
        def check(request):
            send(request)

        check()
        assert http.get("/livez").status_code == 200
        assert post(http, {"image": read("rgb.png"), "mask": read("mask-L.png"), "fields": {}}).status_code == 200
        rss_end, high_water_end = server.rss(), server.peak_rss()
    case = "Malformed input: corpus + hypothesis sample against a live server"
    record(case, "answers", summary(counts), "no 5xx; the process never dies")
    record(case, "server peak RSS (VmHWM) growth / RSS growth",
           f"{(high_water_end - high_water_start) / 2**20:+.0f} MiB / {(rss_end - rss_start) / 2**20:+.0f} MiB "
           f"(from {high_water_start / 2**20:.0f} / {rss_start / 2**20:.0f} MiB)",
           f"peak < +{LIVE_RSS_GROWTH_BOUND / 2**20:.0f} MiB")
