"""The splice primitive: what a document's events say, and writing values into spans.

What Go reads from spliced output is proven in tests/integration/test_splice_goyaml.py; these
tests pin the scan (paths, spans, the documents refused) and the writing rules.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from plugin.manifests import splice
from plugin.manifests.splice import scan_many
from plugin.manifests.yamlio import load_one


def _one(text: str) -> splice.Scan | None:
    [scan] = scan_many([text])
    return scan


def test_scan_reports_value_scalars_with_a_bracket_their_paths_and_spans() -> None:
    text = (
        "kind: X\nmetadata:\n  name: web\n  annotations:\n    a/b: c\n"
        "data:\n  a: <path:kv/a#k> # comment\n  b: ['<p>', {c: \"<q>\"}]\n"
        "  l:\n  - plain\n  - <r>\n  <key>: no\n"
    )
    scan = _one(text)
    assert scan is not None
    assert (scan.kind, scan.name, scan.annotation_keys) == ("X", "web", ("a/b",))
    assert [(s.path, text[s.start : s.end], s.style, s.flow) for s in scan.scalars] == [
        (("data", "a"), "<path:kv/a#k>", "", False),
        (("data", "b", 0), "'<p>'", "'", True),
        (("data", "b", 1, "c"), '"<q>"', '"', True),
        (("data", "l", 1), "<r>", "", False),
    ]


def test_spans_count_characters_not_bytes() -> None:
    text = "kind: X\nx: é😀 日本\nz: 'é <path:a#b>'\n"
    scan = _one(text)
    assert scan is not None
    [scalar] = scan.scalars
    assert text[scalar.start : scalar.end] == "'é <path:a#b>'"


@pytest.mark.parametrize(
    "text",
    [
        "kind: X\na: &x <path:a#b>\nb: *x\n",  # anchor and alias
        "kind: X\nb: !!str <path:a#b>\n",  # explicit tag
        "kind: X\nb: !custom {a: 1}\n",
        "%YAML 1.1\n---\nkind: X\n",  # directive
        "- kind\n- X\n",  # root not a mapping
        "just text\n",
        "kind: X\ny: <path:a#b>\n",  # a key Go reads as a boolean
        "kind: X\n1: <path:a#b>\n",  # an integer key
        "kind: X\n~: <path:a#b>\n",  # a null key
        "kind: X\n<<: {a: 1}\n",  # a merge key
        "kind: X\n? [a, b]\n: <path:a#b>\n",  # a collection as a key
        "kind: X\na: 1\na: <path:a#b>\n",  # a duplicate key
        "kind: X\nd:\n" + "".join("  " * i + "- \n" for i in range(1, 120)),  # too deep
    ],
)
def test_documents_outside_the_subset_are_not_scanned(text: str) -> None:
    assert _one(text) is None


def test_kind_and_name_are_kept_only_when_go_reads_them_as_text() -> None:
    assert _one("kind: 'y'\nmetadata: {name: \"1\"}\n") == splice.Scan("y", "1", (), ())
    assert _one("kind: y\nmetadata: {name: 1}\n") == splice.Scan(None, None, (), ())


def test_one_bad_document_leaves_the_whole_batch_to_the_constructing_reader() -> None:
    assert scan_many(["kind: A\n", "kind: [\n", "kind: C\n"]) == [None, None, None]
    # A text holding two documents and another none: the count matches, the places do not.
    assert scan_many(["kind: A\n...\nkind: B\n", "...\n"]) == [None, None]
    assert scan_many(["...\n", "kind: A\n...\nkind: B\n"]) == [None, None]


def test_splice_keeps_everything_but_the_changed_spans() -> None:
    text = (
        "# head\nkind: X   # kind\ndata:\n  a: <path:a#b>  # after\n"
        "  b: \"<path:a#c>\"#tight\n  c: 'x <path:a#d>\n    y'\n  d: [<path:a#e>, z]\n"
    )
    scan = _one(text)
    assert scan is not None
    a, b, c, d = scan.scalars
    out = splice.splice(text, [(a, "v: 1"), (b, 5), (c, "plain"), (d, "a, b")])
    assert out == (
        '# head\nkind: X   # kind\ndata:\n  a: "v: 1"  # after\n'
        '  b: 5 #tight\n  c: plain\n  d: ["a, b", z]\n'
    )
    assert load_one(out) == {
        "kind": "X",
        "data": {"a": "v: 1", "b": 5, "c": "plain", "d": ["a, b", "z"]},
    }


@pytest.mark.parametrize("value", [{"a": 1}, [1], 1.5, b"x", object()])
def test_values_that_are_no_inline_scalar_are_refused(value: Any) -> None:
    text = "kind: X\na: <path:a#b>\n"
    scan = _one(text)
    assert scan is not None
    assert splice.splice(text, [(scan.scalars[0], value)]) is None


def test_block_scalars_are_never_rewritten() -> None:
    text = "kind: X\na: |\n  <path:a#b>\n"
    scan = _one(text)
    assert scan is not None
    assert scan.scalars[0].style == "|"
    assert splice.splice(text, [(scan.scalars[0], "v")]) is None


@pytest.mark.parametrize(
    ("value", "block", "flow"),
    [
        ("plain", "plain", '"plain"'),
        ("y", '"y"', '"y"'),  # a boolean to Go
        ("0o17", '"0o17"', '"0o17"'),
        ("2024-01-01", '"2024-01-01"', '"2024-01-01"'),  # a timestamp to YAML 1.1
        ("a: b", '"a: b"', '"a: b"'),
        ("a,b", "a,b", '"a,b"'),
        ("two\nlines", '"two\\nlines"', '"two\\nlines"'),
        ("é", '"é"', '"é"'),
        ("\x85\u2028\ufeff\x7f\x00", '"\\u0085\\u2028\\ufeff\\u007f\\u0000"', None),
        ("😀", '"😀"', '"😀"'),
        (None, "null", "null"),
        (True, "true", "true"),
        (-12, "-12", "-12"),
    ],
)
def test_inline_values(value: Any, block: str, flow: str | None) -> None:
    assert splice.inline_value(value) == block
    assert splice.inline_value(value, flow=True) == (flow or block)
    written = splice.inline_value(value)
    assert written is not None
    assert yaml.safe_load(f"a: {written}\n") == {"a": value}


def test_lone_surrogates_cannot_be_written() -> None:
    assert splice.double_quoted("\ud800") is None
    assert splice.inline_value("\udfff") is None


def test_without_libyaml_nothing_is_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice, "_libyaml_parser", lambda: None)
    assert not splice.available()
    assert scan_many(["kind: X\n"]) == [None]


# ---------------------------------------------------------------- the simple form


def _by_libyaml(text: str) -> splice.Scan | None:
    parser_class = splice._libyaml_parser()
    assert parser_class is not None
    scans = splice._scan_libyaml(parser_class, [text])
    return None if scans is None else scans[0]


W1_DOCUMENT = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-1\n  labels:\n"
    "    app.kubernetes.io/name: x\ndata:\n  a: <path:kv/data/w1/p001#key1>\n"
    "  b: x <path:kv/data/w1/p002#key2 | base64encode> y\n  c: plain\n  d:\n"
    "  e: <path:kv/data/w1/p003#key3>"
)


def test_documents_of_the_simple_form_are_read_without_libyaml() -> None:
    scan = splice.scan_simple(W1_DOCUMENT)
    assert scan is not None
    assert scan == _by_libyaml(W1_DOCUMENT)
    assert (scan.kind, scan.name) == ("ConfigMap", "cm-1")
    assert [W1_DOCUMENT[s.start : s.end] for s in scan.scalars] == [
        "<path:kv/data/w1/p001#key1>",
        "x <path:kv/data/w1/p002#key2 | base64encode> y",
        "<path:kv/data/w1/p003#key3>",
    ]


HELM_DOCUMENT = (
    "# Source: app/templates/cm.yaml\n# another comment: <path:kv/x#y> 'q\"\napiVersion: v1\n"
    'kind: "ConfigMap"\nmetadata:\n  name: \'cm-1\'\n  labels:\n    a/b: "x # y: z"\ndata:\n'
    '  index: "0"\n  a: "<path:kv/data/w2/s0#k0>"\n  b: \'x <path:kv/a#b | base64encode> "y"\'\n'
    "  c: \"'<path:kv/a#c>'\"\n  d: plain#<path:kv/a#d>\n"
)


def test_helm_documents_are_of_the_simple_form() -> None:
    """Helm starts each document with `# Source:` and `quote` writes double-quoted values."""
    scan = splice.scan_simple(HELM_DOCUMENT)
    assert scan is not None
    assert scan == _by_libyaml(HELM_DOCUMENT)
    assert (scan.kind, scan.name) == ("ConfigMap", "cm-1")
    assert [(HELM_DOCUMENT[s.start : s.end], s.value, s.style) for s in scan.scalars] == [
        ('"<path:kv/data/w2/s0#k0>"', "<path:kv/data/w2/s0#k0>", '"'),
        ("'x <path:kv/a#b | base64encode> \"y\"'", 'x <path:kv/a#b | base64encode> "y"', "'"),
        ("\"'<path:kv/a#c>'\"", "'<path:kv/a#c>'", '"'),
        ("plain#<path:kv/a#d>", "plain#<path:kv/a#d>", ""),
    ]


def test_quoted_kind_and_name_are_text_whatever_they_spell() -> None:
    text = 'kind: \'y\'\nmetadata:\n  name: "1"\ndata:\n  a: "<p>"\n'
    scan = splice.scan_simple(text)
    assert scan is not None and (scan.kind, scan.name) == ("y", "1")
    assert scan == _by_libyaml(text)


def test_a_batch_mixes_both_readings_and_fails_as_a_whole() -> None:
    other = "kind: X\ndata: {a: '<path:a#b>'}\n"
    assert splice.scan_simple(other) is None
    scans = scan_many([W1_DOCUMENT + "\n", other, "kind: Y\n"])
    assert scans == [_by_libyaml(W1_DOCUMENT + "\n"), _by_libyaml(other), _by_libyaml("kind: Y\n")]
    # A document libyaml refuses still leaves every document of the batch unscanned.
    assert scan_many([W1_DOCUMENT + "\n", "kind: [\n"]) == [None, None]


@pytest.mark.parametrize(
    "text",
    [
        "kind: X\n<path:a#b>: v\n",  # a placeholder in a key
        "kind: X\na: v # <path:a#b>\n",  # in a comment
        "kind: X\n# <path:a#b>\na: v\n",
        "kind: X\na: |\n  <path:a#b>\n",  # in a block scalar
        "kind: X\na: >-\n  <path:a#b>\n",
        "kind: X\na: [<path:a#b>]\n",  # in a flow collection
        "kind: X\na: {b: <path:a#b>}\n",
        'kind: X\na: "\\x3cpath:a#b>"\n',  # written with an escape
        "kind: X\na: 'it''s <path:a#b>'\n",  # quoted with an escape
        'kind: X\na: "<path:a#b>\\t"\n',
        'kind: X\na: "<path:a#b>" # c\n',  # a comment after a quoted value
        "kind: X\na: '<path:a#b>'x\n",
        'kind: X\na: "<path:a#b>\n  x"\n',  # quoted on two lines
        "kind: X\na: <path:a#b> #c\n",  # a comment after a plain value
        "  # c\nkind: X\na: <path:a#b>\n",  # an indented comment first
        "#\tc\nkind: X\na: <path:a#b>\n",  # a tab in a comment first
        "# c\n\nkind: X\na: <path:a#b>\n",  # a blank line after it
        "kind: X\na: <path:a#b>\n  <path:a#c>\n",  # a plain scalar on two lines
        "kind: X\na:\n- <path:a#b>\n",  # in a sequence
        "kind: X\na: <path:a#b>\n\n",  # a blank line
        "kind: X\na: <path:a#b>\t\n",  # a tab
        "kind: X\na: <path:a#b> \n",  # a trailing space
        "kind: X\na: <path:a#b>:\n",  # a trailing colon
        "kind: X\na: <path: a#b>\n",  # `: ` inside the value
        "kind: X\na: é<path:a#b>\n",  # not ASCII
        "kind: X\na: <path:a#b>\r\n",
        "kind: X\n  a: <path:a#b>\n",  # bad indentation
        "  kind: X\n  a: <path:a#b>\n",  # an indented root
        "kind: X\na:  <path:a#b>\n",  # two spaces
        "kind: X\na:<path:a#b>\n",
        "kind: X\ny: <path:a#b>\n",  # a key Go retypes
        "kind: X\na: 1\na: <path:a#b>\n",  # a duplicate key
        "--- \nkind: X\na: <path:a#b>\n",
        "kind: X\na: &x <path:a#b>\n",
        "kind: X\na: !x <path:a#b>\n",
        "kind: X\n" + "k" * 1001 + ": <path:a#b>\n",  # a key libyaml may not read
    ],
)
def test_other_documents_are_left_to_libyaml(text: str) -> None:
    assert splice.scan_simple(text) is None


def test_nesting_deeper_than_the_walk_allows_is_left_to_libyaml() -> None:
    deep = "kind: X\n" + "".join(" " * i + f"k{i}:\n" for i in range(splice.MAX_DEPTH + 1))
    assert splice.scan_simple(deep) is None
    shallow = "kind: X\n" + "".join(" " * i + f"k{i}:\n" for i in range(splice.MAX_DEPTH - 1))
    assert splice.scan_simple(shallow) is not None
    assert splice.scan_simple(shallow) == _by_libyaml(shallow)


# Random documents near the simple form: block mappings whose keys and values come from
# pools holding what the form allows and what it must refuse (retyped and duplicate keys,
# indicators, `: `, ` #`, blanks, quotes, escapes, non-ASCII, placeholders), with odd
# indentation, stray lines and no final line break now and then.
_ODD_KEYS = st.sampled_from(
    ["y", "1", "~", "null", "<<", "a b", "a:b", "-a", ".a", "<path:a#b>", "é", "k" * 1030]
)
_KEYS = st.one_of(
    st.sampled_from(["kind", "metadata", "name", "annotations", "data", "labels"]),
    st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("abkmn_01yY"),
        st.text(alphabet="aeklmnxyz_./-019", max_size=6),
    ),
)
_ODD_VALUES = st.sampled_from(
    ["", " ", "<path:kv/a#k>:", "<path:kv/a#k> ", "a: b", "a #b", "-a", "- a", "?a", ":a",
     "a:", "'q'", '"q"', '"\\x3c"', "[a]", "{a: b}", "&a", "*a", "!a", "|", ">", "%a", "@a",
     "`a", "a\tb", "é", "a\rb", "<path:a#b>\n  more", "---", "..."]
)  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(["v", "ConfigMap", "y", "1", "null", "~", "<path:kv/a#k>", "a#b", "a,b]"]),
    st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("a<1.=~yY"),
        st.text(alphabet="ab<>:#/| -.,'\"\\019", max_size=12),
    ),
    # Quoted (Helm's `quote` and `squote`), now and then with what quoting must refuse.
    st.builds(
        lambda quote, inner, tail: quote + inner + quote + tail,
        st.sampled_from("\"'"),
        st.one_of(
            st.text(alphabet="ab<> :#-,[]{}&*!|%@`019", max_size=10),
            st.text(alphabet="ab<> :#-'\"\\\t\x7fé019", max_size=10),
        ),
        st.sampled_from(["", "", "", "", "", "", "", " ", " #c", "#c", "x", "'", '"']),
    ),
)
_COMMENTS = st.lists(
    st.one_of(
        st.builds(lambda text: "#" + text, st.text(alphabet="ab <>:#'\"-", max_size=8)),
        st.sampled_from([" # c", "#\tc", "#é", "#\rc", "", "---", "%YAML 1.1", "#\x7f"]),
    ),
    max_size=3,
)
_STRAY = st.sampled_from(
    ["", "# c", "  # c", "- x", "---", "...", "%YAML 1.1", "  x", "? a", ": b", "\t", " "]
)


@st.composite
def _near_simple(draw: st.DrawFn) -> str:
    lines: list[str] = []
    step = draw(st.sampled_from([2, 2, 4]))

    def mapping(indent: int, depth: int) -> None:
        for _ in range(draw(st.integers(1, 4))):
            key = draw(_ODD_KEYS if draw(st.integers(0, 15)) == 0 else _KEYS)
            value = draw(_ODD_VALUES if draw(st.integers(0, 15)) == 0 else _VALUES)
            pad = " " * (indent + (draw(st.integers(0, 15)) == 0))
            if depth < 3 and draw(st.integers(0, 3)) == 0:
                lines.append(f"{pad}{key}:")
                if draw(st.booleans()):
                    mapping(indent + step, depth + 1)
            else:
                lines.append(f"{pad}{key}: {value}")
            if draw(st.integers(0, 25)) == 0:
                lines.append(draw(_STRAY))

    comments = draw(_COMMENTS)
    mapping(0, 0)
    text = "\n".join(comments + lines)
    return text if draw(st.integers(0, 5)) == 0 else text + "\n"


@settings(max_examples=2000, deadline=None)
@given(_near_simple())
def test_the_simple_reading_is_libyaml_s_or_none(text: str) -> None:
    simple = splice.scan_simple(text)
    event("read without libyaml" if simple is not None else "left to libyaml")
    if simple is not None:
        event("read without libyaml: quoted values" if ": '" in text or ': "' in text else "")
        event("read without libyaml: comments first" if text.startswith("#") else "")
        assert simple == _by_libyaml(text)


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, len(W1_DOCUMENT)), st.text(alphabet=" :#-<>'\"\\\n\tab|{}[]&*!é", max_size=3))
def test_any_edit_of_a_simple_document_is_read_as_libyaml_reads_it(at: int, inserted: str) -> None:
    text = W1_DOCUMENT[:at] + inserted + W1_DOCUMENT[at:]
    simple = splice.scan_simple(text)
    if simple is not None:
        assert simple == _by_libyaml(text)


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(0, len(HELM_DOCUMENT)), st.text(alphabet=" :#-<>'\"\\\n\tab|{}[]&*!é", max_size=3)
)
def test_any_edit_of_a_helm_document_is_read_as_libyaml_reads_it(at: int, inserted: str) -> None:
    text = HELM_DOCUMENT[:at] + inserted + HELM_DOCUMENT[at:]
    simple = splice.scan_simple(text)
    if simple is not None:
        assert simple == _by_libyaml(text)
