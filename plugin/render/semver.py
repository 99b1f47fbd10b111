"""Semantic versions and Helm's version constraints (the Masterminds/semver v3 syntax).

Helm resolves `dependencies[].version` against a repository index with these rules;
the subset implemented here is the one charts use in practice:

- comparators `=`, `!=`, `>`, `<`, `>=` (`=>`), `<=` (`=<`), `~` (`~>`), `^`;
- wildcards `x`, `X`, `*` and missing parts (`1.2` means `1.2.x`);
- hyphen ranges `1.2 - 1.4.5`;
- AND by spaces or commas, OR by `||`.

Pre-releases (`1.2.0-rc.1`) only satisfy a group of comparators of which one names a
pre-release itself (as Masterminds: `>=1.0.0` never selects `1.1.0-rc.1`).
Versions are ordered by semver precedence; build metadata is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import total_ordering

from plugin.errors import RenderError

_VERSION = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_PARTIAL = re.compile(
    r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?$"
)
_COMPARATOR = re.compile(r"^(!=|>=|=>|<=|=<|~>|>|<|=|~|\^)?\s*(\S+)$")
_WILDCARDS = frozenset({"x", "X", "*"})


class VersionError(RenderError):
    """A version or a constraint cannot be parsed."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    original: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `1.2.3`, `v1.2.3-rc.1+build`, or the short forms `1` / `1.2` Helm accepts."""
        match = _VERSION.match(text.strip())
        if match is None:
            raise VersionError(f"invalid version {text!r}")
        major, minor, patch, pre, _build = match.groups()
        return cls(
            int(major),
            int(minor or 0),
            int(patch or 0),
            tuple(pre.split(".")) if pre else (),
            text.strip(),
        )

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key() and self.prerelease == other.prerelease

    def __hash__(self) -> int:
        return hash((self._key(), self.prerelease))

    def __lt__(self, other: Version) -> bool:
        if self._key() != other._key():
            return self._key() < other._key()
        return _pre_less(self.prerelease, other.prerelease)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return text + ("-" + ".".join(self.prerelease) if self.prerelease else "")


def _pre_less(left: tuple[str, ...], right: tuple[str, ...]) -> bool:
    """Semver §11: a version without pre-release ranks higher; identifiers compare in order."""
    if not left or not right:
        return bool(left) and not right
    for a, b in zip(left, right, strict=False):
        if a == b:
            continue
        a_num, b_num = a.isdigit(), b.isdigit()
        if a_num and b_num:
            return int(a) < int(b)
        if a_num != b_num:
            return a_num  # numeric identifiers rank lower than alphanumeric ones
        return a < b
    return len(left) < len(right)


def parse_version(text: str) -> Version | None:
    """A version, or None when `text` is not one (index entries with odd versions are skipped)."""
    try:
        return Version.parse(text)
    except VersionError:
        return None


@dataclass(frozen=True)
class _Bound:
    """One primitive comparison `version OP bound`."""

    op: str  # one of = != > < >= <=
    version: Version

    def allows(self, version: Version) -> bool:
        if self.op == "=":
            return version == self.version
        if self.op == "!=":
            return version != self.version
        if self.op == ">":
            return version > self.version
        if self.op == ">=":
            return version >= self.version
        if self.op == "<":
            return version < self.version
        return version <= self.version


@dataclass(frozen=True)
class _Group:
    """Comparators joined by AND; `excludes` are `!=` ranges produced by wildcards."""

    bounds: tuple[_Bound, ...]
    excludes: tuple[tuple[Version, Version], ...]
    allows_prerelease: bool

    def allows(self, version: Version) -> bool:
        if version.is_prerelease and not self.allows_prerelease:
            return False
        if not all(bound.allows(version) for bound in self.bounds):
            return False
        return not any(low <= version < high for low, high in self.excludes)


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint: OR of AND-groups."""

    text: str
    groups: tuple[_Group, ...]

    def allows(self, version: Version) -> bool:
        return any(group.allows(version) for group in self.groups)

    def best(self, versions: Iterable[Version]) -> Version | None:
        """The highest version that satisfies the constraint."""
        candidates = [version for version in versions if self.allows(version)]
        return max(candidates) if candidates else None


@dataclass(frozen=True)
class _Partial:
    """A version with wildcard parts: `parts` holds the known leading numbers (0 to 3)."""

    parts: tuple[int, ...]
    prerelease: tuple[str, ...]

    @property
    def low(self) -> Version:
        padded = (*self.parts, 0, 0, 0)[:3]
        return Version(padded[0], padded[1], padded[2], self.prerelease)

    @property
    def high(self) -> Version | None:
        """First version above the wildcard range (None for `*`)."""
        if not self.parts:
            return None
        if len(self.parts) == 1:
            return Version(self.parts[0] + 1, 0, 0, ("0",))
        if len(self.parts) == 2:
            return Version(self.parts[0], self.parts[1] + 1, 0, ("0",))
        return None

    @property
    def exact(self) -> bool:
        return len(self.parts) == 3


def _parse_partial(text: str, whole: str) -> _Partial:
    match = _PARTIAL.match(text)
    if match is None:
        raise VersionError(f"invalid version {text!r} in constraint {whole!r}")
    parts: list[int] = []
    for piece in match.groups()[:3]:
        if piece is None or piece in _WILDCARDS:
            break
        parts.append(int(piece))
    pre = match.group(4)
    return _Partial(tuple(parts), tuple(pre.split(".")) if pre and len(parts) == 3 else ())


def _upper(version: Version) -> Version:
    """`version` as an exclusive upper bound that also excludes its pre-releases."""
    return Version(version.major, version.minor, version.patch, ("0",))


def _comparator(op: str, partial: _Partial) -> tuple[list[_Bound], list[tuple[Version, Version]]]:
    low, high = partial.low, partial.high
    parts = partial.parts
    if op in ("", "="):
        if partial.exact:
            return [_Bound("=", low)], []
        return ([_Bound(">=", low)] if parts else []) + ([_Bound("<", high)] if high else []), []
    if op == "!=":
        if partial.exact:
            return [_Bound("!=", low)], []
        if not parts:
            return [_Bound("<", Version(0, 0, 0, ("0",)))], []  # != * matches nothing
        assert high is not None
        return [], [(low, high)]
    if op == ">":
        if partial.exact:
            return [_Bound(">", low)], []
        return ([_Bound(">=", high)] if high else [_Bound("<", Version(0, 0, 0, ("0",)))]), []
    if op == ">=":
        return [_Bound(">=", low)], []
    if op == "<":
        return [_Bound("<", low if partial.exact or partial.prerelease else _upper(low))], []
    if op == "<=":
        if partial.exact:
            return [_Bound("<=", low)], []
        return ([_Bound("<", high)] if high else []), []
    if op in ("~", "~>"):
        if len(parts) <= 1:
            top = Version((parts[0] if parts else 0) + 1, 0, 0, ("0",))
        else:
            top = Version(parts[0], parts[1] + 1, 0, ("0",))
        return ([_Bound(">=", low)] + ([_Bound("<", top)] if parts else [])), []
    # caret
    if not parts:
        return [], []
    if parts[0] > 0 or len(parts) == 1:
        top = Version(parts[0] + 1, 0, 0, ("0",))
    elif len(parts) == 2 or parts[1] > 0:
        top = Version(0, parts[1] + 1, 0, ("0",))
    else:
        top = Version(0, 0, parts[2] + 1, ("0",))
    return [_Bound(">=", low), _Bound("<", top)], []


def _tokens(group: str) -> list[str]:
    """Split an AND-group into comparators, gluing an operator to its version (`>= 1.2`)."""
    raw = [piece for piece in re.split(r"[\s,]+", group.strip()) if piece]
    tokens: list[str] = []
    pending = ""
    for piece in raw:
        if re.fullmatch(r"!=|>=|=>|<=|=<|~>|>|<|=|~|\^", piece):
            pending += piece
            continue
        tokens.append(pending + piece)
        pending = ""
    if pending:
        tokens.append(pending)
    return tokens


def parse_constraint(text: str) -> Constraint:
    """Parse a Helm dependency version constraint; VersionError names the bad part."""
    whole = text.strip()
    if not whole:
        whole = "*"
    groups: list[_Group] = []
    for raw_alternative in whole.split("||"):
        alternative = raw_alternative.strip()
        if not alternative:
            raise VersionError(f"empty alternative in version constraint {text!r}")
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", alternative)
        items: list[tuple[str, _Partial]]
        if hyphen:
            items = [
                (">=", _parse_partial(hyphen.group(1), text)),
                ("<=", _parse_partial(hyphen.group(2), text)),
            ]
        else:
            items = []
            for token in _tokens(alternative):
                match = _COMPARATOR.match(token)
                if match is None:
                    raise VersionError(f"invalid comparator {token!r} in constraint {text!r}")
                items.append((match.group(1) or "", _parse_partial(match.group(2), text)))
        bounds: list[_Bound] = []
        excludes: list[tuple[Version, Version]] = []
        for op, partial in items:
            more_bounds, more_excludes = _comparator(op, partial)
            bounds.extend(more_bounds)
            excludes.extend(more_excludes)
        allows_pre = any(partial.prerelease for _, partial in items)
        groups.append(_Group(tuple(bounds), tuple(excludes), allows_pre))
    return Constraint(text, tuple(groups))


def is_exact(text: str) -> bool:
    """True when the constraint names exactly one version (`1.2.3`, `=1.2.3`, `v1.2.3`)."""
    stripped = text.strip().removeprefix("=").strip()
    match = _VERSION.match(stripped)
    return match is not None and match.group(3) is not None
