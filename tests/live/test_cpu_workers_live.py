"""`python app.py --cpu-workers 2`: under concurrent load the API's repairs go through the worker
processes (they do the work, the answers are the same), a killed worker is replaced, and the
workers stop with the server."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys

import httpx
import psutil

from lama import resources
from loadreport.load import make_upload
from support.liveserver import STOP_S, LiveServer
from support.app import saved_file, wait_until
from support.paths import ROOT

CLIENTS = 6


def workers_of(server: LiveServer) -> list[psutil.Process]:
    return [child for child in server.psutil.children()
            if child.cmdline()[1:3] == ["-m", "service.cpu_workers"]]


def ended(process: psutil.Process) -> bool:
    """Exited (a zombie until its parent, the server, reaps it)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def test_the_api_under_load_is_served_through_the_cpu_workers(tiny_dir, tmp_path):
    upload = make_upload(320, 240, 3, 0.08)
    files = {"image": ("photo.jpg", upload.image_jpeg, "image/jpeg"), "mask": ("mask.png", upload.mask_png, "image/png")}

    def load(count: int) -> list[httpx.Response]:
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as clients:
            return list(clients.map(lambda _: httpx.post(server.url("/api/v1/inpaint"), files=files, timeout=120),
                                    range(count)))

    with LiveServer.start(tiny_dir, tmp_path, "--cpu-workers", "2") as server:
        workers = workers_of(server)
        assert len(workers) == 2, server.log_tail()
        alone = httpx.post(server.url("/api/v1/inpaint"), files=files, timeout=60)  # in the server's process
        assert alone.status_code == 200, alone.text
        before = cpu_seconds(workers)
        answers = load(4 * CLIENTS)
        assert [answer.status_code for answer in answers] == [200] * len(answers)
        assert {answer.content for answer in answers} == {alone.content}
        for answer in answers[:3]:
            assert saved_file(tmp_path / "outputs", answer).read_bytes() == answer.content
        assert cpu_seconds(workers) - before > 0.05, "the workers did none of the work"
        # The thread reading each worker's replies is in the server's logged budget.
        budget = resources.thread_budget(on_cuda=False, gpu_workers=1, cpu_workers=2)
        assert f"threads: at most {budget.total} (" in server.output()
        assert server.psutil.num_threads() <= budget.total

        # A bad upload under load is refused as the server's own process refuses it.
        bad = {"image": ("photo.jpg", b"not an image at all", "image/jpeg"), "mask": files["mask"]}
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as clients:
            mixed = list(clients.map(
                lambda index: httpx.post(server.url("/api/v1/inpaint"), files=bad if index % 2 else files, timeout=120),
                range(4 * CLIENTS)))
        for index, answer in enumerate(mixed):
            if index % 2:
                assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_image", answer.text
            else:
                assert answer.status_code == 200

        # A worker killed is replaced; the service goes on.
        workers[0].send_signal(signal.SIGKILL)
        wait_until(lambda: ended(workers[0]), what="the killed worker gone")
        answers = load(4 * CLIENTS)
        assert all(answer.status_code in (200, 503) for answer in answers)
        assert [answer.status_code for answer in load(2 * CLIENTS)] == [200] * 2 * CLIENTS
        now = workers_of(server)
        assert len(now) == 2 and workers[1] in now and workers[0] not in now

        server.process.send_signal(signal.SIGTERM)
        server.process.wait(STOP_S)
        wait_until(lambda: all(ended(worker) for worker in now), timeout=5, what="the workers stopped with the server")


def test_a_scripts_batch_of_jobs_is_served_through_the_cpu_workers(tiny_dir, tmp_path):
    """As the README's script submits a folder: one job after another, then each polled and fetched
    (small photos: which process repairs them is the question, and the tiny model's CPU time grows
    with the pixels)."""
    upload = make_upload(320, 240, 5, 0.08)
    files = {"image": ("photo.jpg", upload.image_jpeg, "image/jpeg"), "mask": ("mask.png", upload.mask_png, "image/png")}
    with LiveServer.start(tiny_dir, tmp_path, "--cpu-workers", "2") as server, httpx.Client(timeout=60) as client:
        workers = workers_of(server)
        alone = client.post(server.url("/api/v1/inpaint"), files=files)
        assert alone.status_code == 200, alone.text
        before = cpu_seconds(workers)
        accepted = [client.post(server.url("/api/v1/jobs"), files=files) for _ in range(16)]
        assert [answer.status_code for answer in accepted] == [202] * 16
        for answer in accepted:
            url = server.url(answer.json()["url"])
            wait_until(lambda: client.get(url).json()["status"] in ("done", "failed"), what="the job final")  # noqa: B023
            assert client.get(url).json()["status"] == "done"
            assert client.get(url + "/result").content == alone.content
        assert cpu_seconds(workers) - before > 0.05, "the workers did none of the jobs' work"


def test_the_worker_memory_command_prints_its_rss_before_after_and_idle(tiny_dir):
    """tools/worker_rss.py: one row of three sizes, and the arena bound the worker was given
    (the figures are printed, not tested)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "worker_rss.py"), "--size", "320x240", "--repairs",
                           "2", "--model", str(tiny_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"})
    assert done.returncode == 0, done.stderr
    assert "MALLOC_ARENA_MAX 2" in done.stdout
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| |")]
    assert all(float(cell) > 10 for cell in row.strip("|").split("|")[1:])
