"""Every modifier with AVP's semantics, its errors, and the additions (spec §2)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.errors import ModifierError
from plugin.placeholders import modifiers


def apply(name: str, value: Any, *args: str) -> Any:
    return modifiers.apply(name, tuple(args), value)


def test_base64encode() -> None:
    assert apply("base64encode", "mysecret") == "bXlzZWNyZXQ="


@pytest.mark.parametrize("name", ["base64encode", "base64decode", "jsonParse", "yamlParse"])
def test_string_modifiers_reject_parameters(name: str) -> None:
    with pytest.raises(ModifierError, match=f"{name}: invalid parameters"):
        apply(name, "x", "astring")


@pytest.mark.parametrize("name", ["base64encode", "base64decode", "jsonParse", "yamlParse"])
def test_string_modifiers_reject_maps(name: str) -> None:
    with pytest.raises(ModifierError, match=r"invalid datatype map\[string\]interface \{\}"):
        apply(name, {"a": 1})


def test_base64encode_rejects_numbers_like_avp() -> None:
    with pytest.raises(ModifierError, match=r"invalid datatype json\.Number"):
        apply("base64encode", 80)


def test_base64decode() -> None:
    assert apply("base64decode", "bXlzZWNyZXQ=") == "mysecret"


def test_base64decode_ignores_line_breaks() -> None:
    assert apply("base64decode", "bXlz\r\nZWNyZXQ=") == "mysecret"


def test_base64decode_keeps_what_decoded_before_an_error() -> None:
    assert apply("base64decode", "bXlzZWNy!!!!") == "mysecr"


def test_go_std_b64decode_is_strict() -> None:
    assert modifiers.go_std_b64decode("c29tZQ==<x>") is None
    assert modifiers.go_std_b64decode("c29tZQ") is None
    assert modifiers.go_std_b64decode("") == b""


def test_json_parse() -> None:
    assert apply("jsonParse", '{"a": [1, 2.5, true, null]}') == {"a": [1, 2.5, True, None]}


def test_json_parse_invalid_json_message_has_no_value() -> None:
    with pytest.raises(ModifierError) as caught:
        apply("jsonParse", "hello-canary")
    assert "canary" not in str(caught.value)
    assert "not valid JSON" in str(caught.value)


def test_yaml_parse_keeps_timestamps_as_text() -> None:
    assert apply("yamlParse", "a: 2024-01-01\nb: yes") == {"a": "2024-01-01", "b": True}


def test_yaml_parse_error_hides_value() -> None:
    with pytest.raises(ModifierError) as caught:
        apply("yamlParse", "key: [unclosed-canary")
    assert "canary" not in str(caught.value)


def test_indent_as_avp() -> None:
    assert apply("indent", "a\nmulti-line\nstring", "3") == "a\n   multi-line\n   string"
    assert apply("indent", "a-string", "10") == "a-string"


def test_indent_drops_blank_lines_and_original_indent() -> None:
    assert apply("indent", "a\n  b\n\nc\n", "2") == "a\n  b\n  c\n"


def test_indent_negative_means_no_spaces() -> None:
    assert apply("indent", "a\nb", "-4") == "a\nb"


def test_indent_errors() -> None:
    with pytest.raises(ModifierError, match="invalid indentation level"):
        apply("indent", "x", "ten")
    with pytest.raises(ModifierError, match="invalid parameters"):
        apply("indent", "x", "10", "10")


def test_reindent_keeps_relative_indent_and_blank_lines() -> None:
    pem = "-----BEGIN-----\n  line1\n    nested\n\n  line2"
    assert apply("reindent", pem, "4") == "-----BEGIN-----\n    line1\n      nested\n\n    line2"


def test_sha256sum() -> None:
    assert (
        apply("sha256sum", "mysecret")
        == "652c7dc687d98c9889304ed2e408c74b611e86a40caa51c4b43f1dd5913c5cd0"
    )


def test_sha256sum_rejects_numbers_cleanly() -> None:
    with pytest.raises(ModifierError, match=r"invalid datatype json\.Number, expected string"):
        apply("sha256sum", 80)


def test_unknown_modifier() -> None:
    with pytest.raises(ModifierError, match="invalid modifier: nope"):
        apply("nope", "x")


def test_default_is_a_no_op_on_present_values() -> None:
    assert apply("default", "present", "fallback") == "present"


@pytest.mark.parametrize(
    ("number", "text"),
    [(80, "80"), (80.0, "80"), (0.5, "0.5"), (1e21, "1e+21"), (1.5e-07, "1.5e-07"), (-3, "-3")],
)
def test_go_number_text(number: float, text: str) -> None:
    assert modifiers.go_number_text(number) == text


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(modifiers.REGISTRY)),
    st.lists(st.text(alphabet="{}.[]*@$-0123456789abc' ", max_size=8), max_size=2),
    values,
)
def test_modifiers_raise_only_project_errors(name: str, args: list[str], value: Any) -> None:
    with contextlib.suppress(ModifierError):
        modifiers.apply(name, tuple(args), value)


def test_base64decode_keeps_bytes_that_are_not_utf8() -> None:
    raw = b"\xff\xfe\x00binary\xe2\x82"
    encoded = base64.b64encode(raw).decode()
    decoded = apply("base64decode", encoded)
    assert apply("base64encode", decoded) == encoded
    assert apply("sha256sum", decoded) == hashlib.sha256(raw).hexdigest()
    # Written out, each invalid byte becomes U+FFFD, as Go's encoders do.
    assert modifiers.go_text(decoded) == "\ufffd\ufffd\x00binary\ufffd\ufffd"


def test_json_path_prints_json_numbers_as_go_float64() -> None:
    printed = apply("jsonPath", '{"a": 1000000, "b": 80, "c": 0.5}', "{.a} {.b} {.c}")
    assert printed == "1e+06 80 0.5"


def test_json_path_prints_null_as_null() -> None:
    assert apply("jsonPath", '{"a": null, "l": [null, 1]}', "{.a} {.l[*]} {.l}") == (
        "null null 1 [null,1]"
    )


def test_yaml_parse_types_like_go() -> None:
    assert apply("yamlParse", "a: y\nb: n\nc: 0o17\nd: 5\n1.5: x\ntrue: t\nn: k") == {
        "a": True,
        "b": False,
        "c": 15.0,
        "d": 5.0,
        "1.5": "x",
        "true": "t",
        "false": "k",
    }


@pytest.mark.parametrize(("text", "shown"), [(".nan", "NaN"), (".inf", "+Inf"), ("-.Inf", "-Inf")])
def test_yaml_parse_of_nan_or_infinity_fails_as_in_avp(text: str, shown: str) -> None:
    with pytest.raises(ModifierError, match=f"json: unsupported value: {re.escape(shown)}"):
        apply("yamlParse", f"a: [{text}]")
