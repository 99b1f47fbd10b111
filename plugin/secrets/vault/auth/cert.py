"""`AVP_AUTH_TYPE=cert`: TLS certificate auth, `POST <mount>/login {name}` (default auth/cert).

The credential is the TLS client certificate `VAULT_CLIENT_CERT`/`VAULT_CLIENT_KEY`
presented on the connection (configured by the backend's TLS layer), so
`VAULT_ADDR` must be https. `AVP_CERT_ROLE` optionally names the certificate
role; without it Vault tries every role whose CA matches. The cache key holds
the SHA-256 of the (public) certificate file, never the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from plugin.config import Settings
from plugin.errors import ConfigError
from plugin.secrets.vault.auth.base import LoginResult, LoginSession, missing, mount_path

DEFAULT_MOUNT = "auth/cert"


@dataclass(frozen=True)
class CertAuth:
    cert_path: str
    cert_sha256: str
    role: str | None = None
    mount: str = DEFAULT_MOUNT
    name: str = "cert"

    @classmethod
    def from_settings(cls, settings: Settings) -> CertAuth:
        names = ["VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY"]
        if any(settings.lookup(name) is None for name in names):
            raise missing(
                settings,
                names,
                "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY (the TLS client certificate) "
                "for cert authentication cannot be empty",
            )
        found = settings.lookup("VAULT_CLIENT_CERT")
        assert found is not None
        try:
            with open(found.value, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        except OSError as exc:
            raise ConfigError(
                f"cannot read VAULT_CLIENT_CERT {found.value} (from {found.origin}): "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        role = settings.get("AVP_CERT_ROLE")
        return cls(
            cert_path=found.value,
            cert_sha256=digest,
            role=role.strip() if role else None,
            mount=mount_path(settings, DEFAULT_MOUNT),
        )

    @property
    def identity(self) -> str:
        role = f"role {self.role}" if self.role else "any matching role"
        return f"TLS certificate {self.cert_sha256[:12]} ({role}) at {self.mount}"

    def cache_key(self) -> tuple[str, ...] | None:
        return ("cert", self.mount, self.role or "", self.cert_sha256)

    def login(self, session: LoginSession) -> LoginResult:
        payload = {"name": self.role} if self.role else {}
        return session.login_request(
            f"{self.mount}/login", payload, identity=self.identity, secrets=[]
        )
