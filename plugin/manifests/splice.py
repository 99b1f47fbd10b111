"""Replacing a few scalars of a YAML document inside the document's own text.

Most documents that hold placeholders are block YAML whose placeholders are scalar values
(`password: <path:kv/data/app#password>`). Constructing such a document as Python objects and
writing it out again costs most of a large render's time, and loses its comments and layout.
`scan_many` reads documents with libyaml's parser events only (no Python object is built for
the document), or, for documents of the simple form of one `key: value` per line, from their
lines (`scan_simple`), and reports every value scalar that holds a `<`, with the exact span of
text it occupies; `splice` writes new values into those spans, each as one line of YAML that
go-yaml v2 (Argo CD's reader) reads back as that value. Everything else stays byte for byte,
so Go reads it exactly as it read the input.

PyYAML is imported when a document is scanned or a value written, not with the module (a
render whose documents are all copied through never loads it).

`scan_many` gives None for a document outside the subset where one scalar can be replaced on
its own and the rest of the text keeps its meaning: aliases, anchors, explicit tags,
directives, a root that is not a mapping, keys that go-yaml v2 does not read as text (`1:`,
`y:`, `~:`, merge keys `<<`, collections used as keys), duplicate keys, nesting deeper than
the structural reader accepts, or text libyaml refuses. The caller then constructs the
document as before (and reports any error from there).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from plugin.manifests import goresolve

#: Deeper documents go to the structural reader, which reports what Python's recursion
#: limit allows (the event walk itself is not recursive).
MAX_DEPTH = 100

BLOCK_STYLES = frozenset("|>")


class Scalar(NamedTuple):
    """A value scalar of a document (never a key), where its text lies and how it is written."""

    #: Keys (text) and sequence indexes from the root to the scalar.
    path: tuple[str | int, ...]
    #: The scalar's value as libyaml read it (quotes, escapes and folding applied).
    value: str
    #: Its span in the document's text: quotes included, any comment after it excluded.
    start: int
    end: int
    #: "" plain, "'" or '"' quoted, "|" or ">" block.
    style: str
    #: Inside a flow collection (`{...}`, `[...]`).
    flow: bool


@dataclass(frozen=True)
class Scan:
    """What a document's parser events say: enough to plan it without constructing it."""

    #: The top-level `kind` when Go reads it as text, else None.
    kind: str | None
    #: `metadata.name` when Go reads it as text, else None.
    name: str | None
    #: The keys of `metadata.annotations`, in order.
    annotation_keys: tuple[str, ...]
    #: Every value scalar holding a `<`, in document order.
    scalars: tuple[Scalar, ...]


#: What separates two documents of a batch, after the first one's own last line break.
BATCH_SEPARATOR = "---\n"


def join_batch(texts: Sequence[str]) -> str | None:
    """The documents as one stream that libyaml reads as exactly these documents (the
    structural reader's batches, `reader.parse_many`, and the scan's), or None when that
    cannot be done by joining them.

    Nothing may be added to a document's text: an empty line added after it, or a line break
    added at its end, would be read by a keep-chomped block scalar (`|+`) at its end as part
    of its value ("x\n\n" for "x\n", "y\n" for "y" at the end of the stream); Go reading
    the original stream never sees them. So the separator follows each text's own last line
    break, and a text without one can only come last (else: None, and the caller reads each
    document on its own).
    """
    if any(not text.endswith("\n") for text in texts[:-1]):
        return None
    return BATCH_SEPARATOR.join(texts)


@functools.cache
def _libyaml_parser() -> type[Any] | None:
    """libyaml's parser, None when PyYAML was built without libyaml."""
    import yaml

    return getattr(getattr(yaml, "cyaml", None), "CParser", None)


def available() -> bool:
    """libyaml's parser is needed: the pure-Python one would cost more than it saves."""
    return _libyaml_parser() is not None


def scan_many(texts: Sequence[str]) -> list[Scan | None]:
    """One `Scan` (or None, see the module) per document text.

    Documents of the simple form `scan_simple` reads are scanned there; the others with one
    libyaml run, joined as `reader.parse_many` joins them, so that each is read exactly as
    the structural reader reads it. When that run fails or finds another number of
    documents, every answer is None (the whole batch is constructed, as it always was).
    """
    parser_class = _libyaml_parser()
    if not texts or parser_class is None or join_batch(texts) is None:
        return [None] * len(texts)
    shapes: dict[str, _Shape | None] = {}
    simple = [scan_simple(text, shapes) for text in texts]
    rest = [text for text, scan in zip(texts, simple, strict=True) if scan is None]
    if not rest:
        return list(simple)
    scans = _scan_libyaml(parser_class, rest)
    if scans is None:
        return [None] * len(texts)
    read = iter(scans)
    return [scan if scan is not None else next(read) for scan in simple]


def _scan_libyaml(parser_class: type[Any], texts: list[str]) -> list[Scan | None] | None:
    """`scan_many` by libyaml's events; None when the run fails or is misaligned."""
    import yaml

    stream = join_batch(texts)
    if stream is None:
        return None
    offsets: list[int] = []
    position = 0
    for text in texts:
        offsets.append(position)
        position += len(text) + len(BATCH_SEPARATOR)
    limits = [offset + len(text) for offset, text in zip(offsets, texts, strict=True)]
    parser = parser_class(stream)
    try:
        scans = _walk(parser, offsets, limits)
    except (yaml.YAMLError, RecursionError, IndexError, _MisalignedError):
        return None
    finally:
        parser.dispose()
    return scans if len(scans) == len(texts) else None


# ---------------------------------------------------------------- the simple form

#: A line's value as the simple form allows it, from the `: ` after its key to the end of
#: the line, in printable ASCII: plain (not starting with an indicator, or the reserved `@`
#: and `` ` ``; no `:` before a blank or the end, where libyaml would read a key or refuse
#: it; no ` #`, a comment; not ending with a space), or quoted on the line without anything
#: to decode (`"..."` without `"` or `\`, `'...'` without `'`). Non-ASCII text is ruled out
#: first.
#: (Possessive repeats: a value ends at the end of its line, so giving characters back could
#: never let the match succeed; they only cost time.)
_VALUE = re.compile(
    r": (?:\"[ !#-\[\]-~]*+\"|'[ -&(-~]*+'"
    r"|[^\x00-\x20\x7f\-?:,\[\]{}#&*!|>'\"%@`](?:[!-9;-~]++|:(?=[!-~])| (?!#))*+(?<! ))"
    r"(?=\n|\Z)"
)
#: Full-line comments before the root mapping (Helm's `# Source: chart/templates/x.yaml`).
_LEADING_COMMENTS = re.compile(r"(?:#[ -~]*\n)*")
#: What replaces each value: the text that is left is the document's shape. Not ASCII, so
#: it cannot come from the text itself; a value the form does not allow is left in place,
#: and the shape's line then fails `_SHAPE_LINE`.
_VALUE_MARK = ":\u00a7"
#: One line of a shape: indentation, a key of name characters, `:` and the mark when a
#: value followed. Keys stay far below the 1024 characters libyaml allows an implicit key.
_SHAPE_LINE = re.compile("( *)([A-Za-z0-9_][A-Za-z0-9_./-]{0,999}):(\u00a7?)")
#: Longer shapes are left to libyaml (the shapes of one batch are kept while it is scanned).
_MAX_SHAPE = 16384
_QUOTES = "\"'"


class _Shape(NamedTuple):
    """What a document of the simple form is, apart from its values."""

    #: Per line: the path of the line's value and the column where the value starts, or
    #: None for a `key:` line (a nested mapping or null follows).
    lines: tuple[tuple[tuple[str, ...], int] | None, ...]
    #: The lines of the top-level `kind` and of `metadata.name` when they hold a value.
    kind_line: int | None
    name_line: int | None
    annotation_keys: tuple[str, ...]


def scan_simple(text: str, shapes: dict[str, _Shape | None] | None = None) -> Scan | None:
    """The `Scan` libyaml's events give for a document of the simple form, read without
    libyaml; None for any other document (libyaml then reads it).

    The simple form is the usual shape of a rendered ConfigMap or Secret-free object header,
    as Helm writes it: full-line comments at column 0 first (`# Source: …`), then only block
    mappings, each line `key:` or `key: value` (one space), keys made of letters, digits and
    `_./-`, values printable ASCII on their line, plain (that no line could continue) or
    quoted without escapes (see `_VALUE`), nesting by indentation, the root at column 0; no
    blank line, other comment, tab, sequence, flow collection or document marker. Every
    such text is valid YAML whose events follow from its lines alone. Many documents of a
    render share a shape (the same keys at the same places): `shapes` keeps each shape's
    reading, so a document costs a few regular-expression passes. The equivalence with the
    event walk is tested against libyaml on random documents (tests/manifests/test_splice.py).
    """
    if not text.isascii():
        return None
    comments = _LEADING_COMMENTS.match(text)
    head = comments.end() if comments is not None else 0
    body = text[head:] if head else text
    skeleton = _VALUE.sub(_VALUE_MARK, body)
    if len(skeleton) > _MAX_SHAPE:
        return None
    if shapes is None:
        shapes = {}
    if skeleton in shapes:
        shape = shapes[skeleton]
    else:
        shape = shapes[skeleton] = _read_shape(skeleton)
    if shape is None:
        return None
    kind = name = None
    if shape.kind_line is not None or shape.name_line is not None:
        lines = body.split("\n")
        kind = _line_value(shape, lines, shape.kind_line)
        name = _line_value(shape, lines, shape.name_line)
    scalars: list[Scalar] = []
    at = body.find("<")
    line = counted = 0
    while at != -1:
        line_start = body.rfind("\n", 0, at) + 1
        line_end = body.find("\n", at)
        if line_end == -1:
            line_end = len(body)
        line += body.count("\n", counted, line_start)
        counted = line_start
        entry = shape.lines[line]
        if entry is None:  # pragma: no cover - a `key:` line holds no `<` (the key regex)
            return None
        path, column = entry
        start = line_start + column
        style = body[start]
        if style in _QUOTES:
            value = body[start + 1 : line_end - 1]
        else:
            value, style = body[start:line_end], ""
        scalars.append(Scalar(path, value, head + start, head + line_end, style, False))
        at = body.find("<", line_end)
    return Scan(kind, name, shape.annotation_keys, tuple(scalars))


def _line_value(shape: _Shape, lines: list[str], line: int | None) -> str | None:
    """The text of a `kind` or `name` value, None when Go does not read it as text."""
    if line is None:
        return None
    entry = shape.lines[line]
    assert entry is not None
    value = lines[line][entry[1] :]
    if value and value[0] in _QUOTES:
        return value[1:-1]  # quoted: text whatever it spells
    return None if goresolve.retyped(value) else value


def _read_shape(skeleton: str) -> _Shape | None:
    """Read a document's shape (its text without values) as the event walk would; None
    when it is not of the simple form, or the walk would refuse it (a key Go retypes, a
    duplicate key, nesting deeper than `MAX_DEPTH`)."""
    lines = skeleton.split("\n")
    if lines[-1] == "":
        lines.pop()  # the text's last line break
    if not lines or lines[0][:1] == " ":
        return None
    # Open mappings: their indentation and keys; `path` holds the keys leading to the last.
    indents: list[int] = [0]
    keys: list[set[str]] = [set()]
    path: list[str] = []
    pending: str | None = None  # a `key:` line waiting for its nested mapping (or null)
    read: list[tuple[tuple[str, ...], int] | None] = []
    annotation_keys: list[str] = []
    kind_line = name_line = None
    for number, line in enumerate(lines):
        found = _SHAPE_LINE.fullmatch(line)
        if found is None:
            return None
        spaces, key, has_value = found.groups()
        indent = len(spaces)
        if pending is not None:
            if indent > indents[-1]:
                if len(indents) >= MAX_DEPTH:
                    return None
                path.append(pending)
                indents.append(indent)
                keys.append(set())
            pending = None  # else its value was null: nothing to record
        while indent < indents[-1]:
            indents.pop()
            keys.pop()
            path.pop()
        if indent != indents[-1] or key in keys[-1] or goresolve.retyped(key):
            return None
        keys[-1].add(key)
        depth = len(indents)
        if depth == 3 and path == ["metadata", "annotations"]:
            annotation_keys.append(key)
        if not has_value:
            pending = key
            read.append(None)
            continue
        read.append(((*path, key), indent + len(key) + 2))
        if depth == 1 and key == "kind":
            kind_line = number
        elif depth == 2 and key == "name" and path == ["metadata"]:
            name_line = number
    return _Shape(tuple(read), kind_line, name_line, tuple(annotation_keys))


class _MisalignedError(Exception):
    """A document's events lie outside its text (a text held two documents, another none)."""


class _Frame:
    """An open collection: a mapping waiting for a key or a value, or a sequence's index."""

    __slots__ = ("flow", "index", "is_map", "key", "keys", "wants_key")

    def __init__(self, is_map: bool, flow: bool) -> None:
        self.is_map = is_map
        self.flow = flow
        self.wants_key = True
        self.key: str = ""
        self.keys: set[str] = set()
        self.index = 0


def _walk(parser: Any, offsets: list[int], limits: list[int]) -> list[Scan | None]:
    """The event loop (one function: it runs once per event of every document).

    Raises `_MisalignedError` when a document does not lie inside its own text. (Each
    separator ends a document, or libyaml fails, so a document that starts in its text ends
    there too; the scalars kept are checked all the same.)
    """
    import yaml

    scans: list[Scan | None] = []
    get_event = parser.get_event
    scalar_event, mapping_start, sequence_start = (
        yaml.ScalarEvent,
        yaml.MappingStartEvent,
        yaml.SequenceStartEvent,
    )
    collection_end = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    # Keys repeat in every document (`metadata`, `name`…): type each spelling once per call.
    retyped_keys: dict[str, bool] = {}
    retyped = goresolve.retyped
    ok = False
    base = limit = 0
    stack: list[_Frame] = []
    path: list[str | int] = []
    scalars: list[Scalar] = []
    annotation_keys: list[str] = []
    kind: str | None = None
    name: str | None = None
    while True:
        event = get_event()
        cls = type(event)
        if cls is scalar_event:
            if not ok:
                continue
            if event.anchor is not None or event.tag is not None or not stack:
                ok = False
                continue
            frame = stack[-1]
            value: str = event.value
            plain = event.style == ""
            if frame.is_map and frame.wants_key:
                if plain:
                    known = retyped_keys.get(value)
                    if known is None:
                        known = retyped_keys[value] = retyped(value)
                    if known:
                        ok = False
                        continue
                if value in frame.keys:
                    ok = False
                    continue
                frame.keys.add(value)
                frame.key = value
                frame.wants_key = False
                if len(stack) == 3 and path == ["metadata", "annotations"]:
                    annotation_keys.append(value)
                continue
            part: str | int
            if frame.is_map:
                part = frame.key
                frame.wants_key = True
            else:
                part = frame.index
                frame.index += 1
            if "<" in value:
                if event.end_mark.index > limit:
                    raise _MisalignedError
                scalars.append(
                    Scalar(
                        (*path, part),
                        value,
                        event.start_mark.index - base,
                        event.end_mark.index - base,
                        event.style or "",
                        frame.flow,
                    )
                )
            if len(stack) == 1 and part == "kind":
                kind = None if plain and retyped(value) else value
            elif len(stack) == 2 and part == "name" and path == ["metadata"]:
                name = None if plain and retyped(value) else value
        elif cls is mapping_start or cls is sequence_start:
            if not ok:
                continue
            if event.anchor is not None or event.tag is not None:
                ok = False
                continue
            is_map = cls is mapping_start
            if not stack:
                if not base <= event.start_mark.index < limit:
                    raise _MisalignedError
                if not is_map:
                    ok = False
                    continue
                stack.append(_Frame(True, bool(event.flow_style)))
                continue
            frame = stack[-1]
            if frame.is_map:
                if frame.wants_key or len(stack) >= MAX_DEPTH:
                    ok = False
                    continue
                path.append(frame.key)
                frame.wants_key = True
            else:
                if len(stack) >= MAX_DEPTH:
                    ok = False
                    continue
                path.append(frame.index)
                frame.index += 1
            stack.append(_Frame(is_map, frame.flow or bool(event.flow_style)))
        elif cls in collection_end:
            if ok:
                stack.pop()
                if stack:
                    path.pop()
        elif cls is yaml.DocumentStartEvent:
            base, limit = offsets[len(scans)], limits[len(scans)]
            ok = event.version is None and not event.tags
            stack, path, scalars, annotation_keys = [], [], [], []
            kind = name = None
        elif cls is yaml.DocumentEndEvent:
            done = ok and not stack
            scans.append(Scan(kind, name, tuple(annotation_keys), tuple(scalars)) if done else None)
        elif cls is yaml.AliasEvent:
            ok = False
        elif event is None or cls is yaml.StreamEndEvent:
            return scans


# ---------------------------------------------------------------- writing


def splice(text: str, edits: Sequence[tuple[Scalar, Any]]) -> str | None:
    """`text` with each scalar's span replaced by its new value, or None when one of the
    values cannot be written there (a map, a list, a float, a block scalar's span…).

    `edits` are in document order and never overlap (each is a different scalar).
    """
    pieces: list[str] = []
    position = 0
    for scalar, value in edits:
        if scalar.style in BLOCK_STYLES or scalar.start < position:
            return None
        written = inline_value(value, flow=scalar.flow)
        if written is None:
            return None
        pieces.append(text[position : scalar.start])
        pieces.append(written)
        position = scalar.end
        if written[0] != '"' and position < len(text) and text[position] not in _ENDS_PLAIN:
            # A quoted scalar may be followed by `#comment` with no space; a plain one may
            # not (the `#` would become part of it).
            pieces.append(" ")
    pieces.append(text[position:])
    return "".join(pieces)


_ENDS_PLAIN = frozenset(" \t\n,]}")


def inline_value(value: Any, *, flow: bool = False) -> str | None:
    """One line of YAML that go-yaml v2 reads back as `value` (text, integer, boolean or
    null); None for anything else. In a flow collection text is always double-quoted.
    Everything but text in a flow collection is spelt as the structural writer spells it."""
    from plugin.manifests import fastyaml  # PyYAML's resolvers: loaded when needed

    if not isinstance(value, str):
        return fastyaml.keyword_text(value)
    if not flow:
        written = fastyaml.single_line(value)
        if written is not None:
            return written
    return double_quoted(value)


# Characters a double-quoted scalar must escape: the quote and backslash, C0 and C1 controls
# and DEL (the reader refuses them raw), NEL, LS and PS (YAML 1.1 line breaks), the BOM, the
# two non-characters, and lone surrogates (which no escape can write: refused below).
_ESCAPED = re.compile('["\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def double_quoted(value: str) -> str | None:
    """`value` as a double-quoted scalar on one line; every other character is written as is.

    None for text with lone surrogates: go-yaml refuses their escapes and Go could not
    write them either (the substitution has already turned them into U+FFFD).
    """
    if _LONE_SURROGATE.search(value) is not None:
        return None
    return '"' + _ESCAPED.sub(_escape, value) + '"'


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"
