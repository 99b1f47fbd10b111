"""Tests for plugin.templating.merge: values-fragment merging and Ansible's combine."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.errors import RenderError
from plugin.templating.merge import LIST_MERGE_MODES, combine, deep_merge

# --- deep_merge: the team's fragment rules ---------------------------------------------


def test_maps_merge_recursively() -> None:
    base = {"harbor": {"core": {"replicas": 3, "sa": "harbor-sa"}, "portal": {"x": 1}}}
    overlay = {"harbor": {"core": {"replicas": 1}}}
    assert deep_merge(base, overlay) == {
        "harbor": {"core": {"replicas": 1, "sa": "harbor-sa"}, "portal": {"x": 1}}
    }


def test_lists_are_appended_earlier_first() -> None:
    base = {"env": [{"name": "A"}], "args": ["--a"]}
    overlay = {"env": [{"name": "HTTP_PROXY"}], "args": ["--b", "--a"]}
    assert deep_merge(base, overlay) == {
        "env": [{"name": "A"}, {"name": "HTTP_PROXY"}],
        "args": ["--a", "--b", "--a"],
    }


def test_later_scalar_wins() -> None:
    assert deep_merge({"a": 1, "b": "x"}, {"a": 2}) == {"a": 2, "b": "x"}
    assert deep_merge({"a": True}, {"a": False}) == {"a": False}


def test_type_change_replaces() -> None:
    assert deep_merge({"a": {"b": 1}}, {"a": "flat"}) == {"a": "flat"}
    assert deep_merge({"a": "flat"}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert deep_merge({"a": [1]}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_explicit_null_replaces_subtree_and_is_kept() -> None:
    base = {"sonarqube": {"securityContext": {"fsGroup": 1000, "runAsUser": 1000}, "keep": 1}}
    overlay = {"sonarqube": {"securityContext": None}}
    result = deep_merge(base, overlay)
    assert result == {"sonarqube": {"securityContext": None, "keep": 1}}
    assert "securityContext" in result["sonarqube"]


def test_null_then_value_restores() -> None:
    assert deep_merge({"a": None}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_empty_fragment_is_skipped() -> None:
    base = {"a": {"b": [1]}}
    assert deep_merge(base, None) == base
    assert deep_merge(base, {}) == base


def test_new_keys_are_added_after_existing_ones() -> None:
    result = deep_merge({"z": 1, "a": 2}, {"m": 3, "z": 4})
    assert list(result) == ["z", "a", "m"]


def test_inputs_are_never_mutated_nor_shared() -> None:
    base = {"a": {"l": [1]}, "b": {"c": {"d": 1}}}
    overlay = {"a": {"l": [2]}, "n": {"x": [3]}}
    base_before, overlay_before = copy.deepcopy(base), copy.deepcopy(overlay)
    result = deep_merge(base, overlay)
    assert base == base_before
    assert overlay == overlay_before
    result["a"]["l"].append(99)
    result["b"]["c"]["d"] = 2
    result["n"]["x"].append(4)
    assert base == base_before
    assert overlay == overlay_before


def test_equal_subtrees_are_not_doubled_like_ansible() -> None:
    # Ansible's merge_hash returns the overlay as-is when both sides are equal.
    assert deep_merge({"a": [1]}, {"a": [1]}) == {"a": [1]}
    assert deep_merge({"x": {"l": [1]}, "y": 1}, {"x": {"l": [1]}}) == {"x": {"l": [1]}, "y": 1}
    assert deep_merge({"x": {"l": [1]}}, {"x": {"l": [1], "k": 2}}) == {"x": {"l": [1, 1], "k": 2}}


def test_layered_fragments_user_last_wins() -> None:
    fragments: list[dict[str, Any] | None] = [
        {"harbor": {"core": {"replicas": 3, "serviceAccountName": "harbor-sa"}}},
        None,  # 10-proxy rendered empty
        {"harbor": {"expose": {"ingress": {"labels": None}}}},
        {"cluster": {"cluster": {"storage": {"size": "10Gi"}}}},
        {"harbor": {"core": {"replicas": 1}, "proxy": {"components": ["core"]}}},
    ]
    acc: dict[str, Any] = {}
    for fragment in fragments:
        acc = deep_merge(acc, fragment)
    assert acc["harbor"]["core"] == {"replicas": 1, "serviceAccountName": "harbor-sa"}
    assert acc["harbor"]["proxy"] == {"components": ["core"]}
    assert acc["harbor"]["expose"]["ingress"]["labels"] is None
    assert set(acc) == {"harbor", "cluster"}


def test_deep_merge_rejects_non_mappings() -> None:
    with pytest.raises(RenderError, match="expected a mapping, got a list"):
        deep_merge({"a": 1}, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(RenderError, match="base"):
        deep_merge("x", {})  # type: ignore[arg-type]


# --- combine: Ansible's filter ------------------------------------------------------


def test_combine_default_is_shallow_replace() -> None:
    assert combine({"a": {"x": 1}, "b": 1}, {"a": {"y": 2}}) == {"a": {"y": 2}, "b": 1}


def test_combine_recursive() -> None:
    assert combine({"a": {"x": 1, "l": [1]}}, {"a": {"y": 2, "l": [2]}}, recursive=True) == {
        "a": {"x": 1, "y": 2, "l": [2]}
    }


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("replace", [3, 1, 4]),
        ("keep", [1, 2, 3]),
        ("append", [1, 2, 3, 3, 1, 4]),
        ("prepend", [3, 1, 4, 1, 2, 3]),
        ("append_rp", [2, 3, 1, 4]),
        ("prepend_rp", [3, 1, 4, 2]),
    ],
)
def test_combine_list_merge_modes(mode: str, expected: list[int]) -> None:
    result = combine(
        {"a": {"l": [1, 2, 3]}}, {"a": {"l": [3, 1, 4]}}, recursive=True, list_merge=mode
    )
    assert result == {"a": {"l": expected}}


def test_combine_list_merge_applies_at_top_level_without_recursive() -> None:
    assert combine({"l": [1]}, {"l": [2]}, list_merge="append") == {"l": [1, 2]}
    # without recursion nested dicts are replaced whole, so nested lists are not merged
    assert combine({"d": {"l": [1]}}, {"d": {"l": [2]}}, list_merge="append") == {"d": {"l": [2]}}


def test_combine_three_dicts_later_wins_and_appends_in_order() -> None:
    result = combine({"l": [1], "v": 1}, {"l": [2], "v": 2}, {"l": [3]}, list_merge="append")
    assert result == {"l": [1, 2, 3], "v": 2}


def test_combine_accepts_a_list_of_dicts_and_skips_nulls() -> None:
    assert combine([{"a": 1}, None, {"b": 2}], {"a": 3}) == {"a": 3, "b": 2}
    assert combine({"a": 1}, None) == {"a": 1}
    assert combine({"a": 1}, "None", "null") == {"a": 1}
    assert combine() == {}
    assert combine(None) == {}


def test_combine_single_dict_is_a_copy() -> None:
    source = {"a": {"b": [1]}}
    result = combine(source)
    assert result == source
    result["a"]["b"].append(2)
    assert source == {"a": {"b": [1]}}


def test_combine_errors() -> None:
    with pytest.raises(RenderError, match="list_merge must be one of"):
        combine({"a": 1}, {"b": 2}, list_merge="merge")
    with pytest.raises(RenderError, match="expected a mapping, got a string"):
        combine({"a": 1}, "text")
    with pytest.raises(RenderError, match="expected a mapping"):
        combine({"a": 1}, 3)
    assert set(LIST_MERGE_MODES) == {
        "replace",
        "keep",
        "append",
        "prepend",
        "append_rp",
        "prepend_rp",
    }


# --- properties -------------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "d"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3))
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_keys, children, max_size=3)
    ),
    max_leaves=10,
)
_mappings = st.dictionaries(_keys, _values, max_size=4)


@given(_mappings, _mappings)
def test_property_deep_merge_keys_and_purity(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    base_before, overlay_before = copy.deepcopy(base), copy.deepcopy(overlay)
    result = deep_merge(base, overlay)
    assert base == base_before
    assert overlay == overlay_before
    assert set(result) == set(base) | set(overlay)
    for key, value in overlay.items():
        if not isinstance(value, (dict, list)):
            assert result[key] == value  # a later scalar (or null) always wins
        elif key not in base:
            assert result[key] == value


@given(_mappings, _mappings)
def test_property_deep_merge_is_combine_recursive_append(
    base: dict[str, Any], overlay: dict[str, Any]
) -> None:
    assert deep_merge(base, overlay) == combine(base, overlay, recursive=True, list_merge="append")
