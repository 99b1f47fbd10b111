"""The token cache against OpenBao: one login for 50 concurrent renders, per-identity entries,
private files, corrupt entries, unwritable directories and --disable-token-cache.

Logins are counted as tokens created for the test's AppRole role (`role_name` metadata of
every token listed under `auth/token/accessors`, read with the root token).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plugin.secrets.base import SecretRef
from tests.conftest import OpenBao
from tests.integration.test_vault_support import RootAPI, unique, vault_backend

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOUNT = "t4cache"


@pytest.fixture(scope="module")
def api(root_api: RootAPI) -> RootAPI:
    root_api.enable_kv(MOUNT, 2)
    root_api("POST", f"{MOUNT}/data/app", {"data": {"k": "v"}})
    root_api.read_policy("t4-cache-read", f"{MOUNT}/data/*")
    return root_api


def approle(api: RootAPI) -> tuple[str, str, str]:
    role = unique("t4-cache-")
    api(
        "POST",
        f"auth/approle/role/{role}",
        {"token_policies": ["t4-cache-read"], "token_ttl": "1h"},
    )
    role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
    return role, role_id, secret_id


def env_for(openbao: OpenBao, role_id: str, secret_id: str, cache: Path | None) -> dict[str, str]:
    env = {"VAULT_ADDR": openbao.addr, "AVP_AUTH_TYPE": "approle", "AVP_ROLE_ID": role_id,
           "AVP_SECRET_ID": secret_id}  # fmt: skip
    if cache is not None:
        env["AVP_TOKEN_CACHE_DIR"] = str(cache)
    return env


SNIPPET = textwrap.dedent(
    """
    import hashlib, os, sys, time
    from plugin.secrets.base import SecretRef
    from plugin.secrets.registry import BackendOptions
    from plugin.secrets.vault.backend import make_vault_backend
    from plugin.config import load_settings
    start = float(sys.argv[1])
    backend = make_vault_backend(load_settings(os.environ), BackendOptions())
    while time.time() < start:
        time.sleep(0.001)
    backend.login()
    assert backend.read(SecretRef(sys.argv[2]))["k"] == "v"
    print(hashlib.sha256(backend._token.encode()).hexdigest()[:16])
    """
)


def test_fifty_concurrent_renders_log_in_once(
    openbao: OpenBao, api: RootAPI, tmp_path: Path
) -> None:
    role, role_id, secret_id = approle(api)
    env = {**os.environ, **env_for(openbao, role_id, secret_id, tmp_path / "cache")}
    before = api.token_accessors()
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SNIPPET, str(start), f"{MOUNT}/app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(50)
    ]
    digests = set()
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        assert secret_id not in err and secret_id not in out
        digests.add(out.strip())
    assert len(digests) == 1
    assert api.tokens_since(before, role_name=role) == 1


def test_identities_get_separate_private_entries(
    openbao: OpenBao, api: RootAPI, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    role_a, id_a, secret_a = approle(api)
    role_b, id_b, secret_b = approle(api)
    before = api.token_accessors()
    a = vault_backend(env_for(openbao, id_a, secret_a, cache))
    b = vault_backend(env_for(openbao, id_b, secret_b, cache))
    a.login()
    b.login()
    assert a._token != b._token
    again_a = vault_backend(env_for(openbao, id_a, secret_a, cache))
    again_a.login()
    assert again_a._token == a._token
    assert api.tokens_since(before, role_name=role_a) == 1
    assert api.tokens_since(before, role_name=role_b) == 1
    entries = sorted(cache.glob("*.json"))
    assert len(entries) == 2
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for entry in entries:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        document = json.loads(entry.read_text())
        assert document["lease_duration"] == 3600
        assert document["expires_at"] == pytest.approx(time.time() + 3600, abs=30)
        # the file name is a hash: no role id or secret in it
        for value in (id_a, id_b, secret_a, secret_b):
            assert value not in entry.name
        assert secret_a not in entry.read_text() and secret_b not in entry.read_text()
    # another namespace or address is another identity too
    other_addr = vault_backend(
        {**env_for(openbao, id_a, secret_a, cache), "VAULT_ADDR": openbao.addr + "/"}
    )
    assert other_addr._cache_key == a._cache_key  # same address, normalised
    localhost = openbao.addr.replace("127.0.0.1", "localhost")
    assert vault_backend({**env_for(openbao, id_a, secret_a, cache), "VAULT_ADDR": localhost}
                         )._cache_key != a._cache_key  # fmt: skip


def test_corrupt_entry_is_replaced(openbao: OpenBao, api: RootAPI, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    role, role_id, secret_id = approle(api)
    env = env_for(openbao, role_id, secret_id, cache)
    before = api.token_accessors()
    first = vault_backend(env)
    first.login()
    (entry,) = cache.glob("*.json")
    entry.write_text('{"vault_token": "s.not-a-real-token"')
    second = vault_backend(env)
    second.login()
    assert second.read(SecretRef(f"{MOUNT}/app")) == {"k": "v"}
    assert json.loads(entry.read_text())["token"] == second._token
    assert api.tokens_since(before, role_name=role) == 2


def test_unwritable_cache_dir_falls_back_to_login(
    openbao: OpenBao, api: RootAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    role, role_id, secret_id = approle(api)
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = env_for(openbao, role_id, secret_id, blocker / "cache")
    before = api.token_accessors()
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            backend = vault_backend(env)
            assert backend.cache is None
            assert backend.read(SecretRef(f"{MOUNT}/app")) == {"k": "v"}
    assert "token cache disabled" in caplog.text
    assert secret_id not in caplog.text
    assert api.tokens_since(before, role_name=role) == 2


def test_disable_token_cache_and_token_auth_write_nothing(
    openbao: OpenBao, api: RootAPI, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    role, role_id, secret_id = approle(api)
    before = api.token_accessors()
    for _ in range(2):
        backend = vault_backend(
            env_for(openbao, role_id, secret_id, cache), disable_token_cache=True
        )
        backend.login()
    assert api.tokens_since(before, role_name=role) == 2
    token_env = {"VAULT_ADDR": openbao.addr, "AVP_AUTH_TYPE": "token",
                 "VAULT_TOKEN": openbao.root_token, "AVP_TOKEN_CACHE_DIR": str(cache)}  # fmt: skip
    backend = vault_backend(token_env)
    backend.login()
    assert backend.read(SecretRef(f"{MOUNT}/app")) == {"k": "v"}
    assert not cache.exists() or not list(cache.glob("*.json"))
