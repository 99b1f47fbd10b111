"""A fast block-YAML writer for the common case of resolved Kubernetes manifests.

PyYAML spends most of its dumping time building a node graph in Python. Manifests are plain
trees of ASCII text, integers, booleans and nulls, which can be written directly. `dump`
returns None for anything outside that safe subset (floats, non-ASCII or control
characters, non-string keys, shared objects), and the caller falls back to PyYAML.
Every string is written so that Go's reader (go-yaml v2, as Argo CD uses it) and a YAML 1.1
reader both read it back as the same string: plain when no implicit type (bool, null,
number, timestamp…) could claim it in either, as a literal block when it spans lines and a
block can hold it exactly, otherwise double-quoted.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import yaml

from plugin.manifests import goresolve

# A plain scalar may not start with an indicator or a space; tabs are left to quoting.
_PLAIN = re.compile(r"[^-?:,\[\]{}#&*!|>'\"%@`\s\\][^\t]*")
_PRINTABLE_LINE = re.compile(r"[\t\x20-\x7e]*")
_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers
_MAX_KEY = 1000  # YAML limits implicit keys to 1024 characters


class _UnsupportedError(Exception):
    """Outside the subset this writer handles: use PyYAML."""


def dump(document: Any) -> str | None:
    """Block YAML for `document` (a mapping), or None when PyYAML must do it."""
    if not isinstance(document, dict):
        return None
    if not document:
        return "{}\n"
    lines: list[str] = []
    try:
        _mapping(document, 0, lines, set())
    except (_UnsupportedError, RecursionError):
        return None
    return "\n".join(lines) + "\n"


def _enter(node: dict[Any, Any] | list[Any], seen: set[int]) -> None:
    if id(node) in seen:  # an alias: PyYAML writes an anchor instead
        raise _UnsupportedError
    seen.add(id(node))


def _mapping(node: dict[Any, Any], indent: int, lines: list[str], seen: set[int]) -> None:
    _enter(node, seen)
    pad = " " * indent
    for key, value in node.items():
        if not isinstance(key, str) or "\n" in key or len(key) > _MAX_KEY:
            raise _UnsupportedError
        head = f"{pad}{_scalar_text(key)}:"
        _value(head, value, indent, lines, seen, list_indent=indent)


def _sequence(node: list[Any], indent: int, lines: list[str], seen: set[int]) -> None:
    _enter(node, seen)
    pad = " " * indent
    for item in node:
        start = len(lines)
        if isinstance(item, dict) and item:
            _mapping(item, indent + 2, lines, seen)
        elif isinstance(item, list) and item:
            _sequence(item, indent + 2, lines, seen)
        else:
            _value(f"{pad}-", item, indent, lines, seen, list_indent=indent + 2)
            continue
        lines[start] = f"{pad}- {lines[start][indent + 2 :]}"


def _value(
    head: str, value: Any, indent: int, lines: list[str], seen: set[int], *, list_indent: int
) -> None:
    """`head` (`key:` or `-`) followed by the value, inline or on the next lines."""
    if isinstance(value, dict) and value:
        lines.append(head)
        _mapping(value, indent + 2, lines, seen)
    elif isinstance(value, list) and value:
        lines.append(head)
        _sequence(value, list_indent, lines, seen)
    elif isinstance(value, str) and "\n" in value:
        _literal(head, value, indent + 2, lines)
    else:
        lines.append(f"{head} {_scalar_text(value)}")


def keyword_text(value: Any) -> str | None:
    """How null, a boolean or an integer is written (Go and YAML 1.1 read it back so),
    or None for any other value. Shared with the splice (`splice.inline_value`)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return None


def _scalar_text(value: Any) -> str:
    keyword = keyword_text(value)
    if keyword is not None:
        return keyword
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if not isinstance(value, str):
        raise _UnsupportedError  # floats and anything else: PyYAML knows the YAML 1.1 spellings
    text = _string_text(value)
    if text is None:
        raise _UnsupportedError
    return text


def single_line(value: str) -> str | None:
    """How this writer spells `value` as a one-line scalar (plain, else double-quoted), or
    None when it would not write it itself (multi-line, non-ASCII or control characters)."""
    return _string_text(value)


@functools.lru_cache(maxsize=16384)
def _string_text(value: str) -> str | None:
    """Keys and values repeat across manifests: decide each spelling once."""
    if _PRINTABLE_LINE.fullmatch(value) is None:
        return None
    if _is_plain(value):
        return value
    return json.dumps(value)  # printable ASCII: JSON's escapes are valid YAML double-quoted


def _is_plain(text: str) -> bool:
    if not text or _PLAIN.fullmatch(text) is None:
        return False
    if text.endswith((" ", ":")) or ": " in text or " #" in text:
        return False
    if goresolve.retyped(text):  # `y`, `0o17`, `1e3`, `08`…: not a string to Go
        return False
    # Not a bool, null, number, timestamp, `=` or `<<` to a YAML 1.1 reader:
    return not any(pattern.match(text) for _tag, pattern in _RESOLVERS.get(text[0], ()))


def _literal(head: str, text: str, indent: int, lines: list[str]) -> None:
    """A `|` block; refuses what a block cannot hold exactly (use double quotes then).

    A block's indentation is taken from its first non-empty line, so a text whose first
    non-empty line starts with a space or tab (even after blank lines) would lose that
    indentation, or end the block early and turn later lines into comments.
    """
    body = text.rstrip("\n")
    trailing = len(text) - len(body)
    parts = body.split("\n")
    if (
        not body.lstrip("\n")
        or body.lstrip("\n")[0] in " \t"
        or any(_PRINTABLE_LINE.fullmatch(part) is None for part in parts)
        or any(part != part.rstrip(" \t") for part in parts)
    ):
        lines.append(f"{head} {_scalar_text_quoted(text)}")
        return
    chomp = "-" if trailing == 0 else "" if trailing == 1 else "+"
    lines.append(f"{head} |{chomp}")
    pad = " " * indent
    lines.extend(f"{pad}{part}" if part else "" for part in parts)
    lines.extend("" for _ in range(trailing - 1))


def _scalar_text_quoted(text: str) -> str:
    if any(_PRINTABLE_LINE.fullmatch(part) is None for part in text.split("\n")):
        raise _UnsupportedError
    return json.dumps(text)
