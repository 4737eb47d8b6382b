"""Load big-lama weights from every form users have them in, without executing the file.

Accepted sources, recognised by content rather than by suffix:

- the official directory (``config.yaml`` + ``models/best.ckpt``, a PyTorch-Lightning
  1.x checkpoint) or its ``.ckpt`` alone;
- IOPaint's ``big-lama.pt``, a TorchScript trace (read as data, never ``torch.jit.load``);
- our ``.safetensors`` (config and a format marker in the metadata), or anyone's;
- a plain ``torch.save``d state dict.

Pickled files go through :mod:`lama.safe_pickle`, so a checkpoint can name classes we
do not have (``pytorch_lightning``, ``omegaconf``) but cannot make us call anything.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_EXPECTED = ("expected a big-lama directory (config.yaml + models/best.ckpt), a .ckpt, "
             "IOPaint's big-lama.pt or a .safetensors")


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
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
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
    archive = load_archive(path)
    state_dict = _select_generator(dict(_flatten(archive.root)), path)
    if archive.is_torchscript:
        return _loaded(state_dict, infer_config(state_dict), "torchscript", path)
    lightning = isinstance(archive.root, dict) and "pytorch-lightning_version" in archive.root
    config = _config_beside_ckpt(path) or infer_config(state_dict)
    return _loaded(state_dict, config, "lightning-ckpt" if lightning else "state-dict", path)


def _load_safetensors(path: Path) -> LoadedCheckpoint:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # noqa: BLE001 - the Rust reader's errors carry no common base class
        raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {_one_line(error)}") from error
    state_dict = _select_generator(tensors, path)
    return _loaded(state_dict, _config_from_metadata(metadata, path) or infer_config(state_dict), "safetensors", path)


def _config_from_metadata(metadata: dict[str, str], path: Path) -> GeneratorConfig | None:
    """Our own files carry their config; a safetensors from elsewhere has none."""
    marker = metadata.get("lama_format")
    if marker is None:
        return None
    if marker != FORMAT_MARKER:
        raise CheckpointError(f"checkpoint {path} has lama_format {marker!r}; this version reads {FORMAT_MARKER!r}")
    try:
        return GeneratorConfig.from_dict(json.loads(metadata["lama_config"]))
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {path} has an unreadable lama_config in its metadata: {error}") from error


def _loaded(state_dict: dict[str, torch.Tensor], config: GeneratorConfig, source_format: str,
            path: Path) -> LoadedCheckpoint:
    return LoadedCheckpoint(state_dict, config, source_format, path, _stored_dtype(state_dict))


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
    contain cycles (OmegaConf nodes point to their parents).
    """
    seen: set[int] = set()
    pending: list[tuple[str, Any]] = [("", root)]
    while pending:
        prefix, obj = pending.pop()
        if isinstance(obj, torch.Tensor):
            yield prefix[:-1], obj.detach()
            continue
        if isinstance(obj, StubObject):
            obj = obj.state
        if not isinstance(obj, dict) or id(obj) in seen:
            continue
        seen.add(id(obj))
        pending.extend((f"{prefix}{key}.", value) for key, value in reversed(obj.items()) if isinstance(key, str))


def _select_generator(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The generator's tensors with their prefix stripped, whatever that prefix is.

    ``generator.`` (Lightning), ``state_dict.generator.``, IOPaint's wrapper attribute
    or none at all: the prefix is whatever precedes the first generator weight.
    """
    tensors = {k: v for k, v in tensors.items() if not k.startswith(_IGNORED_PREFIXES)}
    prefixes = sorted(key.removesuffix(_ANCHOR) for key in tensors
                      if key.endswith(_ANCHOR) and key.removesuffix(_ANCHOR)[-1:] in ("", "."))
    if len(prefixes) > 1:
        # e.g. a Lightning checkpoint that also keeps an averaged generator: take the one named generator.
        prefixes = [p for p in prefixes if p == "" or p.endswith("generator.")]
    if not prefixes:
        raise CheckpointError(f"checkpoint {path} contains no LaMa generator (no tensor named ...{_ANCHOR})")
    if len(prefixes) > 1:
        raise CheckpointError(f"checkpoint {path} contains several generators ({', '.join(prefixes)}); "
                              "cannot tell which to load")
    prefix = prefixes[0]
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def infer_config(state_dict: dict[str, torch.Tensor]) -> GeneratorConfig:
    """big-lama's layout with the sizes read from the weights, for files that carry no config.

    Channel widths, depth and block count come from tensor shapes; the FFC ratios and the
    output activation cannot be told from weights and stay big-lama's. For big-lama's own
    weights this is exactly ``BIG_LAMA_CONFIG``; anything else that does not fit is
    reported by :func:`build_generator`.
    """
    first = state_dict.get(_ANCHOR)
    if first is None or first.dim() != 4:
        return BIG_LAMA_CONFIG
    n_down = _count_from(state_dict, 2, "model.{}.ffc.convl2l.weight")
    n_blocks = _count_from(state_dict, 2 + n_down, "model.{}.conv1.ffc.convl2l.weight")
    last = state_dict.get(f"model.{4 + 4 * n_down + n_blocks}.weight")
    return GeneratorConfig(
        input_nc=first.shape[1],
        output_nc=last.shape[0] if last is not None else BIG_LAMA_CONFIG.output_nc,
        ngf=first.shape[0],
        n_downsampling=n_down,
        n_blocks=n_blocks,
        init_conv_kwargs=BIG_LAMA_CONFIG.init_conv_kwargs,
        downsample_conv_kwargs=BIG_LAMA_CONFIG.downsample_conv_kwargs,
        resnet_conv_kwargs=BIG_LAMA_CONFIG.resnet_conv_kwargs,
    )


def _count_from(state_dict: dict[str, torch.Tensor], start: int, pattern: str) -> int:
    count = 0
    while pattern.format(start + count) in state_dict:
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
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
    except (ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: unusable generator config: {error}") from error


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
        self.done: dict[str, Any] = {}

    def value_at(self, path: str) -> Any:
        if path in self.active:
            cycle = " -> ".join(self.active[self.active.index(path):] + [path])
            raise CheckpointError(f"config interpolation cycle: {cycle}")
        if path not in self.done:
            self.active.append(path)
            self.done[path] = self.resolve(self._lookup(path), path)
            self.active.pop()
        return copy.deepcopy(self.done[path])

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
    """The generator in eval mode (fp32, CPU) with the checkpoint's weights, loaded strictly."""
    model = FFCResNetGenerator(ckpt.config)
    problems = _mismatch_summary(model.state_dict(), ckpt.state_dict)
    if problems:
        raise CheckpointError(f"checkpoint does not match the generator config: {problems}")
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval().requires_grad_(False)


def _mismatch_summary(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """'' when the keys and shapes agree, else a readable account with a few examples."""
    def examples(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {list(found[k].shape)} vs model {list(v.shape)}"
              for k, v in expected.items() if k in found and found[k].shape != v.shape]
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
