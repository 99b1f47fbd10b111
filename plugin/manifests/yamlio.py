"""YAML reading and writing with libyaml, typed exactly as Go (Argo CD, Helm, AVP) types it.

Loading types plain scalars with go-yaml v2's rules (`goresolve`): `y`/`n` are booleans,
`0o17` and `1e3` numbers, `=` and timestamps text, and `<<` merges keys in Go's order.
Dumping keeps key order, writes multi-line strings as literal blocks, never emits Python
tags, and quotes every string that Go (or a YAML 1.1 reader) would read as something else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from plugin.manifests import fastyaml, goresolve

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# PyYAML's own YAML 1.1 resolvers, still consulted when writing: a string that either
# reader would retype is quoted.
_YAML11_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers


class Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader (C-accelerated when available) that types scalars as go-yaml v2 does."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's class attribute

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return goresolve.MERGE if value == "<<" else goresolve.resolve(value)[0]
        return super().resolve(kind, value, implicit)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Merge keys (`<<`) in go-yaml v2's order: a merge overrides the keys before it.

        PyYAML lets a mapping's own keys win wherever they stand; Go applies the entries
        in order (and, for a list of merged maps, the first map wins).
        """
        pairs: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != goresolve.MERGE:
                pairs.append((key_node, value_node))
                continue
            if isinstance(value_node, yaml.MappingNode):
                merged = [value_node]
            elif isinstance(value_node, yaml.SequenceNode) and all(
                isinstance(item, yaml.MappingNode) for item in value_node.value
            ):
                merged = list(reversed(value_node.value))
            else:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "map merge requires map or sequence of maps as the value",
                    value_node.start_mark,
                )
            for source in merged:
                self.flatten_mapping(source)
                pairs.extend(source.value)
        node.value = pairs


def _construct_go_scalar(loader: Loader, node: yaml.Node) -> Any:
    """A bool, int, float, null or timestamp scalar, valued as Go values it."""
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a scalar for {node.tag}", node.start_mark
        )
    try:
        return goresolve.resolve_tagged(node.tag, node.value)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(None, None, str(exc), node.start_mark) from None


for _tag in (goresolve.BOOL, goresolve.INT, goresolve.FLOAT, goresolve.NULL, goresolve.TIMESTAMP):
    Loader.add_constructor(_tag, _construct_go_scalar)
# `<<` anywhere but a key is the text `<<`.
Loader.add_constructor(goresolve.MERGE, lambda loader, node: loader.construct_scalar(node))


def _construct_as_untagged(loader: Loader, node: yaml.Node) -> Any:
    """Tags Go does not know (`!x`, `!!set`, `!!omap`) change nothing: Go reads the node as is.

    A scalar is its text, a sequence a list, a mapping a map (PyYAML would refuse unknown
    tags, or build Python sets and pair lists).
    """
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _construct_binary(loader: Loader, node: yaml.Node) -> Any:
    """`!!binary`: Go decodes the base64 into a string; bytes that are not UTF-8 become U+FFFD."""
    data = loader.construct_yaml_binary(node)
    return _ESCAPED_BYTE.sub("\ufffd", data.decode("utf-8", "surrogateescape"))


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


Loader.add_constructor(None, _construct_as_untagged)
for _tag in ("tag:yaml.org,2002:set", "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"):
    Loader.add_constructor(_tag, _construct_as_untagged)
Loader.add_constructor(goresolve.BINARY, _construct_binary)


class Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Safe dumper (C-accelerated when available) with literal blocks for multi-line text.

    A string is written plain only when both go-yaml v2 and a YAML 1.1 reader would read it
    back as that string; otherwise the emitter quotes it.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            if goresolve.retyped(value):
                return goresolve.MERGE if value == "<<" else goresolve.resolve(value)[0]
            for tag, pattern in _YAML11_RESOLVERS.get(value[:1], ()):
                if pattern.match(value):
                    return tag
            return goresolve.STR
        return super().resolve(kind, value, implicit)


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
