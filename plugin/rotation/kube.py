"""A minimal Kubernetes API client for `plugin watch`: Applications and Leases, nothing else.

Why not the official `kubernetes` package: the watcher needs four calls (get and merge-patch an
Argo CD Application, get/create/update a coordination.k8s.io Lease), and `requests` is already a
dependency; the official client would add a large generated package to the sidecar image.

Configuration follows client-go's in-cluster config (`rest.InClusterConfig`):
`KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`, and the service-account directory holding
`token`, `ca.crt` and `namespace` (default /var/run/secrets/kubernetes.io/serviceaccount; the
sidecar's `PLUGIN_KUBE_SERVICE_ACCOUNT_DIR` moves it, for tests and for installs that project
the token elsewhere).

Guarantees:
- TLS is always verified against the service account's CA; there is no switch to turn it off.
- The bearer token is re-read from its file at most every `token_reload` seconds (projected
  tokens rotate; client-go re-reads every minute) and at once after a 401.
- The token never appears in a log record or an exception; errors name the verb, the resource,
  namespace/name and the HTTP status (plus the API's one-word `reason`), never the response body.
- Every request has a timeout; proxy variables of the environment are ignored (the API server
  is reached directly, as client-go does for in-cluster config without a proxy).
- Names and namespaces must be valid Kubernetes names before they go into a URL, so a hostile
  Application name recorded in the index cannot address another resource (`../secrets/x`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from plugin.errors import ConfigError, PluginError

#: Where Kubernetes mounts the pod's service-account token, CA and namespace.
DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Sidecar setting that moves the service-account directory (tests; custom projections).
SERVICE_ACCOUNT_DIR_SETTING = "PLUGIN_KUBE_SERVICE_ACCOUNT_DIR"
HOST_ENV = "KUBERNETES_SERVICE_HOST"
PORT_ENV = "KUBERNETES_SERVICE_PORT"

REQUEST_TIMEOUT_SECONDS = 10.0
TOKEN_RELOAD_SECONDS = 60.0

APPLICATIONS = ("argoproj.io", "v1alpha1", "applications")
LEASES = ("coordination.k8s.io", "v1", "leases")
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
MERGE_PATCH = "application/merge-patch+json"

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # DNS subdomain (RFC 1123)
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS label
_REASON = re.compile(r"[A-Za-z]{1,64}")


@dataclass(frozen=True)
class Call:
    """What a request was for: `patch applications.argoproj.io argocd/my-app`."""

    verb: str
    resource: str
    namespace: str
    name: str

    def __str__(self) -> str:
        target = f"{self.namespace}/{self.name}" if self.name else self.namespace
        return f"{self.verb} {self.resource} {target}"


class KubeError(PluginError):
    """A Kubernetes API call failed; the message names the call, never a token or a body.

    `status` is the HTTP status, or None when no answer came (connection error, timeout).
    """

    def __init__(self, call: Call, status: int | None, detail: str) -> None:
        self.call = call
        self.verb = call.verb
        self.resource = call.resource
        self.namespace = call.namespace
        self.name = call.name
        self.status = status
        super().__init__(f"Kubernetes API: {call}: {detail}")


class KubeNotFoundError(KubeError):
    """HTTP 404: the object (or its namespace) does not exist."""


class KubeConflictError(KubeError):
    """HTTP 409: a stale resourceVersion on update, or the object already exists on create."""


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to authenticate to it (no secret held here)."""

    server: str
    ca_file: str
    token_file: str
    namespace: str

    @classmethod
    def in_cluster(cls, environ: Mapping[str, str]) -> KubeConfig:
        """client-go's in-cluster config, read from `environ` (the sidecar's own environment)."""
        host = environ.get(HOST_ENV, "").strip()
        port = environ.get(PORT_ENV, "").strip() or "443"
        if not host:
            raise ConfigError(
                f"Kubernetes API: {HOST_ENV} is not set (plugin watch runs in a pod, "
                "with the service account of the repo-server)"
            )
        if not port.isdigit():
            raise ConfigError(f"Kubernetes API: {PORT_ENV} must be a port number")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        directory = Path(
            environ.get(SERVICE_ACCOUNT_DIR_SETTING, "").strip() or DEFAULT_SERVICE_ACCOUNT_DIR
        )
        token_file, ca_file = directory / "token", directory / "ca.crt"
        for path, what in ((token_file, "token"), (ca_file, "CA certificate")):
            if not path.is_file():
                raise ConfigError(
                    f"Kubernetes API: the service-account {what} {path} does not exist "
                    f"(set {SERVICE_ACCOUNT_DIR_SETTING} if it is mounted elsewhere)"
                )
        try:
            namespace = (directory / "namespace").read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"Kubernetes API: cannot read {directory / 'namespace'}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(f"Kubernetes API: {directory / 'namespace'} holds no namespace")
        return cls(f"https://{host}:{port}", str(ca_file), str(token_file), namespace)


def _shorten(value: object) -> str:
    """A tenant-chosen string as it may appear in a message: at most 80 characters."""
    text = str(value)
    return text[:80] + "..." if len(text) > 80 else text


def _check_name(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"not a valid Kubernetes {what}: {_shorten(value)!r}")
    return value


def _reason(response: requests.Response) -> str:
    """The API's one-word reason (`Forbidden`, `Conflict`...), or the HTTP phrase; no body text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    reason = body.get("reason") if isinstance(body, dict) else None
    if isinstance(reason, str) and _REASON.fullmatch(reason):
        return reason
    phrase = response.reason if isinstance(response.reason, str) else ""
    return phrase if _REASON.fullmatch(phrase.replace(" ", "")) else ""


class _Token:
    """The bearer token, re-read from its file when older than `reload` seconds."""

    def __init__(self, path: str, reload: float, clock: Callable[[], float]) -> None:
        self._path = path
        self._reload = reload
        self._clock = clock
        self._lock = threading.Lock()
        self._value = ""
        self._read_at: float | None = None

    def get(self, *, force: bool = False) -> str:
        with self._lock:
            now = self._clock()
            if force or self._read_at is None or now - self._read_at >= self._reload:
                self._value = self._read()
                self._read_at = now
            return self._value

    def _read(self) -> str:
        try:
            with open(self._path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise ConfigError(
                f"Kubernetes API: cannot read the service-account token {self._path}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        if not value:
            raise ConfigError(f"Kubernetes API: the service-account token {self._path} is empty")
        return value


class KubeClient:
    """The few Kubernetes API calls the watcher makes, with the pod's service account.

    Thread-safe: each thread gets its own `requests.Session` (the leader-election thread and the
    poller never share a connection).
    """

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        token_reload: float = TOKEN_RELOAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self._token = _Token(config.token_file, token_reload, clock)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @property
    def namespace(self) -> str:
        """The pod's namespace: the default of every call."""
        return self.config.namespace

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ Applications

    def get_application(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self._call("get", APPLICATIONS, namespace, name)

    def request_hard_refresh(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """Ask Argo CD to re-render the Application: the annotation `refresh: hard`.

        A JSON merge patch adds the one annotation and keeps every other one; Argo CD's
        application controller removes it once the refresh is done.
        """
        patch = {"metadata": {"annotations": {REFRESH_ANNOTATION: "hard"}}}
        return self._call("patch", APPLICATIONS, namespace, name, body=patch)

    # ------------------------------------------------------------------ Leases

    def get_lease(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The Lease object, or None when it does not exist."""
        try:
            return self._call("get", LEASES, namespace, name)
        except KubeNotFoundError:
            return None

    def create_lease(
        self, name: str, spec: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create the Lease; KubeConflictError when another candidate created it first."""
        ns = namespace or self.namespace
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": _check_name(name, _NAME, "name"), "namespace": ns},
            "spec": dict(spec),
        }
        return self._call("create", LEASES, ns, "", body=body, created_name=name)

    def update_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the Lease; it must carry the `metadata.resourceVersion` it was read with,
        so a concurrent change makes this fail with KubeConflictError (optimistic
        concurrency) instead of overwriting another candidate's record."""
        metadata = lease.get("metadata") or {}
        if not metadata.get("resourceVersion"):
            raise ValueError("update_lease needs the resourceVersion the Lease was read with")
        return self._call(
            "update", LEASES, metadata.get("namespace"), str(metadata.get("name", "")), body=lease
        )

    # ------------------------------------------------------------------ transport

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy variables, no .netrc credentials
            session.verify = self.config.ca_file
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _call(
        self,
        verb: str,
        kind: tuple[str, str, str],
        namespace: str | None,
        name: str,
        *,
        body: Mapping[str, Any] | None = None,
        created_name: str = "",
    ) -> dict[str, Any]:
        group, version, plural = kind
        resource = f"{plural}.{group}"
        ns = namespace or self.namespace
        call = Call(verb, resource, ns, name or created_name)
        try:
            _check_name(ns, _NAMESPACE, "namespace")
            if verb != "create":
                _check_name(name, _NAME, "name")
        except ValueError as exc:
            shown = Call(verb, resource, _shorten(ns), _shorten(call.name))
            raise KubeError(shown, None, str(exc)) from None
        url = f"{self.config.server}/apis/{group}/{version}/namespaces/{ns}/{plural}"
        if name:
            url += f"/{name}"
        method = {"get": "GET", "patch": "PATCH", "create": "POST", "update": "PUT"}[verb]
        headers = {"Accept": "application/json"}
        if verb == "patch":
            headers["Content-Type"] = MERGE_PATCH
        elif body is not None:
            headers["Content-Type"] = "application/json"

        response = self._send(method, url, headers, body, call)
        if response.status_code == 401:  # the projected token may have rotated since read
            response = self._send(method, url, headers, body, call, reload_token=True)
        status = response.status_code
        if 200 <= status < 300:
            try:
                result = response.json()
            except ValueError:
                result = None
            if not isinstance(result, dict):
                raise KubeError(call, status, "the answer is not an object")
            return result
        reason = _reason(response)
        detail = f"HTTP {status}" + (f" {reason}" if reason else "")
        error = {404: KubeNotFoundError, 409: KubeConflictError}.get(status, KubeError)
        raise error(call, status, detail)

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Mapping[str, Any] | None,
        call: Call,
        *,
        reload_token: bool = False,
    ) -> requests.Response:
        token = self._token.get(force=reload_token)
        try:
            return self._session().request(
                method,
                url,
                headers={**headers, "Authorization": f"Bearer {token}"},
                json=body,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise KubeError(call, None, f"no answer within {self.timeout:g}s") from None
        except requests.exceptions.SSLError:
            raise KubeError(
                call, None, "TLS verification against the service-account CA failed"
            ) from None
        except requests.RequestException as exc:
            raise KubeError(call, None, type(exc).__name__) from None
