"""tools/rss_map.py groups a process's resident memory by what backs it."""

import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from support.paths import ROOT

rss_map = SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "rss_map.py")))

SMAPS = """\
7f0000000000-7f0000100000 r-xp 00000000 08:01 1234     /usr/lib/libcuda.so.580
Size:               1024 kB
Rss:                 600 kB
7f0000100000-7f0000200000 r--p 00100000 08:01 1234     /usr/lib/libcuda.so.580
Rss:                 100 kB
55d000000000-55d000400000 rw-p 00000000 00:00 0        [heap]
Rss:                 300 kB
7f1000000000-7f1000800000 rw-p 00000000 00:00 0
Rss:                 800 kB
"""


def test_resident_kilobytes_are_summed_per_library_heap_and_anonymous_memory():
    sizes = rss_map.resident_by_backing(SMAPS)
    assert sizes == {"libcuda.so.580": 700, "[heap]": 300, "[anonymous]": 800}


def test_a_live_process_is_accounted_for_whole():
    held = np.ones(64 * 2**20, np.uint8)  # 64 MB touched: anonymous memory of this process
    sizes = rss_map.resident_by_backing(Path("/proc/self/smaps").read_text())
    status = Path("/proc/self/status").read_text()
    vm_rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    assert abs(sum(sizes.values()) - vm_rss) < 0.05 * vm_rss
    assert sizes["[anonymous]"] + sizes["[heap]"] >= held.nbytes // 1024
