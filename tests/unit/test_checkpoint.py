"""Loading big-lama weights in every supported form, and refusing hostile or broken files."""

from __future__ import annotations

import builtins
import json
import os
import posix
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from lama.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    UnsafeCheckpointError,
    build_generator,
    describe_checkpoint,
    infer_config,
    load_checkpoint,
    resolve_interpolations,
    save_safetensors,
)
from lama.model import BIG_LAMA_CONFIG, GeneratorConfig, FFCResNetGenerator, parameter_count

REPO = Path(__file__).resolve().parents[2]
TINY = GeneratorConfig(ngf=16, n_blocks=2)


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> LoadedCheckpoint:
    return load_checkpoint(tiny_dir)


def random_generator(seed: int = 0) -> FFCResNetGenerator:
    """Tiny generator with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = FFCResNetGenerator(TINY)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.uniform_(-0.1, 0.1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 1.5)
        elif name.endswith("num_batches_tracked"):
            buffer.fill_(1000)
    return model.eval()


# ---------------------------------------------------------------------------- the official layout


def test_official_dir_and_its_ckpt_load_without_lightning_or_omegaconf(tiny_dir):
    """The fixture pickles name pytorch_lightning and omegaconf classes; neither may be needed."""
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys

        BLOCKED = ("pytorch_lightning", "lightning", "omegaconf")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        for name in BLOCKED:
            try:
                __import__(name)
            except ImportError:
                continue
            raise SystemExit(f"{{name}} is importable: the test would prove nothing")

        from lama.checkpoint import load_checkpoint
        out = {{}}
        for path in ({str(tiny_dir)!r}, {str(tiny_dir / "models" / "best.ckpt")!r}):
            ckpt = load_checkpoint(path)
            out[path] = {{"ngf": ckpt.config.ngf, "n_blocks": ckpt.config.n_blocks,
                          "ratio": ckpt.config.resnet_conv_kwargs.ratio_gout,
                          "format": ckpt.source_format, "keys": sorted(ckpt.state_dict)}}
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
        print(json.dumps(out))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    official, ckpt = loaded[str(tiny_dir)], loaded[str(tiny_dir / "models" / "best.ckpt")]
    assert (official["format"], ckpt["format"]) == ("official-dir", "lightning-ckpt")
    for found in (official, ckpt):
        assert (found["ngf"], found["n_blocks"], found["ratio"]) == (16, 2, 0.75)  # from the resolved yaml
        assert "model.1.ffc.convl2l.weight" in found["keys"]
        assert not any(k.startswith(("generator.", "discriminator.", "val_evaluator.")) for k in found["keys"])
    assert official["keys"] == sorted(FFCResNetGenerator(TINY).state_dict())


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def official_predict(generator: nn.Module, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The official pipeline: pad to a multiple of 8 (symmetric), binarise, composite, crop."""
    height, width = mask.shape
    pad = ((0, -height % 8), (0, -width % 8))
    image = np.pad(image.astype(np.float32) / 255, pad + ((0, 0),), mode="symmetric")
    mask = (np.pad(mask, pad, mode="symmetric") > 0).astype(np.float32)
    img = torch.from_numpy(image).permute(2, 0, 1)[None]
    msk = torch.from_numpy(mask)[None, None]
    with torch.no_grad():
        predicted = generator(torch.cat([img * (1 - msk), msk], dim=1))
    result = msk * predicted + (1 - msk) * img
    return result[0].permute(1, 2, 0).numpy()[:height, :width]


def test_loaded_weights_reproduce_the_official_output(tiny, tiny_dir):
    cases = tiny_dir / "cases"
    image = read_rgb(cases / "stroke_100x76_image.png")
    mask = cv2.imread(str(cases / "stroke_100x76_mask.png"), cv2.IMREAD_GRAYSCALE)
    expected = np.load(cases / "stroke_100x76_expected.npy")
    output = official_predict(build_generator(tiny), image, mask)
    assert output.shape == expected.shape
    assert np.abs(output - expected).max() < 1e-4


def test_ckpt_without_config_yaml_gets_its_sizes_from_the_weights(tiny_dir, tmp_path):
    ckpt = tmp_path / "best.ckpt"
    shutil.copyfile(tiny_dir / "models" / "best.ckpt", ckpt)
    loaded = load_checkpoint(ckpt)
    assert loaded.source_format == "lightning-ckpt"
    assert loaded.config == TINY
    build_generator(loaded)


def test_infer_config_of_big_lama_weights_is_big_lama():
    shapes = FFCResNetGenerator(BIG_LAMA_CONFIG).state_dict()
    assert infer_config(shapes) == BIG_LAMA_CONFIG


def test_full_size_official_layout_loads_strictly(fixtures_dir, tmp_path):
    """Every key and shape the official best.ckpt stores, as a Lightning-style file without config."""
    listing = json.loads((fixtures_dir / "big-lama-state-dict.json").read_text())
    state_dict = {e["key"]: torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"])) for e in listing["entries"]}
    path = tmp_path / "best.ckpt"
    torch.save({"pytorch-lightning_version": "1.2.9", "state_dict": state_dict}, path)
    loaded = load_checkpoint(path)
    assert loaded.config == BIG_LAMA_CONFIG
    assert describe_checkpoint(loaded)["parameters"] == listing["parameters"] == 50_975_875
    build_generator(loaded)


def test_describe_reports_the_architecture(tiny, tiny_dir):
    info = describe_checkpoint(tiny)
    assert info["path"] == str(tiny_dir) and info["source_format"] == "official-dir"
    assert (info["ngf"], info["n_blocks"], info["n_downsampling"], info["dtype"]) == (16, 2, 3, "float32")
    assert info["parameters"] == parameter_count(build_generator(tiny))


def test_config_mismatch_is_a_readable_error(tiny):
    wrong = LoadedCheckpoint(tiny.state_dict, GeneratorConfig(ngf=8, n_blocks=3), tiny.source_format, tiny.path, tiny.dtype)
    with pytest.raises(CheckpointError) as caught:
        build_generator(wrong)
    message = str(caught.value)
    assert message.startswith("checkpoint does not match the generator config: ")
    assert re.search(r": \d+ missing keys \(e\.g\. model\.7\.conv1\.", message)  # the third block
    assert re.search(r", \d+ unexpected \(e\.g\. ", message)
    assert "model.1.ffc.convl2l.weight: checkpoint [16, 4, 7, 7] vs model [8, 4, 7, 7]" in message


# ---------------------------------------------------------------------------- hostile pickles


class Payload:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint embeds."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func,named", [
    (os.system, "posix.system"),  # pickle records os.system under its real module
    (posix.system, "posix.system"),
    (builtins.eval, "builtins.eval"),
    (subprocess.Popen, "subprocess.Popen"),
])
def test_reduce_payloads_are_refused_and_never_run(tmp_path, tiny, func, named):
    marker = tmp_path / "MARKER"
    command = f"touch {marker}"
    argument = (f"__import__('os').system({command!r})",) if func is builtins.eval else \
        ((["touch", str(marker)],) if func is subprocess.Popen else (command,))
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in tiny.state_dict.items()},
                "hyper_parameters": Payload(func, *argument)}, path)
    with pytest.raises(UnsafeCheckpointError, match=rf"tries to call {named.replace('.', r'[.]')};"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("opcodes", [
    "(S'touch {marker}'\nios\nsystem\n.",  # INST
    "(cos\nsystem\nS'touch {marker}'\no.",  # OBJ
    "cos\nsystem\n(S'touch {marker}'\ntR.",  # protocol-0 REDUCE
])
def test_protocol_0_payloads_are_refused_and_never_run(tmp_path, opcodes):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", opcodes.format(marker=marker).encode())
    with pytest.raises(UnsafeCheckpointError, match=r"tries to call os\.system"):
        load_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------- other formats


class Wrapper(nn.Module):
    """Like IOPaint's big-lama.pt: the official generator under ``generator``, compositing in forward."""

    def __init__(self, generator: FFCResNetGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        predicted = self.generator(torch.cat([image * (1 - mask), mask], dim=1))
        return mask * predicted + (1 - mask) * image


def test_torchscript_archive_is_read_as_data(tmp_path):
    generator = random_generator()
    wrapper = Wrapper(generator).eval()
    image, mask = torch.rand(1, 3, 64, 64), (torch.rand(1, 1, 64, 64) > 0.7).float()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (image, mask))
        reference = wrapper(image, mask)
    path = tmp_path / "big-lama.pt"
    torch.jit.save(traced, path)

    loaded = load_checkpoint(path)
    assert loaded.source_format == "torchscript"
    original = generator.state_dict()
    assert loaded.state_dict.keys() == original.keys()
    for key, value in original.items():
        assert loaded.state_dict[key].dtype == value.dtype and torch.equal(loaded.state_dict[key], value), key
    with torch.no_grad():
        rebuilt = Wrapper(build_generator(loaded))(image, mask)
    assert torch.equal(rebuilt, reference)


def test_torchscript_is_recognised_by_content_not_suffix(tmp_path):
    traced = torch.jit.trace(Wrapper(random_generator()).eval(), (torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32)))
    path = tmp_path / "weights.bin"
    torch.jit.save(traced, path)
    assert load_checkpoint(path).source_format == "torchscript"


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd},
    lambda sd: {"state_dict": {f"generator.{k}": v for k, v in sd.items()} | {"discriminator.w": torch.ones(2)}},
    lambda sd: {f"generator.{k}": v for k, v in sd.items()} | {"val_evaluator.scores.w": torch.ones(1)},
])
def test_plain_state_dicts_load(tmp_path, wrap):
    original = random_generator().state_dict()
    path = tmp_path / "weights.pth"
    torch.save(wrap(original), path)
    loaded = load_checkpoint(path)
    assert loaded.source_format == "state-dict"
    assert loaded.config == TINY
    assert loaded.state_dict.keys() == original.keys()
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in original.items())


def test_safetensors_fp32_round_trip_is_bit_exact(tiny, tmp_path):
    dst = tmp_path / "tiny.safetensors"
    save_safetensors(tiny, dst)
    loaded = load_checkpoint(dst)
    assert (loaded.source_format, loaded.config, loaded.dtype, loaded.path) == ("safetensors", tiny.config, torch.float32, dst)
    assert loaded.state_dict.keys() == tiny.state_dict.keys()
    for key, value in tiny.state_dict.items():
        assert loaded.state_dict[key].dtype == value.dtype and torch.equal(loaded.state_dict[key], value), key


def test_safetensors_fp16_conversion_keeps_integer_buffers(tiny, tmp_path):
    dst = tmp_path / "tiny-fp16.safetensors"
    save_safetensors(tiny, dst, dtype=torch.float16)
    loaded = load_checkpoint(dst)
    assert loaded.dtype == torch.float16 and loaded.config == tiny.config
    for key, value in tiny.state_dict.items():
        if value.is_floating_point():
            assert loaded.state_dict[key].dtype == torch.float16 and torch.equal(loaded.state_dict[key], value.half()), key
        else:
            assert loaded.state_dict[key].dtype == torch.int64 and torch.equal(loaded.state_dict[key], value), key
    assert loaded.state_dict["model.1.bn_l.num_batches_tracked"].dtype == torch.int64
    build_generator(loaded)


def test_foreign_safetensors_without_our_metadata(tmp_path):
    original = random_generator().state_dict()
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({f"generator.{k}": v.contiguous() for k, v in original.items()}, path)
    loaded = load_checkpoint(path)
    assert loaded.config == TINY and loaded.state_dict.keys() == original.keys()


def test_save_is_atomic_when_writing_fails(tiny, tmp_path, monkeypatch):
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"previous version")

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors(tiny, dst)
    assert dst.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_save_into_a_missing_directory_leaves_nothing(tiny, tmp_path):
    with pytest.raises(OSError):
        save_safetensors(tiny, tmp_path / "absent" / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- config interpolation


def test_interpolation_chains_keep_types():
    config = {"a": {"x": 0.75, "y": "${a.x}", "z": "${a.y}"}, "b": {"n": "${a.z}", "flag": True, "f": "${b.flag}"}}
    resolved = resolve_interpolations(config)
    assert resolved["a"]["z"] == 0.75 and isinstance(resolved["a"]["z"], float)
    assert resolved["b"]["n"] == 0.75 and resolved["b"]["f"] is True
    assert config["a"]["y"] == "${a.x}"  # the input is not modified


def test_interpolation_of_a_mapping_copies_it():
    resolved = resolve_interpolations({"base": {"k": 1}, "copy": "${base}"})
    assert resolved["copy"] == {"k": 1} and resolved["copy"] is not resolved["base"]


def test_interpolation_inside_text_is_substituted_as_text():
    config = {"name": "big", "n": 18, "title": "${name}-lama_b${n}", "list": [10, "x${list.0}"]}
    resolved = resolve_interpolations(config)
    assert resolved["title"] == "big-lama_b18" and resolved["list"] == [10, "x10"]


@pytest.mark.parametrize("config,message", [
    ({"a": "${b}", "b": "${c}", "c": "${a}"}, "cycle: b -> c -> a -> b"),
    ({"a": {"b": "${a}"}}, "cycle"),
    ({"a": "${nope.x}"}, r"\$\{nope.x\} refers to a key that does not exist"),
    ({"a": "${env:HOME}"}, r"resolver \$\{env:HOME\}; resolvers are not evaluated"),
    ({"a": "${oc.env:HOME,x}"}, "resolvers are not evaluated"),
    ({"a": "x${now:%Y}"}, "resolvers are not evaluated"),
    ({"a": "${.sibling}"}, "only absolute"),
    ({"a": "${b.${c}}", "c": "d"}, "nested"),
    ({"a": {"k": 1}, "b": "x${a}"}, "embeds a mapping"),
])
def test_interpolation_errors(config, message):
    with pytest.raises(CheckpointError, match=message):
        resolve_interpolations(config)


def test_only_the_generator_section_is_resolved(tiny_dir, tmp_path):
    """The official config has ${env:...} in training-only sections; they must not block loading."""
    directory = tmp_path / "big-lama"
    (directory / "models").mkdir(parents=True)
    shutil.copyfile(tiny_dir / "models" / "best.ckpt", directory / "models" / "best.ckpt")
    config = directory / "config.yaml"
    config.write_text((tiny_dir / "config.yaml").read_text() + "location:\n  torch_home: ${env:TORCH_HOME}\n")
    assert load_checkpoint(directory).config.ngf == 16
    config.write_text(config.read_text().replace("ngf: 16", "ngf: ${env:NGF}"))
    with pytest.raises(CheckpointError, match=r"config.yaml: config value generator.ngf uses the resolver"):
        load_checkpoint(directory)


# ---------------------------------------------------------------------------- malformed inputs


def _truncated_zip(path: Path, tiny_dir: Path) -> None:
    data = (tiny_dir / "models" / "best.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zip_without_generator(path: Path, _tiny_dir: Path) -> None:
    torch.save({"state_dict": {"discriminator.w": torch.ones(1), "other.w": torch.ones(1)}}, path)


def _config_without_generator(path: Path, tiny_dir: Path) -> None:
    (path / "models").mkdir(parents=True)
    shutil.copyfile(tiny_dir / "models" / "best.ckpt", path / "models" / "best.ckpt")
    (path / "config.yaml").write_text("run_title: x\n")


@pytest.mark.parametrize("make,message", [
    (None, "checkpoint not found"),
    (lambda p, _: p.mkdir(), "not a big-lama directory: expected config.yaml and models/best.ckpt"),
    (lambda p, _: p.write_bytes(os.urandom(4096)), "not a recognised format"),
    (lambda p, _: p.write_bytes(b""), "is empty"),
    (_truncated_zip, "not a readable zip archive"),
    (lambda p, _: p.write_bytes(b"\x80\x02\x8a\x0alegacy"), "legacy"),
    (lambda p, _: p.write_bytes((9).to_bytes(8, "little") + b'{"a": bro'), "not a valid safetensors file"),
    (_zip_without_generator, "contains no LaMa generator"),
    (_config_without_generator, "has no generator: section"),
])
def test_malformed_inputs_give_one_line_errors(tmp_path, tiny_dir, make, message):
    path = tmp_path / "input"
    if make is not None:
        make(path, tiny_dir)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_the_generator_is_built_from_the_checkpoint_without_drawing_random_weights(tiny):
    """Built on the meta device and given the checkpoint's tensors: no random initialisation and
    no copy (seconds of start-up for big-lama on the GPU box), fp32 whatever the file stored."""
    stored_in_fp16 = LoadedCheckpoint({key: t.half() if t.is_floating_point() else t for key, t in tiny.state_dict.items()},
                                      tiny.config, tiny.source_format, tiny.path, torch.float16)
    rng_before = torch.get_rng_state()
    generator = build_generator(stored_in_fp16)
    assert torch.equal(torch.get_rng_state(), rng_before)
    state = generator.state_dict()
    for key, stored in stored_in_fp16.state_dict.items():
        assert state[key].device.type == "cpu"
        assert state[key].dtype == (torch.float32 if stored.is_floating_point() else stored.dtype), key
        assert torch.equal(state[key], stored.to(state[key].dtype)), key
    stored = {t.data_ptr() for t in tiny.state_dict.values()}
    assert all(t.data_ptr() in stored for t in build_generator(tiny).state_dict().values()), "fp32 tensors: not copied"
