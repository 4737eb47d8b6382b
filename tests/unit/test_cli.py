"""`python -m lama ...` as a user runs it: a real subprocess, real files, exit codes and messages."""

import hashlib
import http.server
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.cli import run_lama

REPO = Path(__file__).resolve().parents[2]


def write_case(folder: Path, stem: str, size=(72, 56), mask_name=None):
    """A random RGB image and a square mask on disk; returns (image, mask) arrays."""
    width, height = size
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[10:30, 20:40] = 255
    cv2.imwrite(str(folder / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return image, mask, folder / (mask_name or f"{stem}_mask.png")


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_inpaint_a_single_file(tmp_path, tiny_dir):
    image, mask, mask_path = write_case(tmp_path, "photo")
    cv2.imwrite(str(mask_path), mask)
    result = run_lama("inpaint", "--model", tiny_dir, "--image", tmp_path / "photo.png", "--mask", mask_path,
                      "--output", tmp_path / "out.png", "--device", "cpu", "--dilate", "2", "--feather", "2")
    assert result.returncode == 0, result.stderr
    out = read_rgb(tmp_path / "out.png")
    assert out.shape == image.shape
    assert np.array_equal(out[:5], image[:5]), "far from the mask nothing changes"
    assert not np.array_equal(out[10:30, 20:40], image[10:30, 20:40])


def test_inpaint_directories_match_masks_by_stem_and_show_progress(tmp_path, tiny_dir):
    photos, masks_dir, out = tmp_path / "photos", tmp_path / "masks", tmp_path / "out"
    photos.mkdir(), masks_dir.mkdir()
    _, mask_a, _ = write_case(photos, "a")
    _, mask_b, _ = write_case(photos, "b")
    cv2.imwrite(str(masks_dir / "a.png"), mask_a)  # same stem
    cv2.imwrite(str(masks_dir / "b_mask.PNG"), mask_b)  # STEM_mask, upper-case suffix
    result = run_lama("inpaint", "--model", tiny_dir, "--image", photos, "--mask", masks_dir, "--output", out,
                      "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "2/2" in result.stderr, "tqdm progress bar expected on stderr"


def test_masks_beside_the_images_are_not_taken_for_images(tmp_path, tiny_dir):
    _, mask, mask_path = write_case(tmp_path, "c")
    cv2.imwrite(str(mask_path), mask)
    result = run_lama("inpaint", "--model", tiny_dir, "--image", tmp_path, "--mask", tmp_path,
                      "--output", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c.png"]


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing-image", "image not found"),
        ("corrupt-image", "not an image"),
        ("size-mismatch", "must be the same size"),
        ("no-mask-in-dir", "no mask for"),
        ("bad-model", "error: "),
        ("fp16-on-cpu", "fp16 needs a CUDA device"),
    ],
)
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(tmp_path, tiny_dir, problem, message):
    image, mask, mask_path = write_case(tmp_path, "p")
    cv2.imwrite(str(mask_path), mask)
    args = {"--model": tiny_dir, "--image": tmp_path / "p.png", "--mask": mask_path, "--output": tmp_path / "o.png",
            "--device": "cpu"}
    if problem == "missing-image":
        args["--image"] = tmp_path / "nope.png"
    elif problem == "corrupt-image":
        (tmp_path / "p.png").write_bytes(b"definitely not a png")
    elif problem == "size-mismatch":
        cv2.imwrite(str(mask_path), mask[:20])
    elif problem == "no-mask-in-dir":
        (tmp_path / "empty").mkdir()
        args["--mask"] = tmp_path / "empty"
    elif problem == "bad-model":
        (tmp_path / "model.ckpt").write_bytes(b"\x00" * 100)
        args["--model"] = tmp_path / "model.ckpt"
    elif problem == "fp16-on-cpu":
        args["--precision"] = "fp16"
    result = run_lama("inpaint", *[v for pair in args.items() for v in pair])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_info_describes_the_checkpoint(tiny_dir):
    result = run_lama("info", tiny_dir, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["source_format"] == "official-dir"
    assert info["ngf"] == 16 and info["n_blocks"] == 2


def test_convert_then_inpaint_with_the_safetensors_gives_the_same_result(tmp_path, tiny_dir):
    converted = tmp_path / "tiny.safetensors"
    result = run_lama("convert", tiny_dir, converted)
    assert result.returncode == 0, result.stderr
    _, mask, mask_path = write_case(tmp_path, "q")
    cv2.imwrite(str(mask_path), mask)
    for model, out in ((tiny_dir, "from_ckpt.png"), (converted, "from_st.png")):
        result = run_lama("inpaint", "--model", model, "--image", tmp_path / "q.png", "--mask", mask_path,
                          "--output", tmp_path / out, "--device", "cpu")
        assert result.returncode == 0, result.stderr
    assert np.array_equal(read_rgb(tmp_path / "from_ckpt.png"), read_rgb(tmp_path / "from_st.png"))
    assert run_lama("convert", tiny_dir, tmp_path / "x.bin").returncode == 1


def test_bench_prints_a_table_and_writes_json(tmp_path, tiny_dir):
    result = run_lama("bench", "--model", tiny_dir, "--device", "cpu", "--sizes", "64x48,33x17", "--runs", "2",
                      "--warmup", "1", "--json", tmp_path / "bench.json")
    assert result.returncode == 0, result.stderr
    assert "| 64×48 |" in result.stdout and "| 33×17 |" in result.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["width"], r["height"]) for r in data["results"]] == [(64, 48), (33, 17)]
    assert all(r["model_ms"] > 0 and r["end_to_end_ms"] > 0 for r in data["results"])
    assert all(r["reference_ms"] is None for r in data["results"]), "no reference unless asked"


def test_bench_compares_with_the_fp32_reference(tmp_path, tiny_dir):
    result = run_lama("bench", "--model", tiny_dir, "--device", "cpu", "--sizes", "40x24", "--runs", "2",
                      "--warmup", "1", "--compare-reference", "--json", tmp_path / "bench.json")
    assert result.returncode == 0, result.stderr
    assert "speed-up" in result.stdout and "rel. error vs fp32" in result.stdout
    (row,) = json.loads((tmp_path / "bench.json").read_text())["results"]
    # On the CPU the engine is the reference path itself: same function, same padding.
    assert row["reference_ms"] > 0 and row["speedup"] > 0
    assert row["rel_error"] == 0.0
    assert run_lama("bench", "--model", tiny_dir, "--device", "cpu", "--sizes", "64by48").returncode == 1


def test_download_fetches_verifies_and_places_the_file(tmp_path):
    payload = np.random.default_rng(1).bytes(300_000)
    served = tmp_path / "srv"
    served.mkdir()
    (served / "big-lama.pt").write_bytes(payload)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/big-lama.pt"
        dest = tmp_path / "models"
        ok = run_lama("download", "--dest", dest, "--url", url, "--md5", hashlib.md5(payload).hexdigest())
        assert ok.returncode == 0, ok.stderr
        assert (dest / "big-lama.pt").read_bytes() == payload
        bad = run_lama("download", "--dest", tmp_path / "other", "--url", url, "--md5", "0" * 32)
        assert bad.returncode == 1 and "checksum" in bad.stderr
        assert list((tmp_path / "other").glob("*")) == [], "nothing of a rejected download may remain"
    finally:
        server.shutdown()
