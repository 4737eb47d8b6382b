"""The formats a repaired image can be written in: the one table the encoder, the service's
storage and media types, the API, the UI and the CLI all read.

A request names a format as people spell it: ``png``, ``jpeg`` or ``jpg``, ``webp``, or
``same``: the upload's own format where it is one of these, PNG for the others (BMP and TIFF
are read but not written: a repaired photo in them would only surprise).
"""

from __future__ import annotations

from dataclasses import dataclass

from lama.errors import OptionError


@dataclass(frozen=True)
class OutputFormat:
    name: str  # as requests and the encoder name it
    extension: str  # of the files written, without the dot
    media_type: str
    max_side: int  # the largest width or height the format can store


OUTPUT_FORMATS: dict[str, OutputFormat] = {fmt.name: fmt for fmt in (
    OutputFormat("png", "png", "image/png", 2**31 - 1),
    OutputFormat("jpeg", "jpg", "image/jpeg", 65500),  # libjpeg's JPEG_MAX_DIMENSION
    OutputFormat("webp", "webp", "image/webp", 16383),
)}
ALIASES = {"jpg": "jpeg"}
SAME = "same"
RESULT_SUFFIX = "_repaired"  # photo.jpg's result is photo_repaired.<ext>
# Every name a request may give, in the order help texts list them.
CHOICES: tuple[str, ...] = (*OUTPUT_FORMATS, *ALIASES, SAME)
# File suffixes (lower case, with the dot) that name an output format, e.g. for `--output x.jpg`.
SUFFIXES: dict[str, OutputFormat] = {
    **{f".{fmt.extension}": fmt for fmt in OUTPUT_FORMATS.values()},
    **{f".{alias}": OUTPUT_FORMATS[name] for alias, name in ALIASES.items()},
    **{f".{name}": fmt for name, fmt in OUTPUT_FORMATS.items()},
}


def output_format(name: str, upload_format: str | None = None) -> OutputFormat:
    """The format `name` (any of CHOICES, any case) stands for; for ``same``, `upload_format`
    (the upload's format as lama.imageio sniffs it: "JPEG", "PNG", ...; None: not known) or PNG.
    Raises OptionError, with a message for people, for any other name."""
    key = name.lower() if isinstance(name, str) else name
    if key == SAME:
        key = (upload_format or "png").lower()
        return OUTPUT_FORMATS.get(ALIASES.get(key, key), OUTPUT_FORMATS["png"])
    fmt = OUTPUT_FORMATS.get(ALIASES.get(key, key))
    if fmt is None:
        raise OptionError("format", f"format must be one of {', '.join(CHOICES)}, got {name!r}")
    return fmt


def for_suffix(suffix: str) -> OutputFormat | None:
    """The format a file suffix names ('.JPG' -> jpeg), None for any other suffix."""
    return SUFFIXES.get(suffix.lower())


def result_file_name(stem: str, fmt: OutputFormat) -> str:
    """What the result of a photo called `stem`.* is called: 'holiday' -> 'holiday_repaired.jpg'."""
    return f"{stem}{RESULT_SUFFIX}.{fmt.extension}"
