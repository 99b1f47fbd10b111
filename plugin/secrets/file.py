"""The built-in file backend: secrets from one local YAML file, no server needed.

Format (see the conformance pack's README): a mapping of path -> mapping of
key -> value, or path -> {"@versions": [oldest, ..., current]} (1-based).
A version asked of an unversioned path is ignored, as Vault KV v1 does. A read of a
versioned path carries its version number (`VersionedData`), as a KV v2 read does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from plugin.config import Settings
from plugin.errors import BackendError, ConfigError, MissingPathError
from plugin.manifests.yamlio import load_one
from plugin.secrets.base import SecretData, SecretRef, VersionedData

VERSIONS_KEY = "@versions"


class FileBackend:
    """Reads are dictionary look-ups, so one worker is plenty."""

    max_workers = 1

    def __init__(self, secrets: Mapping[str, Any], origin: str) -> None:
        self._secrets = secrets
        self._origin = origin

    @classmethod
    def from_settings(cls, settings: Settings) -> FileBackend:
        found = settings.lookup("AVP_FILE_PATH")
        if found is None:
            raise ConfigError("AVP_FILE_PATH must name a YAML file of secrets when AVP_TYPE=file")
        return cls.from_file(Path(found.value), found.origin)

    @classmethod
    def from_file(cls, path: Path, origin: str = "AVP_FILE_PATH") -> FileBackend:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
            raise ConfigError(
                f"cannot read secrets file {path} (from {origin}): {reason}"
            ) from None
        try:
            data = load_one(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"secrets file {path} is not valid YAML{where}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"secrets file {path} must be a mapping of path -> keys")
        for key, entry in data.items():
            _check_entry(path, str(key), entry)
        return cls({str(key): value for key, value in data.items()}, str(path))

    def login(self) -> None:
        """Nothing to authenticate."""

    def close(self) -> None:
        """Nothing to release."""

    def read(self, ref: SecretRef) -> SecretData:
        entry = self._secrets.get(ref.path)
        if entry is None:
            raise MissingPathError(f"no secret at path {ref.path} in {self._origin}")
        if not (isinstance(entry, Mapping) and set(entry) == {VERSIONS_KEY}):
            return entry if isinstance(entry, Mapping) else {}
        history = entry[VERSIONS_KEY]
        if ref.version is None:
            return VersionedData(history[-1], str(len(history)))
        try:
            number = int(ref.version)
        except ValueError:
            raise BackendError(f"version {ref.version!r} of {ref.path} is not a number") from None
        if not 1 <= number <= len(history):
            raise MissingPathError(f"no version {number} of secret {ref.path} in {self._origin}")
        return VersionedData(history[number - 1], str(number))


def _check_entry(path: Path, name: str, entry: Any) -> None:
    if entry is None:
        return
    if not isinstance(entry, Mapping):
        raise ConfigError(f"secrets file {path}: entry {name!r} must be a mapping of key -> value")
    for key in entry:
        _check_key(path, name, key)
    if VERSIONS_KEY in entry:
        history = entry[VERSIONS_KEY]
        if set(entry) != {VERSIONS_KEY}:
            raise ConfigError(f"secrets file {path}: entry {name!r} mixes {VERSIONS_KEY} and keys")
        if not isinstance(history, list) or not history:
            raise ConfigError(f"secrets file {path}: {name!r} {VERSIONS_KEY} must be a list")
        if not all(isinstance(item, Mapping) for item in history):
            raise ConfigError(
                f"secrets file {path}: every {VERSIONS_KEY} item of {name!r} must be a mapping"
            )


def _check_key(path: Path, name: str, key: Any) -> None:
    """Keys are read as Go reads YAML: an unquoted `n`, `y`, `on` or `1e3` is not text."""
    if isinstance(key, bool | float) or key is None:
        shown = "null" if key is None else str(key).lower()
        raise ConfigError(
            f"secrets file {path}: entry {name!r} has a key that YAML reads as {shown}, not as "
            "text; put the key in quotes"
        )
