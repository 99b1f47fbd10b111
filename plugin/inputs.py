"""What the engine consumes: named text streams from files, stdin or renderers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputStream:
    """Text of one input: a file, stdin, or a renderer's stdout.

    `name` is what error messages call it (a path relative to the app directory,
    `<stdin>`, `helm template`).
    """

    name: str
    text: str
