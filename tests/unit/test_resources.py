"""lama.resources: the thread budget, torch's pools, and the heap's free pages going back to the kernel
(tests/live/test_thread_budget.py holds a live server to the budget)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lama import imageio, parallel, resources
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


def test_bounding_the_process_sets_torchs_pools_and_the_gils_switch_interval():
    out = run_child("import sys, torch; from lama import resources; resources.bound_process(True, 2); "
                    "print(torch.get_num_threads(), torch.get_num_interop_threads(), sys.getswitchinterval())")
    threads, interop, switch = out.splitlines()[-1].split()
    assert (int(threads), int(interop)) == (resources.CUDA_TORCH_THREADS, 1)
    # CPython keeps it in microseconds: 0.0002 comes back as 0.00019999999999999998.
    assert float(switch) == pytest.approx(resources.GIL_SWITCH_INTERVAL_S)
    assert float(switch) < 0.005, "CPython's default is 5 ms"


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
