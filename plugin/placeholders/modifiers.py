"""Modifiers: pure functions applied left to right to a looked-up secret value (spec §2).

AVP's seven modifiers keep AVP's semantics and error texts, except where AVP
crashes (numbers given to `sha256sum`/`jsonPath`): those get a clean result or
a clean error. Two opt-in additions: `default <text>` (handled by the engine,
it only matters when a value is missing) and `reindent N`, an `indent` that
keeps relative indentation and blank lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from plugin.errors import JSONPathError, ModifierError
from plugin.manifests.yamlio import load_one

ModifierFunction = Callable[[tuple[str, ...], Any], Any]

#: Name of the fallback modifier; applied by the engine, a no-op on present values.
DEFAULT = "default"


def go_type_name(value: object) -> str:
    """The Go type AVP would name in an `invalid datatype` error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "json.Number"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if value is None:
        return "<nil>"
    return type(value).__name__


def _require_no_args(args: tuple[str, ...]) -> None:
    if args:
        raise ModifierError("invalid parameters")


def _require_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ModifierError(f"invalid datatype {go_type_name(value)}")
    return value


def go_std_b64decode(text: str) -> bytes | None:
    """Go `base64.StdEncoding.DecodeString`: padded standard alphabet, CR/LF ignored.

    Returns None when the text is not valid (Python's default decoder would
    silently skip foreign characters such as `<`).
    """
    cleaned = text.replace("\r", "").replace("\n", "")
    if len(cleaned) % 4 != 0:
        return None
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


def _lenient_b64decode(text: str) -> str:
    """AVP's base64decode ignores decode errors and keeps what decoded before the fault."""
    cleaned = text.replace("\r", "").replace("\n", "")
    decoded = go_std_b64decode(cleaned)
    if decoded is None:
        whole = (len(cleaned) // 4) * 4
        decoded = b""
        for end in range(whole, -1, -4):
            candidate = go_std_b64decode(cleaned[:end])
            if candidate is not None:
                decoded = candidate
                break
    return decoded.decode("utf-8", errors="replace")


def base64encode(args: tuple[str, ...], value: Any) -> str:
    _require_no_args(args)
    return base64.b64encode(_require_string(value).encode()).decode("ascii")


def base64decode(args: tuple[str, ...], value: Any) -> str:
    _require_no_args(args)
    return _lenient_b64decode(_require_string(value))


def json_path(args: tuple[str, ...], value: Any) -> str:
    from plugin.placeholders.jsonpath import (
        execute,  # imported on first use: most renders never need it
    )

    if not args:
        raise ModifierError("invalid parameters")
    data = value
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ModifierError(f"value is not valid JSON: {exc.msg}") from None
    try:
        return execute(" ".join(args), data)
    except JSONPathError as exc:
        raise ModifierError(str(exc)) from None


def json_parse(args: tuple[str, ...], value: Any) -> Any:
    _require_no_args(args)
    try:
        return json.loads(_require_string(value))
    except json.JSONDecodeError as exc:
        raise ModifierError(f"value is not valid JSON: {exc.msg}") from None


def yaml_parse(args: tuple[str, ...], value: Any) -> Any:
    _require_no_args(args)
    try:
        parsed = load_one(_require_string(value))
    except yaml.YAMLError as exc:
        # The parser's own text may quote the value; report only the position.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ModifierError(f"value is not valid YAML{where}") from None
    check_expansion(parsed)
    return parsed


#: The most nodes a parsed value may have once YAML aliases are expanded.
MAX_EXPANDED_NODES = 1_000_000


def check_expansion(data: Any) -> None:
    """Refuse recursive aliases (`&a [*a]`) and alias bombs in a parsed YAML value.

    Later stages (jsonPath, JSON and YAML output) walk the value as a tree, so a structure
    that refers to itself would never end and a billion laughs would take forever. Sizes are
    counted once per shared node, so the check itself is linear in the text.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, leaving = stack.pop()
        if not isinstance(node, dict | list):
            continue
        key = id(node)
        children = list(node.values()) if isinstance(node, dict) else node
        if leaving:
            on_path.discard(key)
            total = 1 + sum(sizes.get(id(child), 1) for child in children)
            if total > MAX_EXPANDED_NODES:
                raise ModifierError(
                    f"value expands to more than {MAX_EXPANDED_NODES} nodes through YAML "
                    "aliases; refused"
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if isinstance(child, dict | list):
                if id(child) in on_path:
                    raise ModifierError("value is recursive (a YAML alias refers to itself)")
                if id(child) not in sizes:
                    stack.append((child, False))


def _indent_level(args: tuple[str, ...]) -> int:
    if len(args) != 1:
        raise ModifierError("invalid parameters")
    try:
        return max(int(args[0], 10), 0)
    except ValueError:
        raise ModifierError("invalid indentation level") from None


def indent(args: tuple[str, ...], value: Any) -> str:
    """AVP's indent: strips every line, drops empty lines, prefixes lines 2..n."""
    level = _indent_level(args)
    lines = _require_string(value).split("\n")
    out = lines[0].strip()
    if len(lines) > 1:
        out += "\n"
    for number, line in enumerate(lines[1:], start=1):
        if line:
            out += " " * level + line.strip()
            if number < len(lines) - 1:
                out += "\n"
    return out


def reindent(args: tuple[str, ...], value: Any) -> str:
    """Like indent, but keeps relative indentation and blank lines (AVP #633, #650)."""
    level = _indent_level(args)
    lines = _require_string(value).split("\n")
    body = [line for line in lines[1:] if line.strip()]
    common = min((len(line) - len(line.lstrip(" \t")) for line in body), default=0)
    out = [lines[0].strip()]
    for line in lines[1:]:
        out.append(" " * level + line[common:] if line.strip() else "")
    return "\n".join(out)


def sha256sum(args: tuple[str, ...], value: Any) -> str:
    _require_no_args(args)
    if not isinstance(value, str):
        raise ModifierError(f"invalid datatype {go_type_name(value)}, expected string")
    return hashlib.sha256(value.encode()).hexdigest()


def default(args: tuple[str, ...], value: Any) -> Any:
    """A present value passes through; the engine substitutes the text when it is missing."""
    return value


def go_number_text(number: int | float) -> str:
    """Render a number as Go prints a JSON number / float64 (`80`, `1.5`, `1e+21`)."""
    if isinstance(number, int):
        return str(number)
    if math.isnan(number) or math.isinf(number):
        raise ModifierError("unsupported number value (NaN or infinity)")
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        digits = exponent.lstrip("+-").rjust(2, "0")
        text = f"{mantissa.removesuffix('.0')}e{sign}{digits}"
    return text


REGISTRY: Mapping[str, ModifierFunction] = {
    "base64encode": base64encode,
    "base64decode": base64decode,
    "jsonPath": json_path,
    "jsonParse": json_parse,
    "yamlParse": yaml_parse,
    "indent": indent,
    "sha256sum": sha256sum,
    "reindent": reindent,
    DEFAULT: default,
}


def apply(name: str, args: tuple[str, ...], value: Any) -> Any:
    """Run one modifier; unknown names and failures raise `ModifierError`."""
    function = REGISTRY.get(name)
    if function is None:
        raise ModifierError(f"invalid modifier: {name}")
    try:
        return function(args, value)
    except ModifierError as exc:
        raise ModifierError(f"{name}: {exc}") from None
    except RecursionError:
        raise ModifierError(f"{name}: value nested too deeply") from None
