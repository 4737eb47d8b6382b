"""Read PyTorch zip archives without executing anything they contain.

A ``.ckpt``/``.pt`` file is a zip holding ``<prefix>/data.pkl`` (a pickle) and the raw
tensor bytes in ``<prefix>/data/<key>``; TorchScript archives add ``<prefix>/code/``.
A pickle is a program: ``torch.load(weights_only=False)`` would run whatever callable it
names, and ``weights_only=True`` refuses the PyTorch-Lightning checkpoints LaMa ships
(they name ``pytorch_lightning`` and ``omegaconf`` classes). So this module unpickles
with a restricted vocabulary:

- tensors, rebuilt by our own bounds-checked functions from the archive's bytes;
- containers (``OrderedDict``; ``defaultdict`` becomes a plain ``dict``; ``set``,
  ``frozenset`` and protocol-2 ``bytes``);
- every other global becomes an inert stub class. A stub may be used as a value (a dict
  key) or instantiated without running code (``NEWOBJ``, whose ``BUILD`` state is just
  recorded), which is all a Lightning checkpoint or a TorchScript module tree needs.
  *Calling* a stub (``REDUCE``, ``INST``, ``OBJ``: how ``os.system`` payloads run) is
  refused with :class:`UnsafeCheckpointError`.

Nothing named in the file is ever imported.

Costs are bounded by the file: the zip's directory by :data:`MAX_CENTRAL_DIRECTORY_BYTES`,
``data.pkl`` by :data:`MAX_PICKLE_BYTES` (so what the unpickler builds stays within a
few hundred MB), integers used as tensor sizes by
:data:`MAX_INDEX_BITS` before any arithmetic on them (a pickle can hold megabyte-long
integers, whose products take minutes), and the tensor bytes read by the archive's own
size (zip entries may overlap, so that each would read the same bytes again).
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import gc
import io
import os
import pickle
import reprlib
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from lama.errors import CheckpointError, UnsafeCheckpointError


# data.pkl of big-lama is ~150 KB (~300 KB with optimizer states); anything far larger is
# not a model checkpoint. Unpickling may build ~70 bytes of objects per byte (one empty
# dict per '}' opcode), so this also bounds the unpickler's memory to ~300 MB.
MAX_PICKLE_BYTES = 4 * 2**20

# ZipFile turns each ~50-byte record of the zip's central directory into a Python object of
# ~800 bytes before anything can be checked; big-lama's directory lists ~3,000 entries in ~200 KB.
MAX_CENTRAL_DIRECTORY_BYTES = 4 * 2**20

# Tensor sizes, strides, offsets and storage lengths of 2**48 and more are no real tensor's
# (1 PB of float32); refusing them first keeps the bounds arithmetic on small integers.
MAX_INDEX_BITS = 48

# Legacy typed-storage names PyTorch writes into persistent ids, by dtype.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}



class StubType(type):
    """Metaclass of the stand-ins for globals we refuse to import: nameable, never callable."""

    stub_module: str
    stub_name: str

    @property
    def qualified_name(cls) -> str:
        return f"{cls.stub_module}.{cls.stub_name}"

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        # REDUCE calls func(*args), and INST/OBJ call cls(*args): both land here.
        raise UnsafeCheckpointError(
            f"checkpoint refused: its pickle tries to call {cls.qualified_name}; "
            "only tensors and containers are loaded"
        )

    def __repr__(cls) -> str:
        return f"<stub {cls.qualified_name}>"


class StubObject(metaclass=StubType):
    """An instance of a stubbed class, made by NEWOBJ (``cls.__new__``), which runs no code.

    ``args`` are NEWOBJ's arguments and ``state`` what BUILD passed (for a TorchScript
    module: its attribute dict, parameters included).
    """

    def __new__(cls, *args: Any) -> StubObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __getinitargs__(self) -> tuple:
        # Its mere presence makes INST/OBJ call ``cls(*args)`` (refused by StubType)
        # even with no arguments, instead of a silent ``cls.__new__(cls)``.
        return ()

    def __repr__(self) -> str:
        return f"<stub {type(self).qualified_name} instance>"


class _Storage:
    """One storage's elements as a flat tensor; only our rebuild functions accept it."""

    __slots__ = ("key", "data")

    def __init__(self, key: str, data: torch.Tensor):
        self.key = key
        self.data = data

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError("checkpoint is malformed: its pickle tries to modify a tensor storage")


@dataclass(frozen=True, slots=True)  # slots: BUILD cannot rewrite it either
class _StorageType:
    """What ``torch.FloatStorage`` and friends unpickle to: a dtype tag for persistent ids."""

    name: str
    dtype: torch.dtype


class _ShortRepr(reprlib.Repr):
    """Values from the file as error messages show them: truncated, nesting cut off, and
    no decimal conversion of huge integers (which Python refuses above 4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        return super().repr_int(x, level) if x.bit_length() <= 64 else f"<integer of {x.bit_length()} bits>"


_shown = _ShortRepr().repr


def _as_index(value: Any, what: str) -> int:
    # Comparing sizes is O(1) however long the integer: checked before any arithmetic on it.
    if type(value) is not int or not 0 <= value < 2**MAX_INDEX_BITS:
        raise CheckpointError(f"checkpoint is malformed: tensor {what} {_shown(value)} is not a non-negative integer "
                              f"below 2**{MAX_INDEX_BITS}")
    return value


def _as_shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > 64:
        raise CheckpointError(f"checkpoint is malformed: tensor {what} {_shown(value)} is not a tuple of integers")
    return tuple(_as_index(v, what) for v in value)


def _view(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """A tensor over ``storage`` after checking that every element it addresses exists."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(
            f"checkpoint is malformed: a tensor is built from {type(storage).__name__}, not a storage")
    offset = _as_index(storage_offset, "offset")
    shape, strides = _as_shape(size, "size"), _as_shape(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"checkpoint is malformed: tensor size {shape} and stride {strides} differ in length")
    available = storage.data.numel()
    end = offset if 0 in shape else offset + 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    if end > available:
        raise CheckpointError(
            f"checkpoint is malformed: a tensor of size {list(shape)} (offset {offset}, stride {list(strides)}) "
            f"reaches element {end} of storage {storage.key!r}, which holds {available}"
        )
    return torch.as_strided(storage.data, shape, strides, offset)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # Gradients, hooks and metadata are training-time state: dropped.
    return _view(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    """Parameters come back as plain tensors (also stands in for ``_rebuild_parameter_with_state``)."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"checkpoint is malformed: a parameter wraps {type(data).__name__}, not a tensor")
    return data


def _defaultdict(default_factory: Any = None, *args: Any) -> dict:
    # The factory would be a stub; a plain dict holds the same items.
    return dict(*args)


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode``, as protocol 2 uses it for ``bytes`` values; nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(
            f"checkpoint refused: its pickle tries to call _codecs.encode with {_shown(encoding)}; "
            "only tensors and containers are loaded"
        )
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
}


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Undo the Python 2 spellings protocol-2 pickles use (``__builtin__``, ``commands``), as pickle itself does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _Allowed:
    """An allowed function as the unpickler hands it out: calling it calls the function, but BUILD
    on it is refused, so that a file cannot rewrite the loader's own functions (their
    ``__defaults__`` or ``__dict__``) for the rest of the process."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., Any]):
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError("checkpoint is malformed: its pickle tries to modify a loader function")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals from the allow-list or to stubs, and storages from the archive."""

    def __init__(self, data: bytes, read_storage: Callable[[str, torch.dtype, int], _Storage]):
        super().__init__(io.BytesIO(data))
        self._read_storage = read_storage
        self._stubs: dict[tuple[str, str], StubType] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        if (module, name) in _ALLOWED_GLOBALS:
            allowed = _ALLOWED_GLOBALS[(module, name)]
            # Types (OrderedDict, set) cannot be modified; our own functions could.
            return allowed if isinstance(allowed, type) else _Allowed(allowed)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        return self._stub(module, name)

    def _stub(self, module: str, name: str) -> StubType:
        # One class per global, so that two references to it compare equal.
        key = (module, name)
        if key not in self._stubs:
            self._stubs[key] = StubType(name, (StubObject,), {
                "stub_module": module, "stub_name": name, "__module__": module, "__qualname__": name,
            })
        return self._stubs[key]

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"checkpoint is malformed: unknown persistent id {_shown(pid)}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"checkpoint uses an unsupported storage type {_shown(storage_type)}")
        if not isinstance(key, str):
            raise CheckpointError(f"checkpoint is malformed: storage key {_shown(key)} is not a string")
        # The location (e.g. "cuda:0") is ignored: everything is materialised on the CPU.
        return self._read_storage(key, storage_type.dtype, _as_index(numel, "storage size"))


@dataclass(frozen=True)
class TorchArchive:
    """The unpickled ``data.pkl`` of a PyTorch zip archive."""

    root: Any
    is_torchscript: bool


def _archive_prefix(zf: zipfile.ZipFile) -> str:
    """The top-level folder holding ``data.pkl`` (torch names it after the saved file)."""
    prefixes = [n[: -len("/data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(prefixes) != 1:
        if any(n.endswith("models/best.ckpt") for n in zf.namelist()):
            raise CheckpointError("this is a zip of a big-lama directory: unpack it and pass the directory")
        if any(n.endswith("model.json") for n in zf.namelist()):
            raise CheckpointError("this TorchScript archive uses the pre-1.4 PyTorch format, which is not supported")
        raise CheckpointError("not a PyTorch checkpoint: the zip has no single <name>/data.pkl entry")
    return prefixes[0]


class _StorageReader:
    """Reads each storage's bytes once, checking that the archive holds exactly what the pickle claims."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, archive_bytes: int):
        self._zf = zf
        self._prefix = prefix
        self._cache: dict[str, _Storage] = {}
        # Distinct entries of a well-formed zip never share bytes, so together they hold
        # less than the archive; overlapping entries would each read the same bytes again.
        self._unread_bytes = archive_bytes

    def __call__(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        cached = self._cache.get(key)
        if cached is not None:
            if cached.data.dtype != dtype or cached.data.numel() != numel:
                raise CheckpointError(f"checkpoint is malformed: storage {key!r} is declared with two different types")
            return cached
        name = f"{self._prefix}/data/{key}"
        try:
            info = self._zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"checkpoint is incomplete: tensor data {name!r} is missing") from None
        expected = numel * torch.empty((), dtype=dtype).element_size()
        if info.file_size != expected:
            raise CheckpointError(
                f"checkpoint is malformed: tensor data {name!r} holds {info.file_size} bytes, "
                f"the pickle expects {expected} ({numel} x {dtype})"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            # PyTorch never compresses tensor data; refusing it bounds memory by the file size.
            raise CheckpointError(
                f"checkpoint is malformed: tensor data {name!r} is compressed (the archive was repacked)")
        if info.file_size > self._unread_bytes:
            raise CheckpointError("checkpoint is malformed: its tensor data entries overlap "
                                  "(together they claim more bytes than the archive holds)")
        self._unread_bytes -= info.file_size
        raw = bytearray(self._zf.read(name))
        data = torch.frombuffer(raw, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        storage = self._cache[key] = _Storage(key, data)
        return storage


def _read_pickle(zf: zipfile.ZipFile, prefix: str) -> bytes:
    info = zf.getinfo(f"{prefix}/data.pkl")
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"checkpoint is malformed: data.pkl is {info.file_size} bytes, more than a model needs")
    byteorder = f"{prefix}/byteorder"
    if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
        raise CheckpointError("checkpoint was written on a big-endian machine, which is not supported")
    return zf.read(info)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A pickle may make millions of containers; while they are made, the cyclic GC would walk
    every object of the process (torch's ~170,000 included) again and again: 2 s instead of
    0.2 s for 500,000 nested lists. Nothing the unpickler makes is garbage until it returns."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_central_directory(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as f:
        # The end record as ZipFile will read it (zip64 included); there is no public way
        # to see the directory's size before ZipFile parses all of it.
        end = zipfile._EndRecData(f)  # noqa: SLF001
    if end is not None and end[zipfile._ECD_SIZE] > MAX_CENTRAL_DIRECTORY_BYTES:  # noqa: SLF001
        raise CheckpointError(f"checkpoint is malformed: its zip directory is {end[zipfile._ECD_SIZE]} bytes, "  # noqa: SLF001
                              f"more than a model needs ({MAX_CENTRAL_DIRECTORY_BYTES})")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def load_archive(path: str | os.PathLike[str]) -> TorchArchive:
    """Unpickle ``data.pkl`` of a ``torch.save`` or TorchScript zip, refusing anything executable.

    Every failure is a :class:`CheckpointError` (:class:`UnsafeCheckpointError` for a
    pickle that tries to call something), never a raw traceback from the zip or pickle
    machinery.
    """
    try:
        _check_central_directory(path)
        with zipfile.ZipFile(path) as zf:
            prefix = _archive_prefix(zf)
            is_torchscript = any(n.startswith(f"{prefix}/code/") for n in zf.namelist())
            data = _read_pickle(zf, prefix)
            with _cyclic_gc_paused():
                root = _RestrictedUnpickler(data, _StorageReader(zf, prefix, os.path.getsize(path))).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise CheckpointError(
            f"checkpoint is not a readable zip archive (truncated or corrupt?): {_one_line(error)}") from error
    except Exception as error:  # noqa: BLE001 - any failure inside the pickle means a malformed file
        raise CheckpointError(f"checkpoint is malformed: its pickle could not be read ({_one_line(error)})") from error
    return TorchArchive(root=root, is_torchscript=is_torchscript)
