"""YAML reading and writing: typing on load, round trips and anchors on dump."""

from __future__ import annotations

from typing import Any

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
