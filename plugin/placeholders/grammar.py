"""Placeholder grammar, exactly as argocd-vault-plugin reads it (spec §1).

Pure functions only: find placeholders in a string and split one into its
parts. Which regular expression applies depends on whether the manifest
carries the `avp.kubernetes.io/path` annotation (generic `<key>` placeholders)
or not (only `<path:P#K[#V]>`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from plugin.errors import PlaceholderError

# The grammar, as AVP writes it (Go regexp, which is linear). Python's backtracking `re` takes
# quadratic time on these patterns with hostile text (120 KB of `<path:` without `#` took
# 30-50 s), so `find` and `parse` implement them with bounded `str.find` scans instead; the
# tests keep these regexes as the oracle and compare both on random input.
#   generic:  `<(.*?)>`                                   (`<` up to the first `>` on the line)
#   specific: `<path:([^#]+?)#([^#]+?)(?:#([^#]+?))??>`   (P, K, V never contain `#`)
#   inline:   `path:(?P<path>[^#]+)#(?P<key>[^#]+)(?:#(?P<version>.+))?` (unanchored search)
_PATH_OPEN = "<path:"
_INLINE_OPEN = "path:"


@dataclass(frozen=True)
class Modifier:
    """One `| name arg…` statement after the placeholder."""

    name: str
    args: tuple[str, ...]
    #: The statement text after the name, spaces kept (used by `default`).
    raw_argument: str


@dataclass(frozen=True)
class Placeholder:
    """A parsed placeholder: where to read, which key, and what to do with the value."""

    #: The text exactly as written, from `<` to `>` (used in messages, never a value).
    text: str
    #: Inline path (`<path:P#K>`); None for generic `<K>` placeholders.
    path: str | None
    key: str
    version: str | None
    modifiers: tuple[Modifier, ...]
    #: The placeholder without its modifiers, as AVP names it in errors.
    name: str

    @property
    def is_inline(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class Match:
    """A placeholder found in a string: its span and its parse (or the parse error)."""

    start: int
    end: int
    text: str
    placeholder: Placeholder | None
    error: PlaceholderError | None


def may_contain_placeholder(text: str) -> bool:
    """Cheap pre-check used on every string before scanning it."""
    return "<" in text and ">" in text


def find(text: str, generic_enabled: bool) -> Iterator[Match]:
    """Yield every placeholder of `text`, left to right, never overlapping.

    Generic placeholders are searched when the manifest carries the path annotation, else
    only `<path:P#K[#V]>` ones (as AVP does). Time is linear in `len(text)`.
    """
    if not may_contain_placeholder(text):
        return
    spans = _generic_spans(text) if generic_enabled else _specific_spans(text)
    for start, end in spans:
        written = text[start:end]
        parsed, error = _parse_cached(written)
        yield Match(start, end, written, parsed, error)


def inline_references(text: str) -> Iterator[tuple[str, str | None]]:
    """`(path, version)` of every `<path:P#K[#V]>` in `text`, left to right, repeats kept.

    For looking ahead at source files (Helm values, templates, Kustomize resources) before
    they are rendered: the same scan and parse as `find`, without the generic `<key>` form,
    whose path comes from an annotation the source text may not show yet.
    """
    if _PATH_OPEN not in text:
        return
    for match in find(text, False):
        found = match.placeholder
        if found is not None and found.path is not None:
            yield found.path, found.version


def _generic_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of `<(.*?)>`: a `<` and the first `>` after it on the same line.

    When a `<` has no `>` before the end of its line, no other `<` of that line can have one
    either, so the scan moves to the next line: every character is looked at a bounded
    number of times.
    """
    size = len(text)
    position = 0
    while True:
        start = text.find("<", position)
        if start < 0:
            return
        line_end = text.find("\n", start + 1)
        limit = size if line_end < 0 else line_end
        close = text.find(">", start + 1, limit)
        if close >= 0:
            yield start, close + 1
            position = close + 1
        elif line_end < 0:
            return
        else:
            position = line_end + 1


def _specific_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of `<path:([^#]+?)#([^#]+?)(?:#([^#]+?))??>`, leftmost first, lazy as in AVP.

    P runs to the first `#`; the match then ends at the first `>` that leaves a non-empty K
    before the next `#`, or else at the first `>` that leaves a non-empty V before the `#`
    after that. A `<path:` that fails makes every `<path:` inside its own P fail the same
    way, so the scan resumes after P's `#`: each `#`-separated segment is looked at by at
    most three attempts.
    """
    position = 0
    while True:
        start = text.find(_PATH_OPEN, position)
        if start < 0:
            return
        path_start = start + len(_PATH_OPEN)
        first_hash = text.find("#", path_start)
        if first_hash < 0:
            return  # no `#` at all: no later `<path:` can match either
        if first_hash == path_start:
            position = start + 1  # empty P
            continue
        key_start = first_hash + 1
        second_hash = text.find("#", key_start)
        key_limit = len(text) if second_hash < 0 else second_hash
        close = text.find(">", key_start + 1, key_limit) if key_limit > key_start else -1
        if close < 0 and second_hash > key_start:
            third_hash = text.find("#", second_hash + 1)
            version_limit = len(text) if third_hash < 0 else third_hash
            close = text.find(">", second_hash + 2, version_limit)
        if close >= 0:
            yield start, close + 1
            position = close + 1
        else:
            position = first_hash + 1


def _inline_parts(name: str) -> tuple[str, str, str | None] | None:
    """`path:P#K[#V]` searched anywhere in `name`, greedy as in AVP; None when absent.

    P runs from `path:` to the next `#`, K from there to the following `#` (or the end), and
    V (when that `#` is followed by something) up to the end of the line. A failed `path:`
    fails for every `path:` inside its P too, so the search resumes after P's `#`.
    """
    position = 0
    while True:
        start = name.find(_INLINE_OPEN, position)
        if start < 0:
            return None
        path_start = start + len(_INLINE_OPEN)
        first_hash = name.find("#", path_start)
        if first_hash < 0:
            return None
        if first_hash == path_start:
            position = start + 1
            continue
        second_hash = name.find("#", first_hash + 1)
        key_end = len(name) if second_hash < 0 else second_hash
        if key_end == first_hash + 1:
            position = first_hash + 1  # empty K
            continue
        version: str | None = None
        if second_hash >= 0:
            line_end = name.find("\n", second_hash + 1)
            version = name[second_hash + 1 : len(name) if line_end < 0 else line_end] or None
        return name[path_start:first_hash], name[first_hash + 1 : key_end], version


@functools.lru_cache(maxsize=8192)
def _parse_cached(written: str) -> tuple[Placeholder | None, PlaceholderError | None]:
    """Big renders repeat the same placeholder text many times; parse each once."""
    try:
        return parse(written), None
    except PlaceholderError as exc:
        return None, exc


def parse(written: str) -> Placeholder:
    """Split placeholder text such as `<path:a/b#k#2 | base64encode>` into its parts.

    Follows AVP: strip every leading/trailing `<`/`>`, split on `|`, trim ASCII
    spaces from the first field; inline-path placeholders are recognised by an
    unanchored search for `path:P#K`. Only the key is whitespace-trimmed.
    """
    inner = written.strip("<>")
    fields = inner.split("|")
    name = fields[0].strip(" ")
    modifiers = tuple(parse_modifier(statement, written) for statement in fields[1:])
    inline = _inline_parts(name)
    if inline is not None:
        path, key, version = inline
        return Placeholder(
            text=written,
            path=path,
            key=key.strip(),
            version=version,
            modifiers=modifiers,
            name=name,
        )
    return Placeholder(
        text=written, path=None, key=name, version=None, modifiers=modifiers, name=name
    )


def parse_modifier(statement: str, written: str) -> Modifier:
    """Parse one modifier statement; an empty one is an error (AVP panics on it)."""
    words = statement.split()
    if not words:
        raise PlaceholderError(f"empty modifier statement after '|' in {written}")
    name = words[0]
    raw_argument = statement.strip()[len(name) :].strip()
    return Modifier(name=name, args=tuple(words[1:]), raw_argument=raw_argument)
