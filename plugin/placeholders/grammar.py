"""Placeholder grammar, exactly as argocd-vault-plugin reads it (spec §1).

Pure functions only: find placeholders in a string and split one into its
parts. Which regular expression applies depends on whether the manifest
carries the `avp.kubernetes.io/path` annotation (generic `<key>` placeholders)
or not (only `<path:P#K[#V]>`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from plugin.errors import PlaceholderError

# `<` up to the first `>` on the same line (AVP's `(?mU)<(.*)>`).
GENERIC = re.compile(r"<(.*?)>")
# `<path:P#K>` or `<path:P#K#V>`; P, K and V never contain `#` but may span lines.
SPECIFIC = re.compile(r"<path:([^#]+?)#([^#]+?)(?:#([^#]+?))??>")
# Inside a found placeholder: is it an inline-path one? Unanchored, as in AVP.
INLINE = re.compile(r"path:(?P<path>[^#]+)#(?P<key>[^#]+)(?:#(?P<version>.+))?")


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


def pattern_for(generic_enabled: bool) -> re.Pattern[str]:
    """The regex AVP uses: generic when the path annotation key is present."""
    return GENERIC if generic_enabled else SPECIFIC


def may_contain_placeholder(text: str) -> bool:
    """Cheap pre-check used on every string before running a regex."""
    return "<" in text and ">" in text


def find(text: str, generic_enabled: bool) -> Iterator[Match]:
    """Yield every placeholder of `text`, left to right, never overlapping."""
    if not may_contain_placeholder(text):
        return
    for found in pattern_for(generic_enabled).finditer(text):
        written = found.group(0)
        parsed, error = _parse_cached(written)
        yield Match(found.start(), found.end(), written, parsed, error)


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
    inline = INLINE.search(name)
    if inline is not None:
        return Placeholder(
            text=written,
            path=inline.group("path"),
            key=inline.group("key").strip(),
            version=inline.group("version"),
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
