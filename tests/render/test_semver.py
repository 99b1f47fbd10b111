"""Helm (Masterminds) version constraints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.render.semver import Version, VersionError, is_exact, parse_constraint

CASES = [
    (">=0.0.0 <1.0.0", ["0.0.0", "0.9.9", "0.1.0"], ["1.0.0", "1.0.0-rc.1", "0.5.0-beta"]),
    ("1.2.3", ["1.2.3", "v1.2.3"], ["1.2.4", "1.2.3-rc.1"]),
    ("=1.2.3", ["1.2.3"], ["1.2.2"]),
    ("!=1.2.3", ["1.2.4", "0.1.0"], ["1.2.3"]),
    (">1.2.3", ["1.2.4", "2.0.0"], ["1.2.3", "1.0.0"]),
    ("<=1.2.3", ["1.2.3", "1.0.0"], ["1.2.4"]),
    ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
    ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
    ("~1", ["1.0.0", "1.9.9"], ["2.0.0"]),
    ("^1.2.3", ["1.2.3", "1.9.0"], ["2.0.0", "1.2.2"]),
    ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
    ("^0.0.3", ["0.0.3"], ["0.0.4"]),
    ("^0", ["0.0.0", "0.9.0"], ["1.0.0"]),
    ("1.2.x", ["1.2.0", "1.2.99"], ["1.3.0", "1.1.9"]),
    ("1.x", ["1.0.0", "1.99.0"], ["2.0.0"]),
    ("*", ["0.0.1", "99.0.0"], ["1.0.0-alpha"]),
    ("", ["1.0.0"], []),
    (">1.2", ["1.3.0"], ["1.2.9"]),
    ("<=1.2", ["1.2.9"], ["1.3.0"]),
    ("<1.2", ["1.1.9"], ["1.2.0"]),
    ("1.2 - 1.4.5", ["1.2.0", "1.4.5"], ["1.4.6", "1.1.9"]),
    (">=1.0.0, <2.0.0", ["1.5.0"], ["2.0.0"]),
    (">= 1.0.0 < 2.0.0", ["1.5.0"], ["2.0.0"]),
    ("<1.0.0 || >=3.0.0", ["0.5.0", "3.1.0"], ["2.0.0"]),
    (">=1.0.0-0 <2.0.0", ["1.5.0-rc.1", "1.0.0"], ["2.0.0"]),
    ("!=1.2.x", ["1.3.0", "1.1.0"], ["1.2.5"]),
    ("v1.14.3", ["1.14.3"], ["1.14.4"]),
]


@pytest.mark.parametrize(("constraint", "allowed", "refused"), CASES)
def test_constraints(constraint: str, allowed: list[str], refused: list[str]) -> None:
    parsed = parse_constraint(constraint)
    for version in allowed:
        assert parsed.allows(Version.parse(version)), (constraint, version)
    for version in refused:
        assert not parsed.allows(Version.parse(version)), (constraint, version)


def test_best_picks_the_highest() -> None:
    versions = [Version.parse(v) for v in ["0.1.0", "0.2.0", "0.10.0", "1.0.0", "0.11.0-rc.1"]]
    best = parse_constraint(">=0.0.0 <1.0.0").best(versions)
    assert best is not None and str(best) == "0.10.0"
    assert parse_constraint(">5").best(versions) is None


@pytest.mark.parametrize("text", ["abc", "1.2.3.4", ">=x.y", "1.2 -", "||"])
def test_invalid(text: str) -> None:
    with pytest.raises(VersionError):
        parse_constraint(text)


def test_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
    ]
    parsed = [Version.parse(v) for v in ordered]
    assert sorted(reversed(parsed)) == parsed


def test_is_exact() -> None:
    assert is_exact("1.2.3") and is_exact("=1.2.3") and is_exact("v1.2.3")
    assert not is_exact("1.2") and not is_exact("^1.2.3") and not is_exact(">=1.0.0")


@given(
    st.tuples(*(st.integers(0, 50) for _ in range(3))),
    st.tuples(*(st.integers(0, 50) for _ in range(3))),
)
def test_order_matches_tuples(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    va, vb = Version(*a), Version(*b)
    assert (va < vb) == (a < b)
    assert parse_constraint(f">={b[0]}.{b[1]}.{b[2]}").allows(va) == (a >= b)
