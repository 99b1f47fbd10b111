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
