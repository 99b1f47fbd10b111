"""`AVP_AUTH_TYPE=jwt`: `POST <mount>/login {role, jwt}` (default mount auth/jwt).

`AVP_JWT_ROLE` names the role, `AVP_JWT_TOKEN_PATH` the file holding the JWT
(read at login time and whitespace-trimmed). Both are required.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugin.config import Settings
from plugin.secrets.vault.auth.base import (
    LoginResult,
    LoginSession,
    mount_path,
    read_token_file,
    required,
)

DEFAULT_MOUNT = "auth/jwt"


@dataclass(frozen=True)
class JWTAuth:
    role: str
    token_path: str
    token_path_origin: str
    mount: str = DEFAULT_MOUNT
    name: str = "jwt"

    @classmethod
    def from_settings(cls, settings: Settings) -> JWTAuth:
        role, path = required(
            settings,
            ["AVP_JWT_ROLE", "AVP_JWT_TOKEN_PATH"],
            "AVP_JWT_ROLE and AVP_JWT_TOKEN_PATH for jwt authentication cannot be empty",
        )
        found = settings.lookup("AVP_JWT_TOKEN_PATH")
        origin = found.origin if found is not None else "AVP_JWT_TOKEN_PATH"
        return cls(
            role=role,
            token_path=path.strip(),
            token_path_origin=origin,
            mount=mount_path(settings, DEFAULT_MOUNT),
        )

    @property
    def identity(self) -> str:
        return f"jwt role {self.role} at {self.mount}"

    def cache_key(self) -> tuple[str, ...] | None:
        return ("jwt", self.mount, self.role, self.token_path)

    def login(self, session: LoginSession) -> LoginResult:
        jwt = read_token_file(self.token_path, "AVP_JWT_TOKEN_PATH", self.token_path_origin, "JWT")
        return session.login_request(
            f"{self.mount}/login",
            {"role": self.role, "jwt": jwt},
            identity=self.identity,
            secrets=[jwt],
        )
