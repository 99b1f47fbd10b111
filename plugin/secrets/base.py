"""The interface between the placeholder engine and a secret store.

The engine plans its reads first (every distinct `SecretRef`), then asks the
backend for each one exactly once. A backend only has to turn one reference
into a mapping of key -> value; concurrency, deadlines and error placement
belong to `plugin.secrets.fetch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, order=True)
class SecretRef:
    """One read: a path as written by the user, an optional version and KV-version hint.

    `kv_version` carries the `avp.kubernetes.io/kv-version` annotation ("1"/"2")
    of the manifest the reference came from; stores without KV engines ignore it.
    """

    path: str
    version: str | None = None
    kv_version: str | None = None

    def describe(self) -> str:
        text = self.path
        if self.version is not None:
            text += f" (version {self.version})"
        return text


SecretData = Mapping[str, Any]


class VersionedData(dict[str, Any]):
    """The keys of a secret plus the version of the secret they were read at.

    Why a mapping with an attribute rather than a new return type: every consumer of a read
    (the engine, the redactor, the reference index, Helm values) keeps treating it as the
    secret's keys; only those that care about provenance (`| version`, the reference index)
    ask `read_version`. The version is never one of the keys, so it can never shadow or be
    mistaken for a secret key.
    """

    __slots__ = ("version",)

    def __init__(self, data: Mapping[str, Any], version: str) -> None:
        super().__init__(data)
        self.version = version


def read_version(data: SecretData) -> str | None:
    """The version a read returned (KV v2, versioned file secrets); None when there is none."""
    return data.version if isinstance(data, VersionedData) else None


class Backend(Protocol):
    """A secret store: log in once, then read whole paths."""

    #: How many reads may run at the same time (1 = sequential).
    max_workers: int

    def login(self) -> None:
        """Authenticate (or check configuration); called once, before any read."""

    def read(self, ref: SecretRef) -> SecretData:
        """Return every key of the secret at `ref`.

        Raise `MissingPathError` when nothing is stored there and `BackendError`
        for any other failure. Never put a secret value in an exception message.
        """

    def close(self) -> None:
        """Release connections; called once at the end of a run."""


@dataclass(frozen=True)
class BackendOptions:
    """Command-line choices that affect backends (not configuration variables)."""

    disable_token_cache: bool = False
