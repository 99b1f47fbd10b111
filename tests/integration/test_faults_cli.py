"""Faults seen from Argo CD: whole `plugin generate` runs against a misbehaving Vault or chart
repository.

Every failing run must exit non-zero within the deadline, print nothing on stdout and one clear
`Error:` on stderr holding no canary (in any encoding), and the next healthy run must succeed
with the same token and chart caches (nothing poisoned). The manifest always reads one healthy
path holding the canary, so the canary is in memory when the error is printed.

Backend-level retry, backoff and deadline details are in tests/integration/test_vault_faults.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ChartRepo, OpenBao, require_tool
from tests.integration.security_support import (
    HangingServer,
    Plugin,
    assert_failed_cleanly,
    assert_succeeded,
    umbrella_chart,
)
from tests.integration.test_vault_support import FaultProxy, RootAPI, make_pki, unique

pytestmark = pytest.mark.integration

MOUNT = "t8faults"
CANARY = "canary-fault-Jq2w7Xe0"
CANARY_KEY = "canary-fault-key-Bn4s"
CANARIES = [CANARY, CANARY_KEY]


def setup_vault(api: RootAPI) -> tuple[str, str, str]:
    """KV v2 mount with `ok` (the canaries) and `flaky`; an approle allowed to read both."""
    api.enable_kv(MOUNT, 2)
    api("POST", f"{MOUNT}/data/ok", {"data": {"password": CANARY, "apiKey": CANARY_KEY}})
    api("POST", f"{MOUNT}/data/flaky", {"data": {"k": "flaky-value-1234"}})
    api(
        "PUT",
        "sys/policies/acl/t8-faults",
        {"policy": f'path "{MOUNT}/*" {{ capabilities = ["read"] }}'},
    )
    role = unique("t8-faults-")
    api("POST", f"auth/approle/role/{role}", {"token_policies": ["t8-faults"], "token_ttl": "1h"})
    role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
    return role, role_id, secret_id


@pytest.fixture(scope="module")
def vault(openbao: OpenBao) -> tuple[RootAPI, str, str, str]:
    api = RootAPI(openbao.addr, openbao.root_token)
    return (api, *setup_vault(api))


def manifest(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n"
        f"  password: <path:{MOUNT}/data/ok#password>\n"
        f"  apiKey: <path:{MOUNT}/data/ok#apiKey>\n"
        f"  flaky: <path:{MOUNT}/data/flaky#k>\n"
    )
    return directory


def approle_plugin(home: Path, addr: str, role_id: str, secret_id: str, **extra: str) -> Plugin:
    return Plugin(
        home,
        AVP_TYPE="vault",
        VAULT_ADDR=addr,
        AVP_AUTH_TYPE="approle",
        AVP_ROLE_ID=role_id,
        AVP_SECRET_ID=secret_id,
        **extra,
    )


def is_flaky_read(method: str, path: str) -> bool:
    return method == "GET" and path.startswith(f"/v1/{MOUNT}/data/flaky")


# ------------------------------------------------------------------------------ unreachable


def test_vault_unreachable(
    vault: tuple[RootAPI, str, str, str], openbao: OpenBao, tmp_path: Path
) -> None:
    _, _, role_id, secret_id = vault
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    app = manifest(tmp_path / "app")
    plugin = approle_plugin(tmp_path / "home", dead, role_id, secret_id, PLUGIN_TIMEOUT="10")
    run = plugin.generate(app)
    assert_failed_cleanly(
        run, [CANARY, CANARY_KEY, secret_id], f"cannot reach Vault at {dead}", "Connection refused"
    )
    assert run.seconds < 10
    healthy = plugin.generate(app, VAULT_ADDR=openbao.addr)
    assert_succeeded(healthy, CANARY, CANARY_KEY)


# ------------------------------------------------------------------------------ slow


def test_vault_slower_than_the_deadline(
    vault: tuple[RootAPI, str, str, str], openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    _, _, role_id, secret_id = vault
    proxy.plan = lambda method, path: ("delay", 10.0) if is_flaky_read(method, path) else None
    app = manifest(tmp_path / "app")
    plugin = approle_plugin(tmp_path / "home", proxy.url, role_id, secret_id, PLUGIN_TIMEOUT="3")
    run = plugin.generate(app)
    assert_failed_cleanly(run, [CANARY, CANARY_KEY, secret_id], "deadline", f"{MOUNT}/data/flaky")
    assert run.seconds < 3 + 3, run.seconds  # the deadline holds (plus interpreter start)
    proxy.plan = lambda method, path: None
    assert_succeeded(plugin.generate(app), CANARY, CANARY_KEY)


# ------------------------------------------------------------------------------ 5xx and 429


@pytest.mark.parametrize(
    "statuses", [[503, 503], [500, 429], [429, 502]], ids=["503-503", "500-429", "429-502"]
)
def test_bursts_of_errors_are_retried(
    vault: tuple[RootAPI, str, str, str],
    proxy: FaultProxy,
    tmp_path: Path,
    statuses: list[int],
) -> None:
    _, _, role_id, secret_id = vault
    burst = list(statuses)

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        if (is_flaky_read(method, path) or "/login" in path) and burst:
            return ("status", burst.pop(0), 0)
        return None

    proxy.plan = plan
    app = manifest(tmp_path / "app")
    plugin = approle_plugin(tmp_path / "home", proxy.url, role_id, secret_id)
    run = plugin.generate(app)
    assert_succeeded(run, CANARY, "flaky-value-1234")


def test_persistent_errors_give_up_after_bounded_retries_and_do_not_poison_the_cache(
    vault: tuple[RootAPI, str, str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    api, role, role_id, secret_id = vault
    proxy.plan = lambda m, p: ("status", 503, None) if is_flaky_read(m, p) else None
    app = manifest(tmp_path / "app")
    plugin = approle_plugin(tmp_path / "home", proxy.url, role_id, secret_id, VAULT_MAX_RETRIES="2")
    before = api.token_accessors()
    run = plugin.generate(app)
    assert_failed_cleanly(
        run,
        [CANARY, CANARY_KEY, secret_id],
        f"{MOUNT}/data/flaky#k>: backend error: Vault at {proxy.url} failed while reading "
        f"{MOUNT}/data/flaky: HTTP 503: injected 503 (gave up after 3 attempts)",
    )
    assert proxy.count(is_flaky_read) == 3
    # a login failing with 5xx does not leave anything behind either
    proxy.plan = lambda m, p: ("status", 500, None) if "/login" in p else None
    fresh = approle_plugin(tmp_path / "home2", proxy.url, role_id, secret_id)
    failed_login = fresh.generate(app)
    assert_failed_cleanly(failed_login, [CANARY, secret_id], "Vault at", "while logging in")
    assert not list((tmp_path / "home2" / "token-cache").glob("*.json"))
    proxy.plan = lambda m, p: None
    assert_succeeded(plugin.generate(app), CANARY)
    assert_succeeded(fresh.generate(app), CANARY)
    assert api.tokens_since(before, role_name=role) == 2  # one login per cache, no more


def test_429_burst_on_every_path(
    vault: tuple[RootAPI, str, str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    _, _, role_id, secret_id = vault
    seen: dict[str, int] = {}

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        seen[path] = seen.get(path, 0) + 1
        return ("status", 429, 0) if seen[path] == 1 else None

    proxy.plan = plan
    app = manifest(tmp_path / "app")
    run = approle_plugin(tmp_path / "home", proxy.url, role_id, secret_id).generate(app)
    assert_succeeded(run, CANARY, "flaky-value-1234")


# ------------------------------------------------------------------------------ sealed


@pytest.fixture(scope="module")
def own_bao(bao_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A dedicated OpenBao for destructive scenarios (sealing)."""
    server = OpenBao(require_tool("bao"), tmp_path_factory.mktemp("openbao-seal"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unseal_key(server: OpenBao) -> str:
    match = re.search(r"Unseal Key: (\S+)", server.log_path.read_text(errors="replace"))
    assert match is not None, "the dev server prints its unseal key"
    return match.group(1)


def test_sealed_vault_fails_cleanly_and_recovers(own_bao: OpenBao, tmp_path: Path) -> None:
    api = RootAPI(own_bao.addr, own_bao.root_token)
    role, role_id, secret_id = setup_vault(api)
    app = manifest(tmp_path / "app")
    plugin = approle_plugin(tmp_path / "home", own_bao.addr, role_id, secret_id)
    assert_succeeded(plugin.generate(app), CANARY)  # the token is now cached
    before = api.token_accessors()
    api("PUT", "sys/seal")
    try:
        run = plugin.generate(app)
        assert_failed_cleanly(run, [CANARY, CANARY_KEY, secret_id], "Vault is sealed")
        fresh = approle_plugin(tmp_path / "home2", own_bao.addr, role_id, secret_id)
        login = fresh.generate(app)
        assert_failed_cleanly(login, [CANARY, secret_id], "logging in", "Vault is sealed")
    finally:
        RootAPI(own_bao.addr, own_bao.root_token)("PUT", "sys/unseal", {"key": unseal_key(own_bao)})
    deadline = time.monotonic() + 30
    while api("GET", "sys/seal-status")["sealed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_succeeded(plugin.generate(app), CANARY)
    assert api.tokens_since(before, role_name=role) == 0  # the cached token served again


# ------------------------------------------------------------------------------ revoked


def test_token_revoked_mid_run_logs_in_again_once(
    vault: tuple[RootAPI, str, str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    api, role, role_id, secret_id = vault
    before = api.token_accessors()
    revoked: list[str] = []

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        if is_flaky_read(method, path) and not revoked:
            # the first read of the run: revoke every token of the role behind its back
            for accessor in api.token_accessors() - before:
                api("POST", "auth/token/revoke-accessor", {"accessor": accessor})
                revoked.append(accessor)
        return None

    proxy.plan = plan
    app = manifest(tmp_path / "app")
    plugin = approle_plugin(tmp_path / "home", proxy.url, role_id, secret_id)
    run = plugin.generate(app, ARGOCD_ENV_AVP_MAX_CONCURRENCY="1")
    assert revoked
    assert_succeeded(run, CANARY, "flaky-value-1234")
    logins = proxy.count(lambda m, p: p.endswith("/login"))
    assert logins == 2  # the first login, and one after the revocation
    proxy.reset()
    assert_succeeded(plugin.generate(app), CANARY)
    assert proxy.count(lambda m, p: p.endswith("/login")) == 0  # the new token was cached
    assert api.tokens_since(before, role_name=role) == 1


def test_static_token_revoked_mid_run_fails_cleanly(
    vault: tuple[RootAPI, str, str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    api = vault[0]
    token = api("POST", "auth/token/create", {"policies": ["t8-faults"], "ttl": "10m"})["auth"][
        "client_token"
    ]

    def plan(method: str, path: str) -> tuple[Any, ...] | None:
        if is_flaky_read(method, path):
            api("POST", "auth/token/revoke", {"token": token})
        return None

    proxy.plan = plan
    app = manifest(tmp_path / "app")
    plugin = Plugin.vault_token(tmp_path / "home", proxy.url, token, AVP_MAX_CONCURRENCY="1")
    run = plugin.generate(app)
    assert_failed_cleanly(
        run,
        [CANARY, CANARY_KEY, token],
        f"permission denied reading {MOUNT}/data/flaky",
        "the token is not valid: revoked or expired",
    )


# ------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_vault(bao_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.test_vault_auth import TLSOpenBao

    workdir = tmp_path_factory.mktemp("openbao-tls-faults")
    server = TLSOpenBao(bao_bin, workdir, make_pki(workdir / "pki"))
    server.api.enable_kv(MOUNT, 2)
    server.api("POST", f"{MOUNT}/data/ok", {"data": {"password": CANARY, "apiKey": CANARY_KEY}})
    server.api("POST", f"{MOUNT}/data/flaky", {"data": {"k": "flaky-value-1234"}})
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad-ca", "TLS error: certificate verify failed"),
        ("wrong-host", "TLS error"),
    ],
    ids=["bad-ca", "wrong-host"],
)
def test_tls_failures(tls_vault: Any, tmp_path: Path, case: str, expected: str) -> None:
    other_ca = make_pki(tmp_path / "other-pki").ca_cert
    base = {
        "AVP_TYPE": "vault",
        "VAULT_ADDR": tls_vault.addr,
        "AVP_AUTH_TYPE": "token",
        "VAULT_TOKEN": tls_vault.root_token,
        "VAULT_CACERT": str(tls_vault.pki.ca_cert),
    }
    app = manifest(tmp_path / "app")
    plugin = Plugin(tmp_path / "home", **base)
    if case == "bad-ca":
        run = plugin.generate(app, VAULT_CACERT=str(other_ca))
    else:
        run = plugin.generate(app, VAULT_TLS_SERVER_NAME="wrong.example")
    assert_failed_cleanly(run, [CANARY, CANARY_KEY, tls_vault.root_token], expected)
    assert "wrong.example" in run.stderr or case == "bad-ca"
    assert_succeeded(plugin.generate(app), CANARY)


# ------------------------------------------------------------------------------ chart repo


@pytest.fixture
def hanging_repo(chart_repo: ChartRepo) -> Iterator[HangingServer]:
    server = HangingServer(chart_repo.root)
    yield server
    server.stop()


def test_hanging_chart_repository_hits_the_deadline_then_recovers(
    vault: tuple[RootAPI, str, str, str],
    openbao: OpenBao,
    hanging_repo: HangingServer,
    helm3_bin: str,
    tmp_path: Path,
) -> None:
    _, _, role_id, secret_id = vault
    chart = umbrella_chart(tmp_path / "chart", hanging_repo.url, f"{MOUNT}/data/ok")
    plugin = approle_plugin(
        tmp_path / "home",
        openbao.addr,
        role_id,
        secret_id,
        HELM_BIN=helm3_bin,
        PLUGIN_TIMEOUT="4",
        ARGOCD_ENV_RESOLVE_VALUES="true",
    )
    hanging_repo.hang.set()
    run = plugin.generate(chart)
    assert_failed_cleanly(
        run,
        [CANARY, CANARY_KEY, secret_id],
        "fetching index.yaml ran out of time: the render must finish within 4 s (PLUGIN_TIMEOUT)",
    )
    assert run.seconds < 4 + 3, run.seconds
    assert hanging_repo.requests == ["/index.yaml"]
    cache = tmp_path / "home" / "plugin-cache" / "helm"
    assert not list(cache.glob("index/*.json")), "nothing cached from the hung request"
    hanging_repo.hang.clear()
    documents = assert_succeeded(plugin.generate(chart), CANARY, CANARY_KEY)
    assert {doc["kind"] for doc in documents} >= {"Secret", "Deployment"}
    assert len(list(cache.glob("index/*.json"))) == 1
    assert len(list(cache.glob("charts/*.entry"))) == 1  # webapp 0.1.0
