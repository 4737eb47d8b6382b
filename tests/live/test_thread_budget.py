"""A live server's threads stay within the budget it logs (lama.resources), however many requests."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from lama import resources
from loadreport.load import make_upload
from support.liveserver import LiveServer

REQUESTS = 80  # more than the whole budget: a thread per request (or per client) would show


def test_a_live_servers_threads_stay_within_its_budget_after_many_requests(tiny_dir, tmp_path):
    uploads = [make_upload(width, height, seed, 0.08) for seed, (width, height) in enumerate(((64, 48), (160, 120)))]
    with LiveServer.start(tiny_dir, tmp_path) as server:
        budget = resources.thread_budget(on_cuda=False, gpu_workers=1)
        assert f"threads: at most {budget.total} (" in server.output(), "the server logs its budget"

        def repair(index: int) -> int:
            upload = uploads[index % len(uploads)]
            files = {"image": ("photo.jpg", upload.image_jpeg, "image/jpeg"),
                     "mask": ("mask.png", upload.mask_png, "image/png")}
            return httpx.post(server.url("/api/v1/inpaint"), files=files, timeout=120).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as clients:
            statuses = list(clients.map(repair, range(REQUESTS)))
        time.sleep(0.5)
        assert statuses == [200] * REQUESTS
        assert server.psutil.num_threads() <= budget.total
