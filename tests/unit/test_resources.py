"""lama.resources: the thread budget, torch's pools, and the heap's free pages going back to the kernel
(tests/live/test_thread_budget.py holds a live server to the budget)."""

from __future__ import annotations

import subprocess
import sys

from lama import heap, imageio, parallel, resources
from support.paths import ROOT


def run_child(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_budget_counts_every_pool_and_the_cuda_one_keeps_torch_small():
    cuda, cpu = resources.thread_budget(on_cuda=True, gpu_workers=2), resources.thread_budget(False, 1)
    assert cuda.torch_intra_op == resources.CUDA_TORCH_THREADS and cpu.torch_intra_op == parallel.cores()
    assert cuda.mask_decodes == imageio.DECODE_SLOTS and cuda.cpu_pieces == parallel.cores()
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
from lama import heap
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
heap.release_free_heap()
print(before - process.memory_info().rss)
""")
    assert int(out.splitlines()[-1]) > 100 * 2**20


class _PinnedBuffers:
    """The device's pinned-buffer release, counted (there is no page-locked memory without CUDA;
    tests/gpu/test_cuda.py gives the real buffers back)."""

    def __init__(self):
        self.releases = 0

    def release_pinned_host_memory(self):
        self.releases += 1


def test_the_sweep_gives_the_pinned_buffers_back_only_once_the_gpu_queue_has_idled():
    from service.jobs import JobQueue
    from webui.compose import PINNED_RELEASE_IDLE_S, release_pinned_when_idle

    now = [0.0]
    queue, device = JobQueue(4, workers=1, clock=lambda: now[0]), _PinnedBuffers()
    try:
        now[0] = PINNED_RELEASE_IDLE_S - 1
        release_pinned_when_idle(queue, device)
        assert device.releases == 0, "a server in use keeps its buffers"
        now[0] = PINNED_RELEASE_IDLE_S
        release_pinned_when_idle(queue, device)
        assert device.releases == 1
    finally:
        queue.shutdown()


def test_the_heap_reading_counts_what_is_allocated():
    """tools/rss_steps.py's heap column: a 64 MB buffer shows as allocated while it lives."""
    before = heap.usage()
    assert before is not None, "glibc (this project's Linux) has mallinfo2"
    buffer = bytearray(64 * 2**20)
    during = heap.usage()
    del buffer
    assert during[0] - before[0] >= 64 * 2**20
    assert heap.usage()[0] < during[0]
