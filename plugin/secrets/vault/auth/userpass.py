"""`AVP_AUTH_TYPE=userpass`: `POST <mount>/login/<user> {password}` (default auth/userpass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from plugin.config import Settings
from plugin.secrets.vault.auth.base import LoginResult, LoginSession, mount_path, required

DEFAULT_MOUNT = "auth/userpass"


@dataclass(frozen=True)
class UserpassAuth:
    username: str
    password: str = field(repr=False)
    mount: str = DEFAULT_MOUNT
    name: str = "userpass"

    @classmethod
    def from_settings(cls, settings: Settings) -> UserpassAuth:
        username, password = required(
            settings,
            ["AVP_USERNAME", "AVP_PASSWORD"],
            "AVP_USERNAME and AVP_PASSWORD for userpass authentication cannot be empty",
        )
        return cls(username=username, password=password, mount=mount_path(settings, DEFAULT_MOUNT))

    @property
    def identity(self) -> str:
        return f"userpass user {self.username} at {self.mount}"

    def cache_key(self) -> tuple[str, ...] | None:
        return ("userpass", self.mount, self.username)

    def login(self, session: LoginSession) -> LoginResult:
        return session.login_request(
            f"{self.mount}/login/{quote(self.username, safe='')}",
            {"password": self.password},
            identity=self.identity,
            secrets=[self.password],
        )
