"""Grammar: which placeholders are found and how they split (spec §1)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path
from typing import SupportsIndex

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


# ------------------------------------------------------------------ linear scanner vs. AVP regexes

#: The regexes the finder used to run (AVP's grammar, unchanged): the oracle for the linear scan.
ORACLE_GENERIC = re.compile(r"<(.*?)>")
ORACLE_SPECIFIC = re.compile(r"<path:([^#]+?)#([^#]+?)(?:#([^#]+?))??>")
ORACLE_INLINE = re.compile(r"path:(?P<path>[^#]+)#(?P<key>[^#]+)(?:#(?P<version>.+))?")

#: Characters that matter to the grammar, plus filler: random text is mostly near-misses.
_GRAMMAR_ALPHABET = st.sampled_from(["<", ">", "#", "\n", "path:", "<path:", "p", "a", " ", "|"])


def _oracle_spans(text: str, generic: bool) -> list[tuple[int, int]]:
    if not ("<" in text and ">" in text):
        return []
    pattern = ORACLE_GENERIC if generic else ORACLE_SPECIFIC
    return [m.span() for m in pattern.finditer(text)]


@settings(max_examples=800, deadline=None)
@given(st.lists(_GRAMMAR_ALPHABET, max_size=60).map("".join), st.booleans())
def test_linear_finder_matches_the_regex_grammar(text: str, generic: bool) -> None:
    found = [(m.start, m.end) for m in grammar.find(text, generic)]
    assert found == _oracle_spans(text, generic)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80), st.booleans())
def test_linear_finder_matches_the_regex_grammar_on_any_text(text: str, generic: bool) -> None:
    found = [(m.start, m.end) for m in grammar.find(text, generic)]
    assert found == _oracle_spans(text, generic)


@settings(max_examples=800, deadline=None)
@given(st.lists(_GRAMMAR_ALPHABET, max_size=40).map("".join))
def test_inline_parts_match_the_regex_grammar(name: str) -> None:
    expected = ORACLE_INLINE.search(name)
    got = grammar._inline_parts(name)
    if expected is None:
        assert got is None
    else:
        assert got == (expected.group("path"), expected.group("key"), expected.group("version"))


class _CountingText(str):
    """A str that counts the characters its `find` calls may look at (the scan's cost)."""

    looked_at = 0

    def find(
        self, sub: str, start: SupportsIndex | None = None, end: SupportsIndex | None = None
    ) -> int:  # type: ignore[override]
        begin = 0 if start is None else int(start)
        stop = len(self) if end is None else min(int(end), len(self))
        found = str.find(self, sub, begin, stop)
        _CountingText.looked_at += max(0, (found + len(sub) if found >= 0 else stop) - begin)
        return found


HOSTILE_MEGABYTE = [
    ("unterminated <path:", "<path:" * 170_000 + ">", False),
    ("<path: with one far #", "<path:" * 170_000 + "#>", False),
    ("<path:a#b#c without >", "<path:a#b#c " * 85_000 + ">", False),
    ("generic < without > on the line", "<" * 1_000_000 + "\n>", True),
    ("generic < lines", ("<" * 1000 + "\n") * 1000 + ">", True),
    ("generic path: without #", "<" + "path:" * 200_000 + ">", True),
]


@pytest.mark.parametrize(
    ("label", "text", "generic"), HOSTILE_MEGABYTE, ids=[h[0] for h in HOSTILE_MEGABYTE]
)
def test_a_megabyte_of_hostile_text_is_scanned_in_linear_work(
    label: str, text: str, generic: bool
) -> None:
    """Counted, not timed: the regexes needed ~n²/2 character steps here (10^11)."""
    counting = _CountingText(text)
    _CountingText.looked_at = 0
    matches = list(grammar.find(counting, generic))
    for match in matches:
        _CountingText.looked_at += len(match.text)
        grammar._inline_parts(_CountingText(match.text))
    assert _CountingText.looked_at <= 8 * len(text), label


def test_a_megabyte_of_hostile_text_is_scanned_within_a_generous_bound() -> None:
    """All the cases above, end to end in a fresh interpreter: seconds, where the regexes
    needed hours (the bound is two orders of magnitude above what the scan takes)."""
    script = (
        "import sys\n"
        "from plugin.placeholders import grammar\n"
        "from tests.placeholders.test_grammar import HOSTILE_MEGABYTE\n"
        "for _label, text, generic in HOSTILE_MEGABYTE:\n"
        "    for match in grammar.find(text, generic):\n"
        "        assert match.text\n"
        "print('scanned')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "scanned"


def test_inline_references_are_the_paths_and_versions_of_inline_placeholders() -> None:
    text = (
        'a: "<path:kv/data/a#k>"\n'
        "b: <path:kv/data/b#k#3 | base64encode>\n"
        "c: <generic-key>\n"
        "d: <path:kv/data/a#other>\n"
        "e: <path:#nopath>\n"
    )
    assert list(grammar.inline_references(text)) == [
        ("kv/data/a", None),
        ("kv/data/b", "3"),
        ("kv/data/a", None),
    ]
    assert list(grammar.inline_references("no placeholder <here>")) == []
