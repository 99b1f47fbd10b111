"""`AVP_AUTH_TYPE=github`: `POST <mount>/login {token}` (default auth/github).

The cache key holds the mount only (as AVP's `github` identifier): the GitHub
token is a secret and is never part of a key or file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plugin.config import Settings
from plugin.secrets.vault.auth.base import LoginResult, LoginSession, mount_path, required

DEFAULT_MOUNT = "auth/github"


@dataclass(frozen=True)
class GitHubAuth:
    token: str = field(repr=False)
    mount: str = DEFAULT_MOUNT
    name: str = "github"

    @classmethod
    def from_settings(cls, settings: Settings) -> GitHubAuth:
        (token,) = required(
            settings,
            ["AVP_GITHUB_TOKEN"],
            "AVP_GITHUB_TOKEN for github authentication cannot be empty",
        )
        return cls(token=token, mount=mount_path(settings, DEFAULT_MOUNT))

    @property
    def identity(self) -> str:
        return f"github token at {self.mount}"

    def cache_key(self) -> tuple[str, ...] | None:
        return ("github", self.mount)

    def login(self, session: LoginSession) -> LoginResult:
        return session.login_request(
            f"{self.mount}/login",
            {"token": self.token},
            identity=self.identity,
            secrets=[self.token],
        )
