"""go-yaml v2's scalar typing, checked against what gopkg.in/yaml.v2 v2.4.0 returned for each text.

The expectations were produced by the real Go reader (decoding `v: <text>` into `any`); the
property test in tests/integration/test_goyaml.py keeps checking the rules against it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from plugin.manifests import goresolve

_GO_READS: list[tuple[str, str, Any]] = [
    ("y", "bool", True), ("Y", "bool", True), ("n", "bool", False), ("N", "bool", False),
    ("on", "bool", True), ("OFF", "bool", False), ("oN", "str", "oN"), ("yES", "str", "yES"),
    ("~", "null", None), ("", "null", None), ("Null", "null", None), ("nULL", "str", "nULL"),
    ("0o17", "int", 15), ("0O17", "int", 15), ("0x1F", "int", 31), ("+0x1F", "int", 31),
    ("0777", "int", 511), ("0b101", "int", 5), ("-0b101", "int", -5), ("0b-1", "int", -1),
    ("0b+1_", "int", 1), ("1_000", "int", 1000), ("0_7", "int", 7), ("1_", "int", 1),
    ("0x_1F", "int", 31), ("-0", "int", 0),
    ("08", "float", 8.0), ("0888", "float", 888.0), ("1e3", "float", 1000.0),
    ("1E3", "float", 1000.0), ("1.", "float", 1.0), ("1.e3", "float", 1000.0),
    ("+.5", "float", 0.5), ("-.5e3", "float", -500.0), (".5_0", "float", 0.5),
    ("1_0.5", "float", 10.5), ("1e-400", "float", 0.0),
    ("99999999999999999999", "float", 1e20),
    ("18446744073709551615", "int", 2**64 - 1),
    ("18446744073709551616", "float", 1.8446744073709552e19),
    ("-9223372036854775809", "float", -9.223372036854776e18),
    ("+9223372036854775808", "float", 9.223372036854776e18),
    ("0xFFFFFFFFFFFFFFFF", "int", 2**64 - 1), ("0x10000000000000000", "str", "0x10000000000000000"),
    (".nan", "float", math.nan), (".NaN", "float", math.nan), (".nAn", "str", ".nAn"),
    (".Inf", "float", math.inf), ("+.inf", "float", math.inf), ("-.INF", "float", -math.inf),
    ("1e400", "str", "1e400"), ("._5", "str", "._5"), ("+", "str", "+"), (".", "str", "."),
    ("0x1p-2", "str", "0x1p-2"), ("0b", "str", "0b"), ("0o", "str", "0o"), ("1e", "str", "1e"),
    ("0.0.0", "str", "0.0.0"), ("_1", "str", "_1"), ("=", "str", "="), ("<<", "str", "<<"),
    ("2024-01-01", "str", "2024-01-01"), ("1:20", "str", "1:20"), ("inf", "str", "inf"),
    ("+inf", "str", "+inf"), ("nan", "str", "nan"), ("é", "str", "é"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "kind", "value"), _GO_READS)
def test_scalars_are_typed_as_go_yaml_v2_types_them(text: str, kind: str, value: Any) -> None:
    tag, got = goresolve.resolve(text)
    assert tag == f"tag:yaml.org,2002:{kind}"
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(got)
    else:
        assert got == value
        assert type(got) is type(value)


def test_explicit_tags_convert_or_fail_as_go_does() -> None:
    assert goresolve.resolve_tagged(goresolve.FLOAT, "1") == 1.0
    assert goresolve.resolve_tagged(goresolve.INT, "0o17") == 15
    assert goresolve.resolve_tagged(goresolve.STR, "y") == "y"
    with pytest.raises(ValueError, match="cannot decode !!str `abc` as a !!int"):
        goresolve.resolve_tagged(goresolve.INT, "abc")


@pytest.mark.parametrize("text", ["y", "n", "N", "1e3", "1e+21", "0o17", "08", "<<", ".5", "~"])
def test_retyped_texts_are_flagged(text: str) -> None:
    assert goresolve.retyped(text)


@pytest.mark.parametrize("text", ["=", "yes please", "1e400", "0x", "é", "2024-01-01"])
def test_strings_to_go_are_not_flagged(text: str) -> None:
    assert not goresolve.retyped(text)
