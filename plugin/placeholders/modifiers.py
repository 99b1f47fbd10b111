"""Modifiers: pure functions applied left to right to a looked-up secret value (spec §2).

AVP's seven modifiers keep AVP's semantics and error texts, except where AVP
crashes (numbers given to `sha256sum`/`jsonPath`): those get a clean result or
a clean error. Two opt-in additions: `default <text>` (handled by the engine,
it only matters when a value is missing) and `reindent N`, an `indent` that
keeps relative indentation and blank lines.

`fingerprint` (a keyed HMAC for pod-template annotations, so pods roll when a secret
rotates) needs the operator's key, and `version` (the KV v2 version the placeholder was read
at) the provenance of the read: both arrive through an explicit `ModifierContext` that the
engine passes to `apply`, never through global state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from plugin.errors import JSONPathError, ModifierError

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


def go_bytes(text: str) -> bytes:
    """The bytes of a Go string: text from `base64decode` may hold any bytes.

    A Go string is a byte string, so AVP's `base64decode` output survives `base64encode` and
    `sha256sum` even when it is not UTF-8. Here such text carries each undecodable byte as a
    lone surrogate (Python's `surrogateescape`), which this turns back into the same bytes.
    """
    return text.encode("utf-8", "surrogateescape")


def go_text(text: str) -> str:
    """Text as Go's JSON/YAML output writes a Go string: each invalid byte becomes U+FFFD."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
    return decoded.decode("utf-8", "surrogateescape")


def base64encode(args: tuple[str, ...], value: Any) -> str:
    _require_no_args(args)
    return base64.b64encode(go_bytes(_require_string(value))).decode("ascii")


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
            # Go's json.Unmarshal into interface{}: every number is a float64 (1e+06).
            data = json.loads(value, parse_int=float)
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
    """AVP's `sigs.k8s.io/yaml.Unmarshal`: go-yaml v2 typing, then a trip through JSON.

    So numbers come out as float64, map keys as text (`true`, `1`), and `.nan` or `.inf`
    fail as they do in Go (JSON has no such numbers). PyYAML is imported here: only this
    modifier of the engine's needs it.
    """
    import yaml

    from plugin.manifests.yamlio import load_one

    _require_no_args(args)
    try:
        parsed = load_one(_require_string(value))
    except yaml.YAMLError as exc:
        # The parser's own text may quote the value; report only the position.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ModifierError(f"value is not valid YAML{where}") from None
    check_expansion(parsed)
    return _as_json_value(parsed)


def _as_json_value(data: Any) -> Any:
    """sigs.k8s.io/yaml's YAML-to-JSON conversion followed by json.Unmarshal into any."""
    converted: dict[int, Any] = {}

    def convert(node: Any) -> Any:
        if isinstance(node, dict | list):
            if id(node) in converted:  # aliases: convert each shared node once
                return converted[id(node)]
            if isinstance(node, list):
                out_list: list[Any] = []
                converted[id(node)] = out_list
                out_list.extend(convert(item) for item in node)
                return out_list
            out_map: dict[str, Any] = {}
            converted[id(node)] = out_map
            for key, item in node.items():
                out_map[_json_key(key)] = convert(item)
            return out_map
        if isinstance(node, bool) or node is None or isinstance(node, str):
            return node
        if isinstance(node, int | float):
            number = float(node)
            if math.isnan(number) or math.isinf(number):
                raise ModifierError(
                    "error converting YAML to JSON: json: unsupported value: "
                    + ("NaN" if math.isnan(number) else "+Inf" if number > 0 else "-Inf")
                )
            return number
        return str(node)

    return convert(data)


def _json_key(key: Any) -> str:
    """A map key as sigs.k8s.io/yaml writes it into JSON."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return _float32_text(key)
    raise ModifierError(f"error converting YAML to JSON: unsupported map key: {key!r}")


def _float32_text(number: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 32), with go-yaml's names for the special values."""
    if math.isnan(number):
        return ".nan"
    if math.isinf(number):
        return ".inf" if number > 0 else "-.inf"
    single = struct.unpack("f", struct.pack("f", number))[0] if abs(number) < 3.5e38 else number
    if math.isinf(single) or abs(number) >= 3.5e38:
        return ".inf" if number > 0 else "-.inf"
    for precision in range(1, 10):
        text = f"{single:.{precision - 1}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            break
    mantissa, exponent_text = text.split("e")
    exponent = int(exponent_text)
    digits = mantissa.replace(".", "").replace("-", "").rstrip("0") or "0"
    sign = "-" if single < 0 or (single == 0 and math.copysign(1, single) < 0) else ""
    if single == 0:
        return sign + "0"
    if exponent < -4 or exponent >= 6:  # strconv's 'g' with the shortest digits
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


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
    return hashlib.sha256(go_bytes(value)).hexdigest()


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


#: The operator's key of the `fingerprint` modifier (sidecar environment only).
FINGERPRINT_KEY_SETTING = "PLUGIN_FINGERPRINT_KEY"
#: A shorter key would make the published fingerprints guessable offline.
MIN_FINGERPRINT_KEY = 32
FINGERPRINT_PREFIX = "hmac-sha256:"
#: Hex digits kept (128 bits: collisions are out of reach, annotations stay short).
FINGERPRINT_HEX = 32


@dataclass(frozen=True)
class ModifierContext:
    """Run-wide inputs of the modifiers that need more than their arguments.

    `fingerprint_key` is None when no usable key is configured; `fingerprint_refusal` then
    says why (shown as the placeholder's error).
    """

    fingerprint_key: bytes | None = None
    fingerprint_refusal: str = f"{FINGERPRINT_KEY_SETTING} is not set in the sidecar"
    #: The version of the secret the placeholder was read at (`| version`): set by the
    #: substitution for that one placeholder; None when the read has no version.
    read_version: str | None = None
    #: Why there is no version (shown as the placeholder's error).
    read_version_refusal: str = "no secret version was read"


NO_CONTEXT = ModifierContext()


def fingerprint_context(environ: Mapping[str, str]) -> ModifierContext:
    """The context from the sidecar's own environment.

    Only the plain variable counts: an Application can only set `ARGOCD_ENV_*` variables, so
    it can never choose the key (which would turn the fingerprint into an unkeyed hash).
    """
    text = environ.get(FINGERPRINT_KEY_SETTING, "")
    if not text:
        return NO_CONTEXT
    if len(text.encode("utf-8")) < MIN_FINGERPRINT_KEY:
        return ModifierContext(
            None,
            f"{FINGERPRINT_KEY_SETTING} is shorter than {MIN_FINGERPRINT_KEY} bytes "
            "(use e.g. `openssl rand -hex 32`)",
        )
    return ModifierContext(text.encode("utf-8"))


def fingerprint(args: tuple[str, ...], value: Any, context: ModifierContext = NO_CONTEXT) -> str:
    """`hmac-sha256:` + the first 32 hex digits of HMAC-SHA256(key, value).

    Text is hashed as its UTF-8 bytes (so `printf %s "$VALUE" | openssl dgst -sha256 -hmac
    "$KEY"` gives the same digits); any other value as compact JSON with sorted keys.
    """
    _require_no_args(args)
    if context.fingerprint_key is None:
        raise ModifierError(f"refused: {context.fingerprint_refusal}")
    if isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    digest = hmac.new(context.fingerprint_key, data, hashlib.sha256).hexdigest()
    return FINGERPRINT_PREFIX + digest[:FINGERPRINT_HEX]


def version(args: tuple[str, ...], value: Any, context: ModifierContext = NO_CONTEXT) -> str:
    """The version number of the secret the placeholder was read from, as text (`"3"`).

    It replaces the value (which is never used, so it can be put where anyone can see it): a
    pod-template annotation that rolls the pods when a new KV v2 version is written, like
    `fingerprint` but without a key. KV v2 reads (and versioned secrets of the file backend)
    have a version; KV v1 and unversioned secrets do not, and that is an error, never a
    made-up "0": an annotation that never changes would silently never roll anything.
    """
    _require_no_args(args)
    if context.read_version is None:
        raise ModifierError(context.read_version_refusal)
    return context.read_version


#: Modifiers that take the run's `ModifierContext` as a third argument.
CONTEXTUAL: Mapping[str, Callable[[tuple[str, ...], Any, ModifierContext], Any]] = {
    "fingerprint": fingerprint,
    "version": version,
}

#: Modifiers that need the read's provenance in their context (`ModifierContext.read_version`).
NEEDS_READ_VERSION = frozenset({"version"})


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
    "fingerprint": fingerprint,
    "version": version,
}


def apply(
    name: str, args: tuple[str, ...], value: Any, context: ModifierContext = NO_CONTEXT
) -> Any:
    """Run one modifier; unknown names and failures raise `ModifierError`."""
    function = REGISTRY.get(name)
    if function is None:
        raise ModifierError(f"invalid modifier: {name}")
    contextual = CONTEXTUAL.get(name)
    try:
        if contextual is not None:
            return contextual(args, value, context)
        return function(args, value)
    except ModifierError as exc:
        raise ModifierError(f"{name}: {exc}") from None
    except RecursionError:
        raise ModifierError(f"{name}: value nested too deeply") from None
