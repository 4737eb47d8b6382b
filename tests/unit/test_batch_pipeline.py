"""lama.batch.run: a folder's photos read, repaired and written at once, in three stages, with the
files, the order and the failures of one photo after another.

Real files in a temporary folder, the tiny model on the CPU; where a test needs to see the stages
overlap, the engine's repair waits for what the other stages should be doing meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from lama import batch, imageio
from lama.engine import InpaintEngine
from lama.errors import ImageError
from support.paths import ROOT

WAIT_S = 10


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return InpaintEngine(tiny_dir, device="cpu")


def folder_of_photos(root: Path, count: int, size=(64, 48)) -> tuple[Path, Path]:
    """`count` photos (PNG and JPEG in turn) and one mask for all of them."""
    photos = root / "photos"
    photos.mkdir()
    width, height = size
    rng = np.random.default_rng(count)
    for index in range(count):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(photos / f"p{index:02d}.{'jpg' if index % 2 else 'png'}"), image)
    mask = np.zeros((height, width), np.uint8)
    mask[12:30, 16:40] = 255
    cv2.imwrite(str(root / "mask.png"), mask)
    return photos, root / "mask.png"


def test_the_outputs_are_each_photos_own_repair_and_the_summary_keeps_the_folders_order(engine, tmp_path):
    photos, mask = folder_of_photos(tmp_path, 7)
    (photos / "p03.jpg").write_bytes(b"not a picture")  # fails to read
    jobs = batch.plan(photos, mask, tmp_path / "out")
    jobs[5] = batch.Job(jobs[5].image, None, jobs[5].output, jobs[5].format)  # no mask: skipped
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / jobs[6].output.name).mkdir()  # its output is a folder: fails to write
    settings = batch.Settings(dilate=2, feather=2)
    reported, finished = [], []
    summary = batch.run(lambda: engine, jobs, settings, report=lambda path, message: reported.append(path.name),
                        on_photo=lambda: finished.append(len(finished)))
    assert [path.name for path in summary.done] == ["p00.png", "p01.jpg", "p02.png", "p04.png"]
    assert [path.name for path, _ in summary.failed] == reported == ["p03.jpg", "p06.png"]
    assert summary.skipped == {"no mask": [jobs[5].image]}
    assert len(finished) == len(jobs)
    for job in jobs[:3] + jobs[4:5]:
        photo = imageio.read_photo(job.image)
        fill = imageio.read_mask(mask) > 127
        expected = imageio.encode_image(engine.inpaint(photo.pixels, fill, dilate=2, feather=2), job.format,
                                        metadata=photo.source.metadata)
        assert job.output.read_bytes() == expected, job.image.name


def test_the_next_photo_is_read_and_the_last_one_written_while_one_is_repaired(engine, tmp_path, monkeypatch):
    """Each stage waits for what the others must be doing at the same time (the first photos are
    read while the engine loads): done one after another, the batch would time out here."""
    photos, mask = folder_of_photos(tmp_path, 5)
    jobs = batch.plan(photos, mask, tmp_path / "out")
    read, written, repairing = [], [], []
    read_one, write_one = batch.read_one, batch.write_one

    def read_and_count(job, *rest):
        fitted = read_one(job, *rest)
        read.append(job)
        return fitted

    def write_once_the_next_is_repaired(job, *rest):
        index = jobs.index(job)
        if index + 1 < len(jobs):
            assert wait_for(lambda: len(repairing) > index + 1), f"photo {index} written before {index + 1} was repaired"
        write_one(job, *rest)
        written.append(job)

    repair = engine.inpaint

    def repair_once_the_next_is_read(pixels, fill, **options):
        index = len(repairing)
        repairing.append(len(read))
        assert wait_for(lambda: len(read) >= min(index + 2, len(jobs))), f"photo {index + 1} was not read meanwhile"
        return repair(pixels, fill, **options)

    def load_once_the_first_is_read():
        assert wait_for(lambda: read), "no photo was read while the engine loaded"
        return engine

    monkeypatch.setattr(batch, "read_one", read_and_count)
    monkeypatch.setattr(batch, "write_one", write_once_the_next_is_repaired)
    monkeypatch.setattr(engine, "inpaint", repair_once_the_next_is_read)
    summary = batch.run(load_once_the_first_is_read, jobs, batch.Settings())
    assert summary.done == [job.image for job in jobs] and written == jobs and not summary.failed
    # Never more than READ_AHEAD photos read ahead of the one being repaired.
    assert all(reads <= index + 1 + batch.READ_AHEAD for index, reads in enumerate(repairing))


def test_one_photo_asked_for_stops_at_its_error_and_nothing_is_left_running(engine, tmp_path):
    photos, mask = folder_of_photos(tmp_path, 4)
    (photos / "p00.png").write_bytes(b"not a picture")
    jobs = batch.plan(photos, mask, tmp_path / "out")
    loaded = []
    with pytest.raises(ImageError, match="p00.png"):
        batch.run(lambda: loaded.append(engine) or engine, jobs, batch.Settings(), stop_on_error=True)
    assert loaded == []  # said before the model would have loaded
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert not [thread for thread in threading.enumerate() if thread.name.startswith(("batch-read", "batch-write"))]


def wait_for(condition, timeout_s: float = WAIT_S) -> bool:
    event = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return True
        event.wait(0.01)
    return condition()


def test_the_benchmark_command_prints_both_rates_per_size(tiny_dir):
    """tools/cli_batch_bench.py: a row per size, every figure a number (speeds are printed, not tested)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "cli_batch_bench.py"), "--model", str(tiny_dir),
                           "--device", "cpu", "--sizes", "96x64,160x120", "--photos", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| 96") or
            line.startswith("| 160")]
    assert [row[0].strip() for row in rows] == ["96×64", "160×120"]
    for row in rows:
        assert all(float(cell) > 0 for cell in row[1:])
