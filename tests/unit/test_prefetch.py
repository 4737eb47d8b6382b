"""lama.prefetch: what a GPU server's start-up reads ahead, and that it reads it whole."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lama import prefetch


def test_torch_s_own_libraries_are_found_without_importing_anything_new():
    """The list is made before torch is imported (here it is, but the lookup does not need it)."""
    files = prefetch.library_files()
    torch_lib = Path(torch.__file__).parent / "lib"
    assert any(path.parent == torch_lib and path.name.startswith("libtorch") for path in files)
    assert all(".so" in path.suffixes or path.name == "ptxas" for path in files)


def test_each_file_is_read_to_its_end_and_one_that_cannot_be_read_is_skipped(tmp_path, caplog):
    """Files of several sendfile calls' worth and of none are read whole; a missing one is passed
    over without stopping the rest."""
    sizes = (3 * 2**20 + 5, 0, 10)
    files = []
    for number, size in enumerate(sizes):
        files.append(tmp_path / f"lib{number}.so")
        files[-1].write_bytes(bytes(size))
    with open("/dev/null", "wb") as sink:
        assert [prefetch._read_through(path, sink.fileno()) for path in files] == list(sizes)
    with caplog.at_level(logging.INFO, logger="lama.prefetch"):
        prefetch.start([tmp_path / "gone.so", *files]).join(timeout=30)
    assert "prefetch: 3 of 4 files, 0.0 GB read into the page cache" in caplog.text
