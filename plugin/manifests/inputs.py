"""What the engine consumes: named text streams from files, stdin or renderers."""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from plugin.errors import InputError


@dataclass(frozen=True)
class InputStream:
    """Text of one input: a file, stdin, or a renderer's stdout.

    `name` is what error messages call it (a path relative to the app directory,
    `<stdin>`, `helm template`). A large input read from a pipe comes as `chunks` instead
    of `text` (which is then empty): decoded piece by piece and split as it arrives, it is
    never held twice (bytes and text, or text and documents), and can be consumed once.
    """

    name: str
    text: str
    chunks: Iterator[str] | None = field(default=None, compare=False, repr=False)


#: Bytes read from a pipe at a time.
CHUNK_SIZE = 1024 * 1024


def read_pipe(name: str, source: BinaryIO, max_bytes: int) -> InputStream:
    """An input read lazily from `source`: UTF-8 checked, at most `max_bytes` (InputError)."""
    return InputStream(name, "", _decoded_chunks(name, source, max_bytes))


def _decoded_chunks(name: str, source: BinaryIO, max_bytes: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    total = 0
    while True:
        data = source.read(CHUNK_SIZE)
        total += len(data)
        if total > max_bytes:
            raise InputError(
                f"{name} is larger than {format_size(max_bytes)} ({MAX_INPUT_SETTING}); refused"
            )
        held = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            where = total - len(data) - held + exc.start
            raise InputError(f"{name} is not valid UTF-8 (byte {where})") from None
        if text:
            yield text
        if not data:
            return


#: The setting bounding every input the plugin reads: the files of a directory in all, stdin,
#: each renderer's output. The default leaves room for very large renders (a 50 MB stream of
#: manifests is a benchmark workload) while refusing absurd ones before they are read.
MAX_INPUT_SETTING = "PLUGIN_MAX_INPUT_SIZE"
DEFAULT_MAX_INPUT = 64 * 1024 * 1024
#: The largest single document the engine parses (a Kubernetes object is at most ~1.5 MiB once
#: stored; YAML text is longer, but never by this much). Larger documents that hold nothing
#: to replace are still copied through untouched.
MAX_PARSED_DOCUMENT = 16 * 1024 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int | None:
    """`33554432`, `32Mi`, `32MiB`, `30M`, `1Gi` -> bytes; None when it is none of these."""
    stripped = text.strip().replace(" ", "")
    number = stripped.rstrip("bBkKmMgGiI")
    unit = stripped[len(number) :].lower()
    if unit not in _UNITS or not number:
        return None
    try:
        value = float(number)
    except ValueError:
        return None
    if value < 0 or math.isnan(value) or math.isinf(value):
        return None
    return int(value * _UNITS[unit])


def format_size(size: int) -> str:
    """`33554432` -> `32 MiB` (for messages)."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            if unit == "bytes":
                return f"{size} bytes"
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover
