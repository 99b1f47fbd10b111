"""The Vault backend against a real OpenBao dev server: KV v1/v2, versions, friendly paths,
namespaces, permission errors, concurrent reads and re-login after a revoked token.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.errors import BackendError, MissingPathError
from plugin.secrets.base import SecretRef
from plugin.secrets.vault.backend import VaultBackend
from tests.conftest import OpenBao
from tests.integration.test_vault_support import RootAPI, unique, vault_backend

pytestmark = pytest.mark.integration

CANARY = "canary-value-9f3k-never-in-errors"
KV2 = "t4kv"
KV1 = "t4kv1"
NESTED = "t4/team/kv"


@pytest.fixture(scope="module")
def api(root_api: RootAPI) -> RootAPI:
    root_api.enable_kv(KV2, 2)
    root_api.enable_kv(KV1, 1)
    root_api.enable_kv(NESTED, 2)
    return root_api


@pytest.fixture(scope="module")
def seeded(api: RootAPI) -> dict[str, Any]:
    """Secrets: app (v2, 3 versions), multi (v2, 2 versions), legacy (v1), nested (v2)."""
    api("DELETE", f"{KV2}/metadata/app")
    for number in (1, 2, 3):
        api("POST", f"{KV2}/data/app", {"data": {"password": f"{CANARY}-{number}", "n": number}})
    api("POST", f"{KV1}/legacy", {"user": "bob", "password": CANARY})
    api("POST", f"{NESTED}/data/svc", {"data": {"key": "nested-value"}})
    api("POST", f"{KV2}/data/spaced name", {"data": {"k": "space"}})
    return {}


def token_env(openbao: OpenBao, token: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "VAULT_ADDR": openbao.addr,
        "AVP_AUTH_TYPE": "token",
        "VAULT_TOKEN": token or openbao.root_token,
        **extra,
    }


@pytest.fixture
def root_backend(openbao: OpenBao, seeded: dict[str, Any]) -> Iterator[VaultBackend]:
    backend = vault_backend(token_env(openbao))
    backend.login()
    yield backend
    backend.close()


def test_kv2_raw_and_friendly_paths_read_the_same(root_backend: VaultBackend) -> None:
    raw = root_backend.read(SecretRef(f"{KV2}/data/app"))
    friendly = root_backend.read(SecretRef(f"{KV2}/app"))
    assert raw == friendly == {"password": f"{CANARY}-3", "n": 3}
    assert root_backend.read(SecretRef(f"/{KV2}/app/")) == raw
    # one mount lookup for the mount, then one GET per read
    assert root_backend.transport.request_count == 4


def test_nested_mount_and_odd_characters(root_backend: VaultBackend) -> None:
    assert root_backend.read(SecretRef(f"{NESTED}/svc")) == {"key": "nested-value"}
    assert root_backend.read(SecretRef(f"{NESTED}/data/svc")) == {"key": "nested-value"}
    assert root_backend.read(SecretRef(f"{KV2}/spaced name")) == {"k": "space"}


def test_kv2_versions(root_backend: VaultBackend, api: RootAPI) -> None:
    assert root_backend.read(SecretRef(f"{KV2}/app", "1"))["n"] == 1
    assert root_backend.read(SecretRef(f"{KV2}/data/app", "2"))["n"] == 2
    with pytest.raises(MissingPathError) as info:
        root_backend.read(SecretRef(f"{KV2}/app", "99"))
    assert str(info.value).startswith(f"no secret at path {KV2}/app version 99")


def test_deleted_and_destroyed_versions(openbao: OpenBao, api: RootAPI) -> None:
    name = unique("versions-")
    for number in (1, 2, 3):
        api("POST", f"{KV2}/data/{name}", {"data": {"v": f"{CANARY}{number}"}})
    api("POST", f"{KV2}/delete/{name}", {"versions": [2]})
    api("POST", f"{KV2}/destroy/{name}", {"versions": [1]})
    backend = vault_backend(token_env(openbao))
    backend.login()
    with pytest.raises(BackendError, match=f"^version 2 of {KV2}/{name} was deleted$") as deleted:
        backend.read(SecretRef(f"{KV2}/{name}", "2"))
    assert not isinstance(deleted.value, MissingPathError)
    with pytest.raises(BackendError, match=f"^version 1 of {KV2}/data/{name} was destroyed$"):
        backend.read(SecretRef(f"{KV2}/data/{name}", "1"))
    assert backend.read(SecretRef(f"{KV2}/{name}")) == {"v": f"{CANARY}3"}
    api("DELETE", f"{KV2}/data/{name}")  # soft-delete the current version
    with pytest.raises(BackendError, match=f"^version 3 of {KV2}/{name} was deleted$") as latest:
        backend.read(SecretRef(f"{KV2}/{name}"))
    assert CANARY not in str(latest.value)


def test_kv1_reads_ignore_versions(root_backend: VaultBackend) -> None:
    expected = {"user": "bob", "password": CANARY}
    assert root_backend.read(SecretRef(f"{KV1}/legacy")) == expected
    assert root_backend.read(SecretRef(f"{KV1}/legacy", "7")) == expected
    assert root_backend.read(SecretRef(f"{KV1}/legacy", kv_version="1")) == expected
    # kv-version 2 (the default) on a v1 mount: the mount's real version wins
    assert root_backend.read(SecretRef(f"{KV1}/legacy", kv_version="2")) == expected


def test_missing_paths(root_backend: VaultBackend) -> None:
    with pytest.raises(MissingPathError, match=f"^no secret at path {KV2}/nope .API path"):
        root_backend.read(SecretRef(f"{KV2}/nope"))
    with pytest.raises(MissingPathError, match=f"^no secret at path {KV1}/nope$"):
        root_backend.read(SecretRef(f"{KV1}/nope"))
    with pytest.raises(MissingPathError, match="KV v2 mount: write it with /data/"):
        root_backend.read(SecretRef(f"{KV2}/app", kv_version="1"))
    with pytest.raises(MissingPathError, match=r"^no secret at path nomount/x$"):
        root_backend.read(SecretRef("nomount/x"))


def test_kv_version_one_forces_v1_semantics(openbao: OpenBao, seeded: dict[str, Any]) -> None:
    """AVP_KV_VERSION=1 (or the annotation) reads the raw path and returns `data` as is."""
    backend = vault_backend(token_env(openbao, AVP_KV_VERSION="1"))
    whole = backend.read(SecretRef(f"{KV2}/data/app"))
    assert set(whole) == {"data", "metadata"}
    assert whole["data"]["n"] == 3
    # the annotation overrides the variable per manifest
    assert backend.read(SecretRef(f"{KV2}/app", kv_version="2"))["n"] == 3
    assert backend.read(SecretRef(f"{KV1}/legacy"))["user"] == "bob"


def test_permission_denied_names_identity_never_token(openbao: OpenBao, api: RootAPI) -> None:
    policy = unique("t4-read-app-")
    api("PUT", f"sys/policies/acl/{policy}",
        {"policy": f'path "{KV2}/data/app" {{ capabilities = ["read"] }}'})  # fmt: skip
    token = api("POST", "auth/token/create", {"policies": [policy], "ttl": "10m"})["auth"][
        "client_token"
    ]
    backend = vault_backend(token_env(openbao, token))
    backend.login()
    assert backend.read(SecretRef(f"{KV2}/app"))["n"] == 3
    with pytest.raises(BackendError) as info:
        backend.read(SecretRef(f"{KV2}/data/other"))
    text = str(info.value)
    assert text.startswith(f"permission denied reading {KV2}/data/other as token auth")
    assert "environment variable VAULT_TOKEN" in text
    assert token not in text and "not valid" not in text
    assert backend.describe_access(SecretRef(f"{KV2}/app")) == (
        "the token (token auth (environment variable VAULT_TOKEN)) has capabilities [read] "
        f"on {KV2}/data/app"
    )
    assert backend.describe_access(SecretRef(f"{KV2}/other")).endswith(
        f"has capabilities [deny] on {KV2}/data/other"
    )
    # a revoked token: the message says so
    api("POST", "auth/token/revoke", {"token": token})
    revoked = vault_backend(token_env(openbao, token))
    with pytest.raises(BackendError, match="the token is not valid") as gone:
        revoked.read(SecretRef(f"{KV1}/legacy"))
    assert token not in str(gone.value)


def test_namespaces(openbao: OpenBao, api: RootAPI) -> None:
    namespace = unique("t4ns")
    api("POST", f"sys/namespaces/{namespace}", {})
    api.enable_kv("kv", 2, namespace=namespace)
    api("POST", "kv/data/ns-app", {"data": {"where": namespace}}, namespace=namespace)
    backend = vault_backend(token_env(openbao, VAULT_NAMESPACE=namespace))
    assert backend.read(SecretRef("kv/ns-app")) == {"where": namespace}
    assert backend.read(SecretRef("kv/data/ns-app")) == {"where": namespace}
    outside = vault_backend(token_env(openbao))
    with pytest.raises(MissingPathError):
        outside.read(SecretRef("kv/ns-app"))
    # the namespace may also be written in the path itself
    assert outside.read(SecretRef(f"{namespace}/kv/data/ns-app")) == {"where": namespace}


def test_concurrent_reads_from_many_threads(openbao: OpenBao, api: RootAPI) -> None:
    names = [f"conc-{i}" for i in range(40)]
    for name in names:
        api("POST", f"{KV2}/data/{name}", {"data": {"name": name}})
    backend = vault_backend(token_env(openbao, AVP_MAX_CONCURRENCY="8"))
    backend.login()
    with concurrent.futures.ThreadPoolExecutor(backend.max_workers) as pool:
        results = list(pool.map(lambda n: backend.read(SecretRef(f"{KV2}/{n}")), names))
    assert [r["name"] for r in results] == names
    assert backend.transport.request_count == len(names) + 1  # + one mount lookup
    backend.close()


def approle_env(openbao: OpenBao, role_id: str, secret_id: str, cache: Path) -> dict[str, str]:
    return {
        "VAULT_ADDR": openbao.addr,
        "AVP_AUTH_TYPE": "approle",
        "AVP_ROLE_ID": role_id,
        "AVP_SECRET_ID": secret_id,
        "AVP_TOKEN_CACHE_DIR": str(cache),
    }


def make_approle(api: RootAPI, ttl: str = "1h") -> tuple[str, str, str]:
    role = unique("t4-role-")
    policy = unique("t4-pol-")
    api("PUT", f"sys/policies/acl/{policy}",
        {"policy": f'path "{KV2}/*" {{ capabilities = ["read"] }}\n'
                   f'path "{KV1}/*" {{ capabilities = ["read"] }}'})  # fmt: skip
    api("POST", f"auth/approle/role/{role}", {"token_policies": [policy], "token_ttl": ttl})
    role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
    return role, role_id, secret_id


def test_relogin_once_when_cached_token_was_revoked(
    openbao: OpenBao, api: RootAPI, seeded: dict[str, Any], tmp_path: Path
) -> None:
    role, role_id, secret_id = make_approle(api)
    env = approle_env(openbao, role_id, secret_id, tmp_path / "cache")
    before = api.token_accessors()
    first = vault_backend(env)
    first.login()
    assert first.read(SecretRef(f"{KV2}/app"))["n"] == 3
    assert api.tokens_since(before, role_name=role) == 1
    second = vault_backend(env)
    second.login()
    assert second.read(SecretRef(f"{KV2}/app"))["n"] == 3
    assert api.tokens_since(before, role_name=role) == 1  # reused from the cache
    # revoke the cached token behind the plugin's back: the next run logs in again once
    revoked = second._token
    api("POST", "auth/token/revoke", {"token": revoked})
    assert api.tokens_since(before, role_name=role) == 0  # live tokens of the role
    third = vault_backend(env)
    third.login()
    assert third._token == revoked  # still in the cache: only Vault knows it is revoked
    assert third.read(SecretRef(f"{KV1}/legacy"))["user"] == "bob"
    assert third._token != revoked
    assert api.tokens_since(before, role_name=role) == 1
    # revoked again mid-run: re-login happens only once per run
    api("POST", "auth/token/revoke", {"token": third._token})
    with pytest.raises(BackendError) as info:
        third.read(SecretRef(f"{KV2}/data/app"))
    assert "permission denied reading" in str(info.value)
    assert "not valid" in str(info.value)
    assert secret_id not in str(info.value)
    assert api.tokens_since(before, role_name=role) == 0  # no second re-login


def test_genuine_denial_does_not_relogin(
    openbao: OpenBao, api: RootAPI, seeded: dict[str, Any], tmp_path: Path
) -> None:
    role, role_id, secret_id = make_approle(api)
    before = api.token_accessors()
    backend = vault_backend(approle_env(openbao, role_id, secret_id, tmp_path / "cache"))
    backend.login()
    with pytest.raises(BackendError) as info:
        backend.read(SecretRef("secret/forbidden"))
    assert str(info.value).startswith(
        f"permission denied reading secret/forbidden as approle role_id={role_id[:8]}… "
        "at auth/approle"
    )
    assert role_id not in str(info.value) and secret_id not in str(info.value)
    assert api.tokens_since(before, role_name=role) == 1


def test_short_ttl_token_is_renewed_by_login(
    openbao: OpenBao, api: RootAPI, seeded: dict[str, Any], tmp_path: Path
) -> None:
    role, role_id, secret_id = make_approle(api, ttl="3s")
    env = approle_env(openbao, role_id, secret_id, tmp_path / "cache")
    before = api.token_accessors()
    first = vault_backend(env)
    first.login()
    second = vault_backend(env)
    second.login()
    assert first._token == second._token
    assert api.tokens_since(before, role_name=role) == 1
    # 3 s lease: the margin is 1 s, so after 2.2 s the cached token is not reused any more
    time.sleep(2.2)
    third = vault_backend(env)
    third.login()
    assert third._token != first._token
    assert third.read(SecretRef(f"{KV2}/app"))["n"] == 3
