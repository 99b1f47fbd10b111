"""Splicing resolved scalars into a document's text, proven against the real Go reader.

`manifests.splice` writes each new value into the span of the scalar it replaces and keeps
the rest of the text; the structural path constructs the document and writes it again. For
random block documents (mappings, sequences, flow collections, plain, quoted, multi-line and
block scalars, comments, several indentations, keys Go retypes, duplicates, anchors) holding
placeholders whose secrets are random (text that looks like numbers, booleans, null or dates,
holds `: `, `#`, quotes, line breaks, any code point, leading or trailing spaces; integers,
floats, booleans, null, maps and lists), the engine's output with splicing and without it must
mean the same to go-yaml v2 (`goyaml-json -lib=yamlv2`, types included) and to Argo CD's own
splitter (`-lib=argocd`), or both runs must fail with the same message. Each example's
streams go to Go in one process call per reader.
"""

from __future__ import annotations

import json
import os
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plugin.errors import PluginError
from plugin.manifests import splice
from plugin.placeholders import engine
from plugin.placeholders.engine import EngineOptions, InputStream, generate
from plugin.secrets.file import FileBackend
from tests.integration.test_goyaml import from_go, go_read, goyaml  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("GOYAML_EXAMPLES", "60")) * 5
PATH = "kv/data/p"
KEYS = [f"k{i}" for i in range(6)]

# ------------------------------------------------------------------ secrets

_LOOKALIKES = st.sampled_from(
    ["y", "N", "yes", "off", "true", "False", "~", "null", "", "1", "-1", "0o17", "0x1F", "08",
     "1e3", ".5", "1_000", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "1:20", "=", "<<",
     "-", "? x", "a: b", "x #y", "#x", "'q'", '"d"', "a,b", "[x]", "{x}", "&a", "*a", "!x", "|",
     ">", "%x", "@x", "`x", "---", "...", " lead", "trail ", " both ", "tab\tin", "a\nb",
     "a\n", "\n", "line\n  indented\n", "<path:kv/data/p#k0>", "é", "日本", "😀", "\x85",
     "\u2028", "\ufeff", "\x7f", "\x00", "back\\slash", "\\n", "a, b", "a]", "x}", "a,b:c"]
)  # fmt: skip
_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
# Text made of YAML's indicators, blanks, line breaks and a few letters and digits.
_INDICATORS = st.text(alphabet=" :#,[]{}'\"-?!&*|>%@`\n\t\\ab1.é😀\x85\u2028", max_size=8)
_SECRET_TEXT = st.one_of(
    _LOOKALIKES,
    _INDICATORS,
    st.builds(lambda first, rest: first + rest, st.sampled_from("ab1.-"), _INDICATORS),
    _TEXT,
    st.builds(lambda a, b: a + b, _LOOKALIKES, _TEXT),
)
_SECRET_VALUES = st.one_of(
    _SECRET_TEXT,
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3) | _LOOKALIKES, max_size=2),
    st.lists(st.integers(0, 3) | _LOOKALIKES, max_size=2),
)
_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_TEXT, inner, max_size=2),
    max_leaves=4,
).map(json.dumps)
# k0-k2 hold text, k3 JSON text, k4 and k5 anything.
_SECRETS = st.fixed_dictionaries(
    {key: _SECRET_TEXT for key in KEYS[:3]}
    | {"k3": _JSON_TEXT}
    | {key: _SECRET_VALUES for key in KEYS[4:]}
)

# ------------------------------------------------------------------ documents as text


def _placeholder(key: int, modifier: str) -> str:
    return f"<path:{PATH}#{KEYS[key]}{modifier}>"


# k0-k2 with base64encode now and then, k3 (JSON text) with jsonParse, k4 and k5 as they are;
# a default for a missing key, an unterminated placeholder.
_PLACEHOLDERS = st.sampled_from(
    [_placeholder(key, "") for key in range(len(KEYS))] * 3
    + [_placeholder(key, " | base64encode") for key in range(3)]
    + [_placeholder(3, " | jsonParse")] * 2
    + [f"<path:{PATH}#missing | default dflt>", f"<path:{PATH}#k0"]
)
_WORDS = st.sampled_from(["pre", "x: y", "a #b", "é", "'", '"', "1", "{", "-", " "])
_SAFE_PLAIN = st.sampled_from(
    ["plain", "y", "No", "~", "null", "1e3", "0o17", "0x1F", "08", ".5", "2024-01-01", "1_000",
     "=", "<<", "a b", "<b>", "x<y", "true", "12", "-3"]
)  # fmt: skip


_BMP_TEXT = st.text(
    alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=6
)


def _double(text: str) -> str:
    return json.dumps(text)  # ASCII escapes; BMP only below, so no surrogate pairs


def _single(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def _value_scalar(draw: st.DrawFn, cont_pad: str) -> str:
    """A scalar value as written in a document; most hold a placeholder."""
    form = draw(st.integers(0, 11))
    holder = draw(_PLACEHOLDERS)
    pre, post = draw(_WORDS), draw(_WORDS)
    if form == 0:
        return holder
    if form == 1:
        return _single(holder)
    if form == 2:
        return _double(holder)
    if form == 3:
        return _double(f"{pre}{holder}{post}")
    if form == 4:
        return _single(f"{pre}{holder}{post}")
    if form == 5:
        return f"pre {holder} post"
    if form == 6:  # plain over two lines
        return f"first\n{cont_pad}{holder}"
    if form == 7:  # double-quoted over two lines
        return f'"{pre.replace(chr(34), "")}\n{cont_pad}{holder}"'
    if form == 8:
        return draw(_SAFE_PLAIN)
    if form == 9:
        return _double(draw(_BMP_TEXT))
    if form == 10:  # a block scalar, with or without a placeholder
        body = draw(st.sampled_from([holder, "no placeholder", f"a {holder}\nb"]))
        style = draw(st.sampled_from(["|", ">", "|-", "|+"]))
        return style + "".join(f"\n{cont_pad}{line}" for line in body.split("\n"))
    return draw(st.sampled_from(["12", "true", "[]", "{}", "''", '""']))


@st.composite
def _flow(draw: st.DrawFn) -> str:
    items = draw(
        st.lists(
            st.one_of(
                _PLACEHOLDERS,
                _PLACEHOLDERS.map(_double),
                _PLACEHOLDERS.map(_single),
                st.sampled_from(["a", "1", "true", "null"]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    if draw(st.booleans()):
        return "[" + ", ".join(items) + "]"
    return "{" + ", ".join(f"f{i}: {item}" for i, item in enumerate(items)) + "}"


# Mostly ordinary keys; now and then one Go retypes (`y`, `1`), a merge key, a duplicate.
# (No `'1'`: beside `1` it makes two keys "1" in Argo CD's JSON, and Go's map order then picks
# one of the two values at random, whatever wrote the document.)
_KEYS = st.sampled_from(
    ["a", "b", "c-d", "e.f", "g_h", '"k: v"', "'2'", "url", "i", "j", "c", "d", "m", "n"] * 6
    + ["y", "1", "<<", "a"]
)


@st.composite
def _mapping(draw: st.DrawFn, indent: int, unit: int, depth: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    count = draw(st.integers(1, 4))
    keys = draw(st.lists(_KEYS, min_size=count, max_size=count, unique=draw(st.integers(0, 9)) > 0))
    for key in keys:
        if draw(st.integers(0, 5)) == 0:
            lines.append(f"{pad}# a comment: <path:{PATH}#k1>")
        shape = draw(st.integers(0, 6)) if depth < 3 else 0
        if shape in (0, 1, 2, 3):
            value = draw(_value_scalar(" " * (indent + unit + 1)))
            comment = ""
            if "\n" not in value and value[:1] not in "|>" and draw(st.integers(0, 3)) == 0:
                comment = " # trailing"
                if value[-1:] in "'\"" and draw(st.booleans()):
                    comment = "#adjacent"  # a comment right after a quoted scalar
            anchor = draw(st.sampled_from(["", *[""] * 12, "&s ", "*s"]))
            if anchor == "*s":  # an alias (of an anchor earlier in the document, or an error)
                anchor, value, comment = "", "*s", ""
            lines.append(f"{pad}{key}: {anchor}{value}{comment}")
        elif shape == 4:
            lines.append(f"{pad}{key}:")
            lines.extend(draw(_mapping(indent + unit, unit, depth + 1)))
        elif shape == 5:
            lines.append(f"{pad}{key}:")
            inner = indent + unit if draw(st.booleans()) else indent
            lines.extend(draw(_sequence(inner, unit, depth + 1)))
        else:
            lines.append(f"{pad}{key}: {draw(_flow())}")
    return lines


@st.composite
def _sequence(draw: st.DrawFn, indent: int, unit: int, depth: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(st.integers(0, 3)) if depth < 3 else 0
        if shape in (0, 1):
            lines.append(f"{pad}- {draw(_value_scalar(' ' * (indent + 2)))}")
        elif shape == 2:
            inner = draw(_mapping(indent + 2, unit, depth + 1))
            inner[0] = f"{pad}- {inner[0][indent + 2 :]}"
            lines.extend(inner)
        else:
            lines.append(f"{pad}- {draw(_flow())}")
    return lines


@st.composite
def _document(draw: st.DrawFn) -> str:
    unit = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["ConfigMap", "Deployment", "X"] * 4 + ["Secret", "y"]))
    name = draw(st.sampled_from(["app", "'quoted'", _placeholder(0, ""), "n"]))
    head = ["apiVersion: v1", f"kind: {kind}", "metadata:", f"{' ' * unit}name: {name}"]
    if draw(st.integers(0, 9)) == 0:
        head.append(f"{' ' * unit}labels: &anchor {{a: b}}")
    body = draw(_mapping(0, unit, 1))
    return "\n".join(head + body) + "\n"


# Helm's output: `# Source:` first, values as `quote` and `squote` write them (the simple form
# `splice.scan_simple` reads without libyaml when nothing in them needs decoding).
_HELM_WORDS = st.sampled_from(["pre", "x: y", "a #b", "'", '"', "1", "{", "-", " ", "\\", "é"])


@st.composite
def _helm_document(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["ConfigMap", "Deployment", "Secret", '"y"', "'ConfigMap'"]))
    name = draw(st.sampled_from(["app", '"1"', "'quoted'", _double(_placeholder(0, ""))]))
    lines = ["# Source: app/templates/x.yaml", "apiVersion: v1", f"kind: {kind}", "metadata:"]
    lines += [f"  name: {name}", "data:"]
    for key in draw(st.lists(_KEYS.filter(str.isalpha), min_size=1, max_size=5, unique=True)):
        holder, pre, post = draw(_PLACEHOLDERS), draw(_HELM_WORDS), draw(_HELM_WORDS)
        value = draw(
            st.sampled_from(
                [_double(holder), _single(holder), _double(pre + holder + post),
                 _single(pre + holder + post), f'"{pre}{holder}{post}"', holder, '"12"', "12"]
            )
        )  # fmt: skip
        lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the property


def _run(text: str, secrets: dict[str, Any]) -> str:
    try:
        return generate(
            [InputStream("s.yaml", text)],
            EngineOptions(skip_non_manifests=True),
            lambda: FileBackend({PATH: secrets}, "test"),
        )
    except PluginError as exc:
        return f"error: {type(exc).__name__}: {exc}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    documents=st.lists(st.one_of(_document(), _helm_document()), min_size=1, max_size=6),
    secrets=_SECRETS,
)
def test_spliced_output_means_to_go_what_the_constructed_output_means(
    goyaml: str,  # noqa: F811 - the fixture
    documents: list[str],
    secrets: dict[str, Any],
) -> None:
    text = "---\n".join(documents)
    calls: list[bool] = []
    real_splice = splice.splice
    real_simple = splice.scan_simple
    simple: list[bool] = []

    def reading(source: str, shapes: Any = None) -> splice.Scan | None:
        scan = real_simple(source, shapes)
        simple.append(scan is not None and bool(scan.scalars))
        return scan

    def counting(source: str, edits: Any) -> str | None:
        written = real_splice(source, edits)
        calls.append(written is not None)
        return written

    with (
        mock.patch.object(engine.splice, "splice", counting),
        mock.patch.object(splice, "scan_simple", reading),
    ):
        spliced = _run(text, secrets)
    with mock.patch.object(splice, "_libyaml_parser", lambda: None):
        constructed = _run(text, secrets)
    event(f"documents spliced: {'some' if any(calls) else 'none'}")
    event(f"placeholders read by the simple form: {'some' if any(simple) else 'none'}")
    if spliced.startswith("error: ") or constructed.startswith("error: "):
        event("engine error")
        assert spliced == constructed
        return
    for lib in ("yamlv2", "argocd"):
        try:
            go_spliced = go_read(goyaml, spliced, lib)
        except ValueError as exc:
            go_spliced = [f"Go error: {exc}"]
        try:
            go_constructed = go_read(goyaml, constructed, lib)
        except ValueError as exc:
            go_constructed = [f"Go error: {exc}"]
        if lib == "yamlv2":
            go_spliced = [from_go(v) if isinstance(v, dict) else v for v in go_spliced]
            go_constructed = [from_go(v) if isinstance(v, dict) else v for v in go_constructed]
        assert go_spliced == go_constructed, (
            f"{lib}\n--- input\n{text}\n--- spliced\n{spliced}\n--- constructed\n{constructed}"
        )
