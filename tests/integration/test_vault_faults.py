"""Faults: OpenBao stopped, 503/429/501 answers, slow answers, deadlines, and credentials or
secret values never leaking into error text.

`FaultProxy` (tests/integration/test_vault_support.py) is a loopback reverse proxy in front of
the real OpenBao server that counts requests and injects statuses or delay.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from plugin.errors import BackendError
from plugin.secrets.base import SecretRef
from tests.conftest import OpenBao, require_tool
from tests.integration.test_vault_support import FaultProxy, RootAPI, unique, vault_backend

pytestmark = pytest.mark.integration

MOUNT = "t4faults"
CANARY_VALUE = "canary-secret-value-P0o-never-print"


@pytest.fixture(scope="module")
def api(root_api: RootAPI) -> RootAPI:
    root_api.enable_kv(MOUNT, 2)
    root_api("POST", f"{MOUNT}/data/app", {"data": {"password": CANARY_VALUE}})
    return root_api


@pytest.fixture
def proxy(proxy: FaultProxy, api: RootAPI) -> FaultProxy:
    """The shared proxy (conftest), once this module's secret exists."""
    return proxy


def env_via(proxy: FaultProxy, token: str, **extra: str) -> dict[str, str]:
    return {"VAULT_ADDR": proxy.url, "AVP_AUTH_TYPE": "token", "VAULT_TOKEN": token, **extra}


def is_read(method: str, path: str) -> bool:
    return method == "GET" and path.startswith(f"/v1/{MOUNT}/data/app")


def fail_first(count: int, status: int, retry_after: int | None = None) -> Any:
    state = {"left": count}

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        if is_read(method, path) and state["left"] > 0:
            state["left"] -= 1
            return ("status", status, retry_after)
        return None

    return plan


def assert_clean(text: str, *secrets: str) -> None:
    for secret in (CANARY_VALUE, *secrets):
        assert secret not in text


def test_stopped_server_fails_fast_with_bounded_retries(
    bao_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = OpenBao(require_tool("bao"), tmp_path_factory.mktemp("openbao-faults"))
    server.start()
    try:
        RootAPI(server.addr, server.root_token)(
            "POST", "kv/data/app", {"data": {"a": CANARY_VALUE}}
        )
        env = {
            "VAULT_ADDR": server.addr,
            "AVP_AUTH_TYPE": "token",
            "VAULT_TOKEN": server.root_token,
        }
        backend = vault_backend(env)
        assert backend.read(SecretRef("kv/app")) == {"a": CANARY_VALUE}
    finally:
        server.stop()
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.read(SecretRef("kv/data/app"))
    elapsed = time.monotonic() - started
    text = str(info.value)
    assert text == (
        f"cannot reach Vault at {server.addr} while reading kv/data/app: Connection refused "
        "(gave up after 3 attempts)"
    )
    assert elapsed < 3.0
    assert_clean(text, server.root_token)
    fresh = vault_backend({**env, "VAULT_MAX_RETRIES": "0"})
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"Connection refused \(gave up after 1 attempt\)"):
        fresh.read(SecretRef("kv/app"))
    assert time.monotonic() - started < 1.0


def test_503_is_retried_then_succeeds(openbao: OpenBao, proxy: FaultProxy) -> None:
    proxy.plan = fail_first(2, 503)
    backend = vault_backend(env_via(proxy, openbao.root_token))
    assert backend.read(SecretRef(f"{MOUNT}/app")) == {"password": CANARY_VALUE}
    assert proxy.count(is_read) == 3


def test_persistent_503_gives_up_after_max_retries(openbao: OpenBao, proxy: FaultProxy) -> None:
    proxy.plan = fail_first(100, 503)
    backend = vault_backend(env_via(proxy, openbao.root_token, VAULT_MAX_RETRIES="3"))
    with pytest.raises(BackendError) as info:
        backend.read(SecretRef(f"{MOUNT}/app"))
    assert str(info.value) == (
        f"Vault at {proxy.url} failed while reading {MOUNT}/app: HTTP 503: injected 503 "
        "(gave up after 4 attempts)"
    )
    assert proxy.count(is_read) == 4
    assert_clean(str(info.value), openbao.root_token)


def test_429_honours_retry_after(openbao: OpenBao, proxy: FaultProxy) -> None:
    proxy.plan = fail_first(1, 429, retry_after=1)
    backend = vault_backend(env_via(proxy, openbao.root_token))
    backend.read(SecretRef(f"{MOUNT}/app"))  # mount lookup done, now time the read alone
    proxy.plan = fail_first(1, 429, retry_after=1)
    started = time.monotonic()
    assert backend.read(SecretRef(f"{MOUNT}/data/app")) == {"password": CANARY_VALUE}
    assert 1.0 <= time.monotonic() - started < 3.0


def test_501_and_400_are_not_retried(openbao: OpenBao, proxy: FaultProxy) -> None:
    proxy.plan = fail_first(100, 501)
    backend = vault_backend(env_via(proxy, openbao.root_token))
    with pytest.raises(BackendError, match="Vault answered HTTP 501 reading"):
        backend.read(SecretRef(f"{MOUNT}/data/app"))
    assert proxy.count(is_read) == 1
    proxy.reset()
    proxy.plan = lambda method, path: None
    with pytest.raises(BackendError, match="Vault answered HTTP 400 reading") as info:
        backend.read(SecretRef(f"{MOUNT}/data/app", version="not-a-number"))
    assert proxy.count(is_read) == 1
    assert_clean(str(info.value), openbao.root_token)


def test_deadline_bounds_slow_answers(openbao: OpenBao, proxy: FaultProxy) -> None:
    backend = vault_backend(env_via(proxy, openbao.root_token, VAULT_MAX_RETRIES="5"))
    backend.read(SecretRef(f"{MOUNT}/app"))
    proxy.plan = lambda method, path: ("delay", 5.0) if is_read(method, path) else None
    backend.set_deadline(time.monotonic() + 1.0)
    started = time.monotonic()
    with pytest.raises(BackendError, match="deadline") as info:
        backend.read(SecretRef(f"{MOUNT}/app"))
    assert time.monotonic() - started < 1.6
    assert_clean(str(info.value), openbao.root_token)


def test_client_timeout_then_retry(openbao: OpenBao, proxy: FaultProxy) -> None:
    state = {"slow": 1}

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        if is_read(method, path) and state["slow"] > 0:
            state["slow"] -= 1
            return ("delay", 2.0)
        return None

    backend = vault_backend(env_via(proxy, openbao.root_token, VAULT_CLIENT_TIMEOUT="500ms"))
    proxy.plan = plan
    started = time.monotonic()
    assert backend.read(SecretRef(f"{MOUNT}/data/app")) == {"password": CANARY_VALUE}
    assert time.monotonic() - started < 2.0
    proxy.plan = lambda method, path: ("delay", 2.0) if is_read(method, path) else None
    with pytest.raises(BackendError, match=r"timed out \(gave up after 3 attempts\)"):
        backend.read(SecretRef(f"{MOUNT}/data/app"))


def test_retries_stop_at_the_deadline(openbao: OpenBao, proxy: FaultProxy) -> None:
    proxy.plan = fail_first(1000, 503)
    backend = vault_backend(env_via(proxy, openbao.root_token, VAULT_MAX_RETRIES="50"))
    backend.set_deadline(time.monotonic() + 1.5)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.read(SecretRef(f"{MOUNT}/data/app"))
    assert time.monotonic() - started < 2.0
    assert "HTTP 503" in str(info.value)
    assert "deadline" in str(info.value)


def test_login_is_retried_and_credentials_are_scrubbed(
    openbao: OpenBao, api: RootAPI, proxy: FaultProxy, tmp_path: Path
) -> None:
    user = unique("faulty")
    password = "pw-" + CANARY_VALUE
    api(
        "POST", f"auth/userpass/users/{user}", {"password": password, "token_policies": ["default"]}
    )
    login_path = f"/v1/auth/userpass/login/{user}"
    state = {"left": 1}

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        if path == login_path and state["left"] > 0:
            state["left"] -= 1
            return ("status", 502, None)
        return None

    proxy.plan = plan
    env = {"VAULT_ADDR": proxy.url, "AVP_AUTH_TYPE": "userpass", "AVP_USERNAME": user,
           "AVP_PASSWORD": password, "AVP_TOKEN_CACHE_DIR": str(tmp_path / "c")}  # fmt: skip
    backend = vault_backend(env)
    backend.login()
    assert proxy.count(lambda m, p: p == login_path) == 2
    # an error text echoing the credential is scrubbed before it reaches a message
    proxy.plan = lambda method, path: (
        ("status", 400, None, [f"bad password {password} for {user}"])
        if path == login_path
        else None
    )
    bad = vault_backend(env, disable_token_cache=True)
    with pytest.raises(BackendError) as info:
        bad.login()
    assert str(info.value) == (
        f"Vault login as userpass user {user} at auth/userpass failed: HTTP 400: "
        f"bad password <redacted> for {user}"
    )
    assert_clean(str(info.value), password)
