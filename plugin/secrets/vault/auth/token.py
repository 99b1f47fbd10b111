"""`AVP_AUTH_TYPE=token`: use `VAULT_TOKEN` as it is. No login request, never cached."""

from __future__ import annotations

from dataclasses import dataclass, field

from plugin.config import Settings
from plugin.secrets.vault.auth.base import LoginResult, LoginSession, missing


@dataclass(frozen=True)
class TokenAuth:
    token: str = field(repr=False)
    origin: str
    name: str = "token"

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuth:
        found = settings.lookup("VAULT_TOKEN")
        if found is None:
            raise missing(
                settings, ["VAULT_TOKEN"], "VAULT_TOKEN for token authentication cannot be empty"
            )
        return cls(token=found.value.strip(), origin=found.origin)

    @property
    def identity(self) -> str:
        return f"token auth ({self.origin})"

    def cache_key(self) -> tuple[str, ...] | None:
        return None

    def login(self, session: LoginSession) -> LoginResult:
        return LoginResult(token=self.token, lease_duration=0, renewable=False)
