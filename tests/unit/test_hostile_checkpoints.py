"""Hostile checkpoints cost no more than their size before they are refused (issue 12, item 8).

Each file is generated here. A refusal must be one line (a CheckpointError, `error: ...` from
app.py), come fast, and, where the old loader built or allocated before checking, leave memory
flat: those loads run in a child process that reports its own peak-RSS growth.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import safetensors.torch
import torch

from lama.checkpoint import (
    FORMAT_MARKER,
    MAX_CONFIG_DEPTH,
    MAX_SAFETENSORS_HEADER_BYTES,
    CheckpointError,
    LoadedCheckpoint,
    load_checkpoint,
    save_safetensors,
)
from lama.model import BIG_LAMA_CONFIG, GeneratorConfig
from lama.safe_pickle import MAX_CENTRAL_DIRECTORY_BYTES, MAX_PICKLE_BYTES
from support.reliability import record
from support.pickles import _ops, write_archive

REPO = Path(__file__).resolve().parents[2]
FAST_S = 2.0  # refused after reading the file
HEADER_FAST_S = 1.0  # refused from a header or a size
RSS_GROWTH_MB = 100


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> LoadedCheckpoint:
    return load_checkpoint(tiny_dir)


def refused(path: Path) -> tuple[str, float]:
    """The one-line refusal of ``path`` and how long it took, in this process."""
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    seconds = time.perf_counter() - start
    message = str(caught.value)
    assert "\n" not in message
    return message, seconds


MEASURE = textwrap.dedent("""
    import json, re, sys, time
    from lama.checkpoint import CheckpointError, build_generator, load_checkpoint

    def status_kb(field):
        return int(re.search(rf"^{field}:\\s+(\\d+) kB", open("/proc/self/status").read(), re.M).group(1))

    # The peak (VmHWM) restarts from the RSS now: neither the import's peak nor the parent's
    # RSS (which a forked child's ru_maxrss inherits) counts.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kb("VmRSS")
    start = time.perf_counter()
    try:
        build_generator(load_checkpoint(sys.argv[1]))  # what --model does
        error = None
    except CheckpointError as caught:
        error = str(caught)
    seconds = time.perf_counter() - start
    print(json.dumps({"error": error, "seconds": seconds, "growth_mb": (status_kb("VmHWM") - before) / 1024}))
""")


def refused_in_child(path: Path) -> tuple[str, float, float]:
    """Load ``path`` as --model does, in a fresh process: (error, seconds, peak RSS growth in MB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    assert outcome["error"] is not None, "the hostile checkpoint was accepted"
    assert "\n" not in outcome["error"]
    return outcome["error"], outcome["seconds"], outcome["growth_mb"]


def check_fast_and_small(case: str, path: Path, match: str, bound_s: float = FAST_S) -> str:
    message, seconds, growth_mb = refused_in_child(path)
    assert match in message, message
    record(case, "refused in", f"{seconds:.3f} s", f"< {bound_s:g} s")
    record(case, "peak RSS growth of the loading process", f"{growth_mb:.0f} MB", f"< {RSS_GROWTH_MB} MB")
    assert seconds < bound_s
    assert growth_mb < RSS_GROWTH_MB
    return message


def our_safetensors(path: Path, config: dict | list | str) -> Path:
    """A safetensors in our own format: the config in its metadata, one one-element weight."""
    text = config if isinstance(config, str) else json.dumps(config)
    safetensors.torch.save_file({"model.1.ffc.convl2l.weight": torch.zeros(1)}, path,
                                metadata={"lama_format": FORMAT_MARKER, "lama_config": text})
    return path


# ---------------------------------------------------------------------------- configs beyond big-lama


@pytest.mark.parametrize("field,value", [("ngf", 256), ("n_blocks", 100_000)])
def test_a_config_beyond_big_lama_is_refused_before_anything_is_built(tmp_path, field, value):
    # The old loader built this generator first: ngf=256 took 3.4 GB and 29 s, n_blocks=100000 5 GB.
    path = our_safetensors(tmp_path / "hostile.safetensors", {field: value})
    size = path.stat().st_size
    message = check_fast_and_small(f"Security: hostile checkpoint, {size}-byte safetensors whose config says "
                                   f"{field}={value}", path, f"{field} = {value} is outside big-lama's family",
                                   HEADER_FAST_S)
    assert message.startswith(f"checkpoint {path} has an unusable lama_config")


def test_a_config_yaml_beyond_big_lama_is_refused_before_anything_is_built(tiny_dir, tmp_path):
    directory = tmp_path / "big-lama"
    (directory / "models").mkdir(parents=True)
    (directory / "models" / "best.ckpt").symlink_to(tiny_dir / "models" / "best.ckpt")
    (directory / "config.yaml").write_text((tiny_dir / "config.yaml").read_text().replace("ngf: 16", "ngf: 256"))
    check_fast_and_small("Security: hostile checkpoint, official directory whose config.yaml says ngf=256",
                         directory, "unusable generator config: ngf = 256 is outside big-lama's family")


def test_weights_whose_shapes_claim_a_huge_generator_are_refused(tmp_path):
    # A zero stride lets a one-element storage claim any shape; without a config the sizes are
    # read from the shapes, and the old loader then built a generator of ngf=4096.
    claim = {"model.1.ffc.convl2l.weight": (4096, 4, 7, 7)}
    claim |= {f"model.{2 + i}.ffc.convl2l.weight": (4096 * 2 ** (i + 1), 4096 * 2**i, 3, 3) for i in range(3)}
    claim |= {f"model.{5 + i}.conv1.ffc.convl2l.weight": (8192, 8192, 3, 3) for i in range(18)}
    state_dict = {f"generator.{key}": torch.zeros(1).expand(shape) for key, shape in claim.items()}
    path = tmp_path / "claims.ckpt"
    torch.save({"state_dict": state_dict}, path)
    assert path.stat().st_size < 64 * 2**10
    check_fast_and_small("Security: hostile checkpoint, .ckpt whose zero-stride tensors claim ngf=4096",
                         path, "shapes describe no generator of big-lama's family: ngf = 4096")


def test_a_big_lama_config_over_small_weights_is_refused_before_the_generator_is_built(tiny, tmp_path):
    # big-lama's own config is in bounds, but building it costs ~200 MB: the shapes are checked first.
    path = tmp_path / "mismatch.safetensors"
    save_safetensors(LoadedCheckpoint(tiny.state_dict, BIG_LAMA_CONFIG, "safetensors", path, torch.float32), path)
    message = check_fast_and_small("Security: hostile checkpoint, big-lama config over tiny weights",
                                   path, "does not match its generator config")
    assert "model.1.ffc.convl2l.weight: checkpoint [16, 4, 7, 7] vs model [64, 4, 7, 7]" in message


def test_a_tensor_the_generator_does_not_have_is_refused_before_it_is_copied(tiny, tmp_path):
    # 2**40 elements over one: `convert` would have tried to copy 4 TB of it.
    state_dict = {f"generator.{k}": v for k, v in tiny.state_dict.items()}
    state_dict["generator.model.99.weight"] = torch.zeros(1).expand(2**20, 2**20)
    path = tmp_path / "extra.ckpt"
    torch.save({"state_dict": state_dict}, path)
    message = check_fast_and_small("Security: hostile checkpoint, .ckpt with an extra tensor claiming 4 TB",
                                   path, "does not match its generator config")
    assert "1 unexpected (e.g. model.99.weight)" in message


@pytest.mark.parametrize("config,match", [
    ({"ngf": "64"}, "ngf = '64' is not an integer"),
    ({"n_downsampling": 4}, "n_downsampling = 4 is outside big-lama's family"),
    ({"input_nc": 40}, "input_nc = 40 is outside"),
    ({"ngf": 0}, "ngf = 0 is outside"),
    ({"ngf": 10**4000}, "is outside big-lama's family"),
    ({"resnet_conv_kwargs": {"ratio_gin": float("nan"), "ratio_gout": 0.75}}, "not a ratio between 0 and 1"),
    ({"resnet_conv_kwargs": {"ratio_gin": 0.5, "ratio_gout": 0.75}}, "differ"),
    ({"init_conv_kwargs": [1, 2]}, "init_conv_kwargs is a list, not a mapping"),
    ([64], "not a mapping"),
])
def test_every_config_value_is_bounded(tmp_path, config, match):
    message, seconds = refused(our_safetensors(tmp_path / "c.safetensors", config))
    assert match in message and len(message) < 400
    assert seconds < HEADER_FAST_S


def test_the_tiny_and_big_lama_configs_are_in_bounds(tiny):
    assert tiny.config == GeneratorConfig(ngf=16, n_blocks=2)
    assert GeneratorConfig.from_dict(json.loads(json.dumps(BIG_LAMA_CONFIG.to_dict()))) == BIG_LAMA_CONFIG


# ---------------------------------------------------------------------------- big integers


def _long4(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<I", len(raw)) + raw


def test_a_megabyte_integer_in_every_dimension_is_refused_before_any_arithmetic(tmp_path):
    # One 1 MB integer, memoised once and referenced in each of 64 dimensions of size and
    # stride: the old bounds check multiplied them (56 s for a 1 MB file).
    big = int.from_bytes(os.urandom(2**20), "little") | 1
    dims = 64
    first = _long4(big) + b"q\x00"  # BINPUT 0
    size = b"(" + first + b"h\x00" * (dims - 1) + b"t"  # BINGET 0 for the others
    stride = b"(" + b"h\x00" * dims + b"t"
    pid = b"(" + _ops("storage") + b"ctorch\nFloatStorage\n" + _ops("0") + _ops("cpu") + _ops(6) + b"tQ"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _ops(0) + size + stride + b"\x89}tR"
    data = b"\x80\x02}" + _ops("state_dict") + tensor + b"s."
    path = write_archive(tmp_path / "bigint.ckpt", data, {"0": bytes(24)})
    message, seconds = refused(path)
    record(f"Security: hostile checkpoint, {path.stat().st_size // 1024} kB pickle of a 1 MB integer in 64 "
           "tensor dimensions", "refused in", f"{seconds:.3f} s", f"< {FAST_S:g} s")
    assert f"tensor size <integer of {big.bit_length()} bits> is not a non-negative integer below 2**48" in message
    assert seconds < FAST_S


@pytest.mark.parametrize("field", ["offset", "storage size"])
def test_a_huge_offset_or_storage_size_is_refused(tmp_path, field):
    big = int.from_bytes(os.urandom(2**20), "little") | 1
    numel, offset = (_long4(big), _ops(0)) if field == "storage size" else (_ops(6), _long4(big))
    pid = b"(" + _ops("storage") + b"ctorch\nFloatStorage\n" + _ops("0") + _ops("cpu") + numel + b"tQ"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + offset + _ops((6,)) + _ops((1,)) + b"\x89}tR"
    message, seconds = refused(write_archive(tmp_path / "a.ckpt", b"\x80\x02" + tensor + b".", {"0": bytes(24)}))
    assert f"tensor {field} <integer of" in message and seconds < FAST_S


# ---------------------------------------------------------------------------- deep nesting


NESTED = 500_000


@pytest.mark.parametrize("name,value", [
    ("lists", b"]" * NESTED + b"a" * (NESTED - 1)),  # each list appended into the one before
    ("tuples", b"(" * NESTED + b"t" * NESTED),  # MARK nesting
    ("dicts", b"}" + b"U\x01k}" * NESTED + b"s" * NESTED),  # {"k": {"k": ...}}
])
def test_deeply_nested_pickles_are_refused_quickly(tmp_path, name, value):
    data = b"\x80\x02}" + _ops("hyper_parameters") + value + b"s."
    message, seconds = refused(write_archive(tmp_path / f"{name}.ckpt", data))
    record(f"Security: hostile checkpoint, pickle of {NESTED:,} nested {name}", "refused in",
           f"{seconds:.3f} s", f"< {FAST_S:g} s")
    assert "contains no LaMa generator" in message
    assert seconds < FAST_S


def test_a_deeply_nested_tensor_size_is_a_short_one_line_error(tmp_path):
    pid = b"(" + _ops("storage") + b"ctorch\nFloatStorage\n" + _ops("0") + _ops("cpu") + _ops(6) + b"tQ"
    size = b"(" * NESTED + b"t" * NESTED
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _ops(0) + b"(" + size + b"t" + _ops((1,)) + b"\x89}tR"
    message, seconds = refused(write_archive(tmp_path / "a.ckpt", b"\x80\x02" + tensor + b".", {"0": bytes(24)}))
    assert "is not a non-negative integer" in message and len(message) < 300
    assert seconds < FAST_S


def _yaml_cases(base: str) -> dict[str, tuple[str, str]]:
    aliases = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    doubling = "".join(f"  s{i}: ${{generator.s{i - 1}}}${{generator.s{i - 1}}}\n" for i in range(1, 40))
    list_doubling = "".join(f"  l{i}: ['${{generator.l{i - 1}}}', '${{generator.l{i - 1}}}']\n" for i in range(1, 40))
    block = "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n"
    expands = "expands to more than"
    return {
        "100,000 '[' outside the generator section": ("x: " + "[" * 100_000 + "\n" + base, "cannot read"),
        "100,000 '[' as the value of ngf": (base.replace("ngf: 16", "ngf: " + "[" * 100_000), "cannot read"),
        "mappings nested 200 deep": (base + block, f"nested more than {MAX_CONFIG_DEPTH} levels deep"),
        "an alias of 10**9 values in the generator section":
            (base.replace("generator:\n", aliases + "generator:\n  bomb: *a8\n"), expands),
        "a ${...} string doubled 39 times":
            (base.replace("generator:\n", "generator:\n  s0: xxxxxxxx\n" + doubling), expands),
        "a ${...} list doubled 39 times":
            (base.replace("generator:\n", "generator:\n  l0: [1, 2]\n" + list_doubling), expands),
        "a 5000-digit integer": (base.replace("ngf: 16", "ngf: " + "9" * 5000), "cannot read"),
        "a 300 kB config.yaml": (base + "# " + "x" * 300_000 + "\n", "far more than a model config needs"),
    }


YAML_CASES = list(_yaml_cases("generator:\n  ngf: 16\n"))


@pytest.mark.parametrize("name", YAML_CASES)
def test_hostile_config_yaml_is_refused_quickly(tiny_dir, tmp_path, name):
    text, match = _yaml_cases((tiny_dir / "config.yaml").read_text())[name]
    directory = tmp_path / "big-lama"
    (directory / "models").mkdir(parents=True)
    (directory / "models" / "best.ckpt").symlink_to(tiny_dir / "models" / "best.ckpt")
    (directory / "config.yaml").write_text(text)
    message, seconds = refused(directory)
    record(f"Security: hostile checkpoint, config.yaml with {name}", "refused in", f"{seconds:.3f} s",
           f"< {FAST_S:g} s")
    assert match in message and len(message) < 400
    assert seconds < FAST_S


@pytest.mark.parametrize("config,match", [
    ("[" * 100_000, f"nested more than {MAX_CONFIG_DEPTH} levels deep"),
    ('{"ngf": ' + "[" * 100_000, f"nested more than {MAX_CONFIG_DEPTH} levels deep"),
    ('{"ngf": 16, "n_blocks": 2, "note": "' + "[" * 100_000 + '"}', "does not match"),  # text, not nesting
])
def test_nesting_in_the_safetensors_metadata_is_refused_before_parsing(tmp_path, config, match):
    message, seconds = refused(our_safetensors(tmp_path / "meta.safetensors", config))
    if config == "[" * 100_000:
        record("Security: hostile checkpoint, safetensors whose lama_config nests 100,000 '['", "refused in",
               f"{seconds:.3f} s", f"< {HEADER_FAST_S:g} s")
    assert match in message
    assert seconds < HEADER_FAST_S


# ---------------------------------------------------------------------------- sizes before reading


def test_a_pickle_over_the_bound_is_refused_from_its_size(tmp_path):
    # Unpickling builds up to ~70 bytes of objects per byte ('}' is an empty dict).
    path = write_archive(tmp_path / "big.ckpt", b"\x80\x02" + b"}" * MAX_PICKLE_BYTES + b".")
    message, seconds = refused(path)
    assert "data.pkl is" in message and seconds < HEADER_FAST_S


def test_a_pickle_at_the_bound_costs_no_more_than_loading_big_lama(tmp_path):
    path = write_archive(tmp_path / "dicts.ckpt", b"\x80\x02" + b"}" * (MAX_PICKLE_BYTES - 3) + b".")
    message, seconds, growth_mb = refused_in_child(path)
    case = f"Security: hostile checkpoint, {MAX_PICKLE_BYTES >> 20} MiB pickle of empty dicts (the largest accepted)"
    record(case, "refused in", f"{seconds:.2f} s", "< 5 s")
    record(case, "peak RSS growth of the loading process", f"{growth_mb:.0f} MB",
           "< 400 MB (loading big-lama itself: ~410 MB)")
    assert "contains no LaMa generator" in message
    assert seconds < 5 and growth_mb < 400


def test_a_huge_zip_directory_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "entries.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}.")
        for i in range(MAX_CENTRAL_DIRECTORY_BYTES // 50):
            zf.writestr(f"archive/x/{i}", b"")
    message, seconds = refused(path)
    record(f"Security: hostile checkpoint, zip listing {MAX_CENTRAL_DIRECTORY_BYTES // 50:,} entries",
           "refused in", f"{seconds:.3f} s", f"< {HEADER_FAST_S:g} s")
    assert "its zip directory is" in message and seconds < HEADER_FAST_S


def _local_header(name: bytes, data: bytes) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                       len(name), 0) + name


def _central_entry(name: bytes, data: bytes, offset: int) -> bytes:
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                       len(name), 0, 0, 0, 0, 0, offset) + name


def overlapping_zip(path: Path, pickle_bytes: bytes, payload: bytes) -> Path:
    """Entry data/0's bytes hold entry data/1 whole, so reading both reads the payload twice.

    Nested N deep, the same construction makes N entries read N copies of the payload.
    """
    inner_name, outer_name, pkl_name = b"a/data/100", b"a/data/0", b"a/data.pkl"
    inner = _local_header(inner_name, payload) + payload
    outer = _local_header(outer_name, inner) + inner
    pkl = _local_header(pkl_name, pickle_bytes) + pickle_bytes
    directory = (_central_entry(outer_name, inner, 0)
                 + _central_entry(inner_name, payload, len(outer) - len(inner))
                 + _central_entry(pkl_name, pickle_bytes, len(outer)))
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 3, 3, len(directory), len(outer) + len(pkl), 0)
    path.write_bytes(outer + pkl + directory + end)
    return path


def test_overlapping_zip_entries_are_refused_before_they_are_read_twice(tmp_path):
    payload = bytes(2**20)
    inner_numel = len(payload) // 4
    outer_numel = (30 + len(b"a/data/100") + len(payload)) // 4  # a local header, then the inner entry

    def storage(key, numel):
        return b"(" + _ops("storage") + b"ctorch\nFloatStorage\n" + _ops(key) + _ops("cpu") + _ops(numel) + b"tQ"

    def tensor(key, numel):
        return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage(key, numel) + _ops(0) + _ops((numel,))
                + _ops((1,)) + b"\x89}tR")

    data = b"\x80\x02(" + tensor("0", outer_numel) + tensor("100", inner_numel) + b"l."
    path = overlapping_zip(tmp_path / "overlap.ckpt", data, payload)
    with zipfile.ZipFile(path) as zf:  # the archive reads: each entry's CRC holds
        assert sum(len(zf.read(name)) for name in zf.namelist()) > path.stat().st_size
    message, seconds = refused(path)
    assert "entries overlap" in message and seconds < HEADER_FAST_S


def test_a_safetensors_header_over_the_bound_is_refused_from_its_length(tmp_path):
    length = MAX_SAFETENSORS_HEADER_BYTES + 1
    path = tmp_path / "header.safetensors"
    path.write_bytes(struct.pack("<Q", length) + b"{" + b" " * (length - 2) + b"}")
    message, seconds = refused(path)
    assert f"safetensors header of {length} bytes" in message and seconds < HEADER_FAST_S


# ---------------------------------------------------------------------------- the service


def start_app(model: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """`python app.py --model M --device cpu` until it exits: (result, seconds, peak RSS in MB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "app.py", "--model", str(model), "--device", "cpu", "--port", "0",
            "--outputs-dir", str(tmp_path / "outputs"), "--logs-dir", str(tmp_path / "logs"),
            "--ui-cache-dir", str(tmp_path / "cache")]
    # RUSAGE_CHILDREN is the largest of all children so far: a fresh wrapper process runs app.py
    # as its only child and reports its peak and its time on the last line of stderr.
    wrapper = ("import resource, subprocess, sys, time\n"
               "start = time.perf_counter()\n"
               "result = subprocess.run(sys.argv[1:])\n"
               "sys.stderr.write(f'\\n@@ {time.perf_counter() - start} '\n"
               "                 f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
               "sys.exit(result.returncode)\n")
    result = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=300)
    stderr, _, figures = result.stderr.rpartition("\n@@ ")
    seconds, max_rss_kb = figures.split()
    result = subprocess.CompletedProcess(args, result.returncode, result.stdout, stderr)
    return result, float(seconds), int(max_rss_kb) / 1024


def test_the_service_refuses_a_hostile_checkpoint_at_once_in_one_line(tmp_path):
    hostile = our_safetensors(tmp_path / "hostile.safetensors", {"ngf": 256})
    baseline, baseline_s, baseline_mb = start_app(tmp_path / "absent.safetensors", tmp_path / "a")
    assert baseline.returncode != 0 and "checkpoint not found" in baseline.stderr
    result, seconds, peak_mb = start_app(hostile, tmp_path / "b")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint "), result.stderr[-2000:]
    assert "ngf = 256 is outside big-lama's family" in lines[0]
    case = f"Security: python app.py --model <{hostile.stat().st_size}-byte safetensors saying ngf=256>"
    record(case, "exits after (a missing model: the start-up cost)", f"{seconds:.1f} s ({baseline_s:.1f} s)",
           "missing model + 10 s")
    record(case, "peak RSS (a missing model)", f"{peak_mb:.0f} MB ({baseline_mb:.0f} MB)",
           f"missing model + {RSS_GROWTH_MB} MB")
    assert seconds < baseline_s + 10  # start-up varies by seconds on a shared machine; the old load took 29 s
    assert peak_mb < baseline_mb + RSS_GROWTH_MB
