"""YAML reading and writing: typing on load, round trips and anchors on dump."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from plugin.manifests.yamlio import dump, load_one

_text = st.text(max_size=12)
_data = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_text, children, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(_text, _data, max_size=4), st.booleans())
def test_dump_round_trips(data: dict[str, Any], anchors: bool) -> None:
    assert yaml.safe_load(dump(data, anchors=anchors)) == data


def test_key_order_is_kept_unless_sorted() -> None:
    assert dump({"b": 1, "a": 2}) == "b: 1\na: 2\n"
    assert dump({"b": 1, "a": 2}, sort_keys=True) == "a: 2\nb: 1\n"


def test_multi_line_text_is_a_literal_block() -> None:
    assert dump({"pem": "line1\nline2\n"}) == "pem: |\n  line1\n  line2\n"


def test_shared_objects_without_anchors() -> None:
    shared = {"k": [1]}
    text = dump({"a": shared, "b": shared}, anchors=False)
    assert "&" not in text
    assert "*" not in text
    assert "&id001" in dump({"a": shared, "b": shared})


def test_long_lines_are_not_folded() -> None:
    value = "x " * 200
    assert dump({"v": value}).count("\n") == 1


def test_timestamps_stay_text() -> None:
    assert load_one("since: 2024-01-01\nyes: on\n") == {"since": "2024-01-01", True: True}


def test_scalars_are_typed_as_go_reads_them() -> None:
    text = "a: y\nb: N\nc: 0o17\nd: 1e3\ne: [Equal, =, NotEqual]\nf: <<\ng: 08\nh: !!float 2\n"
    assert load_one(text) == {
        "a": True,
        "b": False,
        "c": 15,
        "d": 1000.0,
        "e": ["Equal", "=", "NotEqual"],  # prometheus-operator CRDs
        "f": "<<",
        "g": 8.0,
        "h": 2.0,
    }


def test_merge_keys_apply_in_go_order() -> None:
    text = "base: &b {x: 1, z: 1}\nm:\n  x: 0\n  <<: *b\n  z: 2\nl:\n  <<: [{k: 1}, {k: 2, j: 3}]\n"
    loaded = load_one(text)
    assert loaded["m"] == {"x": 1, "z": 2}  # the merge overrides `x` before it, not `z` after
    assert loaded["l"] == {"k": 1, "j": 3}  # the first merged map wins


@pytest.mark.parametrize("text", ["y", "n", "Y", "N", "1e3", "1e+21", "0o17", "08", "<<", "="])
@pytest.mark.parametrize("company", [{}, {"u": "é"}, {"f": 1.5}])
def test_go_retyped_strings_are_quoted_in_every_writer(text: str, company: dict[str, Any]) -> None:
    document = {"v": text, **company}
    written = dump(document)
    assert not written.startswith(f"v: {text}\n")
    assert load_one(written) == document


@pytest.mark.parametrize("value", ["\n  x\n#c\n", "\n\n  x", "\n\tx\ny", "\n  é\n#c"])
@pytest.mark.parametrize("company", [{}, {"f": 1.5}])
def test_text_indented_after_blank_lines_keeps_its_indentation(
    value: str, company: dict[str, Any]
) -> None:
    document = {"v": value, **company}
    assert load_one(dump(document)) == document


def test_tags_go_does_not_know_leave_the_node_as_it_is() -> None:
    text = "a: !x\nb: !x [1, y]\nc: !x {k: 1}\nd: !!set {a}\ne: !!omap [{a: 1}]\nf: !!binary /2hp\n"
    assert load_one(text) == {
        "a": "",
        "b": [1, True],
        "c": {"k": 1},
        "d": {"a": None},
        "e": [{"a": 1}],
        "f": "\ufffdhi",
    }
