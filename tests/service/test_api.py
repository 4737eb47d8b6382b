"""The HTTP API, health, metrics, bad input, auth and the queue, as clients see them.

Most tests go through FastAPI's TestClient on the app that `app.build_app` returns (the
API with the Gradio UI mounted, as `python app.py` serves it); the `live` tests start
`python app.py` on 127.0.0.1 and talk real HTTP to it. The model is the tiny official-
layout checkpoint on the CPU; outputs and logs go to the test's temporary folder.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
import torch
from fastapi.testclient import TestClient
from support.app import (
    FAST_S,
    LOCAL_BASE,
    PROMETHEUS_TEXT,
    TIMING_STAGES,
    WAIT_S,
    block_worker,
    decode,
    encode,
    error_of,
    gif_bytes,
    make_case,
    make_settings,
    metric,
    output_files,
    png_header_only,
    repair,
    saved_file,
    saves_written,
    serve,
    server_timing,
    service_of,
    timed,
    upload,
    wait_until,
)
from support.liveserver import LiveServer

from lama import imageio, mask_png, masks
from lama.engine import InpaintEngine
from service.pipeline import SAVES_PENDING_MAX

# ------------------------------------------------------------------ the happy path


def test_inpaint_returns_a_png_that_differs_only_inside_the_mask(client, outputs):
    image, mask = make_case()
    response = repair(client, image, mask, dilate=0, feather=0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    result = decode(response.content)
    assert result.shape == image.shape
    changed = (result != image).any(axis=2)
    assert not changed[mask == 0].any(), "pixels outside the mask changed"
    assert changed[mask > 0].mean() > 0.5, "the masked area was not repaired"

    stages = server_timing(response)
    assert set(TIMING_STAGES) <= set(stages)
    assert all(value >= 0 for value in stages.values()) and stages["infer"] > 0

    saved_as = response.headers["x-saved-as"]
    day, name = saved_as.split("/")
    today = datetime.date.today()
    assert day in {f"{today:%Y-%m-%d}", f"{today - datetime.timedelta(days=1):%Y-%m-%d}"}  # midnight
    assert re.fullmatch(r"\d{6}-[0-9a-f]{12}-photo_repaired\.png", name)  # named after the upload
    assert saved_file(outputs, response).read_bytes() == response.content


def test_each_result_is_saved_under_its_own_name(client, outputs):
    image, mask = make_case(seed=1)
    answers = [repair(client, image, mask) for _ in range(3)]
    assert len({saved_file(outputs, answer) for answer in answers}) == 3


@pytest.mark.parametrize(("fmt", "media_type", "magic", "extension"),
                         [("jpeg", "image/jpeg", b"\xff\xd8\xff", ".jpg"),
                          ("webp", "image/webp", b"RIFF", ".webp"),
                          ("png", "image/png", b"\x89PNG", ".png")])
def test_output_format(client, outputs, fmt, media_type, magic, extension):
    image, mask = make_case()
    response = repair(client, image, mask, format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.content.startswith(magic)
    assert decode(response.content).shape == image.shape
    saved = saved_file(outputs, response)
    assert saved.suffix == extension and saved.read_bytes() == response.content


def test_dilate_widens_the_repaired_area(client):
    image, mask = make_case()
    exact = decode(repair(client, image, mask, dilate=0, feather=0).content)
    wide = decode(repair(client, image, mask, dilate=6, feather=0).content)
    grown = masks.dilate(mask > 0, 6)
    ring = grown & (mask == 0)
    changed = (wide != image).any(axis=2)
    assert not changed[~grown].any(), "pixels outside the dilated mask changed"
    assert changed[ring].mean() > 0.5, "dilate did not repair the ring around the mask"
    assert not (exact != image).any(axis=2)[ring].any()


def test_feather_blends_the_repair_into_its_surroundings(client):
    image, mask = make_case()
    sharp = decode(repair(client, image, mask, dilate=0, feather=0).content).astype(np.float32)
    soft = decode(repair(client, image, mask, dilate=0, feather=5).content).astype(np.float32)
    weights = masks.feather_weights(mask > 0, 5)[..., None]
    expected = np.rint(weights * sharp + (1 - weights) * image)
    assert np.abs(soft - expected).max() <= 1
    assert (soft != sharp).any()
    assert np.array_equal(soft[mask == 0], image[mask == 0].astype(np.float32))


def test_strategy_is_honoured(client):
    # Wider than crop_trigger (800) and resize_limit (1280): each strategy shows the model
    # another picture (whole, downscaled, a crop around the mask), so the fills differ.
    image, mask = make_case(1312, 32, box=(8, 640, 24, 672))
    results = {}
    for strategy in ("original", "resize", "crop"):
        response = repair(client, image, mask, strategy=strategy, dilate=0, feather=0)
        assert response.status_code == 200, response.text
        results[strategy] = decode(response.content)
        assert np.array_equal(results[strategy][mask == 0], image[mask == 0])
    assert not np.array_equal(results["original"], results["resize"])
    assert not np.array_equal(results["original"], results["crop"])
    assert not np.array_equal(results["resize"], results["crop"])


def test_requests_without_options_use_the_configured_defaults(tiny_dir, tmp_path):
    # configs/default.yaml: "What a repair does unless the request says otherwise."
    settings = make_settings(tiny_dir, tmp_path, "--dilate", "6", "--feather", "0", "--strategy", "original")
    image, mask = make_case()
    with serve(settings) as client:
        response = client.post("/api/v1/inpaint", **upload(image, mask))
        assert response.status_code == 200, response.text
        ring = masks.dilate(mask > 0, 6) & (mask == 0)
        assert (decode(response.content) != image).any(axis=2)[ring].mean() > 0.5
        # ... and a request that says otherwise gets what it asked for.
        exact = decode(client.post("/api/v1/inpaint", **upload(image, mask, dilate=0)).content)
        assert not (exact != image).any(axis=2)[ring].any()


def test_openapi_documents_the_route(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/v1/inpaint"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in form:
        form = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
    assert {"image", "mask", "strategy", "dilate", "feather", "format"} <= set(form["properties"])
    assert set(form["required"]) == {"image", "mask"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_answer_does_not_wait_for_the_file_and_at_most_a_few_files_wait(tiny_dir, tmp_path, monkeypatch):
    """An API repair is answered before its file is written (and recorded once it is), and no more
    than SAVES_PENDING_MAX answered files wait to be written: beyond that a repair waits for a place."""
    image, mask = make_case(seed=11)
    with serve(make_settings(tiny_dir, tmp_path)) as client:
        service = service_of(client)
        writing, release = threading.Event(), threading.Event()
        save = service.outputs.save

        def held_save(*args, **kwargs):
            writing.set()
            assert release.wait(WAIT_S)
            return save(*args, **kwargs)

        monkeypatch.setattr(service.outputs, "save", held_save)
        recorded = len(service.requests.recent())
        with ThreadPoolExecutor(SAVES_PENDING_MAX + 1) as pool:
            first = repair(client, image, mask)  # answered while its write is held
            assert first.status_code == 200 and writing.is_set()
            assert "save" not in server_timing(first) and service.saves_pending == 1
            assert metric(client.get("/metrics").text, "inpaint_saves_pending") == 1
            assert not (tmp_path / "outputs" / first.headers["x-saved-as"]).exists()
            assert len(service.requests.recent()) == recorded  # recorded once written
            more = [pool.submit(repair, client, image, mask) for _ in range(SAVES_PENDING_MAX)]
            wait_until(lambda: sum(answer.done() for answer in more) == SAVES_PENDING_MAX - 1,
                       what="all but one answered")
            time.sleep(0.3)
            assert sum(answer.done() for answer in more) == SAVES_PENDING_MAX - 1, "a ninth file waited"
            release.set()
            answers = [first, *(answer.result() for answer in more)]
        saves_written(client)
        assert all(saved_file(tmp_path / "outputs", answer).read_bytes() == answer.content for answer in answers)
        logged = service.requests.recent()[recorded:]
        assert len(logged) == len(answers) and all(record["timings"]["save"] > 0 for record in logged)


def test_a_result_that_cannot_be_saved_is_still_returned(tiny_dir, tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the outputs folder should be")
    settings = make_settings(tiny_dir, tmp_path, outputs_dir=str(blocked))
    image, mask = make_case()
    with serve(settings) as client:
        response = repair(client, image, mask)
    # Written after the answer, which names the file; stopping the server waited for the write.
    assert response.status_code == 200
    assert decode(response.content).shape == image.shape
    assert "could not save a result under" in caplog.text and blocked.is_file()


# ------------------------------------------------------------------ bad input


def seed_photo():
    """The seed's refused upload: a 5120×3840 photo (smooth, so the JPEG is small)."""
    ramp = np.linspace(0, 255, 5120, dtype=np.float32).astype(np.uint8)
    return encode(np.broadcast_to(ramp[None, :, None], (3840, 5120, 3)).copy(), ".jpg")


GOOD_IMAGE, GOOD_MASK = (encode(a) for a in make_case())
PNG = encode(make_case()[0])

BAD_REQUESTS = {
    # id: (image, mask, form fields, status, code, words the message must contain)
    "not-an-image": (b"hello, I am a text file", GOOD_MASK, {}, 400, "invalid_image", ["not an image"]),
    "empty-file": (b"", GOOD_MASK, {}, 400, "invalid_image", ["empty"]),
    "truncated-png": (PNG[: len(PNG) // 2], GOOD_MASK, {}, 400, "invalid_image", ["truncated"]),
    "header-only-png": (PNG[:40], GOOD_MASK, {}, 400, "invalid_image", ["truncated"]),
    "gif": (gif_bytes(), GOOD_MASK, {}, 400, "invalid_image", ["PNG", "JPEG"]),
    "mask-not-an-image": (GOOD_IMAGE, b"\x00" * 64, {}, 400, "invalid_mask", ["mask", "not an image"]),
    "mask-size-mismatch": (GOOD_IMAGE, encode(np.zeros((50, 60), np.uint8)), {}, 422, "mask_size_mismatch",
                           ["60×50", "96×72"]),
    "missing-mask": (GOOD_IMAGE, None, {}, 422, "invalid_request", ["mask"]),
    "missing-image": (None, GOOD_MASK, {}, 422, "invalid_request", ["image"]),
    "unknown-strategy": (GOOD_IMAGE, GOOD_MASK, {"strategy": "magic"}, 422, "invalid_option", ["strategy", "magic"]),
    "unknown-format": (GOOD_IMAGE, GOOD_MASK, {"format": "gif"}, 422, "invalid_option", ["format", "gif"]),
    "negative-dilate": (GOOD_IMAGE, GOOD_MASK, {"dilate": -3}, 422, "invalid_option", ["dilate", "-3"]),
    "huge-feather": (GOOD_IMAGE, GOOD_MASK, {"feather": 100000}, 422, "invalid_option", ["feather"]),
    "dilate-not-a-number": (GOOD_IMAGE, GOOD_MASK, {"dilate": "wide"}, 422, "invalid_request", ["dilate"]),
    "seed-5120x3840": (seed_photo, GOOD_MASK, {}, 413, "image_too_large", ["5120×3840", "16.8 MP"]),
    "bomb-over-pixels": (png_header_only(8000, 8000), GOOD_MASK, {}, 413, "image_too_large", ["8000×8000", "MP"]),
    "bomb-over-side": (png_header_only(40000, 40000), GOOD_MASK, {}, 413, "image_too_large",
                       ["40000×40000", "8192"]),
    "mask-bomb": (GOOD_IMAGE, png_header_only(40000, 40000), {}, 413, "mask_too_large", ["mask", "40000×40000"]),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_refused_fast_with_json_and_the_server_keeps_serving(client, outputs, case):
    image, mask, fields, status, code, words = BAD_REQUESTS[case]
    image = image() if callable(image) else image
    saves_written(client)  # the earlier tests' files
    before = output_files(outputs)
    metrics_before = client.get("/metrics").text
    response, seconds = timed(client.post, "/api/v1/inpaint", **upload(image, mask, **fields))
    message = error_of(response, status, code)
    for word in words:
        assert word in message, message
    assert seconds < FAST_S, f"refused after {seconds:.2f} s"
    assert output_files(outputs) == before, "a refused request left a file"
    # Refusals are counted by status, whatever layer refused them.
    metrics_after = client.get("/metrics").text
    assert metric(metrics_after, "inpaint_requests_total", status=str(status)) == \
        metric(metrics_before, "inpaint_requests_total", status=str(status)) + 1

    good = repair(client, *make_case())
    assert good.status_code == 200
    saves_written(client)
    after = output_files(outputs)
    assert len(after) == len(before) + 1 and not any(name.endswith(".tmp") for name in after)


@pytest.mark.parametrize("path", ["/api/v1/inpaint", "/api/v1/jobs"])
def test_a_photo_sent_as_a_text_field_is_refused_with_how_to_send_a_file(client, path):
    """curl's `-F image=<photo.jpg` (or `image=photo.jpg`) sends a text field, not a file part."""
    response = client.post(path, data={"image": "photo.jpg"}, files={"mask": ("mask.png", GOOD_MASK, "image/png")})
    message = error_of(response, 422, "invalid_request")
    assert message == "image: expected a file, got a text field (curl: -F image=@photo.jpg)"
    assert client.post("/api/v1/inpaint", **upload(GOOD_IMAGE, GOOD_MASK)).status_code == 200


def test_a_decompression_bomb_is_refused_before_pixels_are_allocated(client, monkeypatch):
    decoded = []
    real_decode, real_mask_decode = imageio._decode_pixels, mask_png.decode
    monkeypatch.setattr(imageio, "_decode_pixels",
                        lambda checked: decoded.append(len(checked.data)) or real_decode(checked))
    monkeypatch.setattr(mask_png, "decode", lambda data: decoded.append(len(data)) or real_mask_decode(data))
    bomb = png_header_only(40000, 40000)  # 1.6 GP: 4.8 GB as RGB
    assert len(bomb) < 100
    tracemalloc.start()
    try:
        response, seconds = timed(client.post, "/api/v1/inpaint", **upload(bomb, GOOD_MASK))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error_of(response, 413, "image_too_large")
    assert seconds < FAST_S
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB allocated while refusing a bomb"
    assert decoded == [], "the bomb reached the pixel decoder"
    # The spies see real decodes: a good request's photo and mask go through them.
    assert repair(client, *make_case()).status_code == 200 and len(decoded) == 2


def test_upload_limits(tiny_dir, tmp_path):
    # 1 MB per file: the body limit is 2 files + 1 MB of framing = 3 MB.
    settings = make_settings(tiny_dir, tmp_path, max_upload_mb=1)
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big_file = encode(noise)  # ~1.4 MB of incompressible PNG
    assert 2**20 < len(big_file) < 3 * 2**20
    with serve(settings) as client:
        response, seconds = timed(client.post, "/api/v1/inpaint",
                                  **upload(big_file, encode(np.zeros((700, 700), np.uint8))))
        message = error_of(response, 413, "image_too_large")
        assert "1 MB" in message and seconds < FAST_S
        response, seconds = timed(client.post, "/api/v1/inpaint",
                                  files={"image": ("a.png", b"\0" * (4 * 2**20)), "mask": ("m.png", GOOD_MASK)})
        message = error_of(response, 413, "upload_too_large")
        assert "3 MB" in message and seconds < FAST_S
        good = repair(client, *make_case())
        assert good.status_code == 200 and saved_file(tmp_path / "outputs", good)
        assert not list((tmp_path / "outputs").rglob("*.tmp"))


# ------------------------------------------------------------------ health and metrics


def test_healthz_has_the_documented_shape(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    health = response.json()
    assert set(health) == {"status", "model", "gpu_mem", "gpu", "queue", "gpu_budget", "uptime_s", "sample"}
    assert health["status"] == "ok"
    # The test checkpoint is named by its size: only big-lama's architecture is called big-lama.
    assert health["model"] == {"name": "lama-0.5M", "loaded": True, "device": "cpu", "precision": "fp32",
                               "source": "official-dir", "parameters": 533_795}
    assert re.fullmatch(r"\d+\.\d+GB", health["gpu_mem"]) and health["gpu_mem"] == "0.0GB"
    assert health["gpu"] is None
    assert health["queue"] == {"depth": 0, "capacity": 64}
    # On the CPU nothing is budgeted, and jobs run one at a time (gpu_workers: auto).
    assert health["gpu_budget"] == {"budget_bytes": None, "admitted_bytes": 0, "waiting_bytes": 0, "running": 0,
                                    "waiting": 0, "workers": 1, "memory_model": None}
    assert isinstance(health["uptime_s"], (int, float)) and health["uptime_s"] >= 0
    # The sampler's latest reading (it may not have sampled yet right after start).
    sample = health["sample"]
    assert sample is None or (sample["process_rss_bytes"] > 0 and sample["gpu"] is None)


def test_livez_and_readyz_when_warm(client):
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_metrics_are_prometheus_text_served_directly(client):
    before = client.get("/metrics", follow_redirects=False)
    assert before.status_code == 200, "scrapers do not follow redirects"
    assert before.headers["content-type"] == PROMETHEUS_TEXT
    assert repair(client, *make_case()).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "inpaint_requests_total", status="200") == \
        metric(before.text, "inpaint_requests_total", status="200") + 1
    buckets = sorted(float(le) for le in re.findall(r'inpaint_request_duration_seconds_bucket\{le="([^"]+)"\}', text)
                     if le != "+Inf")
    assert buckets[0] == 0.01 and buckets[-1] == 60.0 and len(buckets) >= 8
    assert metric(text, "inpaint_request_duration_seconds_count") >= 1
    assert metric(text, "inpaint_queue_depth") == 0.0
    assert metric(text, "inpaint_gpu_available") == 0.0
    assert metric(text, "inpaint_model_loaded") == 1.0
    assert "inpaint_queue_depth " in text and "inpaint_gpu_available 0.0" in text
    # No budget on the CPU: left out, not a made-up number; nothing admitted or waiting.
    assert "inpaint_gpu_budget_bytes" not in text
    assert "inpaint_gpu_admitted_bytes 0.0" in text and "inpaint_gpu_waiting_bytes 0.0" in text
    assert "inpaint_fp16_fallbacks_total 0.0" in text  # the engine's count (no fp16 on the CPU)


def test_readyz_is_503_until_the_warm_up_has_run(tiny_dir, tmp_path, monkeypatch):
    release = threading.Event()
    real_warmup = InpaintEngine.warmup

    def slow_warmup(engine, *args, **kwargs):
        assert release.wait(WAIT_S)
        real_warmup(engine, *args, **kwargs)

    monkeypatch.setattr(InpaintEngine, "warmup", slow_warmup)
    with serve(make_settings(tiny_dir, tmp_path), wait_ready=False) as client:
        try:
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
            assert client.get("/livez").status_code == 200  # alive, just not ready
            assert client.get("/healthz").json()["model"]["loaded"] is True
        finally:
            release.set()
        wait_until(lambda: client.get("/readyz").status_code == 200, what="/readyz 200 after the warm-up")


def test_the_heap_is_given_back_once_warm_before_the_service_says_it_is_ready(tiny_dir, tmp_path, monkeypatch):
    """What the start-up freed (the checkpoint's parsing, the warm-up's buffers) goes back to the
    kernel before the first probe finds the service ready, not a sweep period later; and a
    failure there costs the memory, not the readiness."""
    from lama import heap

    release = threading.Event()
    real_warmup = InpaintEngine.warmup

    def held_warmup(engine, *args, **kwargs):
        assert release.wait(WAIT_S)
        real_warmup(engine, *args, **kwargs)

    seen = []

    def failing_release():
        if threading.current_thread().name == "warm-up":
            seen.append(client.get("/readyz").status_code)
            raise OSError("no heap to trim")

    monkeypatch.setattr(InpaintEngine, "warmup", held_warmup)
    monkeypatch.setattr(heap, "release_free_heap", failing_release)
    with serve(make_settings(tiny_dir, tmp_path), wait_ready=False) as client:
        release.set()
        wait_until(lambda: client.get("/readyz").status_code == 200, what="/readyz 200 after the warm-up")
    assert seen == [503], "released once by the warm-up, while /readyz still answered 503"


def test_the_opencv_fallback_reports_itself(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # no models/ here: the engine falls back to OpenCV
    settings = make_settings(None, tmp_path, model=None)
    with serve(settings) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert health["model"]["name"] == "opencv-telea" and health["model"]["source"] == "embedded"
        assert metric(client.get("/metrics").text, "inpaint_model_loaded") == 0.0
        image, mask = make_case()
        response = repair(client, image, mask, dilate=0, feather=0)
        assert response.status_code == 200
        changed = (decode(response.content) != image).any(axis=2)
        assert changed[mask > 0].any() and not changed[mask == 0].any()


def test_preset_bounds_the_engine(tiny_dir, tmp_path):
    with serve(make_settings(tiny_dir, tmp_path, "--preset", "fast"), wait_ready=False) as client:
        assert service_of(client).engine.hd.max_side == 1280


# ------------------------------------------------------------------ the queue over HTTP


def test_a_full_queue_answers_503_with_retry_after_and_waiting_requests_complete(tiny_dir, tmp_path):
    settings = make_settings(tiny_dir, tmp_path, queue_capacity=2)
    with serve(settings) as client:
        service = service_of(client)
        release = block_worker(service)
        try:
            waiting = {}
            image, mask = make_case()
            thread = threading.Thread(target=lambda: waiting.setdefault("response", repair(client, image, mask)))
            thread.start()
            wait_until(lambda: service.queue.depth == 2, what="the second job queued")
            assert client.get("/healthz").json()["queue"] == {"depth": 2, "capacity": 2}
            assert metric(client.get("/metrics").text, "inpaint_queue_depth") == 2.0
            assert client.get("/readyz").status_code == 503

            response, seconds = timed(repair, client, image, mask)
            error_of(response, 503, "queue_full")
            assert int(response.headers["retry-after"]) >= 1 and seconds < FAST_S
            assert "response" not in waiting  # the queued request is still waiting, not failed
        finally:
            release.set()
            thread.join(WAIT_S)
        assert waiting["response"].status_code == 200
        wait_until(lambda: client.get("/readyz").status_code == 200, what="room in the queue again")
        assert repair(client, image, mask).status_code == 200
        assert metric(client.get("/metrics").text, "inpaint_requests_total", status="503") == 1.0


def test_concurrent_requests_all_complete(client):
    results, errors = {}, []
    barrier = threading.Barrier(10)

    def one(index):
        try:
            image, mask = make_case(seed=100 + index)
            barrier.wait(WAIT_S)
            results[index] = (image, mask, repair(client, image, mask, dilate=0, feather=0))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert errors == [] and len(results) == 10
    for image, mask, response in results.values():
        assert response.status_code == 200
        # Each caller gets its own picture back, not a neighbour's.
        assert np.array_equal(decode(response.content)[mask == 0], image[mask == 0])


# ------------------------------------------------------------------ auth


@pytest.fixture(scope="module")
def protected(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("protected")
    settings = make_settings(tiny_dir, folder, "--api-token", "s3cret-token", "--auth", "ann:pa:ss")
    with serve(settings) as client:
        yield client


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Bearer s3cret", "Bearer s3cret-token2",
                                           "Basic s3cret-token", "s3cret-token"])
def test_the_api_needs_the_bearer_token(protected, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = protected.post("/api/v1/inpaint", headers=headers, **upload(*make_case()))
    error_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    # Checked before the form: an unauthenticated caller learns nothing about it.
    error_of(protected.post("/api/v1/inpaint", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])  # auth schemes are case-insensitive
def test_the_right_token_is_served(protected, scheme):
    response = protected.post("/api/v1/inpaint", headers={"Authorization": f"{scheme} s3cret-token"},
                              **upload(*make_case()))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert metric(protected.get("/metrics").text, "inpaint_requests_total", status="401") >= 1


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/metrics"])
def test_probes_stay_open(protected, path):
    response = protected.get(path, follow_redirects=False)
    assert response.status_code == 200


def test_the_ui_asks_for_a_login(protected):
    page = protected.get("/")
    assert page.status_code == 200
    assert re.search(r'"auth_required"\s*:\s*true', page.text), "the page does not ask for a login"
    assert protected.get("/config").status_code == 401  # the UI's definition is behind the login
    wrong = protected.post("/login", data={"username": "ann", "password": "wrong"})
    assert wrong.status_code != 200 or wrong.json().get("success") is not True
    assert protected.get("/config").status_code == 401
    with TestClient(protected.app, base_url=LOCAL_BASE) as fresh:  # a session of its own, for the cookie
        right = fresh.post("/login", data={"username": "ann", "password": "pa:ss"})
        assert right.status_code == 200 and right.json() == {"success": True}
        assert fresh.get("/config").status_code == 200


def test_without_auth_the_ui_is_open(client):
    page = client.get("/")
    assert page.status_code == 200 and not re.search(r'"auth_required"\s*:\s*true', page.text)
    assert client.get("/config").status_code == 200


# ------------------------------------------------------------------ a live server


@pytest.fixture(scope="module")
def live(tiny_dir, tmp_path_factory):
    """`python app.py` on 127.0.0.1, as an operator starts it; yields (base URL, process, folder)."""
    with LiveServer.start(tiny_dir, tmp_path_factory.mktemp("live")) as server:
        yield server.base, server.process, server.folder


def test_live_server_repairs_over_real_http(live):
    base, _, folder = live
    image, mask = make_case()
    with httpx.Client(base_url=base, timeout=30) as http:
        response = http.post("/api/v1/inpaint", **upload(image, mask, dilate=0, feather=0, format="png"))
        assert response.status_code == 200, response.text
        result = decode(response.content)
        assert result.shape == image.shape
        changed = (result != image).any(axis=2)
        assert not changed[mask == 0].any() and changed[mask > 0].any()
        assert set(TIMING_STAGES) <= set(server_timing(response))
        assert saved_file(folder / "outputs", response).read_bytes() == response.content

        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["gpu"] is None and health["gpu_mem"] == "0.0GB"
        assert http.get("/livez").status_code == 200
        assert "Swagger" in http.get("/docs").text or "swagger" in http.get("/docs").text
    assert (folder / "logs" / "app.log").is_file()


def test_live_server_refuses_bad_uploads_and_keeps_serving(live):
    base, process, folder = live
    server = psutil.Process(process.pid)
    with httpx.Client(base_url=base, timeout=30) as http:
        for image, mask, status, code in [(b"not an image at all", GOOD_MASK, 400, "invalid_image"),
                                          (GOOD_IMAGE, None, 422, "invalid_request"),
                                          (GOOD_IMAGE, encode(np.zeros((5, 5), np.uint8)), 422,
                                           "mask_size_mismatch")]:
            response, seconds = timed(http.post, "/api/v1/inpaint", **upload(image, mask))
            error_of(response, status, code)
            assert seconds < FAST_S

        rss_before = server.memory_info().rss
        response, seconds = timed(http.post, "/api/v1/inpaint", **upload(png_header_only(40000, 40000), GOOD_MASK))
        rss_after = server.memory_info().rss
        assert "40000×40000" in error_of(response, 413, "image_too_large")
        assert seconds < FAST_S
        assert rss_after - rss_before < 256 * 2**20, "the server's memory jumped on a decompression bomb"

        good = http.post("/api/v1/inpaint", **upload(*make_case()))
        assert good.status_code == 200
        saved_file(folder / "outputs", good)
    assert not list((folder / "outputs").rglob("*.tmp"))


def test_live_server_refuses_an_oversized_upload_without_reading_it(live):
    base, _, _ = live
    port = int(base.rsplit(":", 1)[1])
    # Headers only: the 10 GB body is never sent, so an answer proves it was not read.
    request = (f"POST /api/v1/inpaint HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 10000000000\r\n\r\n").encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert time.perf_counter() - started < FAST_S
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b'"upload_too_large"' in body and b"the limit is" in body


def test_live_server_metrics(live):
    base, _, _ = live
    with httpx.Client(base_url=base, timeout=30) as http:
        before = http.get("/metrics")  # httpx does not follow redirects: a redirect fails here
        assert before.status_code == 200 and before.headers["content-type"] == PROMETHEUS_TEXT
        assert http.post("/api/v1/inpaint", **upload(*make_case())).status_code == 200
        error_of(http.post("/api/v1/inpaint", **upload(b"junk", GOOD_MASK)), 400, "invalid_image")
        after = http.get("/metrics").text
    for status in ("200", "400"):
        assert metric(after, "inpaint_requests_total", status=status) == \
            metric(before.text, "inpaint_requests_total", status=status) + 1
    assert metric(after, "inpaint_model_loaded") == 1.0
    assert metric(after, "inpaint_gpu_available") == 0.0
    assert metric(after, "inpaint_queue_depth") == 0.0


def test_live_server_serves_simultaneous_requests(live):
    base, _, _ = live
    count = 12
    barrier = threading.Barrier(count)
    results, errors = {}, []

    def one(index):
        try:
            image, mask = make_case(64 + 8 * index, 48 + 4 * index, seed=index)
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait(WAIT_S)
                results[index] = (image, mask, http.post("/api/v1/inpaint", **upload(image, mask, dilate=0)))
        except Exception as error:  # surfaced below
            errors.append(error)

    with httpx.Client(base_url=base) as http:
        served_before = metric(http.get("/metrics").text, "inpaint_requests_total", status="200")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert errors == [] and len(results) == count
    for image, mask, response in results.values():
        assert response.status_code == 200, response.text
        result = decode(response.content)
        assert result.shape == image.shape
        assert np.array_equal(result[mask == 0], image[mask == 0])
    with httpx.Client(base_url=base) as http:
        text = http.get("/metrics").text
    assert metric(text, "inpaint_requests_total", status="200") == served_before + count
    assert metric(text, "inpaint_queue_depth") == 0.0


# ------------------------------------------------------------------ on a GPU (skipped in CI)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_health_and_metrics_report_the_gpu_and_the_preset_bounds_memory(tiny_dir, tmp_path):
    settings = make_settings(tiny_dir, tmp_path, "--preset", "fast", device="auto")
    total = torch.cuda.mem_get_info()[1]
    try:
        with serve(settings) as client:
            health = client.get("/healthz").json()
            assert health["model"]["device"].startswith("cuda") and health["model"]["precision"] == "fp16"
            gpu = health["gpu"]
            assert set(gpu) == {"name", "memory_allocated_bytes", "memory_reserved_bytes", "memory_free_bytes",
                                "memory_total_bytes"}
            assert gpu["memory_total_bytes"] == total and gpu["memory_reserved_bytes"] > 0
            # gpu_mem is what nvidia-smi shows for our GPU (NVML, through the sampler's latest sample),
            # torch's reserved memory only where NVML has no reading.
            nvml = [reading for reading in (health["sample"] or {}).get("gpu") or [] if reading["index"] == 0]
            used = nvml[0]["memory_used_bytes"] if nvml else gpu["memory_reserved_bytes"]
            assert health["gpu_mem"] == f"{used / 1e9:.1f}GB"
            text = client.get("/metrics").text
            assert metric(text, "inpaint_gpu_available") == 1.0 and metric(text, "inpaint_model_loaded") == 1.0
            image, mask = make_case()
            response = repair(client, image, mask, dilate=0, feather=0)
            assert response.status_code == 200
            assert np.array_equal(decode(response.content)[mask == 0], image[mask == 0])
            # The fast preset's share of the card: 40 %; half of it cannot be had.
            if hasattr(torch.cuda, "get_per_process_memory_fraction"):
                assert torch.cuda.get_per_process_memory_fraction() == pytest.approx(0.4)
            with pytest.raises(torch.cuda.OutOfMemoryError):
                torch.empty(total // 2, dtype=torch.uint8, device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ the monitor's view


def test_each_request_is_recorded_with_its_stages_in_the_log_and_the_monitor_api(client, folder):
    started = time.time()
    image, mask = make_case(seed=7)
    assert repair(client, image, mask, dilate="0", feather="0").status_code == 200
    saves_written(client)  # recorded once its file is written, after the answer
    assert repair(client, image, mask[:10]).status_code == 422

    view = client.get("/api/v1/monitor", params={"since": started}).json()
    assert set(view) == {"now", "interval_s", "samples", "requests"}
    assert view["now"] >= started and view["interval_s"] == 1.0
    ok, refused = view["requests"][-2:]
    assert (ok["status"], ok["width"], ok["height"], ok["error"]) == (200, 96, 72, None)
    assert set(ok["timings"]) == {"decode", "queue", "preprocess", "infer", "postprocess", "encode", "save",
                                  "total"}
    assert ok["timings"]["total"] >= ok["timings"]["infer"] > 0
    assert ok["mask_fraction"] == pytest.approx(np.count_nonzero(mask) / mask.size)
    assert ok["rss_bytes"] > 0 and ok["peak_gpu_bytes"] is None  # CPU
    assert refused["status"] == 422 and "same size" in refused["error"]

    logged = [json.loads(line) for line in (folder / "logs" / "requests.jsonl").read_text().splitlines()]
    assert [r["id"] for r in logged[-2:]] == [ok["id"], refused["id"]]


def test_the_monitor_api_serves_samples_since_a_time(client):
    wait_until(lambda: client.get("/api/v1/monitor").json()["samples"], what="a first sample")
    samples = client.get("/api/v1/monitor").json()["samples"]
    newest = samples[-1]["ts"]
    assert newest > time.time() - 10
    assert all(s["process_rss_bytes"] > 0 for s in samples)
    assert client.get("/api/v1/monitor", params={"since": newest}).json()["samples"] == []
    # The stage histograms fill from the recorded requests.
    text = client.get("/metrics").text
    assert metric(text, "inpaint_stage_duration_seconds_count", stage="infer") >= 1
    assert metric(text, "process_resident_memory_bytes") > 0


def test_the_monitor_api_needs_the_token_like_the_rest_of_the_api(tiny_dir, tmp_path):
    with serve(make_settings(tiny_dir, tmp_path, "--api-token", "s3cret")) as client:
        assert client.get("/api/v1/monitor").status_code == 401
        assert client.get("/api/v1/monitor", headers={"Authorization": "Bearer s3cret"}).status_code == 200
