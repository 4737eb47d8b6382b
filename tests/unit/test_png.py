"""lama.png: parallel PNG encoding, and the parallel decoding of what it wrote.

Correctness only: every file must read back bit-exactly through OpenCV (libpng) and
Pillow, whatever the layout and size, through the threaded path and the one-segment path;
lama.png.decode must give None (OpenCV's turn) for anything it did not write or that was
damaged, and never disagree with OpenCV. Speed is measured, not tested:
`python -m lama bench --codecs-only --sizes 2560x1920,640x480`.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lama import imageio, parallel, png
from loadreport import images

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def noise(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def photo_like(height: int, width: int, channels: int) -> np.ndarray:
    """Smooth gradients with grain: rows are alike, so the Up filter really works."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 3 + y) % 256, (y * 2) % 256, (x + y * 5) % 256, (x * y) % 256][:channels]
    image = np.dstack(planes).astype(np.int16) + np.random.default_rng(1).integers(-3, 4, (height, width, channels))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image[:, :, 0] if channels == 1 else image


def opencv_decode(data: bytes) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded.ndim == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB if decoded.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return decoded


def pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(opened)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these chunks with correct lengths and CRCs (so the parsers believe it)."""
    out = [png.SIGNATURE]
    for kind, payload in parts:
        out.append(struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload)))
    return b"".join(out)


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of a few rows, so that small images take the threaded path with many."""
    monkeypatch.setattr(png, "MIN_SEGMENT_BYTES", 64)
    monkeypatch.setattr(png, "MAX_SEGMENTS", 10_000)


@pytest.fixture
def no_threads(monkeypatch):
    """Fails the test if anything is handed to the segment pool."""
    def refuse():
        raise AssertionError("the one-segment path must not use the pool")
    monkeypatch.setattr(parallel.pieces, "get", refuse)


def assert_reads_back(image: np.ndarray, data: bytes) -> None:
    np.testing.assert_array_equal(opencv_decode(data), image)
    np.testing.assert_array_equal(pillow_decode(data), image)
    np.testing.assert_array_equal(png.decode(data), image)
    np.testing.assert_array_equal(imageio.decode_image(data), image)


# ------------------------------------------------------------------------- round trips


SHAPES = [(1, 1), (2, 1), (1, 2), (37, 23), (23, 37), (480, 640), (3, 5000), (3000, 2)]


@pytest.mark.parametrize("channels", [1, 3, 4], ids=["gray", "rgb", "rgba"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_threaded_path_reads_back_exactly_everywhere(small_segments, shape, channels):
    image = noise(*shape, channels)
    data = png.encode(image)
    segments = -(-shape[0] // png.rows_per_segment(shape[1], shape[0], channels))
    assert sum(kind == b"IDAT" for kind, _ in chunks(data)) == segments
    assert_reads_back(image, data)


@pytest.mark.parametrize("channels", [1, 3, 4], ids=["gray", "rgb", "rgba"])
@pytest.mark.parametrize("shape", [(1, 1), (17, 9), (64, 48)], ids=["1x1", "17x9", "64x48"])
def test_small_images_are_one_segment_in_the_calling_thread(no_threads, shape, channels):
    image = photo_like(*shape, channels)
    data = png.encode(image)
    assert [kind for kind, _ in chunks(data)] == [b"IHDR", png.SEGMENT_CHUNK, b"IDAT", b"IEND"]
    assert_reads_back(image, data)


def test_a_busy_pool_does_not_hold_up_another_image(small_segments):
    """With every pool thread taken by other work (another request's image), a caller does
    its own segments: a small image must not wait for a large one's."""
    release = threading.Event()
    pool = parallel.pieces.get()
    blockers = [pool.submit(release.wait, 30) for _ in range(parallel.cores())]
    image = noise(40, 30, 3)
    done: list[bytes] = []
    caller = threading.Thread(target=lambda: done.append(png.encode(image)))
    caller.start()
    caller.join(10)
    release.set()
    for blocker in blockers:
        blocker.result()
    assert done, "the encode waited for the pool's other work"
    assert_reads_back(image, done[0])
    assert png.decode(done[0]) is not None


@pytest.mark.parametrize("channels", [1, 3, 4], ids=["gray", "rgb", "rgba"])
def test_default_segments_split_a_large_photo(channels):
    image = photo_like(1080, 1920, channels)
    data = png.encode(image)
    expected = min(png.MAX_SEGMENTS, 1080 * (1920 * channels + 1) // png.MIN_SEGMENT_BYTES)
    assert sum(kind == b"IDAT" for kind, _ in chunks(data)) == expected > 8
    assert_reads_back(image, data)


@pytest.mark.parametrize(("width", "height", "channels", "segments"),
                         [(640, 480, 3, 7), (640, 480, 1, 2), (300, 200, 4, 1), (2560, 1920, 3, 16),
                          (5, 100_000, 1, 4)])
def test_segments_are_at_least_128_kib_and_at_most_16(width, height, channels, segments):
    step = png.rows_per_segment(width, height, channels)
    assert -(-height // step) == segments


def test_one_row_wider_than_a_segment_is_a_segment_of_its_own(small_segments):
    image = noise(4, 400, 3)  # 1201 bytes a row > 64
    assert png.rows_per_segment(400, 4, 3) == 1
    assert_reads_back(image, png.encode(image))


def test_a_view_is_encoded_as_the_pixels_it_shows(small_segments):
    image = noise(40, 60, 4)
    for view in (image[::-1], image[:, ::2, :3], image[5:30, 7:50, 3]):
        assert_reads_back(np.ascontiguousarray(view), png.encode(view))


def test_same_image_gives_the_same_bytes():
    image = photo_like(300, 200, 3)
    assert png.encode(image) == png.encode(image.copy())


@pytest.mark.parametrize("picture, slack", [
    (lambda: images.photo(640, 480, 1), 1.05),  # the load benchmark's photo-like picture, with sensor grain
    # Gradients under uniform noise: ISA-L's level 1 finds fewer repeats in it than OpenCV's zlib
    # (level 1, run-length); on real photos its files are the smaller (tools/codec_bench.py).
    (lambda: photo_like(480, 640, 3), 1.15),
])
def test_size_is_close_to_opencvs(picture, slack):
    image = picture()
    ours = len(png.encode(image))
    opencv = len(cv2.imencode(".png", image[:, :, ::-1])[1])
    assert ours < opencv * slack


def test_filters_are_sub_then_up_in_each_segment(small_segments):
    image = noise(30, 50, 3)
    data = png.encode(image)
    stream = zlib.decompress(b"".join(payload for kind, payload in chunks(data) if kind == b"IDAT"))
    kinds = np.frombuffer(stream, np.uint8).reshape(30, 151)[:, 0]
    step = png.rows_per_segment(50, 30, 3)
    expected = [1 if row % step == 0 else 2 for row in range(30)]
    np.testing.assert_array_equal(kinds, expected)


@pytest.mark.parametrize("lengths", [(0, 5), (5, 0), (1, 1), (70000, 3), (3, 70000), (65521, 65521), (200000, 131042)])
def test_adler32_combine_matches_zlib(lengths):
    rng = np.random.default_rng(sum(lengths))
    first, second = (rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths)
    combined = png._adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)



# ------------------------------------------------------------------------- segments compressed ahead


@st.composite
def changes(draw):
    """An image, the rows [start, stop) that will change, and the image once they have."""
    height, width = draw(st.integers(1, 60)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([1, 3, 4]))
    start = draw(st.integers(0, height))
    stop = draw(st.integers(start, height))
    image = noise(height, width, channels, seed=draw(st.integers(0, 2**16)))
    final = image.copy()
    final[start:stop] = noise(stop - start, width, channels, seed=height * width + start)
    return image, (start, stop), final


@FUZZ
@given(changes())
def test_segments_compressed_ahead_give_the_same_file(small_segments, case):
    image, changing, final = case
    ahead = png.compress_ahead(image, changing)
    step = png.rows_per_segment(image.shape[1], image.shape[0], 1 if image.ndim == 2 else image.shape[2])
    # Every segment without a changing row, and no other.
    segments = range(-(-image.shape[0] // step))
    assert sorted(ahead.segments) == [index for index in segments
                                      if not set(range(index * step, (index + 1) * step)) & set(range(*changing))]
    assert png.encode(final, ahead=ahead) == png.encode(final)


def test_encode_uses_the_segments_compressed_ahead(small_segments):
    """The segments given are what is written, not compressed again: a row changed outside
    `changing` (which the caller promised not to do) keeps its earlier pixels in the file."""
    image = photo_like(40, 30, 3)
    ahead = png.compress_ahead(image, (10, 20))
    final = image.copy()
    final[10:20] = 0
    final[35] = 255  # outside: the promise broken, to see which pixels are written
    written = png.decode(png.encode(final, ahead=ahead))
    np.testing.assert_array_equal(written[:35], final[:35])
    np.testing.assert_array_equal(written[35], image[35])


def test_segments_compressed_ahead_for_another_shape_are_refused(small_segments):
    ahead = png.compress_ahead(noise(20, 10, 3), (5, 6))
    with pytest.raises(ValueError, match="shape"):
        png.encode(noise(20, 11, 3), ahead=ahead)

# ------------------------------------------------------------------------- decoding


def test_imageio_takes_the_parallel_path_for_our_files(small_segments, monkeypatch):
    image = photo_like(50, 40, 3)
    data = imageio.encode_image(image, "png")
    monkeypatch.setattr(imageio, "_decode_pixels", lambda checked: pytest.fail("OpenCV was asked"))
    np.testing.assert_array_equal(imageio.decode_image(data), image)


@pytest.mark.parametrize("writer", ["pillow", "opencv"])
@pytest.mark.parametrize("channels", [1, 3, 4], ids=["gray", "rgb", "rgba"])
def test_other_pngs_are_left_to_opencv(writer, channels):
    image = noise(700, 900, channels)
    if writer == "pillow":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        data = buffer.getvalue()
    else:
        data = cv2.imencode(".png", image if channels == 1 else image[..., [2, 1, 0, 3][:channels]])[1].tobytes()
    assert png.decode(data) is None
    np.testing.assert_array_equal(imageio.decode_image(data), image)  # OpenCV's path, RGB order


def test_an_extra_chunk_or_trailing_data_is_left_to_opencv(small_segments):
    image = noise(20, 10, 3)
    parts = chunks(png.encode(image))
    with_text = assemble(parts[:2] + [(b"tEXt", b"Comment\x00hi")] + parts[2:])
    for data in (with_text, assemble(parts) + b"junk"):
        assert png.decode(data) is None
        np.testing.assert_array_equal(imageio.decode_image(data), image)


def test_up_on_a_segments_first_row_is_refused(monkeypatch):
    # The second segment's first row would need the first segment's last one.
    monkeypatch.setattr(png, "MIN_SEGMENT_BYTES", 300)
    image = noise(12, 100, 1)
    step = png.rows_per_segment(100, 12, 1)
    assert step == 3
    raw = np.zeros((12, 101), np.uint8)
    raw[:, 0] = 2
    raw[0, 0] = 0
    raw[0, 1:] = image[0]
    raw[1:, 1:] = image[1:] - image[:-1]
    bodies = []
    for start in range(0, 12, step):
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        last = start + step >= 12
        bodies.append(compressor.compress(raw[start:start + step].tobytes())
                      + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH))
    bodies[0] = b"\x78\x01" + bodies[0]
    bodies[-1] += struct.pack(">I", zlib.adler32(raw.tobytes()))
    parts = chunks(png.encode(image))
    data = assemble(parts[:2] + [(b"IDAT", body) for body in bodies] + [(b"IEND", b"")])
    np.testing.assert_array_equal(opencv_decode(data), image)  # a valid PNG
    assert png.decode(data) is None
    np.testing.assert_array_equal(imageio.decode_image(data), image)


def test_every_truncation_is_refused(small_segments):
    data = png.encode(noise(9, 7, 3))
    for end in range(len(data)):
        assert png.decode(data[:end]) is None
        with pytest.raises(imageio.ImageError):
            imageio.decode_image(data[:end])


def test_every_flipped_byte_is_refused_or_harmless(small_segments):
    image = noise(9, 7, 4)
    data = png.encode(image)
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x5A
        assert png.decode(bytes(damaged)) is None  # every byte is under a CRC or checked
        try:
            decoded = imageio.decode_image(bytes(damaged))
        except imageio.ImageError:
            continue
        assert decoded.shape[:2] == image.shape[:2]


@st.composite
def forged(draw):
    """One of our PNGs with chunk contents rewritten and CRCs made right again."""
    channels = draw(st.sampled_from([1, 3, 4]))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    parts = chunks(png.encode(noise(height, width, channels, seed=height * width)))
    index = draw(st.integers(0, len(parts) - 1))
    kind, payload = parts[index]
    payload = bytearray(payload)
    action = draw(st.sampled_from(["flip", "cut", "grow", "drop", "swap"]))
    if action == "flip" and payload:
        at = draw(st.integers(0, len(payload) - 1))
        payload[at] ^= draw(st.integers(1, 255))
    elif action == "cut" and payload:
        del payload[draw(st.integers(0, len(payload) - 1)):]
    elif action == "grow":
        payload += bytes(draw(st.binary(min_size=1, max_size=8)))
    elif action == "drop":
        del parts[index]
        return assemble(parts)
    elif action == "swap" and index + 1 < len(parts):
        parts[index], parts[index + 1] = parts[index + 1], parts[index]
        return assemble(parts)
    parts[index] = (kind, bytes(payload))
    return assemble(parts)


@FUZZ
@given(forged())
def test_forged_files_never_disagree_with_opencv(small_segments, data):
    ours = png.decode(data)
    if ours is None:
        return
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert reference is not None, "we decoded a file that libpng refuses"
    np.testing.assert_array_equal(ours, opencv_decode(data))


def test_a_segment_that_inflates_to_more_than_its_rows_is_refused(small_segments):
    image = noise(10, 10, 1)
    parts = chunks(png.encode(image))
    # Claim 1 row per segment: each IDAT now holds more than its share.
    parts[1] = (png.SEGMENT_CHUNK, struct.pack(">BI", 1, 1))
    assert png.decode(assemble(parts)) is None


# ------------------------------------------------------------------------- image and mask together


def png_of(image: np.ndarray) -> bytes:
    return imageio.encode_image(image, "png")


def test_image_and_mask_decode_together():
    image, mask = photo_like(480, 640, 3), (photo_like(480, 640, 1) > 128).astype(np.uint8) * 255
    got_image, got_mask = imageio.decode_image_and_mask(png_of(image), png_of(mask))
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_mask, mask)


def test_what_becomes_of_the_mask_is_made_in_its_thread_while_the_image_decodes():
    image, mask = photo_like(480, 640, 3), (photo_like(480, 640, 1) > 128).astype(np.uint8) * 255
    threads = []

    def counted(decoded_mask):
        threads.append(threading.current_thread().name)
        return int(np.count_nonzero(decoded_mask))

    photo, made = imageio.decode_photo_and_mask(png_of(image), png_of(mask), then=counted)
    np.testing.assert_array_equal(photo.pixels, image)
    assert made == np.count_nonzero(mask) and len(threads) == 1

    def failing(_mask):
        raise RuntimeError("planning failed")

    with pytest.raises(RuntimeError, match="planning failed"):
        imageio.decode_photo_and_mask(png_of(image), png_of(mask), then=failing)


def test_together_the_bad_upload_is_named():
    good = png_of(photo_like(8, 8, 3))
    with pytest.raises(imageio.ImageError, match="not an image") as caught:
        imageio.decode_image_and_mask(good, b"hello")
    assert caught.value.part == "mask"
    with pytest.raises(imageio.ImageError, match="empty") as caught:
        imageio.decode_image_and_mask(b"", good)
    assert caught.value.part == "image"
    with pytest.raises(imageio.ImageError, match="empty") as caught:  # both bad: the image's
        imageio.decode_image_and_mask(b"", b"hello")
    assert caught.value.part == "image"


def test_together_limits_apply_to_both():
    small, large = png_of(photo_like(8, 8, 3)), png_of(photo_like(40, 40, 1))
    limits = imageio.ImageLimits(max_pixels=1000)
    with pytest.raises(imageio.ImageTooLargeError) as caught:
        imageio.decode_image_and_mask(small, large, limits)
    assert caught.value.part == "mask" and "the limit is" in str(caught.value)


def test_errors_outside_the_pair_have_no_part():
    with pytest.raises(imageio.ImageError) as caught:
        imageio.decode_image(b"")
    assert caught.value.part is None


# ------------------------------------------------------------------------- masks and layouts


@pytest.mark.parametrize("alpha", ["transparent", "opaque"])
def test_large_colour_masks_match_the_rule(alpha):
    rgba = noise(300, 500, 4, seed=3)
    if alpha == "opaque":
        rgba[..., 3] = 255
    mask = imageio.decode_mask(png_of(rgba))
    expected = rgba[..., 3] if alpha == "transparent" else rgba[..., :3].max(axis=2)
    np.testing.assert_array_equal(mask, expected)
    assert mask.flags.c_contiguous
    np.testing.assert_array_equal(imageio.decode_mask(png_of(rgba[..., :3])), rgba[..., :3].max(axis=2))


def test_large_foreign_png_keeps_rgb_order():
    image = noise(1000, 1200, 3, seed=4)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", compress_level=1)
    np.testing.assert_array_equal(imageio.decode_image(buffer.getvalue()), image)


def test_the_codec_measurement_prints_each_size(capsys):
    from lama import cli

    assert cli.main(["bench", "--codecs-only", "--sizes", "24x16,8x8", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "cores:" in out and out.count("decode image") == 2 and "24x16:" in out


def test_the_damage_tests_see_several_segments(small_segments):
    assert sum(kind == b"IDAT" for kind, _ in chunks(png.encode(noise(9, 7, 3)))) == 3


def test_the_codec_comparison_prints_a_table_per_kind_of_file(capsys):
    """tools/codec_bench.py: each kind of file gets its table, with the service's decoder and
    simplejpeg's among the rows, and the encoders theirs."""
    import runpy

    from support.paths import ROOT

    bench = runpy.run_path(str(ROOT / "tools" / "codec_bench.py"))
    bench["main"](["--sizes", "24x16", "--runs", "1", "--content", "synthetic", "--threads", "2", "--seconds", "0.05"])
    out = capsys.readouterr().out
    for title in ("Decode JPEG q92", "Decode PNG (Pillow)", "Decode PNG (OpenCV)", "Decode PNG (lama.png)", "Encode"):
        assert f"**{title}" in out
    assert out.count("| lama.imageio (the service) |") == 4 and "| simplejpeg (libjpeg-turbo) |" in out
    assert "| JPEG lama.jpeg (the service: libjpeg-turbo in strips) |" in out


def test_the_codec_comparison_measures_nvjpeg_or_says_why_not(capsys):
    """tools/codec_bench.py on a box without torchvision or CUDA (the CPU box): the GPU codecs
    are one line saying why they were not measured, after the CPU codecs' tables; where they run,
    their rows and the loaded table instead."""
    import runpy

    from support.paths import ROOT

    bench = runpy.run_path(str(ROOT / "tools" / "codec_bench.py"))
    bench["main"](["--sizes", "64x48", "--runs", "1", "--content", "synthetic", "--threads", "2", "--seconds", "0.05"])
    out = capsys.readouterr().out
    tvio, why = bench["gpu_codecs"]()
    if tvio is None:
        assert out.rstrip().endswith(f"GPU codecs (nvJPEG through torchvision) not measured: {why}.")
        assert why and "**Encode" in out and "nvJPEG (torchvision)" not in out
    else:
        for row in ("nvJPEG (torchvision), to the host", "nvJPEG (torchvision), left on the GPU",
                    "JPEG nvJPEG (torchvision), host to host"):
            assert f"| {row} |" in out
        assert "**Decodes per second of one 64×48 JPEG" in out and "not measured" not in out
