"""YAML reading and writing with libyaml, typed like Kubernetes tooling expects.

Loading keeps YAML 1.1 typing (as AVP's yaml.v2) except timestamps, which stay
strings (PyYAML would turn `2024-01-01` into a date). Dumping keeps key order,
writes multi-line strings as literal blocks and never emits Python tags.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from plugin.manifests import fastyaml

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader (C-accelerated when available) without the timestamp resolver."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


class Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Safe dumper (C-accelerated when available) with literal blocks for multi-line text."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, _represent_str)


class NoAnchorsDumper(Dumper):
    """For files people read (values.yaml): shared objects are written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def load_one(text: str) -> Any:
    """Parse a single YAML document (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader subclass


def load_all(text: str) -> Iterator[Any]:
    return yaml.load_all(text, Loader=Loader)


def dump(document: Any, *, sort_keys: bool = False, anchors: bool = True) -> str:
    """Serialise one document: key order kept (unless `sort_keys`), no line folding.

    With `anchors`, objects shared through YAML aliases stay shared (an alias bomb stays small).
    Plain manifests take the fast writer; anything unusual goes through PyYAML.
    """
    if not sort_keys:
        fast = fastyaml.dump(document)
        if fast is not None:
            return fast
    text: str = yaml.dump(
        document,
        Dumper=Dumper if anchors else NoAnchorsDumper,
        sort_keys=sort_keys,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
    return text
