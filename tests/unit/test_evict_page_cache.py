"""tools/evict_page_cache.py: a file read into the page cache is out of it afterwards (what
gpu_soak.sh readyz READYZ_EVICT=1 relies on), and its count of what is resident is the file's."""

import os
import runpy
import subprocess
from types import SimpleNamespace

import pytest

from support.paths import ROOT

evict_page_cache = SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "evict_page_cache.py")))


def test_a_file_is_evicted_from_the_page_cache_and_counted_back_once_read(tmp_path):
    if subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip() == "tmpfs":
        pytest.skip("tmpfs files live in the page cache: nothing to evict")
    library = tmp_path / "libbig.so"
    with open(library, "wb") as file:  # 2 MB, written back: the page cache drops clean pages only
        file.write(bytes(range(256)) * 8192)
        file.flush()
        os.fsync(file.fileno())
    assert evict_page_cache.resident_bytes(library) > 0
    assert any(path.name.startswith("libtorch") for path in evict_page_cache.library_files())
    evict_page_cache.evict(library)
    assert evict_page_cache.resident_bytes(library) == 0
    library.read_bytes()
    assert evict_page_cache.resident_bytes(library) == library.stat().st_size
