"""`AVP_AUTH_TYPE=approle`: `POST <mount>/login {role_id, secret_id}` (default auth/approle)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plugin.config import Settings
from plugin.secrets.vault.auth.base import LoginResult, LoginSession, mount_path, required, short

DEFAULT_MOUNT = "auth/approle"


@dataclass(frozen=True)
class AppRoleAuth:
    role_id: str
    secret_id: str = field(repr=False)
    mount: str = DEFAULT_MOUNT
    name: str = "approle"

    @classmethod
    def from_settings(cls, settings: Settings) -> AppRoleAuth:
        role_id, secret_id = required(
            settings,
            ["AVP_ROLE_ID", "AVP_SECRET_ID"],
            "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty",
        )
        return cls(role_id=role_id, secret_id=secret_id, mount=mount_path(settings, DEFAULT_MOUNT))

    @property
    def identity(self) -> str:
        # role_id is not a secret in Vault's model, but only a prefix is shown.
        return f"approle role_id={short(self.role_id)} at {self.mount}"

    def cache_key(self) -> tuple[str, ...] | None:
        return ("approle", self.mount, self.role_id)

    def login(self, session: LoginSession) -> LoginResult:
        return session.login_request(
            f"{self.mount}/login",
            {"role_id": self.role_id, "secret_id": self.secret_id},
            identity=self.identity,
            secrets=[self.secret_id],
        )
