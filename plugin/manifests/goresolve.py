"""How Go's YAML reader types a scalar: go-yaml v2's resolve rules, written out in Python.

Argo CD reads the plugin's output with `sigs.k8s.io/yaml`, which types every plain scalar
with go-yaml v2 (`resolve.go` of gopkg.in/yaml.v2 v2.4.0, unchanged in the go.yaml.in/yaml/v2
fork that newer sigs.k8s.io/yaml releases use); Helm reads values files the same way. PyYAML
follows the YAML 1.1 type repository instead, and the two disagree: `y`, `n`, `0o17`, `1e3`,
`08`, `1_0.5` or a 20-digit integer change type in Go and not in PyYAML, while `=` and
`2024-01-01` do the opposite. The reader (`yamlio.Loader`) types scalars with `resolve`
below, and both writers quote any string for which `retyped` says a plain spelling would not
come back as that same string, so a value means the same thing to Argo CD as to the author.

The rules, in the order go-yaml v2 applies them to a plain (unquoted, untagged) scalar:
the first character picks a hint; `+ - 0-9 y Y n N t T f F o O ~ .` and the empty string
look the text up in a fixed table (booleans, nulls, `.nan`/`.inf`); signs and digits then
try a base-prefixed integer (underscores removed; `0x`, `0o`, `0b`, a leading `0` for octal),
an unsigned 64-bit integer, and a decimal float of the `yamlStyleFloat` shape that
`strconv.ParseFloat` accepts without overflowing; a leading `.` tries `ParseFloat` directly.
Anything else is a string. Timestamps are recognised by Go but decoded as their text when
the target is untyped (as in Argo CD), so they stay strings here too.
"""

from __future__ import annotations

import math
import re
from typing import Any

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
TIMESTAMP = "tag:yaml.org,2002:timestamp"
MERGE = "tag:yaml.org,2002:merge"
BINARY = "tag:yaml.org,2002:binary"

_TABLE: dict[str, tuple[str, Any]] = {}
for _words, _item in (
    (("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), (BOOL, True)),
    (("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), (BOOL, False)),
    (("", "~", "null", "Null", "NULL"), (NULL, None)),
    ((".nan", ".NaN", ".NAN"), (FLOAT, math.nan)),
    ((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), (FLOAT, math.inf)),
    (("-.inf", "-.Inf", "-.INF"), (FLOAT, -math.inf)),
):
    for _word in _words:
        _TABLE[_word] = _item

# First characters for which go-yaml v2 tries anything but a string ("hint" in resolve.go).
_SIGNS, _DIGITS, _TABLE_ONLY = frozenset("+-"), frozenset("0123456789"), frozenset("yYnNtTfFoO~")

# strconv.ParseInt(s, 0, 64) syntax, underscores already removed.
_GO_INT = re.compile(
    r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))"
)
# resolve.go's yamlStyleFloat.
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# strconv.ParseFloat of a text starting with `.`: digits, optional exponent; an underscore
# only between two digits.
_DOT_FLOAT = re.compile(r"\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?")
_BINARY_TAIL = re.compile(r"([-+]?)([01]+)")
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def resolve(text: str) -> tuple[str, Any]:
    """The tag and value go-yaml v2 gives the plain scalar `text` (decoded into `any`)."""
    if not text:
        return NULL, None
    first = text[0]
    if first in _SIGNS or first in _DIGITS or first in _TABLE_ONLY or first == ".":
        found = _TABLE.get(text)
        if found is not None:
            return found
    else:
        return STR, text
    if first == ".":
        if _DOT_FLOAT.fullmatch(text):
            number = float(text)
            if not math.isinf(number):  # ParseFloat fails with ErrRange: the text stays
                return FLOAT, number
    elif first not in _TABLE_ONLY:
        return _resolve_number(text)
    return STR, text


def _resolve_number(text: str) -> tuple[str, Any]:
    plain = text.replace("_", "")
    number = _go_int(plain)
    if number is not None:
        if _INT64_MIN <= number <= _INT64_MAX:
            return INT, number
        if number <= _UINT64_MAX and plain[0] not in _SIGNS:  # ParseUint: no sign allowed
            return INT, number
    if _YAML_STYLE_FLOAT.fullmatch(plain):
        value = float(plain)
        if not math.isinf(value):
            return FLOAT, value
    # resolve.go's own binary fallback, which lets a sign follow the prefix (`0b-1` is -1).
    binary = _BINARY_TAIL.fullmatch(plain[2:]) if plain.startswith("0b") else None
    if binary is not None:
        number = int(binary.group(2), 2)
        if binary.group(1) == "-":
            number = -number
        if _INT64_MIN <= number <= _INT64_MAX or (not binary.group(1) and number <= _UINT64_MAX):
            return INT, number
    elif plain.startswith("-0b") and re.fullmatch("[01]+", plain[3:]):
        number = -int(plain[3:], 2)
        if number >= _INT64_MIN:
            return INT, number
    return STR, text


def _go_int(plain: str) -> int | None:
    found = _GO_INT.fullmatch(plain)
    if found is None:
        return None
    sign, hexa, octal, binary, zero_octal, decimal = found.groups()
    if hexa is not None:
        magnitude = int(hexa, 16)
    elif octal is not None:
        magnitude = int(octal, 8)
    elif binary is not None:
        magnitude = int(binary, 2)
    elif zero_octal is not None:
        magnitude = int(zero_octal, 8)
    else:
        magnitude = int(decimal)
    return -magnitude if sign == "-" else magnitude


def resolve_tagged(tag: str, text: str) -> Any:
    """The value of a scalar with an explicit standard tag (`!!int "12"`), as Go decodes it.

    Raises ValueError with Go's wording when the text does not fit the tag.
    """
    if tag in (STR, TIMESTAMP):
        return text
    found, value = resolve(text)
    if found == tag:
        return value
    if tag == FLOAT and found == INT:
        return float(value)
    raise ValueError(f"cannot decode {_short(found)} `{text}` as a {_short(tag)}")


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:")


def retyped(text: str) -> bool:
    """True when Go would not read the plain scalar `text` back as this same string.

    `<<` counts too: as a key it means a merge.
    """
    return text == "<<" or resolve(text)[0] != STR
