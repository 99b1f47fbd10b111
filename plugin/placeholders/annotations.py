"""The `avp.kubernetes.io/*` annotations of one manifest (spec §3).

Unlike AVP, one annotation with a non-string value (`kv-version: 1` unquoted)
does not disable the others: scalars are read as their text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugin.config import parse_go_bool

PREFIX = "avp.kubernetes.io/"
PATH = PREFIX + "path"
IGNORE = PREFIX + "ignore"
KV_VERSION = PREFIX + "kv-version"
SECRET_VERSION = PREFIX + "secret-version"
REMOVE_MISSING = PREFIX + "remove-missing"
#: Opt-in (AVP #171): also resolve placeholders written in map keys.
REPLACE_KEYS = PREFIX + "replace-keys"


@dataclass(frozen=True)
class Annotations:
    """What the annotations ask for; `path` is None when the key is absent."""

    path: str | None = None
    ignore: bool = False
    kv_version: str | None = None
    secret_version: str | None = None
    remove_missing: bool = False
    replace_keys: bool = False

    @property
    def generic_enabled(self) -> bool:
        """AVP switches to `<key>` placeholders when the path key exists, even if empty."""
        return self.path is not None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def read(manifest: Mapping[str, Any]) -> Annotations:
    metadata = manifest.get("metadata")
    raw = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(raw, Mapping):
        return Annotations()
    values = {
        key: _text(raw[key]) for key in raw if isinstance(key, str) and key.startswith(PREFIX)
    }
    path = values.get(PATH) if PATH in values else None
    if PATH in values and path is None:
        path = ""
    return Annotations(
        path=path,
        ignore=parse_go_bool(values.get(IGNORE) or "") is True,
        kv_version=values.get(KV_VERSION) or None,
        secret_version=values.get(SECRET_VERSION) or None,
        remove_missing=parse_go_bool(values.get(REMOVE_MISSING) or "") is True,
        replace_keys=parse_go_bool(values.get(REPLACE_KEYS) or "") is True,
    )
