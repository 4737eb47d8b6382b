"""lama/triton_key.py: Triton's version key read from the kernel cache folder while Triton's files
are unchanged, computed again when they change."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lama import triton_key


@pytest.fixture
def package(tmp_path):
    """A stand-in for Triton's folder: the files its key reads."""
    root = tmp_path / "triton"
    for name, content in (("_C/libtriton.so", b"\x7fELF" * 100), ("compiler/compiler.py", b"x = 1\n"),
                          ("runtime/cache.py", b"y = 2\n"), ("language/core.py", b"z = 3\n")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


class Computed:
    """Triton's key function: counts its calls, and gives a new key after each change of `value`."""

    def __init__(self):
        self.calls, self.value = 0, "3.6.0-first"

    def __call__(self) -> str:
        self.calls += 1
        return self.value


def test_a_kept_key_serves_later_processes_without_computing_it(package, tmp_path):
    compute, cache = Computed(), tmp_path / "kernel-cache"
    first = triton_key.kept_key(package, lambda: str(cache), compute)
    assert first() == "3.6.0-first" and first() == "3.6.0-first" and compute.calls == 1
    assert (cache / triton_key.KEPT_FILE).is_file()
    later = triton_key.kept_key(package, lambda: str(cache), compute)  # another process
    assert later() == "3.6.0-first" and compute.calls == 1, "the kept key was computed again"


@pytest.mark.parametrize("change", ["library rebuilt", "python file edited", "file added"])
def test_a_changed_triton_computes_the_key_again(package, tmp_path, change):
    compute, cache = Computed(), tmp_path / "kernel-cache"
    triton_key.kept_key(package, lambda: str(cache), compute)()
    if change == "library rebuilt":
        (package / "_C/libtriton.so").write_bytes(b"\x7fELF" * 101)
    elif change == "python file edited":
        path = package / "compiler/compiler.py"
        path.write_bytes(b"x = 2\n")  # the same size: the modification time tells
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    else:
        (package / "backends/nvidia").mkdir(parents=True)
        (package / "backends/nvidia/compiler.py").write_bytes(b"")
    compute.value = "3.6.1-second"
    assert triton_key.kept_key(package, lambda: str(cache), compute)() == "3.6.1-second" and compute.calls == 2
    assert triton_key.kept_key(package, lambda: str(cache), compute)() == "3.6.1-second" and compute.calls == 2


def test_an_unreadable_record_or_an_unwritable_folder_only_costs_the_computing(package, tmp_path):
    compute, cache = Computed(), tmp_path / "kernel-cache"
    cache.mkdir()
    (cache / triton_key.KEPT_FILE).write_text('{"files": [')  # cut short
    assert triton_key.kept_key(package, lambda: str(cache), compute)() == "3.6.0-first" and compute.calls == 1
    assert triton_key.kept_key(package, lambda: str(cache), compute)() == "3.6.0-first" and compute.calls == 1

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    assert triton_key.kept_key(package, lambda: str(not_a_folder / "cache"), compute)() == "3.6.0-first"
    assert compute.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "kernel-cache", "triton"]
    assert [p.name for p in cache.iterdir()] == [triton_key.KEPT_FILE], "a temporary file was left behind"


def test_threads_asking_at_once_walk_tritons_folders_once(package, tmp_path, monkeypatch):
    walks = []

    def slow_fingerprint(folder):
        walks.append(folder)
        time.sleep(0.2)  # the first walk still going while the other threads ask
        return real_fingerprint(folder)

    real_fingerprint = triton_key.fingerprint
    monkeypatch.setattr(triton_key, "fingerprint", slow_fingerprint)
    compute = Computed()
    key = triton_key.kept_key(package, lambda: str(tmp_path / "kernel-cache"), compute)
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: key(), range(8)))
    assert keys == ["3.6.0-first"] * 8
    assert len(walks) == 1 and compute.calls == 1
