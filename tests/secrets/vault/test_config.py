"""Vault backend configuration without a server: auth settings, VAULT_* parsing, TLS files.

Everything that needs Vault's answers is in tests/integration/test_vault_*.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from plugin.config import Settings
from plugin.errors import BackendError, ConfigError
from plugin.secrets.base import SecretRef
from plugin.secrets.registry import BackendOptions, make_backend
from plugin.secrets.vault.auth import make_auth_method
from plugin.secrets.vault.auth.approle import AppRoleAuth
from plugin.secrets.vault.auth.base import normalise_mount
from plugin.secrets.vault.auth.cert import CertAuth
from plugin.secrets.vault.auth.github import GitHubAuth
from plugin.secrets.vault.auth.jwt import JWTAuth
from plugin.secrets.vault.auth.kubernetes import KubernetesAuth
from plugin.secrets.vault.auth.token import TokenAuth
from plugin.secrets.vault.auth.userpass import UserpassAuth
from plugin.secrets.vault.backend import VaultConfig, make_vault_backend
from plugin.secrets.vault.tls import TLSSettings
from tests.integration.test_vault_support import Pki, make_pki

SECRET = "canary-secret-J4k-never-print"


def settings(**env: str) -> Settings:
    return Settings(environ=env)


# --- auth methods from settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "env", "message", "names"),
    [
        ("approle", {"AVP_ROLE_ID": "r"},
         "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty",
         ["AVP_SECRET_ID"]),
        ("approle", {}, "AVP_ROLE_ID and AVP_SECRET_ID", ["AVP_ROLE_ID", "AVP_SECRET_ID"]),
        ("github", {}, "AVP_GITHUB_TOKEN for github authentication cannot be empty",
         ["AVP_GITHUB_TOKEN"]),
        ("k8s", {}, "AVP_K8S_ROLE cannot be empty when using Kubernetes Auth", ["AVP_K8S_ROLE"]),
        ("token", {}, "VAULT_TOKEN for token authentication cannot be empty", ["VAULT_TOKEN"]),
        ("userpass", {"AVP_PASSWORD": SECRET}, "AVP_USERNAME and AVP_PASSWORD for userpass",
         ["AVP_USERNAME"]),
        ("jwt", {"AVP_JWT_ROLE": "r"}, "AVP_JWT_ROLE and AVP_JWT_TOKEN_PATH",
         ["AVP_JWT_TOKEN_PATH"]),
        ("cert", {"VAULT_CLIENT_CERT": "/c"}, "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY",
         ["VAULT_CLIENT_KEY"]),
    ],
)  # fmt: skip
def test_missing_settings_name_variable_and_places(
    auth: str, env: dict[str, str], message: str, names: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        make_auth_method(settings(AVP_AUTH_TYPE=auth, **env))
    text = str(info.value)
    assert message in text
    for name in names:
        assert (
            f"{name} is not set (looked in ARGOCD_ENV_{name}, environment variable {name}" in text
        )
    assert SECRET not in text


def test_missing_setting_mentions_config_file_when_one_is_loaded() -> None:
    loaded = Settings(
        environ={"AVP_AUTH_TYPE": "token"},
        file_values={"AVP_TYPE": "vault"},
        file_origin="config file /etc/avp.yaml",
    )
    with pytest.raises(ConfigError, match=r"config file /etc/avp\.yaml key VAULT_TOKEN"):
        make_auth_method(loaded)


def test_unknown_or_missing_auth_type() -> None:
    with pytest.raises(ConfigError) as info:
        make_auth_method(settings(ARGOCD_ENV_AVP_AUTH_TYPE="iam"))
    text = str(info.value)
    assert "Must provide a supported Authentication Type, received 'iam'" in text
    assert "from environment variable ARGOCD_ENV_AVP_AUTH_TYPE" in text
    assert "approle, cert, github, jwt, k8s, token, userpass" in text
    with pytest.raises(ConfigError, match="AVP_AUTH_TYPE is not set"):
        make_auth_method(settings())


def test_auth_type_is_trimmed_and_argocd_env_wins() -> None:
    method = make_auth_method(
        settings(AVP_AUTH_TYPE="token", ARGOCD_ENV_AVP_AUTH_TYPE=" userpass ",
                 AVP_USERNAME="alice", AVP_PASSWORD=SECRET)
    )  # fmt: skip
    assert isinstance(method, UserpassAuth)


@pytest.mark.parametrize(
    ("value", "mount"),
    [("approle2", "auth/approle2"), ("auth/approle2", "auth/approle2"),
     ("/auth/approle2/", "auth/approle2"), ("team/approle", "auth/team/approle")],
)  # fmt: skip
def test_mount_path_accepts_with_and_without_auth_prefix(value: str, mount: str) -> None:
    assert normalise_mount(value) == mount
    method = make_auth_method(
        settings(AVP_AUTH_TYPE="approle", AVP_ROLE_ID="r", AVP_SECRET_ID=SECRET,
                 AVP_MOUNT_PATH=value)
    )  # fmt: skip
    assert isinstance(method, AppRoleAuth) and method.mount == mount


def test_default_mounts() -> None:
    base = {"AVP_ROLE_ID": "r", "AVP_SECRET_ID": "s", "AVP_USERNAME": "u", "AVP_PASSWORD": "p",
            "AVP_GITHUB_TOKEN": "g", "AVP_K8S_ROLE": "k", "AVP_JWT_ROLE": "j",
            "AVP_JWT_TOKEN_PATH": "/t"}  # fmt: skip
    expected = {"approle": "auth/approle", "userpass": "auth/userpass", "github": "auth/github",
                "k8s": "auth/kubernetes", "jwt": "auth/jwt"}  # fmt: skip
    for auth, mount in expected.items():
        method = make_auth_method(settings(AVP_AUTH_TYPE=auth, **base))
        assert method.mount == mount  # type: ignore[attr-defined]


def test_k8s_mount_precedence_and_token_path() -> None:
    method = make_auth_method(
        settings(AVP_AUTH_TYPE="k8s", AVP_K8S_ROLE="web", AVP_MOUNT_PATH="generic",
                 AVP_K8S_MOUNT_PATH="auth/k8s-east", AVP_K8S_TOKEN_PATH="/tmp/jwt")
    )  # fmt: skip
    assert isinstance(method, KubernetesAuth)
    assert (method.mount, method.token_path) == ("auth/k8s-east", "/tmp/jwt")
    method = make_auth_method(settings(AVP_AUTH_TYPE="kubernetes", AVP_K8S_ROLE="web",
                                       AVP_MOUNT_PATH="generic"))  # fmt: skip
    assert isinstance(method, KubernetesAuth)
    assert method.mount == "auth/generic"
    assert method.token_path == "/var/run/secrets/kubernetes.io/serviceaccount/token"


def test_identities_and_reprs_hold_no_secret(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("public cert")
    methods = [
        AppRoleAuth("0123456789abcdef", SECRET),
        UserpassAuth("alice", SECRET),
        GitHubAuth(SECRET),
        TokenAuth(SECRET, "environment variable VAULT_TOKEN"),
        KubernetesAuth("web"),
        JWTAuth("ci", "/jwt", "env"),
        CertAuth.from_settings(settings(VAULT_CLIENT_CERT=str(cert), VAULT_CLIENT_KEY=SECRET)),
    ]
    for method in methods:
        assert SECRET not in method.identity
        assert SECRET not in repr(method)
        assert SECRET not in repr(method.cache_key())
    assert methods[0].identity == "approle role_id=01234567… at auth/approle"
    assert methods[1].identity == "userpass user alice at auth/userpass"
    assert methods[3].cache_key() is None  # token auth never caches


def test_cache_keys_separate_roles_and_mounts() -> None:
    assert AppRoleAuth("a", "s").cache_key() != AppRoleAuth("b", "s").cache_key()
    assert AppRoleAuth("a", "s").cache_key() == AppRoleAuth("a", "other").cache_key()
    assert AppRoleAuth("a", "s").cache_key() != AppRoleAuth("a", "s", "auth/x").cache_key()
    assert KubernetesAuth("a").cache_key() != KubernetesAuth("b").cache_key()
    assert UserpassAuth("a", "p").cache_key() != UserpassAuth("b", "p").cache_key()


# --- VAULT_* settings ----------------------------------------------------------------------


def test_vault_config_defaults_and_precedence() -> None:
    config = VaultConfig.from_settings(settings())
    assert config.addr == "https://127.0.0.1:8200"
    assert (config.timeout, config.max_retries, config.max_workers) == (60.0, 2, 8)
    assert config.kv_version == "2" and config.namespace is None
    config = VaultConfig.from_settings(
        settings(VAULT_ADDR="http://env:8200/", ARGOCD_ENV_VAULT_ADDR="http://argo:8200",
                 VAULT_NAMESPACE="/team/a/", VAULT_CLIENT_TIMEOUT="1m30s", VAULT_MAX_RETRIES="0",
                 AVP_MAX_CONCURRENCY="3", AVP_KV_VERSION="1")
    )  # fmt: skip
    assert config.addr == "http://argo:8200"
    assert config.namespace == "team/a"
    assert (config.timeout, config.max_retries, config.max_workers) == (90.0, 0, 3)
    assert config.kv_version == "1"
    agent = VaultConfig.from_settings(settings(VAULT_ADDR="http://a", VAULT_AGENT_ADDR="http://b"))
    assert agent.addr == "http://b"


@pytest.mark.parametrize(
    ("env", "pattern"),
    [
        ({"VAULT_ADDR": "127.0.0.1:8200"}, "VAULT_ADDR must be an http:// or https:// URL"),
        ({"ARGOCD_ENV_VAULT_ADDR": "ftp://x"}, "from environment variable ARGOCD_ENV_VAULT_ADDR"),
        ({"AVP_KV_VERSION": "3"}, "AVP_KV_VERSION must be 1 or 2, got '3' from environment"),
        ({"VAULT_CLIENT_TIMEOUT": "later"}, "VAULT_CLIENT_TIMEOUT must be a duration"),
        ({"VAULT_MAX_RETRIES": "many"}, "VAULT_MAX_RETRIES must be an integer"),
        ({"VAULT_MAX_RETRIES": "-1"}, "VAULT_MAX_RETRIES must be at least 0"),
        ({"AVP_MAX_CONCURRENCY": "0"}, "AVP_MAX_CONCURRENCY must be at least 1"),
        ({"VAULT_SKIP_VERIFY": "maybe"}, "VAULT_SKIP_VERIFY must be true or false"),
        ({"VAULT_DISABLE_REDIRECTS": "x"}, "VAULT_DISABLE_REDIRECTS must be true or false"),
        ({"VAULT_CLIENT_CERT": "/c"}, "VAULT_CLIENT_CERT is set but VAULT_CLIENT_KEY is not"),
        ({"VAULT_CLIENT_KEY": "/k"}, "VAULT_CLIENT_KEY is set but VAULT_CLIENT_CERT is not"),
    ],
)
def test_vault_config_errors_name_variable(env: dict[str, str], pattern: str) -> None:
    with pytest.raises(ConfigError) as info:
        VaultConfig.from_settings(settings(**env))
    assert pattern in str(info.value)


# --- TLS settings --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_contexts_load(pki: Pki, tmp_path: Path) -> None:
    capath = tmp_path / "capath" / "nested"
    capath.mkdir(parents=True)
    (capath / "any-name.crt").write_bytes(pki.ca_cert.read_bytes())
    for tls in (
        TLSSettings(ca_cert=str(pki.ca_cert)),
        TLSSettings(ca_cert_bytes=pki.ca_cert.read_text()),
        TLSSettings(ca_path=str(tmp_path / "capath")),  # any layout, no c_rehash needed
        TLSSettings(skip_verify=True),
        TLSSettings(client_cert=str(pki.client_cert), client_key=str(pki.client_key)),
        TLSSettings(),
    ):
        context = tls.build_context()
        assert context.cert_store_stats()["x509_ca"] >= (0 if tls.skip_verify else 1)


def test_tls_errors_name_variable_and_origin(pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text(f"-----BEGIN CERTIFICATE-----\n{SECRET}\n-----END CERTIFICATE-----\n")
    cases = [
        ({"ARGOCD_ENV_VAULT_CACERT": str(tmp_path / "missing.pem")},
         "VAULT_CACERT from environment variable ARGOCD_ENV_VAULT_CACERT"),
        ({"VAULT_CACERT": str(bad)}, "cannot load CA certificates"),
        ({"VAULT_CACERT_BYTES": "junk"}, "VAULT_CACERT_BYTES from environment variable"),
        ({"VAULT_CAPATH": str(tmp_path / "nodir")}, "VAULT_CAPATH from environment variable"),
        ({"VAULT_CLIENT_CERT": str(pki.client_cert), "VAULT_CLIENT_KEY": str(bad)},
         "cannot load the client certificate (VAULT_CLIENT_CERT from environment variable"),
    ]  # fmt: skip
    for env, pattern in cases:
        with pytest.raises(ConfigError) as info:
            TLSSettings.from_settings(settings(**env)).build_context()
        assert pattern in str(info.value)
        assert SECRET not in str(info.value)


# --- make_vault_backend --------------------------------------------------------------------


def test_backend_options_and_cache_choice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = {"VAULT_ADDR": "http://127.0.0.1:1", "AVP_AUTH_TYPE": "approle", "AVP_ROLE_ID": "r",
            "AVP_SECRET_ID": SECRET, "HOME": str(tmp_path)}  # fmt: skip
    backend = make_vault_backend(Settings(environ=base), BackendOptions())
    assert backend.cache is not None
    assert backend.cache.directory == tmp_path / ".cache/argocd-secrets-plugin/vault-tokens"
    assert make_vault_backend(Settings(environ=base), BackendOptions(True)).cache is None
    with caplog.at_level(logging.INFO):
        no_home = {k: v for k, v in base.items() if k != "HOME"}
        assert make_vault_backend(Settings(environ=no_home), BackendOptions()).cache is None
    assert "token cache disabled: HOME is not set" in caplog.text
    token = make_vault_backend(
        Settings(environ={**base, "AVP_AUTH_TYPE": "token", "VAULT_TOKEN": SECRET}),
        BackendOptions(),
    )
    assert token.cache is None
    assert backend.max_workers == 8
    assert SECRET not in caplog.text


def test_registry_builds_vault_backend() -> None:
    env = {"AVP_TYPE": "vault", "AVP_AUTH_TYPE": "token", "VAULT_TOKEN": SECRET,
           "VAULT_ADDR": "http://127.0.0.1:1", "AVP_MAX_CONCURRENCY": "4"}  # fmt: skip
    backend = make_backend(Settings(environ=env), BackendOptions())
    assert backend.max_workers == 4
    backend.close()


def test_cert_auth_needs_https(pki: Pki) -> None:
    env = {
        "VAULT_ADDR": "http://127.0.0.1:1",
        "AVP_AUTH_TYPE": "cert",
        "VAULT_CLIENT_CERT": str(pki.client_cert),
        "VAULT_CLIENT_KEY": str(pki.client_key),
    }
    with pytest.raises(ConfigError, match="AVP_AUTH_TYPE=cert needs an https:// VAULT_ADDR"):
        make_vault_backend(Settings(environ=env), BackendOptions())


def test_bad_kv_version_annotation_is_a_backend_error() -> None:
    env = {"VAULT_ADDR": "http://127.0.0.1:1", "AVP_AUTH_TYPE": "token", "VAULT_TOKEN": SECRET}
    backend = make_vault_backend(Settings(environ=env), BackendOptions())
    with pytest.raises(BackendError, match="unsupported kv-version '3' for kv/app"):
        backend.read(SecretRef("kv/app", kv_version="3"))
    with pytest.raises(BackendError, match="empty Vault path"):
        backend.read(SecretRef("/"))


def test_malformed_token_is_reported_without_its_text() -> None:
    env = {"VAULT_ADDR": "http://127.0.0.1:1", "AVP_AUTH_TYPE": "token",
           "VAULT_TOKEN": f"s.abc\n{SECRET}"}  # fmt: skip
    backend = make_vault_backend(Settings(environ=env), BackendOptions())
    with pytest.raises(BackendError, match="InvalidHeader") as info:
        backend.read(SecretRef("kv/app"))
    assert SECRET not in str(info.value)
