"""What the engine consumes: named text streams from files, stdin or renderers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class InputStream:
    """Text of one input: a file, stdin, or a renderer's stdout.

    `name` is what error messages call it (a path relative to the app directory,
    `<stdin>`, `helm template`).
    """

    name: str
    text: str


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
