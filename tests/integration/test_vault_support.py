"""Helpers for the Vault backend tests (this module holds no tests).

- `make_pki`: a throw-away CA, a server certificate (localhost, vault.test, 127.0.0.1) and a
  client certificate, made with the `openssl` command.
- `sign_jwt`: RS256 JWTs signed with `openssl dgst`.
- `FaultProxy`: a loopback reverse proxy in front of OpenBao that counts requests and can add
  delay or answer 503/429 instead of forwarding (the fault-injection stand-in).
- `TokenReviewServer`: a loopback stand-in for the Kubernetes TokenReview API, the only
  emulated part of the kubernetes auth tests (OpenBao itself is real).
- `vault_backend`: build the real backend from a plain environment mapping.
"""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from plugin.config import Settings
from plugin.secrets.base import BackendOptions
from plugin.secrets.vault.backend import VaultBackend, make_vault_backend

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[srv]
subjectAltName = DNS:localhost, DNS:vault.test, IP:127.0.0.1
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
[cli]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, client_cn: str = "client") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "openssl.cnf"
    conf.write_text(OPENSSL_CONFIG)
    c = str(conf)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca", "-config", c, "-extensions", "ca", cwd=directory,
    )  # fmt: skip
    for name, cn, ext in (("srv", "vault.test", "srv"), ("cli", client_cn, "cli")):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={cn}", "-config", c, cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", c,
            "-extensions", ext, cwd=directory,
        )  # fmt: skip
    return Pki(
        directory,
        directory / "ca.pem",
        directory / "ca.key",
        directory / "srv.pem",
        directory / "srv.key",
        directory / "cli.pem",
        directory / "cli.key",
    )


def make_rsa_key(directory: Path, name: str = "jwt") -> tuple[Path, str]:
    """An RSA private key file and its public key PEM."""
    key = directory / f"{name}.key"
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key),
             cwd=directory)  # fmt: skip
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout"], check=True, capture_output=True, text=True
    ).stdout
    return key, public


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(private_key: Path, claims: Mapping[str, Any], kid: str | None = None) -> str:
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(dict(claims)).encode())
    )
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private_key)],
        input=signing_input.encode(),
        check=True,
        capture_output=True,
    ).stdout
    return signing_input + "." + _b64url(signature)


def vault_backend(
    env: Mapping[str, str],
    *,
    disable_token_cache: bool = False,
    file_values: Mapping[str, str] | None = None,
) -> VaultBackend:
    settings = Settings(environ=dict(env), file_values=dict(file_values or {}))
    return make_vault_backend(settings, BackendOptions(disable_token_cache=disable_token_cache))


# --- loopback HTTP stand-ins ------------------------------------------------------------------


class _Server:
    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FaultProxy(_Server):
    """Reverse proxy to `target`. `plan(method, path) -> action` decides per request:

    None forwards; ("status", code, retry_after[, errors]) answers that status (and Vault-style
    error strings) without forwarding;
    ("delay", seconds) sleeps, then forwards. `requests` lists (method, path) of every request.
    """

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.plan: Callable[[str, str], tuple[Any, ...] | None] = lambda method, path: None
        self._local = threading.local()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests.append((self.command, self.path))
                action = proxy.plan(self.command, self.path)
                if action is not None and action[0] == "status":
                    errors = action[3] if len(action) > 3 else [f"injected {action[1]}"]
                    payload = json.dumps({"errors": errors}).encode()
                    self.send_response(int(action[1]))
                    if len(action) > 2 and action[2] is not None:
                        self.send_header("Retry-After", str(action[2]))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action is not None and action[0] == "delay":
                    time.sleep(float(action[1]))
                headers = {
                    key: value
                    for key, value in self.headers.items()
                    if key.lower() not in {"host", "content-length", "connection"}
                }
                upstream = proxy.session().request(
                    self.command,
                    proxy.target + self.path,
                    headers=headers,
                    data=body,
                    timeout=30,
                    allow_redirects=False,
                )
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in {"content-length", "transfer-encoding", "connection",
                                           "content-encoding"}:  # fmt: skip
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        super().__init__(Handler)

    def session(self) -> requests.Session:
        """One upstream session (kept-alive connection) per proxy thread."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._local.session = session
        return session

    def count(self, predicate: Callable[[str, str], bool] = lambda m, p: True) -> int:
        with self.lock:
            return sum(1 for method, path in self.requests if predicate(method, path))

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()


class TokenReviewServer(_Server):
    """Answers Kubernetes TokenReview requests: `tokens` maps a JWT to (namespace, sa, uid)."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, str, str]] = {}
        self.reviews = 0
        review = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                review.reviews += 1
                token = (request.get("spec") or {}).get("token", "")
                known = review.tokens.get(token)
                status: dict[str, Any] = {"authenticated": False}
                if known is not None:
                    namespace, name, uid = known
                    status = {
                        "authenticated": True,
                        "user": {
                            "username": f"system:serviceaccount:{namespace}:{name}",
                            "uid": uid,
                            "groups": ["system:serviceaccounts"],
                        },
                    }
                answer = {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "status": status,
                }
                payload = json.dumps(answer).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)


def token_accessors(client: Any) -> set[str]:
    """Accessors of every token on the server (needs a root client)."""
    answer = client.adapter.request("LIST", "/v1/auth/token/accessors")
    body = answer.json() if hasattr(answer, "json") else answer
    return set(body["data"]["keys"])


def tokens_created_for(
    client: Any, before: set[str], predicate: Callable[[dict[str, Any]], bool]
) -> int:
    """How many tokens created since `before` satisfy `predicate(lookup data)`."""
    count = 0
    for accessor in token_accessors(client) - before:
        answer = client.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})
        body = answer.json() if hasattr(answer, "json") else answer
        if predicate(body["data"]):
            count += 1
    return count


def unique(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns() % 10**9:09d}"


def iter_lines(text: str) -> Iterator[str]:
    yield from text.splitlines()


class RootAPI:
    """Plain HTTP calls to OpenBao with the root token (test set-up only)."""

    def __init__(self, addr: str, token: str, verify: str | bool = True) -> None:
        self.addr = addr.rstrip("/")
        self.token = token
        self.verify = verify

    def __call__(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        token: str | None = None,
        ok: tuple[int, ...] = (200, 204),
    ) -> dict[str, Any]:
        headers = {"X-Vault-Token": token or self.token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        answer = requests.request(
            method,
            f"{self.addr}/v1/{path.lstrip('/')}",
            headers=headers,
            json=dict(payload) if payload is not None else None,
            timeout=30,
            verify=self.verify,
        )
        if answer.status_code not in ok:
            raise AssertionError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else {}

    def token_accessors(self) -> set[str]:
        return set(self("LIST", "auth/token/accessors")["data"]["keys"])

    def tokens_since(self, before: set[str], **meta: str) -> int:
        """Tokens created since `before` whose metadata contains `meta`."""
        count = 0
        for accessor in self.token_accessors() - before:
            data = self("POST", "auth/token/lookup-accessor", {"accessor": accessor})["data"]
            found = data.get("meta") or {}
            if all(found.get(key) == value for key, value in meta.items()):
                count += 1
        return count

    def read_policy(self, name: str, *paths: str) -> None:
        """The ACL policy `name`: read on each of `paths` (globs allowed), nothing else."""
        rules = "\n".join(f'path "{path}" {{ capabilities = ["read"] }}' for path in paths)
        self("PUT", f"sys/policies/acl/{name}", {"policy": rules})

    def enable_auth(self, path: str, kind: str) -> None:
        mounts = self("GET", "sys/auth")
        table = mounts.get("data", mounts)
        if f"{path}/" not in table:
            self("POST", f"sys/auth/{path}", {"type": kind})

    def enable_kv(self, path: str, version: int, namespace: str | None = None) -> None:
        mounts = self("GET", "sys/mounts", namespace=namespace)
        table = mounts.get("data", mounts)
        if f"{path}/" not in table:
            self(
                "POST",
                f"sys/mounts/{path}",
                {"type": "kv", "options": {"version": str(version)}},
                namespace=namespace,
            )
