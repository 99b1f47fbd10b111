"""The small interface every Vault auth method implements, and helpers they share.

An auth method is built from `Settings` (raising `ConfigError` that names the
missing variable and where it was looked for), describes itself with a
non-secret `identity` string used in log lines and error messages, returns a
`cache_key()` (the non-secret parts that make two logins interchangeable, or
None when the result must not be cached) and performs `login(session)`.
`session` is the backend's HTTP layer: it POSTs the login request, retries,
honours the deadline and scrubs the method's secrets from any error text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugin.config import Settings, settings_where
from plugin.errors import ConfigError


@dataclass(frozen=True)
class LoginResult:
    """A Vault token and its lease. `lease_duration` 0 means the token never expires."""

    token: str = field(repr=False)
    lease_duration: int = 0
    renewable: bool = False


class LoginSession(Protocol):
    """What an auth method needs from the backend's HTTP layer."""

    def login_request(
        self,
        path: str,
        payload: Mapping[str, Any],
        *,
        identity: str,
        secrets: Sequence[str],
    ) -> LoginResult:
        """POST `payload` to `/v1/<path>` without a token and return the `auth` block.

        Raises `BackendError` on failure; `secrets` are removed from any error text.
        """
        ...


class AuthMethod(Protocol):
    """One Vault auth method, configured and ready to log in."""

    @property
    def name(self) -> str:
        """The `AVP_AUTH_TYPE` spelling, e.g. "approle"."""
        ...

    @property
    def identity(self) -> str:
        """Non-secret description, e.g. "userpass user alice at auth/userpass"."""
        ...

    def cache_key(self) -> tuple[str, ...] | None:
        """Non-secret parts identifying the resulting token's owner; None = never cache."""
        ...

    def login(self, session: LoginSession) -> LoginResult:
        """Obtain a token (may be a request to Vault, or not for `token`)."""
        ...


def missing(settings: Settings, names: Iterable[str], message: str) -> ConfigError:
    """AVP's message plus which of `names` are unset and where they were looked for."""
    unset = [name for name in names if settings.lookup(name) is None]
    details = "; ".join(f"{name} is not set ({settings_where(settings, name)})" for name in unset)
    return ConfigError(f"{message}: {details}" if details else message)


def required(settings: Settings, names: Sequence[str], message: str) -> list[str]:
    """Values of all `names`, or `ConfigError` naming the unset ones."""
    values = [settings.get(name) for name in names]
    if any(value is None for value in values):
        raise missing(settings, names, message)
    return [value for value in values if value is not None]


def normalise_mount(value: str) -> str:
    """`auth/approle`, `approle`, `/auth/approle/` -> `auth/approle` (AVP needs the prefix)."""
    mount = value.strip().strip("/")
    if not mount.startswith("auth/"):
        mount = f"auth/{mount}"
    return mount


def mount_path(
    settings: Settings, default: str, variables: Sequence[str] = ("AVP_MOUNT_PATH",)
) -> str:
    """The auth mount: the first of `variables` that is set, else `default`."""
    for name in variables:
        found = settings.lookup(name)
        if found is not None and found.value.strip().strip("/"):
            mount = normalise_mount(found.value)
            if mount in {"auth/", "auth"}:
                raise ConfigError(f"{name} {found.value!r} from {found.origin} names no mount")
            return mount
    return default


def short(value: str, keep: int = 8) -> str:
    """The first `keep` characters of a non-secret but sensitive identifier."""
    return value if len(value) <= keep else value[:keep] + "…"


def read_token_file(path: str, variable: str, origin: str, purpose: str) -> str:
    """Read and trim a JWT/token file; errors name the variable, never the content."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = handle.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the {purpose} file {path} ({variable} from {origin}): "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"the {purpose} file {path} ({variable} from {origin}) is not text"
        ) from None
    if not content:
        raise ConfigError(f"the {purpose} file {path} ({variable} from {origin}) is empty")
    return content
