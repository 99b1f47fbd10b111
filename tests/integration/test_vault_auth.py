"""Every Vault auth method against real OpenBao servers, and the TLS settings.

- token, approle, userpass, jwt and kubernetes use the shared OpenBao dev server. The JWTs are
  RS256 tokens signed here with `openssl`. Kubernetes auth is pointed at `TokenReviewServer`,
  a loopback stand-in for the Kubernetes TokenReview API: it is the only emulated part.
- cert auth and the VAULT_CACERT / VAULT_CAPATH / VAULT_CACERT_BYTES / VAULT_SKIP_VERIFY /
  VAULT_TLS_SERVER_NAME / VAULT_CLIENT_CERT settings use a second OpenBao dev server of this
  module with an extra TLS listener (certificates from a throw-away CA).
- github: OpenBao has no github auth method (its plugin catalog lacks it); the tests check
  that absence and the clean failure, not a successful GitHub login.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from plugin.errors import BackendError, ConfigError
from plugin.secrets.base import SecretRef
from tests.conftest import OpenBao, free_port, log_tail, stop_process, wait_until
from tests.integration.test_vault_support import (
    Pki,
    RootAPI,
    TokenReviewServer,
    make_pki,
    make_rsa_key,
    sign_jwt,
    unique,
    vault_backend,
)

pytestmark = pytest.mark.integration

CANARY = "canary-credential-Q2w-never-print"
MOUNT = "t4auth"


@pytest.fixture(scope="module")
def api(root_api: RootAPI) -> RootAPI:
    root_api.enable_kv(MOUNT, 2)
    root_api("POST", f"{MOUNT}/data/app", {"data": {"who": "auth-tests"}})
    root_api.read_policy("t4-auth-read", f"{MOUNT}/data/*")
    return root_api


def check_reads(env: dict[str, str]) -> str:
    """Log in, read the test secret, return the identity description."""
    backend = vault_backend(env, disable_token_cache=True)
    backend.login()
    assert backend.read(SecretRef(f"{MOUNT}/app")) == {"who": "auth-tests"}
    backend.close()
    return backend.auth.identity


# --- approle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mount", [None, "t4approle", "auth/t4approle"])
def test_approle(openbao: OpenBao, api: RootAPI, mount: str | None) -> None:
    path = "approle" if mount is None else "t4approle"
    api.enable_auth(path, "approle")
    role = unique("app-")
    api("POST", f"auth/{path}/role/{role}", {"token_policies": ["t4-auth-read"]})
    role_id = api("GET", f"auth/{path}/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/{path}/role/{role}/secret-id", {})["data"]["secret_id"]
    env = {"VAULT_ADDR": openbao.addr, "AVP_AUTH_TYPE": "approle", "AVP_ROLE_ID": role_id,
           "AVP_SECRET_ID": secret_id}  # fmt: skip
    if mount:
        env["AVP_MOUNT_PATH"] = mount
    assert check_reads(env) == f"approle role_id={role_id[:8]}… at auth/{path}"
    env["AVP_SECRET_ID"] = CANARY
    with pytest.raises(BackendError) as info:
        check_reads(env)
    assert str(info.value).startswith(f"Vault login as approle role_id={role_id[:8]}…")
    assert "HTTP 400" in str(info.value)
    assert CANARY not in str(info.value)


# --- userpass --------------------------------------------------------------------------------


def test_userpass(openbao: OpenBao, api: RootAPI) -> None:
    user = unique("alice")
    api("POST", f"auth/userpass/users/{user}",
        {"password": CANARY, "token_policies": ["t4-auth-read"]})  # fmt: skip
    env = {"VAULT_ADDR": openbao.addr, "ARGOCD_ENV_AVP_AUTH_TYPE": "userpass",
           "AVP_USERNAME": user, "AVP_PASSWORD": CANARY}  # fmt: skip
    assert check_reads(env) == f"userpass user {user} at auth/userpass"
    env["AVP_PASSWORD"] = "wrong-" + CANARY
    with pytest.raises(BackendError, match=f"login as userpass user {user} .*HTTP 400") as info:
        check_reads(env)
    assert CANARY not in str(info.value)


# --- jwt -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_setup(api: RootAPI, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("jwt")
    key, public = make_rsa_key(directory)
    api.enable_auth("t4jwt", "jwt")
    api("POST", "auth/t4jwt/config",
        {"jwt_validation_pubkeys": [public], "bound_issuer": "https://issuer.test"})  # fmt: skip
    api("POST", "auth/t4jwt/role/ci", {
        "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["t4-aud"],
        "bound_subject": "pipeline", "token_policies": ["t4-auth-read"], "token_ttl": "10m",
    })  # fmt: skip
    return key, "ci"


def jwt_claims(**override: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "https://issuer.test",
        "sub": "pipeline",
        "aud": "t4-aud",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
    }
    claims.update(override)
    return claims


def test_jwt(openbao: OpenBao, jwt_setup: tuple[Path, str], tmp_path: Path) -> None:
    key, role = jwt_setup
    token_file = tmp_path / "jwt"
    token = sign_jwt(key, jwt_claims())
    token_file.write_text(token + "\n")
    env = {"VAULT_ADDR": openbao.addr, "AVP_AUTH_TYPE": "jwt", "AVP_JWT_ROLE": role,
           "AVP_JWT_TOKEN_PATH": str(token_file), "AVP_MOUNT_PATH": "auth/t4jwt"}  # fmt: skip
    assert check_reads(env) == "jwt role ci at auth/t4jwt"
    # a JWT for another subject is refused; the JWT never shows up in the error
    bad = sign_jwt(key, jwt_claims(sub="intruder"))
    token_file.write_text(bad)
    with pytest.raises(BackendError, match="login as jwt role ci at auth/t4jwt failed") as info:
        check_reads(env)
    assert bad not in str(info.value) and token not in str(info.value)
    env["AVP_JWT_TOKEN_PATH"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="AVP_JWT_TOKEN_PATH from environment variable"):
        check_reads(env)


# --- kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_review(
    api: RootAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TokenReviewServer]:
    server = TokenReviewServer()
    # OpenBao insists on a CA when not running in a pod; the stand-in speaks plain HTTP.
    unused_ca = make_pki(tmp_path_factory.mktemp("k8s-ca")).ca_cert.read_text()
    api.enable_auth("t4k8s", "kubernetes")
    api("POST", "auth/t4k8s/config", {"kubernetes_host": server.url,
        "disable_local_ca_jwt": True, "kubernetes_ca_cert": unused_ca})  # fmt: skip
    api("POST", "auth/t4k8s/role/web", {
        "bound_service_account_names": ["app-sa"], "bound_service_account_namespaces": ["apps"],
        "token_policies": ["t4-auth-read"], "token_ttl": "10m",
    })  # fmt: skip
    yield server
    server.stop()


def test_kubernetes(openbao: OpenBao, token_review: TokenReviewServer, tmp_path: Path) -> None:
    key, _ = make_rsa_key(tmp_path, "sa")
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:apps:app-sa",
        "kubernetes.io/serviceaccount/namespace": "apps",
        "kubernetes.io/serviceaccount/service-account.name": "app-sa",
        "kubernetes.io/serviceaccount/service-account.uid": "uid-app-sa",
    }
    jwt = sign_jwt(key, claims)
    token_review.tokens[jwt] = ("apps", "app-sa", "uid-app-sa")
    token_file = tmp_path / "token"
    token_file.write_text(f"  {jwt}\n")
    env = {"VAULT_ADDR": openbao.addr, "AVP_AUTH_TYPE": "k8s", "AVP_K8S_ROLE": "web",
           "AVP_K8S_MOUNT_PATH": "t4k8s", "AVP_MOUNT_PATH": "auth/ignored",
           "AVP_K8S_TOKEN_PATH": str(token_file)}  # fmt: skip
    before = token_review.reviews
    assert check_reads(env) == "kubernetes role web at auth/t4k8s"
    assert token_review.reviews == before + 1
    # a token the API server does not know is refused
    other = sign_jwt(key, claims | {"exp": int(time.time()) + 999})
    token_file.write_text(other)
    with pytest.raises(BackendError, match="login as kubernetes role web") as info:
        check_reads(env)
    assert other not in str(info.value) and jwt not in str(info.value)


# --- github ----------------------------------------------------------------------------------


def test_github_auth_is_absent_from_openbao(openbao: OpenBao, api: RootAPI) -> None:
    with pytest.raises(AssertionError, match="plugin not found in the catalog: github"):
        api("POST", "sys/auth/t4github", {"type": "github"})
    env = {"VAULT_ADDR": openbao.addr, "AVP_AUTH_TYPE": "github", "AVP_GITHUB_TOKEN": CANARY}
    with pytest.raises(BackendError, match="Vault login as github token at auth/github failed"):
        check_reads(env)
    try:
        check_reads(env)
    except BackendError as exc:
        assert CANARY not in str(exc)


# --- TLS server: cert auth and TLS settings --------------------------------------------------


class TLSOpenBao:
    """An OpenBao dev server with an extra TLS listener (this module's own server)."""

    def __init__(self, binary: str, workdir: Path, pki: Pki) -> None:
        self.workdir = workdir
        self.pki = pki
        self.root_token = unique("root-")
        self.tls_port = free_port()
        self.http_port = free_port()
        self.addr = f"https://127.0.0.1:{self.tls_port}"
        self.log = workdir / "openbao-tls.log"
        config = workdir / "tls.hcl"
        config.write_text(
            'listener "tcp" {\n'
            f'  address = "127.0.0.1:{self.tls_port}"\n'
            f'  tls_cert_file = "{pki.server_cert}"\n'
            f'  tls_key_file = "{pki.server_key}"\n'
            "}\n"
        )
        env = {
            "HOME": str(workdir),
            "PATH": "/usr/bin:/bin",
            "BAO_DEV_ROOT_TOKEN_ID": self.root_token,
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.http_port}",
                 "-dev-no-store-token", f"-config={config}"],
                env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_until(self._healthy, self.proc, "OpenBao (TLS)")
        except RuntimeError as err:
            stop_process(self.proc)
            raise RuntimeError(f"{err}\n{log_tail(self.log, redact=self.root_token)}") from None
        self.api = RootAPI(self.addr, self.root_token, verify=str(pki.ca_cert))

    def _healthy(self) -> bool:
        answer = requests.get(f"{self.addr}/v1/sys/health", verify=str(self.pki.ca_cert), timeout=2)
        return answer.status_code == 200

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def tls_bao(bao_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSOpenBao]:
    workdir = tmp_path_factory.mktemp("openbao-tls")
    pki = make_pki(workdir / "pki")
    server = TLSOpenBao(bao_bin, workdir, pki)
    api = server.api
    api.enable_kv("kv", 2)
    api("POST", "kv/data/app", {"data": {"over": "tls"}})
    api(
        "PUT",
        "sys/policies/acl/read-kv",
        {"policy": 'path "kv/data/*" { capabilities = ["read"] }'},
    )
    api.enable_auth("cert", "cert")
    ca = pki.ca_cert.read_text()
    api("POST", "auth/cert/certs/web",
        {"certificate": ca, "token_policies": ["read-kv"], "token_ttl": "10m"})  # fmt: skip
    api("POST", "auth/cert/certs/other",
        {"certificate": pki.ca_cert.read_text(), "token_policies": ["default"]})  # fmt: skip
    yield server
    server.stop()


def tls_env(server: TLSOpenBao, **extra: str) -> dict[str, str]:
    return {"VAULT_ADDR": server.addr, "AVP_AUTH_TYPE": "token", "VAULT_TOKEN": server.root_token,
            "VAULT_CACERT": str(server.pki.ca_cert), **extra}  # fmt: skip


def read_tls(env: dict[str, str]) -> dict[str, object]:
    backend = vault_backend(env, disable_token_cache=True)
    try:
        backend.login()
        return dict(backend.read(SecretRef("kv/app")))
    finally:
        backend.close()


def test_cert_auth(tls_bao: TLSOpenBao, tmp_path: Path) -> None:
    pki = tls_bao.pki
    env = tls_env(tls_bao, AVP_AUTH_TYPE="cert", VAULT_CLIENT_CERT=str(pki.client_cert),
                  VAULT_CLIENT_KEY=str(pki.client_key), AVP_CERT_ROLE="web",
                  AVP_TOKEN_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip
    del env["VAULT_TOKEN"]
    assert read_tls(env) == {"over": "tls"}
    backend = vault_backend(env)
    backend.login()
    assert backend.auth.identity.startswith("TLS certificate ")
    assert backend.auth.identity.endswith("(role web) at auth/cert")
    # role "other" only has the default policy
    denied = vault_backend({**env, "AVP_CERT_ROLE": "other"}, disable_token_cache=True)
    with pytest.raises(
        BackendError,
        match=r"^permission denied reading kv/app as TLS certificate \w+ \(role other\)",
    ):
        denied.read(SecretRef("kv/app"))
    # without a client certificate the login fails cleanly
    other_pki = make_pki(tmp_path / "other", client_cn="stranger")
    stranger = {**env, "VAULT_CLIENT_CERT": str(other_pki.client_cert),
                "VAULT_CLIENT_KEY": str(other_pki.client_key)}  # fmt: skip
    with pytest.raises(BackendError, match=r"Vault login as TLS certificate .* failed"):
        read_tls(stranger)


def test_tls_trust_settings(tls_bao: TLSOpenBao, tmp_path: Path) -> None:
    pki = tls_bao.pki
    capath = tmp_path / "capath"
    capath.mkdir()
    (capath / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    base = tls_env(tls_bao)
    del base["VAULT_CACERT"]
    assert read_tls({**base, "VAULT_CACERT": str(pki.ca_cert)}) == {"over": "tls"}
    assert read_tls({**base, "ARGOCD_ENV_VAULT_CAPATH": str(capath)}) == {"over": "tls"}
    assert read_tls({**base, "VAULT_CACERT_BYTES": pki.ca_cert.read_text()}) == {"over": "tls"}
    assert read_tls({**base, "VAULT_SKIP_VERIFY": "true"}) == {"over": "tls"}
    with pytest.raises(BackendError, match="TLS error: certificate verify failed"):
        read_tls(base)  # the system trust store does not know the test CA


def test_tls_server_name(tls_bao: TLSOpenBao) -> None:
    port = tls_bao.tls_port
    env = tls_env(tls_bao, VAULT_ADDR=f"https://localhost:{port}")
    assert read_tls({**env, "VAULT_TLS_SERVER_NAME": "vault.test"}) == {"over": "tls"}
    with pytest.raises(BackendError, match=r"TLS error: .*other\.test"):
        read_tls({**env, "VAULT_TLS_SERVER_NAME": "other.test"})
    assert read_tls({**env, "VAULT_TLS_SERVER_NAME": "other.test", "VAULT_SKIP_VERIFY": "1"}) == {
        "over": "tls"
    }
