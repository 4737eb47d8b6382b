"""lama.resources: the server's threads stay within the budget it logs, and the heap's free pages
go back to the kernel."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time

import httpx

from lama import imageio, png, resources
from liveserver import ROOT, LiveServer
from loadreport.load import make_upload

REQUESTS = 80  # more than the whole budget: a thread per request (or per client) would show


def run_child(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_budget_counts_every_pool_and_the_cuda_one_keeps_torch_small():
    cuda, cpu = resources.thread_budget(on_cuda=True, gpu_workers=2), resources.thread_budget(False, 1)
    assert cuda.torch_intra_op == resources.CUDA_TORCH_THREADS and cpu.torch_intra_op == png.cores()
    assert cuda.mask_decodes == imageio.DECODE_SLOTS and cuda.png_segments == png.cores()
    assert cuda.total == sum(vars(cuda).values()) and cpu.cuda_driver == 0
    assert "torch intra op 2" in cuda.describe()


def test_bounding_the_process_sets_torchs_pools():
    out = run_child("import torch; from lama import resources; resources.bound_process(True, 2); "
                    "print(torch.get_num_threads(), torch.get_num_interop_threads())")
    assert out.splitlines()[-1] == f"{resources.CUDA_TORCH_THREADS} 1"


def test_free_heap_pages_go_back_to_the_kernel():
    """192 MB freed in a thread's arena, kept from the top by small live blocks: glibc holds it
    until malloc_trim."""
    out = run_child("""
import threading, psutil
from lama import resources
kept = []
def work():
    freed = [bytearray(64 * 1024) for _ in range(3000)]
    kept.extend(bytearray(64) for _ in range(3000))
    del freed
thread = threading.Thread(target=work)
thread.start()
thread.join()
process = psutil.Process()
before = process.memory_info().rss
resources.release_free_heap()
print(before - process.memory_info().rss)
""")
    assert int(out.splitlines()[-1]) > 100 * 2**20


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
