"""tools/evict_page_cache.py: a file read into the page cache is out of it afterwards (what
gpu_soak.sh readyz READYZ_EVICT=1 relies on), and its count of what is resident is the file's."""

import json
import os
import runpy
import subprocess
import sys
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


def test_the_runs_of_pages_in_the_page_cache_are_recorded_for_reading_ahead(tmp_path):
    if subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip() == "tmpfs":
        pytest.skip("tmpfs files live in the page cache: nothing to evict")
    library = tmp_path / "libbig.so"
    with open(library, "wb") as file:
        file.write(bytes(range(256)) * 8192)  # 2 MB
        file.flush()
        os.fsync(file.fileno())
    evict_page_cache.evict(library)
    with open(library, "rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no read-around past what is read
        file.seek(1 << 20)
        file.read(1 << 16)
    runs = evict_page_cache.resident_ranges(library)
    assert len(runs) == 1 and runs[0][0] <= 1 << 20 and runs[0][0] + runs[0][1] >= (1 << 20) + (1 << 16)
    assert sum(length for _, length in runs) < library.stat().st_size  # the first half was never read
    record = tmp_path / "ranges.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "evict_page_cache.py"), "--record", str(record), str(library)],
                   check=True, capture_output=True, timeout=120)
    assert json.loads(record.read_text())[str(library)] == runs
