"""Fetch model weights over HTTP(S): ``python -m lama download``.

The file is streamed into a temporary ``.part`` file next to its destination, hashed
while it arrives, checked against the expected checksum and only then renamed into
place, so the destination is either absent or complete and verified. Uses urllib only:
downloading one file is not worth a dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from lama.errors import DownloadError

_CHUNK = 1024 * 1024
_USER_AGENT = "lama-inpaint-downloader"


@dataclass(frozen=True)
class KnownModel:
    """Where a model's weights can be fetched and how to tell the file is the right one."""

    name: str
    url: str
    filename: str
    md5: str


# IOPaint's TorchScript export of big-lama, the file most users already have.
BIG_LAMA = KnownModel(
    name="big-lama",
    url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
    filename="big-lama.pt",
    md5="e3aa4aaa15225a33ec84f9f4bc47e500",
)
KNOWN_MODELS: dict[str, KnownModel] = {BIG_LAMA.name: BIG_LAMA}


def download(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    When a checksum is given and ``dest`` already matches it, nothing is fetched; without
    one an existing file cannot be trusted and is replaced. ``timeout`` bounds connecting
    and each wait for data, not the whole transfer. Every failure raises DownloadError,
    leaves no partial file and leaves a file already at ``dest`` as it was.
    """
    dest = Path(dest)
    expected = _expected_digests(md5, sha256)
    if expected and dest.is_file() and _Hashers.of_file(dest, expected).hexdigests() == expected:
        return dest
    part, out = _create_part_file(dest)
    hashers = _Hashers(expected)
    try:
        with out:
            _fetch(url, out, hashers, progress=progress, timeout=timeout, desc=dest.name)
            out.flush()
            os.fsync(out.fileno())
        _verify(dest.name, expected, hashers.hexdigests())
        os.replace(part, dest)
    except OSError as exc:  # network errors are DownloadErrors by now: this is the disk
        raise DownloadError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)  # also on Ctrl-C; a no-op after the rename
    return dest


def download_big_lama(
    dest_dir: Path = Path("models"), url: str | None = None, md5: str | None = None
) -> Path:
    """Download big-lama.pt into ``dest_dir`` (skipped if a verified copy is there).

    ``url`` may point at a mirror; the file is still checked against the known md5
    unless another ``md5`` is given, so a mirror cannot hand over a different file.
    """
    return download(
        url or BIG_LAMA.url, Path(dest_dir) / BIG_LAMA.filename, md5=md5 or BIG_LAMA.md5
    )


def _create_part_file(dest: Path) -> tuple[Path, BinaryIO]:
    """A new, uniquely named file next to ``dest``, so the final rename stays atomic."""
    part = dest.with_name(f"{dest.name}.{secrets.token_hex(4)}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return part, part.open("xb")
    except OSError as exc:
        raise DownloadError(f"cannot write {dest}: {exc.strerror or exc}") from None


class _Hashers:
    """Hashes data with every algorithm an expected digest was given for."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        # usedforsecurity=False: md5 detects corruption here; FIPS builds refuse it otherwise.
        self._hashers = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}

    @classmethod
    def of_file(cls, path: Path, algorithms: Iterable[str]) -> _Hashers:
        hashers = cls(algorithms)
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                hashers.update(chunk)
        return hashers

    def update(self, chunk: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}


def _expected_digests(md5: str | None, sha256: str | None) -> dict[str, str]:
    given = {"md5": md5, "sha256": sha256}
    return {name: value.lower() for name, value in given.items() if value}


def _fetch(
    url: str, out: BinaryIO, hashers: _Hashers, *, progress: bool, timeout: float, desc: str
) -> None:
    """Stream the body of ``url`` into ``out``; network problems become DownloadError."""
    with _open_url(url, timeout) as response:
        total = _content_length(response)
        received = 0
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress,
        ) as bar:
            while chunk := _read_chunk(response, url):
                out.write(chunk)
                hashers.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(
            f"download of {url} was cut short: got {received} of {total} bytes; "
            "the partial file was discarded"
        )


def _open_url(url: str, timeout: float) -> http.client.HTTPResponse:
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {_reason(exc.reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"download of {url} failed: {_reason(exc)}") from None
    except ValueError as exc:  # urllib's answer to a malformed URL
        raise DownloadError(f"invalid URL {url!r}: {exc}") from None


def _content_length(response: http.client.HTTPResponse) -> int | None:
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _read_chunk(response: http.client.HTTPResponse, url: str) -> bytes:
    try:
        return response.read(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"download of {url} failed: {_reason(exc)}") from None


def _verify(name: str, expected: dict[str, str], got: dict[str, str]) -> None:
    for algorithm, want in expected.items():
        if got[algorithm] != want:
            raise DownloadError(
                f"checksum mismatch for {name}: expected {algorithm} {want}, "
                f"got {got[algorithm]}; the file was discarded"
            )


def _reason(reason: object) -> str:
    """A one-line cause: socket errors carry a useful strerror, others a str()."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
