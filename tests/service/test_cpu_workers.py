"""service.cpu_workers: a repair's CPU steps in worker processes give the file the server's own
process gives, the errors the server's own process raises, and survive a worker's death.

Real worker processes (`python -m service.cpu_workers`) and the tiny model on the CPU; the
model runs in this process, as in the server's.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading

import cv2
import numpy as np
import psutil
import pytest

from lama import png
from lama.engine import InpaintEngine
from lama.errors import ImageError, MaskError, OptionError, ShuttingDownError, TooLargeForGpuError
from lama.memory import MemoryModel
from service.cpu_workers import CpuWorkers, WorkerConfig, WorkerLostError, _Jobs, _worker_environment
from service.pipeline import RepairOptions
from service.warmup import WarmUp
from support.app import make_case
from support.service import repair_service

MB = 10**6


def jpeg_and_png(image: np.ndarray, mask: np.ndarray) -> tuple[bytes, bytes]:
    return (cv2.imencode(".jpg", image[:, :, ::-1])[1].tobytes(),
            cv2.imencode(".png", (mask > 0).astype(np.uint8) * 255)[1].tobytes())


def repair_in_worker(service, image_bytes: bytes, mask_bytes: bytes, name: str, options: RepairOptions):
    """As the API's handler runs one: submitted to a worker, the model's run waited for, finished."""
    repair = service.submit_to_worker(image_bytes, mask_bytes, name, options)
    return service.finish_in_worker(repair, repair.queued.result() if repair.queued else None)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


@pytest.fixture
def service(engine, tmp_path):
    with repair_service(engine, tmp_path) as service:
        workers = CpuWorkers(2, WorkerConfig(engine.hd, engine.backend.prefers_few_shapes, service.limits, 1))
        workers.start()
        service.cpu_workers = workers
        try:
            yield service
        finally:
            workers.stop()


def test_a_repair_in_a_worker_is_the_file_the_servers_own_process_makes(service):
    image, mask = make_case(320, 240, seed=5)
    photo, brush = jpeg_and_png(image, mask)
    for options in (RepairOptions(dilate=4, feather=4), RepairOptions(strategy="original", format="jpeg"),
                    RepairOptions(strategy="resize", dilate=0, feather=0)):
        in_worker = repair_in_worker(service, photo, brush, "holiday.jpg", options)
        here = service.repair_decoded(service.decode(photo, brush, "holiday.jpg", options), options)
        assert in_worker.data == here.data, options
        assert in_worker.image is None and in_worker.name == here.name == f"holiday_repaired.{here.format.extension}"
        assert (service.outputs.root / in_worker.saved_as).read_bytes() == in_worker.data
        assert set(in_worker.timings) == set(here.timings)
        assert in_worker.timings["total"] >= in_worker.timings["infer"] > 0
    # Nothing to repair: the photo comes back as a file all the same.
    empty = cv2.imencode(".png", np.zeros((240, 320), np.uint8))[1].tobytes()
    options = RepairOptions()
    assert repair_in_worker(service, photo, empty, "a.jpg", options).data == \
        service.repair_decoded(service.decode(photo, empty, "a.jpg", options), options).data


def test_a_worker_compresses_the_png_rows_the_repair_leaves_alone_before_the_model_ends(service, engine, monkeypatch):
    """The worker's side of the protocol (_Jobs), in this process: after its reply to prepare it
    compresses the result's PNG segments outside the mask's box, and its finish writes the file
    the server's own process writes, with that time counted as encoding."""
    monkeypatch.setattr(png, "MIN_SEGMENT_BYTES", 4096)  # the 240-row photo in 16 segments of 15 rows
    image, _ = make_case(320, 240, seed=5)
    mask = np.zeros((240, 320), np.uint8)
    mask[100:130, 40:200] = 255  # dilated by 4: rows 96..133 change, segments 6..8
    photo, brush = jpeg_and_png(image, mask)
    options = RepairOptions(dilate=4, feather=4)
    jobs = _Jobs(WorkerConfig(engine.hd, engine.backend.prefers_few_shapes, service.limits, 1))
    uploads = [np.frombuffer(photo, np.uint8), np.frombuffer(brush, np.uint8)]
    _, inputs = jobs.prepare({"id": 1, "options": options, "name": "a.jpg"}, uploads)
    assert jobs.held[1].decoded.png_ahead is None
    jobs.after_prepare(1)
    ahead = jobs.held[1].decoded.png_ahead
    assert sorted(ahead.segments) == [*range(6), *range(9, 16)]
    encoded_with = []
    real_encode = png.encode
    monkeypatch.setattr(png, "encode", lambda *args, ahead=None, **kwargs: encoded_with.append(ahead) or
                        real_encode(*args, ahead=ahead, **kwargs))
    reply, (data,) = jobs.finish({"id": 1}, engine.run_inputs(list(zip(inputs[0::2], inputs[1::2], strict=True))))
    assert len(encoded_with) == 1 and encoded_with[0] is ahead
    monkeypatch.setattr(png, "encode", real_encode)
    here = service.repair_decoded(service.decode(photo, brush, "a.jpg", options), options)
    assert data.tobytes() == here.data
    assert reply["timings"]["encode"] > 0


def test_a_worker_s_heap_keeps_the_server_s_arena_bound_unless_the_operator_set_one(service, monkeypatch):
    environ = (psutil.Process(service.cpu_workers.pick().process.pid).environ())
    assert environ["MALLOC_ARENA_MAX"] == os.environ.get("MALLOC_ARENA_MAX", "2")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert _worker_environment()["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert _worker_environment()["MALLOC_ARENA_MAX"] == "4"


def test_the_workers_errors_are_the_servers_with_their_codes_and_parts(service):
    image, mask = make_case(160, 120, seed=6)
    photo, brush = jpeg_and_png(image, mask)
    with pytest.raises(ImageError) as error:
        repair_in_worker(service, b"not an image at all", brush, "x.jpg", RepairOptions())
    assert (error.value.code, error.value.part) == ("invalid_image", "image")
    assert str(error.value).startswith("image: ")
    with pytest.raises(ImageError) as error:
        repair_in_worker(service, photo, b"\x89PNG broken", "x.jpg", RepairOptions())
    assert (error.value.code, error.value.part) == ("invalid_mask", "mask")
    small_mask = cv2.imencode(".png", np.full((60, 80), 255, np.uint8))[1].tobytes()
    with pytest.raises(MaskError) as error:
        repair_in_worker(service, photo, small_mask, "x.jpg", RepairOptions())
    assert error.value.code == "mask_size_mismatch"
    with pytest.raises(OptionError):
        repair_in_worker(service, photo, brush, "x.jpg", RepairOptions(strategy="nonsense"))
    # The workers go on serving.
    assert repair_in_worker(service, photo, brush, "x.jpg", RepairOptions()).data


def test_a_repair_given_up_on_is_forgotten_by_its_worker(service):
    image, mask = make_case(160, 120, seed=9)
    repair = service.submit_to_worker(*jpeg_and_png(image, mask), "x.jpg", RepairOptions())
    worker = repair.prepared.worker
    assert worker.in_flight == 1
    repair.queued.result()
    service.abandon(repair)
    assert worker.in_flight == 0
    with pytest.raises(RuntimeError, match="KeyError"):  # the worker holds it no more
        service.finish_in_worker(repair, None)


def test_a_job_too_large_for_the_budget_is_prepared_again_cropped_in_its_worker(service):
    service.engine.memory = MemoryModel(0.0, 100)  # bytes per model-input pixel
    service.queue.set_budget(20 * MB)  # a 1000×600 image whole is 60 MB, a crop of its region 8.8 MB
    try:
        image, mask = make_case(1000, 600, box=(280, 480, 320, 520), seed=3)
        photo, brush = jpeg_and_png(image, mask)
        options = RepairOptions(strategy="original")
        result = repair_in_worker(service, photo, brush, "wide.jpg", options)
        assert (result.strategy, result.requested_strategy) == ("crop", "original")
        assert result.data == service.repair_decoded(service.decode(photo, brush, "w.jpg", options), options).data
        whole, whole_mask = make_case(1000, 600, box=(20, 20, 580, 980), seed=3)
        with pytest.raises(TooLargeForGpuError):
            repair_in_worker(service, *jpeg_and_png(whole, whole_mask), "w.jpg", options)
    finally:
        service.engine.memory = None
        service.queue.set_budget(None)


def test_a_dead_worker_fails_its_repairs_with_503_and_another_takes_its_place(service, monkeypatch):
    image, mask = make_case(320, 240, seed=7)
    photo, brush = jpeg_and_png(image, mask)
    first = service.cpu_workers.pick()
    # The model waits until the worker holding the job has been killed.
    started, killed = threading.Event(), threading.Event()
    run_inputs = service.engine.run_inputs

    def run_after_the_kill(inputs, timings=None):
        started.set()
        assert killed.wait(10)
        return run_inputs(inputs, timings)

    monkeypatch.setattr(service.engine, "run_inputs", run_after_the_kill)
    monkeypatch.setattr(service.cpu_workers, "pick", lambda: first)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        repair = pool.submit(repair_in_worker, service, photo, brush, "x.jpg", RepairOptions())
        assert started.wait(30)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        killed.set()
        with pytest.raises(WorkerLostError) as error:
            repair.result(30)
    assert error.value.retry_after_s == 1
    monkeypatch.undo()
    replaced = service.cpu_workers.pick()
    assert replaced is not first and replaced.alive
    assert repair_in_worker(service, photo, brush, "x.jpg", RepairOptions()).data


def test_workers_import_no_torch_and_stop_with_the_pool(engine, tmp_path):
    with repair_service(engine, tmp_path) as service:
        workers = CpuWorkers(2, WorkerConfig(engine.hd, False, service.limits, 1))
        workers.start()
        service.cpu_workers = workers
        image, mask = make_case(160, 120, seed=8)
        repair_in_worker(service, *jpeg_and_png(image, mask), "x.jpg", RepairOptions())
        processes = [psutil.Process(pid) for pid in workers.pids]
        for process in processes:
            assert process.cmdline()[1:3] == ["-m", "service.cpu_workers"]
            libraries = {os.path.basename(mapping.path) for mapping in process.memory_maps()}
            assert not any(name.startswith("libtorch") for name in libraries), "a worker loaded torch"
        workers.stop()
        assert not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in processes)
        with pytest.raises(ShuttingDownError):
            repair_in_worker(service, *jpeg_and_png(image, mask), "x.jpg", RepairOptions())


def test_the_start_up_check_passes_on_serving_workers_and_names_a_dead_ones_error(service):
    workers = service.cpu_workers
    workers.check()
    assert workers.in_flight == 0, "the check's repairs were dropped"
    first = workers.pick()
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    with pytest.raises(WorkerLostError):
        workers.check()


def test_the_warm_up_stops_workers_that_cannot_serve_and_the_service_repairs_without_them(engine, tmp_path, caplog):
    with repair_service(engine, tmp_path) as service:
        workers = CpuWorkers(2, WorkerConfig(engine.hd, False, service.limits, 1))
        workers.start()
        service.cpu_workers = workers
        processes = [psutil.Process(pid) for pid in workers.pids]
        os.kill(processes[1].pid, signal.SIGKILL)  # as if its environment could not run it
        processes[1].wait(10)
        WarmUp(engine, service.queue, service, "balanced").run()
        assert service.warm and service.cpu_workers is None and workers.pids == []
        assert "cpu_workers" not in service.health(), "a server without workers says nothing of them"
        assert "CPU workers: one could not prepare a repair (WorkerLostError" in caplog.text
        assert not processes[0].is_running() or processes[0].status() == psutil.STATUS_ZOMBIE
        image, mask = make_case(160, 120, seed=11)
        photo, brush = jpeg_and_png(image, mask)
        options = RepairOptions()
        assert service.repair_decoded(service.decode(photo, brush, "x.jpg", options), options).data
