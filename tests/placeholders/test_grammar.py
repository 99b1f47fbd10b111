"""Grammar: which placeholders are found and how they split (spec §1)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.errors import PlaceholderError
from plugin.placeholders import grammar


def texts(value: str, generic: bool) -> list[str]:
    return [match.text for match in grammar.find(value, generic)]


def test_specific_placeholder_found_without_annotation() -> None:
    assert texts("a <path:kv/data/x#k> b", generic=False) == ["<path:kv/data/x#k>"]


def test_generic_placeholder_ignored_without_annotation() -> None:
    assert texts("a <key> b", generic=False) == []


def test_generic_placeholder_found_with_annotation() -> None:
    assert texts("foo.io/<name>:<tag>", generic=True) == ["<name>", "<tag>"]


def test_generic_stops_at_first_closing_bracket_on_the_line() -> None:
    assert texts("<a>b>", generic=True) == ["<a>"]
    assert texts("<a\nb>", generic=True) == []


def test_three_hashes_do_not_match() -> None:
    assert texts("<path:a#b#c#d>", generic=False) == []


def test_specific_may_span_lines() -> None:
    assert texts("<path:a/b#k\ney>", generic=False) == ["<path:a/b#k\ney>"]


def test_empty_generic_placeholder_matches() -> None:
    matches = list(grammar.find("<>", generic_enabled=True))
    assert [m.text for m in matches] == ["<>"]
    assert matches[0].placeholder is not None
    assert matches[0].placeholder.key == ""


def test_parse_inline_with_version_and_modifiers() -> None:
    parsed = grammar.parse("<path:kv/data/app#password#3 | base64encode>")
    assert parsed.path == "kv/data/app"
    assert parsed.key == "password"
    assert parsed.version == "3"
    assert [m.name for m in parsed.modifiers] == ["base64encode"]
    assert parsed.is_inline


def test_parse_generic_trims_spaces_only() -> None:
    assert grammar.parse("< key >").key == "key"
    assert grammar.parse("<key\t>").key == "key\t"


def test_inline_path_keeps_spaces_and_key_is_trimmed() -> None:
    parsed = grammar.parse("<path:a/b # key>")
    assert parsed.path == "a/b "
    assert parsed.key == "key"


def test_modifier_arguments_collapse_whitespace() -> None:
    parsed = grammar.parse("<  data |jsonPath  {.a}|  jsonParse >")
    assert parsed.key == "data"
    assert [(m.name, m.args) for m in parsed.modifiers] == [
        ("jsonPath", ("{.a}",)),
        ("jsonParse", ()),
    ]


def test_default_keeps_its_text() -> None:
    parsed = grammar.parse("<path:a#b | default  two  words >")
    assert parsed.modifiers[0].raw_argument == "two  words"


def test_generic_key_containing_path_syntax_is_inline() -> None:
    parsed = grammar.parse("<mypath:x#y>")
    assert parsed.path == "x"
    assert parsed.key == "y"


@pytest.mark.parametrize("text", ["<k | >", "<k |>", "<k || base64encode>"])
def test_empty_modifier_statement_is_a_clean_error(text: str) -> None:
    with pytest.raises(PlaceholderError, match="empty modifier"):
        grammar.parse(text)


def test_find_reports_parse_errors_per_match() -> None:
    matches = list(grammar.find("<path:a#b | > and <path:c#d>", generic_enabled=False))
    assert matches[0].error is not None
    assert matches[1].placeholder is not None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), st.booleans())
def test_finder_never_raises(text: str, generic: bool) -> None:
    for match in grammar.find(text, generic):
        assert text[match.start : match.end] == match.text
        assert (match.placeholder is None) != (match.error is None)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="<>|#:path ab\n\t", max_size=40))
def test_parse_raises_only_project_errors(text: str) -> None:
    with contextlib.suppress(PlaceholderError):
        grammar.parse(text)
