"""Kubernetes JSONPath templates, evaluated the way ``kubectl -o jsonpath`` does.

argocd-vault-plugin's ``jsonPath`` modifier hands its argument to
k8s.io/client-go/util/jsonpath (v0.29) with ``AllowMissingKeys(false)``. Manifests written
for AVP depend on that dialect's exact output, quirks included, so this module follows
client-go's behaviour rather than any JSONPath standard:

* A template is literal text with ``{...}`` actions; ``{range EXPR}...{end}`` repeats the
  enclosed part once per result of EXPR, with that result as the new ``@``/``$``.
* Inside an action: ``.field`` (backslash escapes a terminator: ``.tls\\.crt``), ``..``
  recursive descent, ``*`` wildcards, ``[i]``/``[a:b:c]`` slices, ``['key']`` (re-read as
  ``.key``, so ``['a.b']`` is two fields), ``[x,y]`` unions, ``[?(left OP right)]`` and
  ``[?(path)]`` filters, quoted strings, numbers, ``true``/``false``; ``@``, ``$`` and
  spaces are skipped.
* Each action's results are printed separated by one space: strings raw, numbers and
  booleans as Go's ``fmt.Print`` shows them, maps and lists as ``json.Marshal`` output.

Deliberate deviations (each where client-go panics, corrupts its own state, or leaks data):
a ``range`` without ``end`` is a parse error; ``range``/``end`` inside a filter or union, or
two of them in one action, are parse errors; indexing the nil data root yields nothing;
"cannot be filtered" errors name the value's type, not the value; map iteration follows
the data's own key order instead of Go's random order; bytes that ``"\\x80"``-style escapes
leave invalid UTF-8 become U+FFFD.
"""

from __future__ import annotations

import base64
import datetime
import math
import re
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeAlias

from plugin.errors import JSONPathError

__all__ = ["Template", "execute", "parse"]

#: Deepest nesting of sub-expressions (filters, unions, bracket keys) and of ranges. The
#: parser and evaluator recurse once per level; the bound keeps them far from Python's stack
#: limit whatever the template.
MAX_NESTING: Final = 100
#: Evaluation work one execution may do (values produced, nodes visited by ``..``, range
#: iterations, values printed). Nested ranges over ``..`` grow as a power of the nesting, so
#: without a bound a short template could run for ever.
MAX_WORK: Final = 2_000_000
#: Characters one execution may print.
MAX_OUTPUT: Final = 16 * 1024 * 1024

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class _Text:
    """Literal text: outside actions, or a quoted string inside one."""

    text: str


@dataclass(frozen=True, slots=True)
class _Field:
    """``.name``: the value under key ``name`` of each map."""

    name: str


@dataclass(frozen=True, slots=True)
class _Wildcard:
    """``.*`` / ``[*]``-less wildcard: every member of each map, list or string."""


@dataclass(frozen=True, slots=True)
class _Recursive:
    """``..``: every non-empty container (and non-empty string), depth first."""


@dataclass(frozen=True, slots=True)
class _Slice:
    """``[start:end:step]``; ``None`` means "not written".

    ``[i]`` is stored as ``[i:i+1]`` with ``end_derived`` set, because client-go then turns
    an end of 0 (from ``[-1]``) into the list's length.
    """

    start: int | None
    end: int | None
    end_derived: bool
    step: int | None


@dataclass(frozen=True, slots=True)
class _Union:
    """``[a,b,...]``: the concatenated results of each branch."""

    branches: tuple[tuple[_Node, ...], ...]


@dataclass(frozen=True, slots=True)
class _Filter:
    """``[?(left OP right)]``, or ``[?(left)]`` with operator ``exists``."""

    left: tuple[_Node, ...]
    right: tuple[_Node, ...]
    operator: str


@dataclass(frozen=True, slots=True)
class _Literal:
    """A number or boolean written in the template (one copy per current value)."""

    value: int | float | bool


@dataclass(frozen=True, slots=True)
class _Identifier:
    """A bare word. Only ``range`` and ``end`` mean anything; others fail when evaluated."""

    name: str


@dataclass(frozen=True, slots=True)
class _Keyword:
    """A ``range`` or ``end`` already matched into a block: passes values on / yields none."""

    name: str


_Node: TypeAlias = (
    _Text | _Field | _Wildcard | _Recursive | _Slice | _Union | _Filter | _Literal | _Identifier
) | _Keyword


@dataclass(frozen=True, slots=True)
class _Action:
    """One ``{...}`` whose results are printed."""

    nodes: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _RangeBlock:
    """``{range expr}body{end}``; the ``end`` action is kept because it is evaluated too."""

    expr: tuple[_Node, ...]
    body: tuple[_Item, ...]
    closer: tuple[_Node, ...]


_Item: TypeAlias = _Text | _Action | _RangeBlock


class _NoValue:
    """Go's invalid ``reflect.Value``: what client-go holds when the data root is nil.

    It differs from a nil found *inside* the data: it prints as ``<no value>`` rather than
    ``null``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


_NO_VALUE: Final = _NoValue()


class _TooMuchWorkError(Exception):
    """The work budget of one execution is spent (never caught by the evaluator itself)."""


class _Budget(threading.local):
    left: int | None = None


_budget = _Budget()


def _charge(amount: int) -> None:
    left = _budget.left
    if left is None:
        return
    left -= amount
    _budget.left = left
    if left < 0:
        raise _TooMuchWorkError


class _EvalError(JSONPathError):
    """An evaluation failure, carrying the values client-go returns alongside its error.

    Those partial values matter in exactly one place: an existence filter ``[?(@.a[5])]``
    ignores the error and keeps the element when they are non-empty.
    """

    def __init__(self, message: str, partial: Sequence[object]) -> None:
        super().__init__(message)
        self.partial = partial


# --------------------------------------------------------------------------- parser

_TERMINATORS: Final = frozenset(" \t\r\n.,[]$@{}")
_DICT_KEY_RE: Final = re.compile(r"'([^']*)'")
_SLICE_RE: Final = re.compile(r"(-?[0-9]*)(:-?[0-9]*)?(:-?[0-9]*)?")
_FILTER_RE: Final = re.compile(r"([^!<>=]+)([!<>=]+)(.+?)")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_SIMPLE_ESCAPES: Final = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def _is_digit(char: str) -> bool:
    """Go's ``unicode.IsDigit``: any decimal digit, not only ASCII."""
    return unicodedata.category(char) == "Nd"


def _is_alphanumeric(char: str) -> bool:
    """client-go's ``isAlphaNumeric``: underscore, letter or decimal digit."""
    return char == "_" or unicodedata.category(char)[0] == "L" or _is_digit(char)


def _go_char(char: str) -> str:
    """Format like Go's ``%#U``: ``U+0021 '!'``, the quoted form only if printable."""
    printable = char == " " or unicodedata.category(char)[0] in "LMNPS"
    return f"U+{ord(char):04X}" + (f" '{char}'" if printable else "")


def _parse_int64(text: str) -> int | None:
    """Go's ``strconv.Atoi`` on a 64-bit platform: ASCII digits, optional sign, in range."""
    if not _INT_RE.fullmatch(text) or len(text.lstrip("+-").lstrip("0")) > 19:
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _unquote(quoted: str) -> str:
    """client-go's ``UnquoteExtend``: Go string-literal escapes, for either quote character.

    Escapes that produce single bytes (``\\xNN``, octal) are assembled as bytes, as Go does;
    bytes that do not form UTF-8 become U+FFFD since a Python ``str`` cannot hold them.
    """
    quote, body = quoted[0], quoted[1:-1]
    if "\\" not in body and quote not in body:
        return body
    error = JSONPathError(f"unquote string {quoted} error invalid syntax")
    out = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char == quote:
            raise error
        if char != "\\":
            out += char.encode("utf-8", "surrogatepass")
            index += 1
            continue
        if index + 1 >= len(body):
            raise error
        escape = body[index + 1]
        index += 2
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
        elif escape in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[escape]
            digits = body[index : index + width]
            if len(digits) < width or not set(digits) <= _HEX_DIGITS:
                raise error
            code = int(digits, 16)
            index += width
            if escape == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise error
            else:
                out += chr(code).encode("utf-8")
        elif escape in "01234567":
            digits = body[index : index + 2]
            if len(digits) < 2 or not set(digits) <= set("01234567"):
                raise error
            code = int(escape + digits, 8)
            index += 2
            if code > 255:
                raise error
            out.append(code)
        elif escape == quote:
            out.append(ord(quote))
        else:
            raise error
    return out.decode("utf-8", "replace")


def _check_no_keywords(nodes: Sequence[_Node]) -> None:
    """Refuse ``range``/``end`` inside a filter or union: client-go corrupts its loop state."""
    for node in nodes:
        if isinstance(node, _Identifier) and node.name in ("range", "end"):
            raise JSONPathError(f"{node.name} cannot be used inside a filter or union")


class _Parser:
    """client-go's scanner, made iterative: one instance per template or sub-expression.

    client-go parses filters, unions and bracket keys by wrapping their text in braces and
    parsing it as a whole new template, keeping its first action; so does this parser, which
    is what makes text after a stray ``}`` inside brackets ignored exactly as there.
    """

    def __init__(self, text: str, depth: int) -> None:
        if depth > MAX_NESTING:
            raise JSONPathError("template nested too deeply")
        self.text = text
        self.pos = 0
        self.depth = depth

    def parse(self) -> list[_Text | list[_Node]]:
        """Split the template into literal text and the node lists of its actions."""
        items: list[_Text | list[_Node]] = []
        text = self.text
        while True:
            brace = text.find("{", self.pos)
            if brace < 0:
                if self.pos < len(text):
                    items.append(_Text(text[self.pos :]))
                return items
            if brace > self.pos:
                items.append(_Text(text[self.pos : brace]))
            self.pos = brace + 1
            nodes: list[_Node] = []
            self._parse_action(nodes)
            items.append(nodes)

    def _fragment(self, text: str) -> list[_Node]:
        """Parse ``{text}`` as a template of its own and return its first action."""
        first = _Parser("{" + text + "}", self.depth + 1).parse()[0]
        if not isinstance(first, list):  # pragma: no cover - text starts with "{"
            raise JSONPathError("invalid sub-expression")
        return first

    def _parse_action(self, cur: list[_Node]) -> None:
        text = self.text
        while True:
            if text.startswith("}", self.pos):
                self.pos += 1
                return
            if text.startswith("[?(", self.pos):
                self._parse_filter(cur)
                continue
            if text.startswith("..", self.pos):
                self._parse_recursive(cur)
                continue
            if self.pos >= len(text) or text[self.pos] in "\r\n":
                raise JSONPathError("unclosed action")
            char = text[self.pos]
            self.pos += 1
            if char in " @$":
                continue
            if char == "[":
                self._parse_array(cur)
            elif char in "\"'":
                self._parse_quote(cur, char)
            elif char == ".":
                self._parse_field(cur)
            elif char in "+-" or _is_digit(char):
                self.pos -= 1
                self._parse_number(cur)
            elif _is_alphanumeric(char):
                self.pos -= 1
                self._parse_identifier(cur)
            else:
                raise JSONPathError(f"unrecognized character in action: {_go_char(char)}")

    def _parse_field(self, cur: list[_Node]) -> None:
        """A name runs to the next unescaped terminator; every backslash is then dropped."""
        text = self.text
        start = self.pos
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\":
                self.pos = min(self.pos + 2, len(text))
            elif char in _TERMINATORS:
                break
            else:
                self.pos += 1
        name = text[start : self.pos]
        cur.append(_Wildcard() if name == "*" else _Field(name.replace("\\", "")))

    def _parse_recursive(self, cur: list[_Node]) -> None:
        if cur and isinstance(cur[-1], _Recursive):
            raise JSONPathError("invalid multiple recursive descent")
        self.pos += 2
        cur.append(_Recursive())
        if self.pos < len(self.text) and _is_alphanumeric(self.text[self.pos]):
            self._parse_field(cur)

    def _parse_identifier(self, cur: list[_Node]) -> None:
        text = self.text
        start = self.pos
        while self.pos < len(text) and text[self.pos] not in _TERMINATORS:
            self.pos += 1
        word = text[start : self.pos]
        cur.append(_Literal(word == "true") if word in ("true", "false") else _Identifier(word))

    def _parse_number(self, cur: list[_Node]) -> None:
        text = self.text
        start = self.pos
        if text[self.pos] in "+-":
            self.pos += 1
        while self.pos < len(text) and (text[self.pos] == "." or _is_digit(text[self.pos])):
            self.pos += 1
        word = text[start : self.pos]
        integer = _parse_int64(word)
        if integer is not None:
            cur.append(_Literal(integer))
            return
        if _FLOAT_RE.fullmatch(word):
            number = float(word)
            if not math.isinf(number):
                cur.append(_Literal(number))
                return
        raise JSONPathError(f"cannot parse number {word}")

    def _parse_quote(self, cur: list[_Node], quote: str) -> None:
        """A quoted string ends at the first quote not directly after a backslash."""
        text = self.text
        start = self.pos - 1
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise JSONPathError("unterminated quoted string")
            self.pos += 1
            if text[self.pos - 1] == quote and text[self.pos - 2] != "\\":
                break
        cur.append(_Text(_unquote(text[start : self.pos])))

    def _parse_array(self, cur: list[_Node]) -> None:
        """``[...]`` up to the first ``]``: a union, a quoted key or a slice."""
        text = self.text
        start = self.pos
        end = text.find("]", start)
        newline = text.find("\n", start)
        if end < 0 or 0 <= newline < end:
            raise JSONPathError("unterminated array")
        self.pos = end + 1
        inner = text[start:end]
        if inner == "*":
            inner = ":"
        parts = inner.split(",")
        if len(parts) > 1:
            branches = []
            for part in parts:
                branch = self._fragment("[" + part.strip(" ") + "]")
                _check_no_keywords(branch)
                branches.append(tuple(branch))
            cur.append(_Union(tuple(branches)))
            return
        key = _DICT_KEY_RE.fullmatch(inner)
        if key is not None:
            cur.extend(self._fragment("." + key.group(1)))
            return
        cur.append(self._slice(inner))

    @staticmethod
    def _slice(inner: str) -> _Slice:
        match = _SLICE_RE.fullmatch(inner)
        if match is None:
            raise JSONPathError(f"invalid array index {inner}")
        first, second, third = (group or "" for group in match.groups())
        values: list[int | None] = []
        for position, group in enumerate((first, second, third)):
            digits = group[1:] if position else group
            if not digits:
                values.append(None)
                continue
            number = _parse_int64(digits)
            if number is None:
                raise JSONPathError(f"array index {digits} is not a number")
            values.append(number)
        start, end, step = values
        if not second:  # "[i]" selects i:i+1
            return _Slice(start, (start or 0) + 1, True, step)
        return _Slice(start, end, False, step)

    def _parse_filter(self, cur: list[_Node]) -> None:
        """``[?(...)]``: ``)`` closes it unless a quoted string is still open."""
        text = self.text
        self.pos += 3
        start = self.pos
        opened = closed = False
        pair = ""
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise JSONPathError("unterminated filter")
            char = text[self.pos]
            self.pos += 1
            if char in "\"'":
                if not opened:
                    opened, pair = True, char
                elif char == pair and text[self.pos - 2] != "\\":
                    closed = True
            elif char == ")" and opened == closed:
                break
        if not text.startswith("]", self.pos):
            raise JSONPathError("unclosed array expect ]")
        self.pos += 1
        condition = text[start : self.pos - 2]
        match = _FILTER_RE.fullmatch(condition)
        if match is None:
            left = self._fragment(condition)
            _check_no_keywords(left)
            cur.append(_Filter(tuple(left), (), "exists"))
            return
        left = self._fragment(match.group(1))
        right = self._fragment(match.group(3))
        _check_no_keywords(left)
        _check_no_keywords(right)
        cur.append(_Filter(tuple(left), tuple(right), match.group(2)))


@dataclass
class _OpenRange:
    expr: tuple[_Node, ...]
    body: list[_Item]


def _build_blocks(raw: list[_Text | list[_Node]]) -> tuple[_Item, ...]:
    """Match ``range`` and ``end`` actions into nested blocks.

    client-go tracks ranges with counters while executing; a tree is easier to reason about
    and gives the same output for every template whose ranges are closed.
    """
    top: list[_Item] = []
    open_ranges: list[_OpenRange] = []
    for entry in raw:
        items = open_ranges[-1].body if open_ranges else top
        if isinstance(entry, _Text):
            items.append(entry)
            continue
        keywords = [n for n in entry if isinstance(n, _Identifier) and n.name in ("range", "end")]
        if len(keywords) > 1:
            raise JSONPathError("an action may hold only one range or end")
        if not keywords:
            items.append(_Action(tuple(entry)))
            continue
        name = keywords[0].name
        nodes = tuple(_Keyword(name) if n is keywords[0] else n for n in entry)
        if name == "range":
            if len(open_ranges) >= MAX_NESTING:
                raise JSONPathError("template nested too deeply")
            open_ranges.append(_OpenRange(nodes, []))
        elif open_ranges:
            block = open_ranges.pop()
            parent = open_ranges[-1].body if open_ranges else top
            parent.append(_RangeBlock(block.expr, tuple(block.body), nodes))
        else:  # a stray end fails when reached, as in client-go
            items.append(_Action(tuple(entry)))
    if open_ranges:
        raise JSONPathError("unclosed range")
    return tuple(top)


# --------------------------------------------------------------------------- evaluator

_SEQUENCES: Final = (list, tuple, bytes, bytearray)


def _go_type(value: object) -> str:
    """The Go type client-go would name in an error for a value decoded from JSON/YAML."""
    if value is _NO_VALUE:
        return "<invalid reflect.Value>"
    if value is None:
        return "<nil>"
    for kind, name in (
        (bool, "bool"),
        (int, "int64"),
        (float, "float64"),
        (str, "string"),
        (dict, "map[string]interface {}"),
        ((bytes, bytearray), "[]uint8"),
        ((list, tuple), "[]interface {}"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _eval_list(nodes: Sequence[_Node], values: list[object]) -> list[object]:
    for node in nodes:
        _charge(1 + len(values))
        values = _eval_node(node, values)
    return values


def _eval_node(node: _Node, values: list[object]) -> list[object]:
    match node:
        case _Text(text):
            return [text]
        case _Field(name):
            results = [v[name] for v in values if isinstance(v, dict) and name in v]
            if values and not results:
                raise _EvalError(f"{name} is not found", [])
            return results
        case _Slice():
            return _eval_slice(node, values)
        case _Union(branches):
            results = []
            for branch in branches:
                try:
                    results.extend(_eval_list(branch, values))
                except _EvalError as error:
                    raise _EvalError(str(error), values) from None
            return results
        case _Filter():
            return _eval_filter(node, values)
        case _Wildcard():
            return [child for value in values for child in _members(value)]
        case _Recursive():
            return _descend(values)
        case _Literal(value):
            return [value] * len(values)
        case _Keyword(name):
            return values if name == "range" else []
        case _Identifier(name):
            if name == "end":
                raise _EvalError("not in range, nothing to end", [])
            raise _EvalError(f"unrecognized identifier {name}", values)


def _members(value: object) -> list[object]:
    """What ``*`` yields: map values, list items, or a string's UTF-8 bytes (as Go does)."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, _SEQUENCES):
        return list(value)
    if isinstance(value, str):
        return list(value.encode("utf-8", "surrogatepass"))
    return []


def _descend(values: list[object]) -> list[object]:
    """``..``: each value with members, then its descendants (pre-order, iterative)."""
    results: list[object] = []
    stack: list[Iterator[object]] = [iter(values)]
    while stack:
        for value in stack[-1]:
            _charge(1)
            if isinstance(value, dict | list | tuple):
                if value:
                    results.append(value)
                    stack.append(iter(value.values() if isinstance(value, dict) else value))
                    break
            elif isinstance(value, str | bytes | bytearray) and value:
                results.append(value)  # its members are bytes, which have none
        else:
            stack.pop()
    return results


def _eval_slice(node: _Slice, values: list[object]) -> list[object]:
    results: list[object] = []
    for value in values:
        if value is None or value is _NO_VALUE:
            continue
        if not isinstance(value, _SEQUENCES):
            raise _EvalError(f"{_go_type(value)} is not array or slice", values)
        length = len(value)
        start = node.start or 0
        if start < 0:
            start += length
        end = length if node.end is None else node.end
        if end < 0 or (end == 0 and node.end_derived):
            end += length
        if start == end:  # client-go stops at the first empty selection
            return results
        if not 0 <= start < length:
            raise _EvalError(f"array index out of bounds: index {start}, length {length}", values)
        if not 0 <= end <= length:
            message = f"array index out of bounds: index {end - 1}, length {length}"
            raise _EvalError(message, values)
        if start > end:
            message = f"starting index {start} is greater than ending index {end}"
            raise _EvalError(message, values)
        if node.step is not None and node.step <= 0:
            raise _EvalError("step must be > 0", values)
        results.extend(value[start : end : node.step or 1])
    return results


def _eval_filter(node: _Filter, values: list[object]) -> list[object]:
    results: list[object] = []
    for value in values:
        if not isinstance(value, _SEQUENCES):
            message = f"{_go_type(value)} is not array or slice and cannot be filtered"
            raise _EvalError(message, values)
        for element in value:
            try:
                lefts, failure = _eval_list(node.left, [element]), None
            except _EvalError as error:
                lefts, failure = list(error.partial), error
            if node.operator == "exists":
                if lefts:
                    results.append(element)
                continue
            if failure is not None:
                raise _EvalError(str(failure), values)
            if not lefts:
                continue
            if len(lefts) > 1:
                raise _EvalError("can only compare one element at a time", values)
            try:
                rights = _eval_list(node.right, [element])
            except _EvalError as error:
                raise _EvalError(str(error), values) from None
            if not rights:
                continue
            if len(rights) > 1:
                raise _EvalError("can only compare one element at a time", values)
            try:
                passed = _compare(node.operator, lefts[0], rights[0])
            except _EvalError as error:
                raise _EvalError(str(error), results) from None
            if passed:
                results.append(element)
    return results


def _kind(value: object) -> str:
    """The comparison class of Go's text/template ``basicKind``; '' if not comparable."""
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    return ""


def _comparable(left: object, right: object) -> str:
    left_kind, right_kind = _kind(left), _kind(right)
    if not left_kind or not right_kind:
        raise _EvalError("invalid type for comparison", [])
    if left_kind != right_kind:
        raise _EvalError("incompatible types for comparison", [])
    return left_kind


def _less(left: object, right: object) -> bool:
    kind = _comparable(left, right)
    if isinstance(left, str) and isinstance(right, str):
        return left < right
    if kind != "bool" and isinstance(left, int | float) and isinstance(right, int | float):
        return left < right
    raise _EvalError("invalid type for comparison", [])


def _compare(operator: str, left: object, right: object) -> bool:
    """client-go's filter operators, with text/template's typing (no int/float mixing)."""
    if operator == "==":
        _comparable(left, right)
        return left == right
    if operator == "!=":
        _comparable(left, right)
        return left != right
    if operator == "<":
        return _less(left, right)
    if operator == ">=":
        return not _less(left, right)
    if operator in ("<=", ">"):  # Go derives both from "<" and "==", so NaN > x holds
        less_or_equal = _less(left, right) or left == right
        return less_or_equal if operator == "<=" else not less_or_equal
    raise _EvalError(f"unrecognized filter operator {operator}", [])


def _run(items: Sequence[_Item], root: object, groups: list[list[object]]) -> None:
    """Evaluate items against one root, appending each action's results to ``groups``."""
    for item in items:
        if isinstance(item, _Text):
            groups.append([item.text])
        elif isinstance(item, _Action):
            groups.append(_eval_list(item.nodes, [root]))
        else:
            values = _eval_list(item.expr, [root])
            if not values:
                # client-go still walks the body once, against nil, to find its end: errors
                # raised there (e.g. "name is not found") are reported, output is dropped.
                _run(item.body, _NO_VALUE, [])
                _eval_list(item.closer, [_NO_VALUE])
            for value in values:
                _charge(1)
                element = _NO_VALUE if value is None else value
                _run(item.body, element, groups)
                _eval_list(item.closer, [element])


# --------------------------------------------------------------------------- printing

_JSON_ESCAPE_RE: Final = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')
_JSON_SHORT_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_EXPONENT_RE: Final = re.compile(r"e-0(\d)$")


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of finite, non-zero ``|value|`` and the decimal point.

    ``|value| == 0.DIGITS * 10**point``. Python's ``repr`` and Go's ``strconv`` both choose
    the shortest digit string that reads back as the same float, so the digits agree.
    """
    _, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - finite values only
        raise JSONPathError("cannot format number")
    text = "".join(map(str, digits))
    return text.rstrip("0"), len(text) + exponent


def _exponent_form(digits: str, point: int) -> str:
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _plain_form(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _go_float(value: float) -> str:
    """Go's ``fmt.Print`` of a float64 (``%g``, shortest): 80, 0.5, 1e+06, 1.5e-07."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits, point = _shortest_digits(value)
    exponent = point - 1
    if exponent < -4 or exponent >= 6:  # strconv uses precision 6 for this when shortest
        return sign + _exponent_form(digits, point)
    return sign + _plain_form(digits, point)


def _json_float(value: float) -> str:
    """``encoding/json``'s float64: plain below 1e21, exponent form with ``e-7`` not ``e-07``."""
    if math.isnan(value) or math.isinf(value):
        raise JSONPathError(f"json: unsupported value: {_go_float(value)}")
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits, point = _shortest_digits(value)
    if 1e-6 <= abs(value) < 1e21:
        return sign + _plain_form(digits, point)
    return sign + _JSON_EXPONENT_RE.sub(r"e-\1", _exponent_form(digits, point))


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _JSON_SHORT_ESCAPES:
        return _JSON_SHORT_ESCAPES[char]
    if "\ud800" <= char <= "\udfff":  # Go replaces invalid UTF-8 with U+FFFD
        return "\\ufffd"
    return f"\\u{ord(char):04x}"


def _json_string(text: str) -> str:
    """Go's JSON string: HTML-safe (``<>&`` escaped), U+2028/2029 escaped, UTF-8 kept."""
    return '"' + _JSON_ESCAPE_RE.sub(_json_escape, text) + '"'


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond sys.get_int_max_str_digits(); Go has no such integers
        raise JSONPathError("integer too large to print") from None


def _safe_str(value: object) -> str:
    """Text for values a JSON/YAML decoder does not normally produce (dates and the like)."""
    if isinstance(value, datetime.date):
        return value.isoformat()
    try:
        return str(value)
    except Exception:  # an exotic object must not escape as a non-JSONPathError
        return f"<{type(value).__name__}>"


def _json_scalar(value: object) -> str:
    if value is None or value is _NO_VALUE:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, bytes | bytearray):  # Go marshals []byte as base64
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    return _json_string(_safe_str(value))


def _key_text(key: object) -> str:
    """Map keys as text; YAML may give non-string keys, which YAML-to-JSON stringifies."""
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    return _text(key)


class _Raw(str):
    """Already-encoded JSON punctuation waiting on the encoder's work stack."""

    __slots__ = ()


def _to_json(value: object) -> str:
    """``json.Marshal`` compact output with sorted keys, without recursion (any depth)."""
    out: list[str] = []
    work: list[object] = [value]
    while work:
        _charge(1)
        item = work.pop()
        if isinstance(item, _Raw):
            out.append(item)
        elif isinstance(item, dict):
            pairs = sorted(((_key_text(k), v) for k, v in item.items()), key=lambda kv: kv[0])
            out.append("{")
            work.append(_Raw("}"))
            for index in range(len(pairs) - 1, -1, -1):
                key, member = pairs[index]
                work.append(member)
                work.append(_Raw(("," if index else "") + _json_string(key) + ":"))
        elif isinstance(item, list | tuple):
            out.append("[")
            work.append(_Raw("]"))
            for index in range(len(item) - 1, -1, -1):
                work.append(item[index])
                if index:
                    work.append(_Raw(","))
        else:
            out.append(_json_scalar(item))
    return "".join(out)


def _text(value: object) -> str:
    """client-go's ``PrintResults`` for one value: containers as JSON, the rest via fmt."""
    if value is _NO_VALUE:
        return "<no value>"
    if value is None:  # evalToText prints a nil interface as `null`
        return "null"
    if isinstance(value, dict | list | tuple | bytes | bytearray):
        return _to_json(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    return _safe_str(value)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Template:
    """A parsed template; immutable, so one parse can serve many executions."""

    source: str
    _items: tuple[_Item, ...]

    def execute(self, data: object) -> str:
        """Evaluate against decoded JSON/YAML data and return the printed output.

        Everything is evaluated before anything is printed, as in client-go, so an
        evaluation error wins over a printing error (such as NaN inside a map).
        """
        groups: list[list[object]] = []
        outer = _budget.left
        _budget.left = MAX_WORK
        try:
            _run(self._items, _NO_VALUE if data is None else data, groups)
            return _print(groups)
        except _EvalError as error:
            raise JSONPathError(str(error)) from None
        except RecursionError:
            raise JSONPathError("template or data nested too deeply") from None
        except _TooMuchWorkError:
            raise JSONPathError(
                f"the expression does too much work (more than {MAX_WORK} steps); refused"
            ) from None
        finally:
            _budget.left = outer


def _print(groups: list[list[object]]) -> str:
    """The printed results, at most `MAX_OUTPUT` characters."""
    pieces: list[str] = []
    size = 0
    for group in groups:
        for position, value in enumerate(group):
            _charge(1)
            text = _text(value) if position == 0 else " " + _text(value)
            size += len(text)
            if size > MAX_OUTPUT:
                raise JSONPathError(f"the output is larger than {MAX_OUTPUT} characters; refused")
            pieces.append(text)
    return "".join(pieces)


def parse(template: str) -> Template:
    """Parse a template; raises `JSONPathError` on syntax errors."""
    if not isinstance(template, str):
        raise JSONPathError("template must be a string")
    try:
        return Template(template, _build_blocks(_Parser(template, 0).parse()))
    except RecursionError:
        raise JSONPathError("template nested too deeply") from None


def execute(template: str, data: object) -> str:
    """Parse and execute in one step."""
    return parse(template).execute(data)
