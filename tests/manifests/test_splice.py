"""The splice primitive: what a document's events say, and writing values into spans.

What Go reads from spliced output is proven in tests/integration/test_splice_goyaml.py; these
tests pin the scan (paths, spans, the documents refused) and the writing rules.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

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
