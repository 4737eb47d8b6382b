"""`python -m lama ...` as a user runs it: a real subprocess, real files, exit codes and messages."""

import hashlib
import http.server
import json
import resource
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image
from support.cli import run_lama



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
    assert sorted(p.name for p in out.iterdir()) == ["a_repaired.png", "b_repaired.png"]
    assert "2/2" in result.stderr, "tqdm progress bar expected on stderr"
    assert result.stdout.splitlines()[0].startswith("done 2, skipped 0, failed 0 in ")


def test_masks_beside_the_images_are_not_taken_for_images(tmp_path, tiny_dir):
    _, mask, mask_path = write_case(tmp_path, "c")
    cv2.imwrite(str(mask_path), mask)
    result = run_lama("inpaint", "--model", tiny_dir, "--image", tmp_path, "--mask", tmp_path,
                      "--output", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c_repaired.png"]


def test_help_and_mistakes_found_before_the_model_need_no_torch(tmp_path):
    """What a user gets wrong in the command line, the paths or the one photo asked for is said at
    once, not after torch's import and the model's load (seconds): here torch cannot be imported at
    all, and each still gets its answer."""
    poisoned = tmp_path / "site" / "torch"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    (tmp_path / "masks").mkdir()
    _, mask, mask_path = write_case(tmp_path, "p")
    cv2.imwrite(str(mask_path), mask)
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    paths = ("--mask", tmp_path / "masks", "--output", tmp_path / "out")
    one = ("--output", tmp_path / "o.png")
    cases = [(("--help",), 0, "usage: python -m lama"),
             (("download", "--help"), 0, "usage: python -m lama download"),
             (("inpaint", "--image", tmp_path / "nope.png", *paths), 1, "error: image not found"),
             (("inpaint", "--image", tmp_path / "p.png", *paths), 1, "error: no mask for"),
             (("inpaint", "--image", tmp_path / "p.png", *paths, "--strategy", "bogus"), 2, "invalid choice: 'bogus'"),
             (("inpaint", "--image", tmp_path / "broken.png", "--mask", mask_path, *one), 1, "broken.png: not an image"),
             (("inpaint", "--image", tmp_path / "p.png", "--mask", tmp_path / "broken.png", *one), 1,
              "broken.png: not an image")]
    for args, status, message in cases:
        result = run_lama(*args, path_first=poisoned.parent)
        assert (result.returncode, "torch" in result.stderr) == (status, False), (args, result.stderr)
        assert message in result.stdout + result.stderr, (args, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing-image", "image not found"),
        ("corrupt-image", "not an image"),
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


def files_up_to(limit_bytes: int):
    """For the child: the OS refuses to grow a file past `limit_bytes` (EFBIG, "File too large", as a
    full disk refuses one; Python ignores the SIGXFSZ that comes with it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_a_disk_that_refuses_the_output_gives_one_line_naming_it(tmp_path, tiny_dir):
    _, mask, mask_path = write_case(tmp_path, "p")
    _, _, other_mask = write_case(tmp_path, "q")
    cv2.imwrite(str(mask_path), mask), cv2.imwrite(str(other_mask), mask)
    out = tmp_path / "out"
    out.mkdir()
    common = ("--model", tiny_dir, "--mask", tmp_path, "--device", "cpu")
    single = run_lama("inpaint", "--image", tmp_path / "p.png", "--output", out / "o.png", *common,
                      preexec_fn=files_up_to(1000))
    assert single.returncode == 1 and "Traceback" not in single.stderr, single.stderr
    assert single.stderr.strip() == f"error: File too large: {out / 'o.png'}"  # not the temporary file's name

    photos = run_lama("inpaint", "--image", tmp_path, "--output", out, *common, preexec_fn=files_up_to(1000))
    assert photos.returncode == 1 and "Traceback" not in photos.stderr, photos.stderr
    assert f"failed: p.png: File too large: {out / 'p_repaired.png'}" in photos.stdout.splitlines()
    assert f"failed: q.png: File too large: {out / 'q_repaired.png'}" in photos.stdout.splitlines()
    assert list(out.iterdir()) == [], "a half-written file was left"


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
    assert "median (min–max)" in result.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["width"], r["height"]) for r in data["results"]] == [(64, 48), (33, 17)]
    for row in data["results"]:
        for stat in ("min", "median", "max"):
            # Each part is timed inside the runs it is part of: run by run it is less than the
            # whole, and so is its min, median and max.
            assert all(0 < row[part][stat] <= row["end_to_end_ms"][stat] for part in ("model_ms", "decode_ms",
                                                                                     "encode_ms"))
        assert row["model_ms"]["min"] <= row["model_ms"]["median"] <= row["model_ms"]["max"]
    assert all(r["reference_ms"] is None for r in data["results"]), "no reference unless asked"


def test_bench_compares_with_the_fp32_reference(tmp_path, tiny_dir):
    result = run_lama("bench", "--model", tiny_dir, "--device", "cpu", "--sizes", "40x24", "--runs", "2",
                      "--warmup", "1", "--compare-reference", "--json", tmp_path / "bench.json")
    assert result.returncode == 0, result.stderr
    assert "speed-up" in result.stdout and "rel. error vs fp32" in result.stdout
    (row,) = json.loads((tmp_path / "bench.json").read_text())["results"]
    # On the CPU the engine is the reference path itself: same function, same padding.
    assert row["reference_ms"] > 0 and row["model_alone_ms"] > 0 and row["speedup"] > 0
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


# ---------------------------------------------------------------------------- batches, as people run them


def photo_file(path: Path, size, seed=0, exif=None):
    """A random RGB photo (so that a repair visibly changes it) written by Pillow; returns it."""
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    params = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(pixels).save(path, exif=exif or b"", **params)
    return pixels


def changed(before, after):
    return (before != after).any(axis=2)


def test_one_mask_for_a_folder_is_resized_to_each_photo_then_thresholded(tmp_path, tiny_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    small = photo_file(photos / "small.png", (80, 60), seed=1)
    large = photo_file(photos / "large.png", (160, 120), seed=2)  # twice the mask's size
    watermark = np.zeros((60, 80), np.uint8)
    watermark[10:20, 10:30] = 200  # repaired: above the threshold
    watermark[40:50, 50:70] = 100  # a faint stroke: below it
    cv2.imwrite(str(tmp_path / "watermark.png"), watermark)
    result = run_lama("inpaint", "--model", tiny_dir, "--image", photos, "--mask", tmp_path / "watermark.png",
                      "--output", tmp_path / "out", "--device", "cpu", "--mask-threshold", "150")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [result.stdout.splitlines()[0]]  # nothing skipped or failed
    assert result.stdout.startswith("done 2, skipped 0, failed 0 in ")
    out_small = read_rgb(tmp_path / "out" / "small_repaired.png")
    out_large = read_rgb(tmp_path / "out" / "large_repaired.png")
    expected_small = np.zeros((60, 80), bool)
    expected_small[10:20, 10:30] = True
    expected_large = np.zeros((120, 160), bool)
    expected_large[20:40, 20:60] = True  # nearest neighbour: the same box, twice as large
    for before, after, expected in ((small, out_small, expected_small), (large, out_large, expected_large)):
        assert not changed(before, after)[~expected].any(), "only the mask (resized, thresholded) is repaired"
        assert changed(before, after)[expected].mean() > 0.5


def test_masks_by_name_skip_and_list_photos_without_one(tmp_path, tiny_dir):
    photos, masks_dir = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir(), masks_dir.mkdir()
    photo_file(photos / "kept.png", (64, 48))
    photo_file(photos / "lonely.png", (64, 48))
    mask = np.zeros((24, 32), np.uint8)  # half the photo's size: resized too
    mask[4:12, 4:12] = 255
    cv2.imwrite(str(masks_dir / "kept_mask.png"), mask)
    result = run_lama("inpaint", "--model", tiny_dir, "--image", photos, "--mask", masks_dir,
                      "--output", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 0, result.stderr  # a skip is not a failure
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kept_repaired.png"]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("done 1, skipped 1, failed 0 in ")
    assert "skipped (no mask): lonely.png" in lines


def test_existing_outputs_are_refused_unless_skipped_or_overwritten(tmp_path, tiny_dir):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    photo_file(photos / "a.png", (64, 48), seed=1)
    photo_file(photos / "b.png", (64, 48), seed=2)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 10:20] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    args = ["inpaint", "--model", tiny_dir, "--image", photos, "--mask", tmp_path / "m.png", "--output", out,
            "--device", "cpu"]
    out.mkdir()
    (out / "a_repaired.png").write_bytes(b"mine")

    refused = run_lama(*args)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], "one line"
    assert "1 output(s) exist already" in refused.stderr and "--overwrite" in refused.stderr
    assert (out / "a_repaired.png").read_bytes() == b"mine" and not (out / "b_repaired.png").exists(), \
        "refused before any work"

    skipped = run_lama(*args, "--skip-existing")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped (output exists): a.png" in skipped.stdout.splitlines()
    assert (out / "a_repaired.png").read_bytes() == b"mine" and (out / "b_repaired.png").is_file()

    overwritten = run_lama(*args, "--overwrite")
    assert overwritten.returncode == 0, overwritten.stderr
    assert overwritten.stdout.startswith("done 2, skipped 0, failed 0")
    assert read_rgb(out / "a_repaired.png").shape == (48, 64, 3)
    assert run_lama(*args, "--overwrite", "--skip-existing").returncode == 2  # argparse: one or the other


def test_a_failing_photo_is_listed_and_the_others_are_repaired(tmp_path, tiny_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo_file(photos / "good.png", (64, 48))
    (photos / "broken.png").write_bytes(b"not a picture at all")
    mask = np.full((48, 64), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    result = run_lama("inpaint", "--model", tiny_dir, "--image", photos, "--mask", tmp_path / "m.png",
                      "--output", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_repaired.png"]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("done 1, skipped 0, failed 1 in ")
    assert "failed: broken.png: not an image: expected PNG, JPEG, WebP, BMP or TIFF" in lines
    assert "error: broken.png: not an image" in result.stderr and "Traceback" not in result.stderr


def test_a_folder_s_pictures_in_formats_not_read_are_listed_as_skipped(tmp_path, tiny_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo_file(photos / "good.png", (64, 48))
    photo_file(photos / "anim.gif", (64, 48))
    (photos / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    (photos / "notes.txt").write_text("not a picture, and not listed")
    cv2.imwrite(str(tmp_path / "m.png"), np.full((48, 64), 255, np.uint8))
    common = ("--model", tiny_dir, "--mask", tmp_path / "m.png", "--device", "cpu")
    result = run_lama("inpaint", "--image", photos, "--output", tmp_path / "out", *common)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("done 1, skipped 2, failed 0 in ")
    assert "skipped (a format not read here: convert them to JPEG or PNG): IMG_0001.HEIC, anim.gif" in lines

    (photos / "good.png").unlink()
    nothing = run_lama("inpaint", "--image", photos, "--output", tmp_path / "out2", *common)
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    assert nothing.stderr.strip().endswith("; 2 picture(s) in a format not read here (IMG_0001.HEIC, anim.gif): "
                                           "convert them to JPEG or PNG")


def test_a_broken_shared_mask_stops_the_batch_before_any_work(tmp_path, tiny_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo_file(photos / "a.png", (64, 48))
    (tmp_path / "m.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_lama("inpaint", "--model", tiny_dir, "--image", photos, "--mask", tmp_path / "m.png",
                      "--output", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "m.png" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_formats_same_jpg_and_the_photo_metadata(tmp_path, tiny_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Camera"
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: the result is upright, orientation 1
    photo_file(photos / "holiday.jpg", (64, 48), exif=exif)
    photo_file(photos / "scan.png", (64, 48), seed=3)
    mask = np.zeros((48, 64), np.uint8)
    mask[5:15, 5:15] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    base = ["inpaint", "--model", tiny_dir, "--image", photos, "--mask", tmp_path / "m.png", "--device", "cpu"]

    same = run_lama(*base, "--output", tmp_path / "same")  # default for a folder: each photo's own format
    assert same.returncode == 0, same.stderr
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["holiday_repaired.jpg", "scan_repaired.png"]
    with Image.open(tmp_path / "same" / "holiday_repaired.jpg") as result:
        assert result.format == "JPEG" and result.size == (48, 64), "turned upright"
        assert result.getexif()[ExifTags.Base.Make] == "Camera"
        assert result.getexif()[ExifTags.Base.Orientation] == 1

    jpg = run_lama(*base, "--output", tmp_path / "jpg", "--format", "jpg", "--no-keep-metadata")
    assert jpg.returncode == 0, jpg.stderr
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["holiday_repaired.jpg", "scan_repaired.jpg"]
    with Image.open(tmp_path / "jpg" / "holiday_repaired.jpg") as result:
        assert result.format == "JPEG" and result.size == (48, 64) and not result.getexif()

    mismatch = run_lama("inpaint", "--model", tiny_dir, "--image", photos / "scan.png", "--mask", tmp_path / "m.png",
                        "--output", tmp_path / "x.png", "--format", "webp")
    assert mismatch.returncode == 1 and "does not match --output x.png" in mismatch.stderr


def test_two_photos_that_would_write_one_file_are_refused(tmp_path, tiny_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo_file(photos / "a.png", (32, 24))
    photo_file(photos / "a.jpg", (32, 24))
    cv2.imwrite(str(tmp_path / "m.png"), np.full((24, 32), 255, np.uint8))
    result = run_lama("inpaint", "--model", tiny_dir, "--image", photos, "--mask", tmp_path / "m.png",
                      "--output", tmp_path / "out", "--format", "png", "--device", "cpu")
    assert result.returncode == 1 and "would both be written to" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- the model the service would load


def test_info_without_a_path_describes_the_model_the_service_loads(tmp_path, tiny_dir):
    none = run_lama("info", cwd=tmp_path)
    assert none.returncode == 1 and "no model given, and the service would find none" in none.stderr
    (tmp_path / "models").mkdir()
    assert run_lama("convert", tiny_dir, tmp_path / "models" / "big-lama.safetensors").returncode == 0
    found = run_lama("info", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["source_format"] == "safetensors"
    assert "models/big-lama.safetensors" in found.stderr


def test_without_a_model_the_fallback_warning_is_printed_once(tmp_path):
    photo_file(tmp_path / "p.png", (32, 24))
    cv2.imwrite(str(tmp_path / "m.png"), np.full((24, 32), 255, np.uint8))
    result = run_lama("inpaint", "--image", tmp_path / "p.png", "--mask", tmp_path / "m.png",
                      "--output", tmp_path / "o.png", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no big-lama weights found") == 1, result.stderr
