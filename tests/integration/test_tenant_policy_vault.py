"""Tenant policy against a real OpenBao: each project logs in with its own approle, so Vault's
own policies apply per team; refused paths are never requested; tokens are cached per identity.

The sidecar's default identity is the root token: the policy must keep every project away
from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import OpenBao
from tests.integration.security_support import (
    Plugin,
    assert_failed_cleanly,
    assert_succeeded,
    secret_app,
)
from tests.integration.test_vault_support import FaultProxy, RootAPI, unique

pytestmark = pytest.mark.integration

MOUNT = "t8tenants"
SECRET_A = "tenant-a-canary-Ux2m"
SECRET_B = "tenant-b-canary-Pq7d"


def make_role(api: RootAPI, team: str) -> tuple[str, str, str]:
    api("PUT", f"sys/policies/acl/t8-{team}",
        {"policy": f'path "{MOUNT}/data/{team}/*" {{ capabilities = ["read"] }}'})  # fmt: skip
    role = unique(f"t8-{team}-")
    api("POST", f"auth/approle/role/{role}", {"token_policies": [f"t8-{team}"], "token_ttl": "1h"})
    role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
    return role, role_id, secret_id


@pytest.fixture(scope="module")
def tenants(openbao: OpenBao) -> dict[str, tuple[str, str, str]]:
    api = RootAPI(openbao.addr, openbao.root_token)
    api.enable_kv(MOUNT, 2)
    api("POST", f"{MOUNT}/data/team-a/app", {"data": {"password": SECRET_A}})
    api("POST", f"{MOUNT}/data/team-b/app", {"data": {"password": SECRET_B}})
    return {"team-a": make_role(api, "team-a"), "team-b": make_role(api, "team-b")}


def write_policy(path: Path, tenants: dict[str, tuple[str, str, str]]) -> Path:
    rules = []
    for team in ("team-a", "team-b"):
        _, role_id, secret_id = tenants[team]
        rules.append(
            {
                "project": team,
                "paths": [f"{MOUNT}/data/{team}/**", f"{MOUNT}/{team}/**"],
                "vault": {
                    "AVP_AUTH_TYPE": "approle",
                    "AVP_ROLE_ID": role_id,
                    "AVP_SECRET_ID": secret_id,
                },
            }
        )
    # a careless rule: the glob allows team-b's path, but Vault itself refuses role a
    _, role_id, secret_id = tenants["team-a"]
    rules.append(
        {
            "project": "loose-*",
            "paths": [f"{MOUNT}/**"],
            "vault": {
                "AVP_AUTH_TYPE": "approle",
                "AVP_ROLE_ID": role_id,
                "AVP_SECRET_ID": secret_id,
            },
        }
    )
    path.write_text(yaml.safe_dump({"projects": rules}))
    return path


def app(directory: Path, *paths: str) -> Path:
    return secret_app(directory, *(f"<path:{p}#password>" for p in paths))


def sidecar(tmp_path: Path, addr: str, root_token: str, policy: Path) -> Plugin:
    return Plugin.vault_token(tmp_path / "home", addr, root_token, PLUGIN_TENANT_POLICY=str(policy))


def test_each_project_uses_its_own_identity(
    openbao: OpenBao,
    tenants: dict[str, tuple[str, str, str]],
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    api = RootAPI(openbao.addr, openbao.root_token)
    policy = write_policy(tmp_path / "policy.yaml", tenants)
    plugin = sidecar(tmp_path, proxy.url, openbao.root_token, policy)
    before = api.token_accessors()
    a = plugin.generate(app(tmp_path / "a", f"{MOUNT}/data/team-a/app", f"{MOUNT}/team-a/app"),
                        ARGOCD_APP_PROJECT_NAME="team-a")  # fmt: skip
    assert_succeeded(a, SECRET_A)
    b = plugin.generate(app(tmp_path / "b", f"{MOUNT}/data/team-b/app"),
                        ARGOCD_APP_PROJECT_NAME="team-b")  # fmt: skip
    assert_succeeded(b, SECRET_B)
    assert api.tokens_since(before, role_name=tenants["team-a"][0]) == 1
    assert api.tokens_since(before, role_name=tenants["team-b"][0]) == 1
    assert len(list((tmp_path / "home" / "token-cache").glob("*.json"))) == 2
    # the next render of team a reuses team a's token, not team b's
    proxy.reset()
    again = plugin.generate(tmp_path / "a", ARGOCD_APP_PROJECT_NAME="team-a")
    assert_succeeded(again, SECRET_A)
    assert proxy.count(lambda m, p: p.endswith("/login")) == 0
    assert api.tokens_since(before, role_name=tenants["team-a"][0]) == 1


def test_refused_paths_are_never_requested(
    openbao: OpenBao,
    tenants: dict[str, tuple[str, str, str]],
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", tenants)
    plugin = sidecar(tmp_path, proxy.url, openbao.root_token, policy)
    run = plugin.generate(
        app(tmp_path / "a", f"{MOUNT}/data/team-a/app", f"{MOUNT}/data/team-b/app",
            f"{MOUNT}/data/team-a/../team-b/app"),
        ARGOCD_APP_PROJECT_NAME="team-a",
    )  # fmt: skip
    assert_failed_cleanly(
        run,
        [SECRET_A, SECRET_B, openbao.root_token, tenants["team-a"][2]],
        f"project team-a may not read path {MOUNT}/data/team-b/app (tenant policy)",
        f"project team-a may not read path {MOUNT}/data/team-a/../team-b/app (tenant policy)",
    )
    assert proxy.count(lambda m, p: "team-b" in p) == 0


def test_vault_enforces_the_role_when_the_globs_are_loose(
    openbao: OpenBao, tenants: dict[str, tuple[str, str, str]], tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", tenants)
    plugin = sidecar(tmp_path, openbao.addr, openbao.root_token, policy)
    run = plugin.generate(
        app(tmp_path / "loose", f"{MOUNT}/data/team-b/app"), ARGOCD_APP_PROJECT_NAME="loose-x"
    )
    assert_failed_cleanly(
        run,
        [SECRET_B, openbao.root_token, tenants["team-a"][2]],
        f"permission denied reading {MOUNT}/data/team-b/app as approle role_id=",
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("AVP_AUTH_TYPE", "token"),
        ("VAULT_TOKEN", "s.stolen"),
        ("VAULT_ADDR", "http://attacker.example:8200"),
        ("AVP_ROLE_ID", "other-role"),
        ("AVP_SECRET", "argocd:other-credentials"),
    ],
)
def test_applications_cannot_choose_another_identity(
    openbao: OpenBao,
    tenants: dict[str, tuple[str, str, str]],
    tmp_path: Path,
    setting: str,
    value: str,
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", tenants)
    plugin = sidecar(tmp_path, openbao.addr, openbao.root_token, policy)
    run = plugin.generate(
        app(tmp_path / "a", f"{MOUNT}/data/team-a/app"),
        ARGOCD_APP_PROJECT_NAME="team-a",
        **{f"ARGOCD_ENV_{setting}": value},
    )
    assert_failed_cleanly(
        run,
        [SECRET_A, openbao.root_token, tenants["team-a"][2]],
        f"project team-a may not set ARGOCD_ENV_{setting} (application setting refused",
    )
    assert value not in run.stderr


def test_projects_without_a_rule_never_reach_vault(
    openbao: OpenBao,
    tenants: dict[str, tuple[str, str, str]],
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", tenants)
    plugin = sidecar(tmp_path, proxy.url, openbao.root_token, policy)
    run = plugin.generate(
        app(tmp_path / "x", f"{MOUNT}/data/team-a/app"), ARGOCD_APP_PROJECT_NAME="default"
    )
    assert_failed_cleanly(
        run, [SECRET_A, openbao.root_token], "project default is refused by the tenant policy"
    )
    assert proxy.count() == 0
