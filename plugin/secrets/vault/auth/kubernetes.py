"""`AVP_AUTH_TYPE=k8s`: `POST <mount>/login {role, jwt}` with the pod's service-account JWT.

Mount: `AVP_K8S_MOUNT_PATH`, else `AVP_MOUNT_PATH`, else `auth/kubernetes`. The JWT
file (`AVP_K8S_TOKEN_PATH`, default the projected service-account token) is read
at login time, so a rotated token is picked up, and whitespace-trimmed.
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

DEFAULT_MOUNT = "auth/kubernetes"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
DEFAULT_ORIGIN = "default of AVP_K8S_TOKEN_PATH"


@dataclass(frozen=True)
class KubernetesAuth:
    role: str
    token_path: str = DEFAULT_TOKEN_PATH
    token_path_origin: str = DEFAULT_ORIGIN
    mount: str = DEFAULT_MOUNT
    name: str = "k8s"

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesAuth:
        (role,) = required(
            settings, ["AVP_K8S_ROLE"], "AVP_K8S_ROLE cannot be empty when using Kubernetes Auth"
        )
        found = settings.lookup("AVP_K8S_TOKEN_PATH")
        path, origin = (
            (found.value.strip(), found.origin)
            if found is not None
            else (DEFAULT_TOKEN_PATH, DEFAULT_ORIGIN)
        )
        mount = mount_path(settings, DEFAULT_MOUNT, ("AVP_K8S_MOUNT_PATH", "AVP_MOUNT_PATH"))
        return cls(role=role, token_path=path, token_path_origin=origin, mount=mount)

    @property
    def identity(self) -> str:
        return f"kubernetes role {self.role} at {self.mount}"

    def cache_key(self) -> tuple[str, ...] | None:
        return ("k8s", self.mount, self.role, self.token_path)

    def login(self, session: LoginSession) -> LoginResult:
        jwt = read_token_file(
            self.token_path, "AVP_K8S_TOKEN_PATH", self.token_path_origin, "service-account token"
        )
        return session.login_request(
            f"{self.mount}/login",
            {"role": self.role, "jwt": jwt},
            identity=self.identity,
            secrets=[jwt],
        )
