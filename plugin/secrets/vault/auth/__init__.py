"""Vault auth methods, one module per `AVP_AUTH_TYPE`, and the factory that picks one."""

from __future__ import annotations

from collections.abc import Callable

from plugin.config import Settings
from plugin.errors import ConfigError
from plugin.secrets.vault.auth.approle import AppRoleAuth
from plugin.secrets.vault.auth.base import AuthMethod, LoginResult, LoginSession
from plugin.secrets.vault.auth.cert import CertAuth
from plugin.secrets.vault.auth.github import GitHubAuth
from plugin.secrets.vault.auth.jwt import JWTAuth
from plugin.secrets.vault.auth.kubernetes import KubernetesAuth
from plugin.secrets.vault.auth.token import TokenAuth
from plugin.secrets.vault.auth.userpass import UserpassAuth

__all__ = [
    "AUTH_TYPES",
    "AuthMethod",
    "LoginResult",
    "LoginSession",
    "make_auth_method",
]

AUTH_TYPES: dict[str, Callable[[Settings], AuthMethod]] = {
    "approle": AppRoleAuth.from_settings,
    "cert": CertAuth.from_settings,
    "github": GitHubAuth.from_settings,
    "jwt": JWTAuth.from_settings,
    "k8s": KubernetesAuth.from_settings,
    "kubernetes": KubernetesAuth.from_settings,
    "token": TokenAuth.from_settings,
    "userpass": UserpassAuth.from_settings,
}


def make_auth_method(settings: Settings) -> AuthMethod:
    """The auth method named by `AVP_AUTH_TYPE` (trimmed, as AVP does)."""
    found = settings.lookup("AVP_AUTH_TYPE")
    kind = found.value.strip() if found is not None else ""
    factory = AUTH_TYPES.get(kind.lower())
    if factory is None:
        where = f" from {found.origin}" if found is not None else " (AVP_AUTH_TYPE is not set)"
        choices = ", ".join(name for name in sorted(AUTH_TYPES) if name != "kubernetes")
        raise ConfigError(
            "Must provide a supported Authentication Type, received "
            f"{kind!r}{where}; AVP_AUTH_TYPE must be one of {choices}"
        )
    return factory(settings)
