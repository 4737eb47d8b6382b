"""Load big-lama weights from every form users have them in, without executing the file.

Accepted sources, recognised by content rather than by suffix:

- the official directory (``config.yaml`` + ``models/best.ckpt``, a PyTorch-Lightning
  1.x checkpoint) or its ``.ckpt`` alone;
- IOPaint's ``big-lama.pt``, a TorchScript trace (read as data, never ``torch.jit.load``);
- our ``.safetensors`` (config and a format marker in the metadata), or anyone's;
- a plain ``torch.save``d state dict.

Pickled files go through :mod:`lama.safe_pickle`, so a checkpoint can name classes we
do not have (``pytorch_lightning``, ``omegaconf``) but cannot make us call anything.

A file costs no more than its size before it is refused: its config (from config.yaml,
the safetensors metadata or the weights' shapes) is bounded by big-lama's family
(:class:`lama.model.GeneratorConfig`) and every tensor's name and shape is checked
against that config before a module is built or a safetensors tensor is read; config
text is bounded in size and nesting before it is parsed.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import safetensors
import safetensors.torch
import torch
import yaml

from lama.files import write_bytes_atomic
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator, GeneratorConfig
from lama.safe_pickle import CheckpointError, StubObject, UnsafeCheckpointError, load_archive

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "LoadedCheckpoint", "SOURCE_FORMATS", "FORMAT_MARKER",
    "load_checkpoint", "build_generator", "save_safetensors", "describe_checkpoint",
    "resolve_interpolations", "infer_config",
]

SOURCE_FORMATS = ("official-dir", "lightning-ckpt", "torchscript", "safetensors", "state-dict")
FORMAT_MARKER = "lama-generator"  # metadata "lama_format" of the safetensors we write

# The first generator weight: where it sits tells us the generator's key prefix.
_ANCHOR = "model.1.ffc.convl2l.weight"
_IGNORED_PREFIXES = ("discriminator.", "val_evaluator.")
# Generator weights sit ~10 objects deep (TorchScript: wrapper.generator.model.5.conv1.ffc.convg2g.fu.conv_layer).
_MAX_TENSOR_DEPTH = 32
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_EXPECTED = ("expected a big-lama directory (config.yaml + models/best.ckpt), a .ckpt, "
             "IOPaint's big-lama.pt or a .safetensors")

# What is read before the weights, bounded far above what big-lama's files hold (its
# config.yaml is a few kB and nests 4 deep; our safetensors header is ~100 kB) and far
# below what parsing it could cost otherwise.
MAX_CONFIG_BYTES = 256 * 2**10
MAX_CONFIG_DEPTH = 32  # mappings and lists inside one another
MAX_RESOLVED_SIZE = 100_000  # values plus characters that resolving a section may produce
MAX_SAFETENSORS_HEADER_BYTES = 8 * 2**20

Shapes = dict[str, tuple[int, ...]]


@dataclass
class LoadedCheckpoint:
    """Generator weights (keys without the ``generator.`` prefix) and the config they fit."""

    state_dict: dict[str, torch.Tensor]
    config: GeneratorConfig
    source_format: str
    path: Path
    dtype: torch.dtype


# ---------------------------------------------------------------------------- loading

def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read any supported checkpoint; every failure is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        return _load_official_dir(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} ({_EXPECTED})")
    return _load_safetensors(path) if _sniff(path) == "safetensors" else _load_zip(path)


def _sniff(path: Path) -> str:
    """'zip' or 'safetensors' from the first bytes; anything else is refused here."""
    with path.open("rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty ({_EXPECTED})")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    header_bytes = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and 2 <= header_bytes <= size - 8:
        if header_bytes > MAX_SAFETENSORS_HEADER_BYTES:
            # The reader parses the whole header before anything can be checked.
            raise CheckpointError(f"checkpoint {path} has a safetensors header of {header_bytes} bytes, "
                                  f"more than a model needs ({MAX_SAFETENSORS_HEADER_BYTES})")
        return "safetensors"
    if head.startswith(b"\x80"):
        raise CheckpointError(f"checkpoint {path} uses the legacy (PyTorch < 1.6) format, which is not supported; "
                              "re-save it with a recent PyTorch")
    raise CheckpointError(f"checkpoint {path} is not a recognised format ({_EXPECTED})")


def _load_official_dir(directory: Path) -> LoadedCheckpoint:
    config_path, ckpt_path = directory / "config.yaml", directory / "models" / "best.ckpt"
    if not (config_path.is_file() and ckpt_path.is_file()):
        raise CheckpointError(f"{directory} is not a big-lama directory: expected config.yaml and models/best.ckpt")
    config = _config_from_yaml(config_path)
    state_dict = _select_generator(dict(_flatten(load_archive(ckpt_path).root)), ckpt_path)
    return _loaded(state_dict, config, "official-dir", directory)


def _load_zip(path: Path) -> LoadedCheckpoint:
    # The archive's storages are read while unpickling; safe_pickle bounds them by the file's size.
    archive = load_archive(path)
    state_dict = _select_generator(dict(_flatten(archive.root)), path)
    if archive.is_torchscript:
        return _loaded(state_dict, None, "torchscript", path)
    lightning = isinstance(archive.root, dict) and "pytorch-lightning_version" in archive.root
    return _loaded(state_dict, _config_beside_ckpt(path), "lightning-ckpt" if lightning else "state-dict", path)


def _load_safetensors(path: Path) -> LoadedCheckpoint:
    """Config and shapes from the header are checked before any tensor is read."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            prefix = _generator_prefix(f.keys(), path)
            shapes = {key[len(prefix):]: tuple(f.get_slice(key).get_shape())
                      for key in f.keys() if key.startswith(prefix) and not key.startswith(_IGNORED_PREFIXES)}
            config = _fitting_config(_config_from_metadata(metadata, path), shapes, path)
            state_dict = {key: f.get_tensor(prefix + key) for key in shapes}
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - the Rust reader's errors carry no common base class
        raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {_one_line(error)}") from error
    return LoadedCheckpoint(state_dict, config, "safetensors", path, _stored_dtype(state_dict))


def _config_from_metadata(metadata: dict[str, str], path: Path) -> GeneratorConfig | None:
    """Our own files carry their config; a safetensors from elsewhere has none."""
    marker = metadata.get("lama_format")
    if marker is None:
        return None
    if marker != FORMAT_MARKER:
        raise CheckpointError(f"checkpoint {path} has lama_format {marker!r}; this version reads {FORMAT_MARKER!r}")
    text = metadata.get("lama_config")
    if text is None:
        raise CheckpointError(f"checkpoint {path} has lama_format but no lama_config in its metadata")
    try:
        _check_json_nesting(text)
        return GeneratorConfig.from_dict(json.loads(text))
    except ValueError as error:  # json's errors and the config's bounds alike
        raise CheckpointError(f"checkpoint {path} has an unusable lama_config in its metadata: "
                              f"{_one_line(error)}") from error


def _check_json_nesting(text: str) -> None:
    """Refuse JSON too long or nested too deeply before parsing it (json.loads recurses per level)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{len(text)} characters, more than a generator config needs ({MAX_CONFIG_BYTES})")
    depth, in_string, escaped = 0, False, False
    for char in text:  # one pass: brackets inside strings do not nest
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ValueError(f"nested more than {MAX_CONFIG_DEPTH} levels deep")
        elif char in "]}":
            depth -= 1


def _loaded(state_dict: dict[str, torch.Tensor], config: GeneratorConfig | None, source_format: str,
            path: Path) -> LoadedCheckpoint:
    config = _fitting_config(config, {key: tuple(t.shape) for key, t in state_dict.items()}, path)
    return LoadedCheckpoint(state_dict, config, source_format, path, _stored_dtype(state_dict))


def _fitting_config(config: GeneratorConfig | None, shapes: Shapes, path: Path) -> GeneratorConfig:
    """The config to build (the one the file names, else one read from the shapes), once the
    file's tensor names and shapes are exactly those of that generator: a tensor can claim any
    shape over few bytes (a zero stride, a safetensors header), so nothing is built or read
    for a file until this holds."""
    if config is None:
        config = _config_from_shapes(shapes, path)
    problems = _mismatch_summary(_expected_shapes(config), shapes)
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match its generator config: {problems}")
    return config


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _stored_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype holding most elements (integer buffers do not count)."""
    sizes: Counter[torch.dtype] = Counter()
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            sizes[tensor.dtype] += tensor.numel()
    return sizes.most_common(1)[0][0] if sizes else torch.float32


# ---------------------------------------------------------------------------- finding the generator

def _flatten(root: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor reachable through string-keyed dicts and stub objects, by dotted path.

    This one walk covers a Lightning checkpoint (``state_dict.generator.model...``), a
    plain state dict, and a TorchScript module tree, whose modules unpickle to stubs
    whose recorded state is their attribute dict. Objects are visited once: pickles may
    contain cycles (OmegaConf nodes point to their parents). Nothing deeper than
    :data:`_MAX_TENSOR_DEPTH` is walked: each level's path repeats the one above, so a deeply
    nested pickle would cost time quadratic in its depth.
    """
    seen: set[int] = set()
    pending: list[tuple[str, Any, int]] = [("", root, 0)]
    while pending:
        prefix, obj, depth = pending.pop()
        if isinstance(obj, torch.Tensor):
            yield prefix[:-1], obj.detach()
            continue
        if isinstance(obj, StubObject):
            obj = obj.state
        if not isinstance(obj, dict) or id(obj) in seen or depth == _MAX_TENSOR_DEPTH:
            continue
        seen.add(id(obj))
        pending.extend((f"{prefix}{key}.", value, depth + 1)
                       for key, value in reversed(obj.items()) if isinstance(key, str))


def _select_generator(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The generator's tensors with their prefix stripped."""
    prefix = _generator_prefix(tensors, path)
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and not k.startswith(_IGNORED_PREFIXES)}


def _generator_prefix(keys: Iterable[str], path: Path) -> str:
    """Whatever precedes the generator's tensor names.

    ``generator.`` (Lightning), ``state_dict.generator.``, IOPaint's wrapper attribute
    or none at all: the prefix is whatever precedes the first generator weight.
    """
    prefixes = sorted(key.removesuffix(_ANCHOR) for key in keys
                      if key.endswith(_ANCHOR) and key.removesuffix(_ANCHOR)[-1:] in ("", ".")
                      and not key.startswith(_IGNORED_PREFIXES))
    if len(prefixes) > 1:
        # e.g. a Lightning checkpoint that also keeps an averaged generator: take the one named generator.
        prefixes = [p for p in prefixes if p == "" or p.endswith("generator.")]
    if not prefixes:
        raise CheckpointError(f"checkpoint {path} contains no LaMa generator (no tensor named ...{_ANCHOR})")
    if len(prefixes) > 1:
        raise CheckpointError(f"checkpoint {path} contains several generators ({', '.join(prefixes)}); "
                              "cannot tell which to load")
    return prefixes[0]


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> GeneratorConfig:
    """big-lama's layout with the sizes read from the weights, for files that carry no config.

    Channel widths, depth and block count come from tensor shapes; the FFC ratios and the
    output activation cannot be told from weights and stay big-lama's. For big-lama's own
    weights this is exactly ``BIG_LAMA_CONFIG``. Sizes outside big-lama's family raise
    :class:`CheckpointError`; weights that do not fit the result are reported by
    :func:`load_checkpoint` and :func:`build_generator`.
    """
    return _config_from_shapes({key: tuple(t.shape) for key, t in state_dict.items()}, None)


def _config_from_shapes(shapes: Shapes, path: Path | None) -> GeneratorConfig:
    first = shapes.get(_ANCHOR)
    if first is None or len(first) != 4:
        return BIG_LAMA_CONFIG
    n_down = _count_from(shapes, 2, "model.{}.ffc.convl2l.weight")
    n_blocks = _count_from(shapes, 2 + n_down, "model.{}.conv1.ffc.convl2l.weight")
    last = shapes.get(f"model.{4 + 4 * n_down + n_blocks}.weight")
    try:
        return GeneratorConfig(
            input_nc=first[1],
            output_nc=last[0] if last else BIG_LAMA_CONFIG.output_nc,
            ngf=first[0],
            n_downsampling=n_down,
            n_blocks=n_blocks,
            init_conv_kwargs=BIG_LAMA_CONFIG.init_conv_kwargs,
            downsample_conv_kwargs=BIG_LAMA_CONFIG.downsample_conv_kwargs,
            resnet_conv_kwargs=BIG_LAMA_CONFIG.resnet_conv_kwargs,
        )
    except ValueError as error:
        where = f"checkpoint {path}" if path else "the checkpoint"
        raise CheckpointError(f"{where}: its weights' shapes describe no generator of big-lama's family: {error}") from error


def _count_from(shapes: Shapes, start: int, pattern: str) -> int:
    count = 0
    while pattern.format(start + count) in shapes:
        count += 1
    return count


# ---------------------------------------------------------------------------- config.yaml

def _config_from_yaml(path: Path) -> GeneratorConfig:
    generator = _generator_section(path)
    if generator is None:
        raise CheckpointError(f"{path} has no generator: section")
    return generator


def _config_beside_ckpt(ckpt: Path) -> GeneratorConfig | None:
    """The official layout keeps config.yaml two levels above models/best.ckpt."""
    candidate = ckpt.parent.parent / "config.yaml"
    return _generator_section(candidate) if candidate.is_file() else None


def _generator_section(path: Path) -> GeneratorConfig | None:
    try:
        raw = _read_yaml(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as error:  # ValueError: an int of 4300+ digits
        raise CheckpointError(f"cannot read {path}: {_one_line(error)}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("generator"), dict):
        return None
    try:
        # Only the generator is resolved: training-only sections of the official config
        # use resolvers such as ${env:TORCH_HOME} that inference never needs.
        section = resolve_interpolations(raw, select="generator")
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
    try:
        return GeneratorConfig.from_dict(section)
    except ValueError as error:
        raise CheckpointError(f"{path}: unusable generator config: {_one_line(error)}") from error


def _read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a file bounded in size and nesting first: PyYAML builds nested
    nodes recursively, so 100,000 ``[`` would end in a RecursionError. The event stream it
    is checked on is produced without recursion (and by libyaml when installed)."""
    with path.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"more than {MAX_CONFIG_BYTES} bytes, far more than a model config needs")
    text = data.decode("utf-8")
    depth = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ValueError(f"nested more than {MAX_CONFIG_DEPTH} levels deep (line {event.start_mark.line + 1})")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.safe_load(text)


_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
_REFERENCE = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")


def resolve_interpolations(config: dict, select: str | None = None) -> Any:
    """Resolve OmegaConf-style ``${a.b.c}`` references without OmegaConf.

    References are absolute dotted paths into ``config`` and may chain. A string that is
    exactly one reference takes the referenced value with its type; references inside a
    longer string are substituted as text. Resolvers (``${env:HOME}``, ``${oc.env:X}``)
    are never evaluated: they, cycles and missing keys raise :class:`CheckpointError`.
    Returns a resolved copy of ``config``, or only of the node at dotted path ``select``
    (interpolations elsewhere are then left alone).
    """
    resolver = _Resolver(config)
    return resolver.value_at(select) if select is not None else resolver.resolve(config, "")


class _Resolver:
    def __init__(self, root: dict):
        self.root = root
        self.active: list[str] = []  # references being resolved, for cycle detection
        self.done: dict[str, tuple[Any, int]] = {}  # resolved value and its size, by reference
        # References, YAML aliases and text substitution can each double what a few bytes
        # describe; everything produced is counted against one bound.
        self.produced = 0

    def value_at(self, path: str) -> Any:
        if path in self.active:
            cycle = " -> ".join(self.active[self.active.index(path):] + [path])
            raise CheckpointError(f"config interpolation cycle: {cycle}")
        if path not in self.done:
            self.active.append(path)
            before = self.produced
            self.done[path] = (self.resolve(self._lookup(path), path), self.produced - before)
            self.active.pop()
        value, size = self.done[path]
        self._produce(size)
        return copy.deepcopy(value)

    def _produce(self, size: int) -> None:
        self.produced += size
        if self.produced > MAX_RESOLVED_SIZE:
            raise CheckpointError(f"config expands to more than {MAX_RESOLVED_SIZE} values and characters "
                                  "(through ${...} references or YAML aliases)")

    def _lookup(self, path: str) -> Any:
        node: Any = self.root
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict) and part.isdigit() and int(part) in node:
                node = node[int(part)]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise CheckpointError(f"config interpolation ${{{path}}} refers to a key that does not exist")
        return node

    def resolve(self, node: Any, where: str) -> Any:
        self._produce(1 + len(node) if isinstance(node, str) else 1)
        if isinstance(node, dict):
            return {key: self.resolve(value, f"{where}.{key}".lstrip(".")) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(value, f"{where}.{i}".lstrip(".")) for i, value in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return self._resolve_string(node, where)
        return node

    def _resolve_string(self, text: str, where: str) -> Any:
        matches = list(_INTERPOLATION.finditer(text))
        if len(matches) != text.count("${"):
            raise CheckpointError(f"config value {where} = {text!r}: "
                                  "nested or unterminated interpolation is not supported")
        whole = _INTERPOLATION.fullmatch(text)
        if whole:
            return self.value_at(self._reference(whole.group(1), where))
        return _INTERPOLATION.sub(lambda m: self._as_text(self.value_at(self._reference(m.group(1), where)), where),
                                  text)

    @staticmethod
    def _reference(body: str, where: str) -> str:
        body = body.strip()
        if ":" in body:
            raise CheckpointError(f"config value {where} uses the resolver ${{{body}}}; resolvers are not evaluated")
        if not _REFERENCE.fullmatch(body):
            raise CheckpointError(f"config value {where}: unsupported interpolation ${{{body}}} "
                                  "(only absolute ${a.b.c} references are supported)")
        return body

    @staticmethod
    def _as_text(value: Any, where: str) -> str:
        if isinstance(value, (dict, list)):
            raise CheckpointError(f"config value {where} embeds a mapping or list in a string")
        return str(value)


# ---------------------------------------------------------------------------- using and writing

def build_generator(ckpt: LoadedCheckpoint) -> FFCResNetGenerator:
    """The generator in eval mode (fp32, CPU) with the checkpoint's weights, loaded strictly.

    The generator takes the checkpoint's tensors (no copy, where they are fp32 already): it is
    built on the meta device and given them, because allocating and filling 51 M weights (random
    ones first, as a module built with storage draws) cost seconds of the service's start-up on
    the GPU box. Nothing changes a generator's weights in place (the fast path folds its
    BatchNorms into a copy), so several generators built from one checkpoint stay correct.
    """
    problems = _mismatch_summary(_expected_shapes(ckpt.config),
                                 {key: tuple(t.shape) for key, t in ckpt.state_dict.items()})
    if problems:  # checked before building: a module of the wrong size may be large
        raise CheckpointError(f"checkpoint does not match the generator config: {problems}")
    with torch.device("meta"):
        model = FFCResNetGenerator(ckpt.config)
    # Floating-point tensors in fp32 as the generator defines them, whatever the file stored
    # (assigning keeps a tensor's dtype; BatchNorm's counters stay integers).
    weights = {key: tensor.float() if tensor.is_floating_point() else tensor for key, tensor in ckpt.state_dict.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _expected_shapes(config: GeneratorConfig) -> Shapes:
    """Every tensor name of the generator ``config`` describes, with its shape; nothing allocated."""
    return dict(_generator_shapes(config))


@functools.lru_cache(maxsize=8)
def _generator_shapes(config: GeneratorConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    # Built on the meta device: shapes without storage, in milliseconds for any config that exists.
    with torch.device("meta"):
        return tuple((key, tuple(t.shape)) for key, t in FFCResNetGenerator(config).state_dict().items())


def _mismatch_summary(expected: Shapes, found: Shapes) -> str:
    """'' when the keys and shapes agree, else a readable account with a few examples."""
    def examples(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {list(found[k])} vs model {list(v)}"
              for k, v in expected.items() if k in found and found[k] != v]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {examples(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) > 1 else ''} ({examples(shapes)})")
    return ", ".join(parts)


def save_safetensors(ckpt: LoadedCheckpoint, dst: str | os.PathLike[str], dtype: torch.dtype | None = None) -> None:
    """Write our .safetensors: floating tensors cast to ``dtype`` (integer buffers kept), config in the metadata.

    Atomic: the file appears complete or not at all (temp file beside it, fsync, rename).
    """
    dst = Path(dst)
    tensors = {
        key: (value.to(dtype) if dtype is not None and value.is_floating_point() else value).contiguous().clone()
        for key, value in ckpt.state_dict.items()
    }
    metadata = {"format": "pt", "lama_format": FORMAT_MARKER, "lama_config": json.dumps(ckpt.config.to_dict())}
    payload = safetensors.torch.save(tensors, metadata=metadata)
    write_bytes_atomic(dst, payload)


def describe_checkpoint(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """Architecture summary for ``python -m lama info``."""
    parameters = sum(v.numel() for k, v in ckpt.state_dict.items() if not k.endswith(_BUFFER_SUFFIXES))
    return {
        "path": str(ckpt.path),
        "source_format": ckpt.source_format,
        "dtype": str(ckpt.dtype).removeprefix("torch."),
        "ngf": ckpt.config.ngf,
        "n_downsampling": ckpt.config.n_downsampling,
        "n_blocks": ckpt.config.n_blocks,
        "parameters": parameters,
        "tensors": len(ckpt.state_dict),
    }
