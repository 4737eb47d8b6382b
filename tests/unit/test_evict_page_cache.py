"""tools/evict_page_cache.py: a file read into the page cache is out of it afterwards, and the
prefetch puts it back (what gpu_soak.sh readyz READYZ_EVICT=1 and lama.prefetch rely on)."""

import os
import runpy
import subprocess
from types import SimpleNamespace

import pytest

from lama import prefetch
from support.paths import ROOT

evict_page_cache = SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "evict_page_cache.py")))


def test_a_file_is_evicted_from_the_page_cache_and_read_back_by_the_prefetch(tmp_path):
    if subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip() == "tmpfs":
        pytest.skip("tmpfs files live in the page cache: nothing to evict")
    library = tmp_path / "libbig.so"
    with open(library, "wb") as file:  # 2 MB, written back: the page cache drops clean pages only
        file.write(bytes(range(256)) * 8192)
        file.flush()
        os.fsync(file.fileno())
    assert evict_page_cache.resident_bytes(library) > 0
    evict_page_cache.evict(library)
    assert evict_page_cache.resident_bytes(library) == 0
    prefetch.start([library]).join(timeout=30)
    assert evict_page_cache.resident_bytes(library) == library.stat().st_size
