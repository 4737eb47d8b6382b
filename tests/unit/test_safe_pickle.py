"""The restricted unpickler: tensors and containers come back, nothing in the file runs."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lama.safe_pickle import CheckpointError, StubObject, StubType, UnsafeCheckpointError, load_archive
from support.pickles import _ops, write_archive


def saved(tmp_path: Path, obj: object, name: str = "obj.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def tensor_pickle(storage_numel: int, size: object, stride: object, offset: int = 0,
                  storage_type: str = "FloatStorage") -> bytes:
    """One ``_rebuild_tensor_v2`` call on storage '0', with free-form (possibly lying) metadata."""
    pid = b"(" + _ops("storage") + f"ctorch\n{storage_type}\n".encode() + _ops("0") + _ops("cpu") + _ops(storage_numel) + b"tQ"
    args = b"(" + pid + _ops(offset) + _ops(size) + _ops(stride) + b"\x89}t"
    return b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R."


# ---------------------------------------------------------------------------- tensors come back


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])
def test_every_storage_dtype_round_trips(tmp_path, dtype):
    original = (torch.arange(24).reshape(4, 6) % 3).to(dtype)
    loaded = load_archive(saved(tmp_path, {"t": original})).root["t"]
    assert loaded.dtype == dtype
    assert torch.equal(loaded, original)


def test_views_shared_storage_scalars_and_parameters(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    obj = {
        "view": base[2:, ::3],  # offset and stride into a larger storage
        "base": base,  # shares the view's storage
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }
    root = load_archive(saved(tmp_path, obj)).root
    for key in ("view", "base", "scalar", "empty"):
        assert torch.equal(root[key], obj[key]), key
    assert type(root["param"]) is torch.Tensor and torch.equal(root["param"], torch.ones(2, 2))


def test_inert_containers(tmp_path):
    obj = {"od": collections.OrderedDict(a=1), "dd": collections.defaultdict(list, {"k": [1]}),
           "set": {1, 2}, "frozen": frozenset({3}), "bytes": b"\x00\xffab", "nested": [(1, 2.5, None, "s")]}
    root = load_archive(saved(tmp_path, obj)).root
    assert root["od"] == collections.OrderedDict(a=1)
    assert type(root["dd"]) is dict and root["dd"] == {"k": [1]}
    assert root["set"] == {1, 2} and root["frozen"] == frozenset({3})
    assert root["bytes"] == b"\x00\xffab"
    assert root["nested"] == [(1, 2.5, None, "s")]


def test_lightning_classes_load_as_stubs_without_their_packages(tiny_dir):
    root = load_archive(tiny_dir / "models" / "best.ckpt").root
    (callback_key,) = root["callbacks"]
    assert isinstance(callback_key, StubType)
    assert callback_key.qualified_name == "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    hparams = root["hyper_parameters"]
    assert isinstance(hparams, StubObject)
    assert type(hparams).qualified_name == "omegaconf.dictconfig.DictConfig"
    assert hparams.state["_content"]["generator"]["ngf"] == 16  # BUILD state recorded, not applied
    assert "pytorch_lightning" not in sys.modules and "omegaconf" not in sys.modules


def test_newobj_of_a_dangerous_class_only_makes_an_inert_stub(tmp_path):
    # NEWOBJ calls cls.__new__, which runs no code of the named class: allowed, harmless.
    newobj = b"\x80\x02cos\nsystem\nX\x07\x00\x00\x00touch x\x85\x81}b."
    root = load_archive(write_archive(tmp_path / "a.pt", newobj)).root
    assert isinstance(root, StubObject) and root.args == ("touch x",) and root.state == {}


# ---------------------------------------------------------------------------- calls are refused

# Protocol 0, hand-written: REDUCE, INST and OBJ, with and without arguments.
CALLING_PICKLES = {
    "reduce": b"cos\nsystem\n(S'touch MARKER'\ntR.",
    "inst": b"(S'touch MARKER'\nios\nsystem\n.",
    "inst-no-args": b"(ios\nsystem\n.",
    "obj": b"(cos\nsystem\nS'touch MARKER'\no.",
    "obj-no-args": b"(cos\nsystem\no.",
    "reduce-of-eval": b"c__builtin__\neval\n(S'1'\ntR.",
}


@pytest.mark.parametrize("name", sorted(CALLING_PICKLES))
def test_calling_a_global_is_refused(tmp_path, name):
    path = write_archive(tmp_path / "evil.pt", CALLING_PICKLES[name])
    with pytest.raises(UnsafeCheckpointError, match=r"tries to call (os\.system|builtins\.eval)"):
        load_archive(path)


def test_codecs_encode_is_only_allowed_for_latin1_bytes(tmp_path):
    path = write_archive(tmp_path / "evil.pt", b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(UnsafeCheckpointError, match="_codecs.encode"):
        load_archive(path)


# ---------------------------------------------------------------------------- malformed archives


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, (4, 2), (2, 1)), {"0": bytes(24)})
    with pytest.raises(CheckpointError, match=r"reaches element 8 of storage '0', which holds 6"):
        load_archive(path)


def test_offset_past_storage_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, (2,), (1,), offset=5), {"0": bytes(24)})
    with pytest.raises(CheckpointError, match="reaches element 7"):
        load_archive(path)


@pytest.mark.parametrize("size,stride,message", [
    ((2, 3), (3,), "differ in length"),
    ((2, -1), (1, 1), "not a non-negative integer"),
    ((2,), (-1,), "not a non-negative integer"),
    ("ab", (1,), "not a tuple"),
])
def test_bad_size_or_stride_is_refused(tmp_path, size, stride, message):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, size, stride), {"0": bytes(24)})
    with pytest.raises(CheckpointError, match=message):
        load_archive(path)


def test_missing_tensor_data_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, (6,), (1,)))
    with pytest.raises(CheckpointError, match="tensor data 'archive/data/0' is missing"):
        load_archive(path)


def test_data_shorter_than_declared_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, (6,), (1,)), {"0": bytes(20)})
    with pytest.raises(CheckpointError, match="holds 20 bytes, the pickle expects 24"):
        load_archive(path)


def test_compressed_tensor_data_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, (6,), (1,)), {"0": bytes(24)}, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compressed"):
        load_archive(path)


def test_unknown_storage_type_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", tensor_pickle(6, (6,), (1,), storage_type="UntypedStorage"), {"0": bytes(24)})
    with pytest.raises(CheckpointError, match="unsupported storage type"):
        load_archive(path)


def test_big_endian_archive_is_refused(tmp_path):
    path = write_archive(tmp_path / "a.pt", pickle.dumps({}), extra={"archive/byteorder": b"big"})
    with pytest.raises(CheckpointError, match="big-endian"):
        load_archive(path)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(saved(p.parent, {"t": torch.ones(300)}, "x.pt").read_bytes()[:-200]), "not a readable zip"),
    (lambda p: p.write_bytes(b""), "not a readable zip"),
    (lambda p: write_archive(p, b"\x80\x02}q\x00(X\x01"), "pickle could not be read"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("notes.txt", "hi"), "no single <name>/data.pkl"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("big-lama/models/best.ckpt", "x"), "unpack it"),
])
def test_broken_archives_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "broken.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_archive(path)
    assert "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_pickles_only_ever_raise_checkpoint_error(tmp_path, data):
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(7), "meta": {"a": [1, "b"]}}, buffer)
    with zipfile.ZipFile(buffer) as zf:
        names = zf.namelist()
        prefix = next(n for n in names if n.endswith("/data.pkl"))[: -len("/data.pkl")]
        files = {n: zf.read(n) for n in names}
    pkl = bytearray(files[f"{prefix}/data.pkl"])
    for _ in range(data.draw(st.integers(1, 4))):
        pkl[data.draw(st.integers(0, len(pkl) - 1))] = data.draw(st.integers(0, 255))
    files[f"{prefix}/data.pkl"] = bytes(pkl)
    path = tmp_path / "fuzz.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in files.items():
            zf.writestr(name, raw)
    try:
        load_archive(path)
    except CheckpointError:
        pass
