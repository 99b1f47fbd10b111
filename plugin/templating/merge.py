"""Dictionary merging with the exact semantics of Ansible's ``merge_hash``.

Two public, pure functions (inputs are never mutated, results share no
containers with the inputs):

``deep_merge(base, overlay)``
    The team's values-fragment rule, i.e. what the socle's Ansible role does with
    ``acc | combine(fragment, recursive=True, list_merge='append')``:

    * mapping + mapping: merged recursively;
    * list + list: concatenated, earlier (``base``) items first;
    * any other pair (scalar vs scalar, scalar vs mapping, anything vs ``None``):
      the overlay value wins. An explicit ``None`` therefore replaces a whole
      subtree and stays in the result as ``None`` (serialized as ``null``);
    * ``overlay=None`` (a fragment that rendered to nothing) returns a copy of ``base``.

    One Ansible quirk is kept on purpose: when the two sides of a mapping are
    *equal*, Ansible returns the overlay unchanged without walking into it, so
    lists inside equal subtrees are not doubled
    (``deep_merge({'a': [1]}, {'a': [1]}) == {'a': [1]}``).

``combine(*dicts, recursive=False, list_merge='replace')``
    Ansible's ``combine`` filter: the arguments are flattened one level (so a
    list of dictionaries works), ``None``/``'None'``/``'null'`` items are dropped,
    and the dictionaries are merged so that later ones win. ``list_merge`` is one
    of ``replace``, ``keep``, ``append``, ``prepend``, ``append_rp``, ``prepend_rp``.

Errors are reported as :class:`plugin.errors.RenderError`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, MutableSequence, Sequence
from typing import Any, Final

from plugin.errors import RenderError

LIST_MERGE_MODES: Final[tuple[str, ...]] = (
    "replace",
    "keep",
    "append",
    "prepend",
    "append_rp",
    "prepend_rp",
)

__all__ = ["LIST_MERGE_MODES", "combine", "deep_merge"]


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fold one values fragment (``overlay``) over ``base``; see the module docstring."""
    _require_mapping(base, "deep_merge: base")
    if overlay is None:
        return copy.deepcopy(dict(base))
    _require_mapping(overlay, "deep_merge: overlay")
    return copy.deepcopy(_merge_hash(base, overlay, recursive=True, list_merge="append"))


def combine(*dicts: Any, recursive: bool = False, list_merge: str = "replace") -> dict[str, Any]:
    """Ansible's ``combine`` filter; see the module docstring."""
    if list_merge not in LIST_MERGE_MODES:
        raise RenderError(
            f"combine: list_merge must be one of {', '.join(LIST_MERGE_MODES)}, got {list_merge!r}"
        )
    terms = _flatten_one_level(dicts)
    for term in terms:
        _require_mapping(term, "combine")
    if not terms:
        return {}
    # Ansible merges from the highest priority (last) to the lowest (first).
    result: Mapping[str, Any] = terms[-1]
    for term in reversed(terms[:-1]):
        result = _merge_hash(term, result, recursive=recursive, list_merge=list_merge)
    return copy.deepcopy(dict(result))


def _merge_hash(
    x: Mapping[str, Any], y: Mapping[str, Any], *, recursive: bool, list_merge: str
) -> dict[str, Any]:
    """Ansible's ``merge_hash``: a new dict with ``y`` merged into ``x`` (``y`` wins).

    The result may share nested containers with the inputs; public callers deep-copy it.
    """
    if not x or x == y:
        return dict(y)
    if not y:
        return dict(x)
    result = dict(x)
    if not recursive and list_merge == "replace":
        result.update(y)
        return result
    for key, y_value in y.items():
        if key not in result:
            result[key] = y_value
            continue
        x_value = result[key]
        if isinstance(x_value, Mapping) and isinstance(y_value, Mapping):
            result[key] = (
                _merge_hash(x_value, y_value, recursive=recursive, list_merge=list_merge)
                if recursive
                else y_value
            )
            continue
        if isinstance(x_value, MutableSequence) and isinstance(y_value, MutableSequence):
            result[key] = _merge_lists(x_value, y_value, list_merge)
            continue
        result[key] = y_value
    return result


def _merge_lists(x: Sequence[Any], y: Sequence[Any], list_merge: str) -> Sequence[Any]:
    if list_merge == "replace":
        return y
    if list_merge == "keep":
        return x
    if list_merge == "append":
        return [*x, *y]
    if list_merge == "prepend":
        return [*y, *x]
    if list_merge == "append_rp":
        return [item for item in x if item not in y] + list(y)
    # prepend_rp
    return list(y) + [item for item in x if item not in y]


def _is_null_marker(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value in ("None", "null"))


def _flatten_one_level(terms: Iterable[Any]) -> list[Any]:
    """Ansible's ``flatten(terms, levels=1)`` with ``skip_nulls=True``."""
    flat: list[Any] = []
    for term in terms:
        if _is_null_marker(term):
            continue
        if isinstance(term, Sequence) and not isinstance(term, (str, bytes)):
            flat.extend(item for item in term if not _is_null_marker(item))
        else:
            flat.append(term)
    return flat


def _require_mapping(value: Any, what: str) -> None:
    if not isinstance(value, Mapping):
        raise RenderError(f"{what}: expected a mapping, got {_type_name(value)}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return f"a value of type {type(value).__name__!r}"
