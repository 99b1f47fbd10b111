"""The fast YAML writer: whatever it writes reads back as the same document."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.manifests import fastyaml
from plugin.manifests.yamlio import load_one

_ascii = st.text(alphabet=st.characters(min_codepoint=9, max_codepoint=126), max_size=16)
_tricky = st.sampled_from(
    ["", "yes", "No", "on", "~", "null", "1.0", "1e3", ".5", "0x1F", "010", "1:20", "y", "n",
     "2024-01-01", "<<", "=", "- a", "a: b", "a #b", "#c", "'q'", '"d"', "x:", " lead",
     "trail ", "a\nb", "a\n", "a\n\n", "\nlead", " a\nb", "a \nb", "a\tb", "|", ">", "@x",
     "!tag", "&a", "*a", "%x", "[1]", "{a: 1}", "http://h:80/p", "a,b", "?x", "-x", "--", "...",
     "<path:a/b#k | jsonPath {.x}>/y", "a|b", "x{y}", "a'b", 'a"b', "~x", "<<x", "a:b", "a #",
     "a\\b", "a\tb", "x: ", "x :y", "=", "=x", ".inf", ".x", "a  b", "<k>", "{{ .Values }}"]
)  # fmt: skip
_strings = st.one_of(_ascii, _tricky)
#: Integers Go holds as integers (int64, and uint64 above it); beyond them see the test below.
_go_integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_data = st.recursive(
    st.one_of(st.none(), st.booleans(), _go_integers, _strings),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_strings, children, max_size=3)
    ),
    max_leaves=16,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(_strings, _data, max_size=5))
def test_round_trip_with_both_loaders(document: dict[str, Any]) -> None:
    text = fastyaml.dump(document)
    if text is None:
        return
    assert load_one(text) == document
    assert yaml.safe_load(text) == document  # timestamps resolved too: quoted where needed


@pytest.mark.parametrize("number", [-(2**63) - 1, 2**64, 10**30])
def test_an_integer_beyond_go_integers_is_a_float_to_go_as_in_avp(number: int) -> None:
    """Only a modifier (jsonParse) makes such a number; Go (and so AVP) holds it as a float64,
    and that is what Argo CD reads from the plain digits the writer keeps."""
    text = fastyaml.dump({"x": number})
    assert text == f"x: {number}\n"
    assert load_one(text) == {"x": float(number)}


def test_manifest_layout() -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"app": "web"}},
        "data": {"port": "8080", "enabled": "true", "pem": "line1\nline2\n", "empty": ""},
        "list": [{"name": "a", "value": 1}, ["x", "w"], "z", {}, []],
    }
    assert fastyaml.dump(manifest) == (
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: cm\n"
        "  labels:\n"
        "    app: web\n"
        "data:\n"
        '  port: "8080"\n'
        '  enabled: "true"\n'
        "  pem: |\n"
        "    line1\n"
        "    line2\n"
        '  empty: ""\n'
        "list:\n"
        "- name: a\n"
        "  value: 1\n"
        "- - x\n"
        "  - w\n"
        "- z\n"
        "- {}\n"
        "- []\n"
    )


@pytest.mark.parametrize(
    "document",
    [{"f": 1.5}, {"u": "é"}, {1: "int key"}, {"c": "bell\x07"}, {"k" * 2000: 1}, ["list"]],
)
def test_unsupported_documents_fall_back(document: Any) -> None:
    assert fastyaml.dump(document) is None


def test_shared_objects_fall_back() -> None:
    shared = {"a": 1}
    assert fastyaml.dump({"x": shared, "y": shared}) is None


@pytest.mark.parametrize("text", ["1e3", ".5", "0o17", "y", "N", "+1"])
def test_go_yaml_numbers_and_booleans_are_quoted(text: str) -> None:
    assert fastyaml.dump({"v": text}) == f'v: "{text}"\n'
