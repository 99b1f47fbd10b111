"""Rotation polls against a real OpenBao: the index records the version each render read, and
`check_record` tells a rotated secret from an unchanged one with the render's own identity,
the metadata endpoint only on KV v2, never a refused path.

Renders are real `plugin generate` processes (the sidecar's environment, its cache volume);
the poll runs in this process with the same operator environment, as the watcher container
would. Every request reaches OpenBao through a counting loopback proxy.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from plugin.rotation import index, poll
from tests.conftest import OpenBao
from tests.integration.security_support import (
    Plugin,
    assert_failed_cleanly,
    assert_succeeded,
    encodings,
)
from tests.integration.security_support import secret_app as app
from tests.integration.test_vault_support import FaultProxy, RootAPI, unique

pytestmark = pytest.mark.integration

KV2 = "t15kv"
KV1 = "t15v1"
CANARY_1 = "rotation-canary-one-Jq4w"
CANARY_2 = "rotation-canary-two-Zr8k"
CANARY_3 = "rotation-canary-three-Pm2x"
CANARIES = (CANARY_1, CANARY_2, CANARY_3)


@pytest.fixture(scope="module")
def api(root_api: RootAPI) -> RootAPI:
    root_api.enable_kv(KV2, 2)
    root_api.enable_kv(KV1, 1)
    return root_api


def token_sidecar(tmp_path: Path, addr: str, token: str, **extra: str) -> Plugin:
    return Plugin.vault_token(tmp_path / "home", addr, token, **extra)


def watcher_env(plugin: Plugin) -> dict[str, str]:
    """The watcher container's environment: the sidecar's, without an Application."""
    return {k: v for k, v in plugin.env.items() if not k.startswith("ARGOCD_APP_")}


def records(plugin: Plugin) -> dict[str, index.Record]:
    root = index.index_root(plugin.env)
    assert root is not None
    return {record.name: record for record in index.read_records(root)}


def check(plugin: Plugin, record: index.Record, sessions: poll.Sessions) -> poll.PollResult:
    sessions.start_cycle()
    return poll.check_record(
        record, watcher_env(plugin), deadline=time.monotonic() + 60, sessions=sessions
    )


def assert_no_canary_on_disk(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for canary in CANARIES:
                for form in encodings(canary):
                    assert form.encode() not in data, f"{path} holds a secret value"


def test_kv2_read_version_recorded_and_rotation_detected_with_metadata_only(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    name = unique("app-")
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_1}})
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_2}})
    plugin = token_sidecar(tmp_path, proxy.url, openbao.root_token, ARGOCD_APP_NAME="v2app")
    run = plugin.generate(
        app(tmp_path / "a", f"<path:{KV2}/data/{name}#password>", f"<path:{KV2}/{name}#password>")
    )
    assert_succeeded(run, CANARY_2)
    record = records(plugin)["v2app"]
    assert record.format == index.FORMAT == 2
    versions = {ref.path: ref.read_version for ref in record.references}
    assert versions == {f"{KV2}/data/{name}": "2", f"{KV2}/{name}": "2"}
    root = index.index_root(plugin.env)
    assert root is not None
    assert_no_canary_on_disk(root)

    sessions = poll.Sessions()
    try:
        proxy.reset()
        quiet = check(plugin, record, sessions)
        assert (quiet.changed, quiet.errors) == ((), ())
        assert len(quiet.unchanged) == 2
        # only the metadata endpoint: no secret material crosses the wire
        assert proxy.count(lambda m, p: f"/{KV2}/data/" in p) == 0
        assert proxy.count(lambda m, p: p == f"/v1/{KV2}/metadata/{name}") == 2  # 2 spellings
        assert quiet.requests == proxy.count()

        api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_3}})
        proxy.reset()
        rotated = check(plugin, record, sessions)
        assert {ref.path for ref in rotated.changed} == {f"{KV2}/data/{name}", f"{KV2}/{name}"}
        assert rotated.stale and rotated.errors == ()
        assert proxy.count(lambda m, p: f"/{KV2}/data/" in p) == 0
        # the reused session logs in no more, and asks nothing about mounts again
        assert proxy.count(lambda m, p: "mounts" in p or "login" in p) == 0
    finally:
        sessions.close()

    # after the re-render the record holds version 3 and the poll is quiet again
    assert_succeeded(plugin.generate(tmp_path / "a"), CANARY_3)
    again = records(plugin)["v2app"]
    assert {ref.read_version for ref in again.references} == {"3"}
    sessions = poll.Sessions()
    try:
        assert check(plugin, again, sessions).changed == ()
    finally:
        sessions.close()


def test_pinned_versions_are_never_changed_nor_polled(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    name = unique("pinned-")
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_1}})
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_2}})
    plugin = token_sidecar(tmp_path, proxy.url, openbao.root_token, ARGOCD_APP_NAME="pinned")
    assert_succeeded(
        plugin.generate(app(tmp_path / "p", f"<path:{KV2}/data/{name}#password#1>")), CANARY_1
    )
    record = records(plugin)["pinned"]
    (reference,) = record.references
    assert (reference.version, reference.read_version) == ("1", "1")
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_3}})
    proxy.reset()
    sessions = poll.Sessions()
    try:
        result = check(plugin, record, sessions)
    finally:
        sessions.close()
    assert result.changed == () and result.pinned == (reference,)
    assert proxy.count() == 0 and result.requests == 0


def test_kv1_rotation_detected_by_keyed_fingerprint(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    name = unique("v1-")
    api("POST", f"{KV1}/{name}", {"password": CANARY_1})
    plugin = token_sidecar(tmp_path, proxy.url, openbao.root_token, ARGOCD_APP_NAME="v1app")
    assert_succeeded(plugin.generate(app(tmp_path / "v1", f"<path:{KV1}/{name}#password>")))
    record = records(plugin)["v1app"]
    (reference,) = record.references
    assert reference.read_version is None and reference.fingerprint.startswith("hmac-sha256:")
    sessions = poll.Sessions()
    try:
        assert check(plugin, record, sessions).unchanged == (reference,)
        api("POST", f"{KV1}/{name}", {"password": CANARY_1})  # same value written again
        assert check(plugin, record, sessions).changed == ()
        api("POST", f"{KV1}/{name}", {"password": CANARY_2})
        changed = check(plugin, record, sessions)
        assert changed.changed == (reference,) and changed.errors == ()
        for error in changed.errors:
            assert CANARY_2 not in error.message
        api("DELETE", f"{KV1}/{name}")
        assert check(plugin, record, sessions).changed == (reference,)  # gone is a change
    finally:
        sessions.close()


def test_one_request_per_path_and_identity_per_cycle(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    name = unique("shared-")
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_1}})
    plugin = token_sidecar(tmp_path, proxy.url, openbao.root_token)
    source = app(tmp_path / "s", f"<path:{KV2}/data/{name}#password>")
    for number in range(3):
        assert_succeeded(plugin.generate(source, ARGOCD_APP_NAME=f"shared-{number}"))
    found = records(plugin)
    sessions = poll.Sessions()
    try:
        sessions.start_cycle()
        proxy.reset()
        results = [
            poll.check_record(
                found[f"shared-{n}"],
                watcher_env(plugin),
                deadline=time.monotonic() + 60,
                sessions=sessions,
            )
            for n in range(3)
        ]
    finally:
        sessions.close()
    assert [len(result.unchanged) for result in results] == [1, 1, 1]
    assert proxy.count(lambda m, p: "/metadata/" in p) == 1
    assert [result.polled for result in results] == [1, 0, 0]


# ------------------------------------------------------------------ tenant policy


def make_role(api: RootAPI, team: str) -> tuple[str, str]:
    """An approle that may read `<KV2>/data/<team>/*` only (not the metadata endpoint)."""
    policy = unique(f"t15-{team}-")
    api("PUT", f"sys/policies/acl/{policy}",
        {"policy": f'path "{KV2}/data/{team}/*" {{ capabilities = ["read"] }}'})  # fmt: skip
    role = unique(f"t15-{team}-")
    api("POST", f"auth/approle/role/{role}", {"token_policies": [policy], "token_ttl": "1h"})
    role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
    return role_id, secret_id


def write_policy(path: Path, credentials: tuple[str, str], paths: list[str]) -> None:
    role_id, secret_id = credentials
    rule = {
        "project": "team-a",
        "paths": paths,
        "vault": {"AVP_AUTH_TYPE": "approle", "AVP_ROLE_ID": role_id, "AVP_SECRET_ID": secret_id},
    }
    path.write_text(yaml.safe_dump({"projects": [rule]}))


def test_poll_uses_the_projects_identity_and_never_sends_a_refused_path(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    team = unique("team-a-")
    credentials = make_role(api, team)
    api("POST", f"{KV2}/data/{team}/app", {"data": {"password": CANARY_1}})
    api("POST", f"{KV2}/data/{team}/db", {"data": {"password": CANARY_2}})
    policy = tmp_path / "policy.yaml"
    write_policy(policy, credentials, [f"{KV2}/data/{team}/**"])
    plugin = token_sidecar(
        tmp_path, proxy.url, openbao.root_token,
        PLUGIN_TENANT_POLICY=str(policy), ARGOCD_APP_PROJECT_NAME="team-a",
        ARGOCD_APP_NAME="tenant",
    )  # fmt: skip
    source = app(
        tmp_path / "t",
        f"<path:{KV2}/data/{team}/app#password>",
        f"<path:{KV2}/data/{team}/db#password>",
    )
    assert_succeeded(plugin.generate(source), CANARY_1, CANARY_2)
    record = records(plugin)["tenant"]
    assert record.identity["AVP_AUTH_TYPE"] == "approle"

    # The operator narrows the project's paths: `db` may no longer be read by team-a.
    write_policy(policy, credentials, [f"{KV2}/data/{team}/app"])
    api("POST", f"{KV2}/data/{team}/app", {"data": {"password": CANARY_3}})
    api("POST", f"{KV2}/data/{team}/db", {"data": {"password": CANARY_3}})
    sessions = poll.Sessions()
    try:
        proxy.reset()
        result = check(plugin, record, sessions)
    finally:
        sessions.close()
    assert [ref.path for ref in result.refused] == [f"{KV2}/data/{team}/db"]
    assert [ref.path for ref in result.changed] == [f"{KV2}/data/{team}/app"]
    assert result.errors == ()
    assert proxy.count(lambda m, p: f"/{team}/db" in p) == 0
    # The render's approle token, from the shared token cache: no login at all.
    assert proxy.count(lambda m, p: "login" in p) == 0
    # That role (unlike the sidecar's root token) may not read metadata: the data endpoint
    # answered instead, and only its version was kept.
    assert proxy.count(lambda m, p: p == f"/v1/{KV2}/metadata/{team}/app") == 1
    assert proxy.count(lambda m, p: p == f"/v1/{KV2}/data/{team}/app") == 1

    # A watcher with its own token cache logs in once, as the project's approle.
    own_cache = {**watcher_env(plugin), "AVP_TOKEN_CACHE_DIR": str(tmp_path / "watcher-tokens")}
    sessions = poll.Sessions()
    try:
        proxy.reset()
        again = poll.check_record(
            record, own_cache, deadline=time.monotonic() + 60, sessions=sessions
        )
    finally:
        sessions.close()
    assert [ref.path for ref in again.changed] == [f"{KV2}/data/{team}/app"]
    assert proxy.count(lambda m, p: p == "/v1/auth/approle/login") == 1
    assert proxy.count(lambda m, p: "login" in p) == 1
    assert again.requests == proxy.count()


def test_a_project_without_a_rule_is_never_polled(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, tmp_path: Path
) -> None:
    team = unique("team-a-")
    credentials = make_role(api, team)
    api("POST", f"{KV2}/data/{team}/app", {"data": {"password": CANARY_1}})
    policy = tmp_path / "policy.yaml"
    write_policy(policy, credentials, [f"{KV2}/data/{team}/**"])
    plugin = token_sidecar(
        tmp_path, proxy.url, openbao.root_token, PLUGIN_TENANT_POLICY=str(policy),
        ARGOCD_APP_PROJECT_NAME="team-a", ARGOCD_APP_NAME="orphan",
    )  # fmt: skip
    assert_succeeded(plugin.generate(app(tmp_path / "o", f"<path:{KV2}/data/{team}/app#password>")))
    record = records(plugin)["orphan"]
    policy.write_text(yaml.safe_dump({"projects": [{"project": "team-b", "paths": ["**"]}]}))
    sessions = poll.Sessions()
    try:
        proxy.reset()
        result = check(plugin, record, sessions)
    finally:
        sessions.close()
    assert result.refused == record.references and result.changed == ()
    assert "project team-a is refused by the tenant policy" in result.errors[0].message
    assert proxy.count() == 0


# ------------------------------------------------------------------ `| version`


def test_version_modifier_gives_the_kv2_version_read(
    api: RootAPI, openbao: OpenBao, tmp_path: Path
) -> None:
    name = unique("ver-")
    for value in (CANARY_1, CANARY_2, CANARY_3):
        api("POST", f"{KV2}/data/{name}", {"data": {"password": value}})
    plugin = token_sidecar(tmp_path, openbao.addr, openbao.root_token)
    source = tmp_path / "deploy"
    source.mkdir()
    (source / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
        "    metadata:\n      annotations:\n"
        f"        secrets/latest: <path:{KV2}/data/{name}#password | version>\n"
        f"        secrets/friendly: <path:{KV2}/{name}#password | version>\n"
        f"        secrets/pinned: <path:{KV2}/data/{name}#password#2 | version>\n"
    )
    (document,) = assert_succeeded(plugin.generate(source))
    annotations = document["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"secrets/latest": "3", "secrets/friendly": "3", "secrets/pinned": "2"}


def test_version_modifier_on_kv1_fails_naming_the_placeholder(
    api: RootAPI, openbao: OpenBao, tmp_path: Path
) -> None:
    name = unique("ver1-")
    api("POST", f"{KV1}/{name}", {"password": CANARY_1})
    plugin = token_sidecar(tmp_path, openbao.addr, openbao.root_token)
    run = plugin.generate(app(tmp_path / "v", f"<path:{KV1}/{name}#password | version>"))
    assert_failed_cleanly(
        run,
        [CANARY_1, openbao.root_token],
        f"<path:{KV1}/{name}#password | version>: modifier error: version: {KV1}/{name} has "
        "no version (a KV v1 secret or an unversioned file secret)",
    )


def test_format_1_records_compare_the_time_of_the_current_version(
    api: RootAPI, openbao: OpenBao, tmp_path: Path
) -> None:
    """Records written before `read_version` existed: a version written after the render."""
    name = unique("old-")
    api("POST", f"{KV2}/data/{name}", {"data": {"password": CANARY_1}})
    plugin = token_sidecar(tmp_path, openbao.addr, openbao.root_token)
    reference = index.Reference(
        backend="vault", path=f"{KV2}/data/{name}", address=openbao.addr, kv_version="2"
    )

    def record(rendered_at: str) -> index.Record:
        return index.Record("old", "argocd", "default", {}, (reference,), rendered_at, format=1)

    sessions = poll.Sessions()
    try:
        later = check(plugin, record("2999-01-01T00:00:00Z"), sessions)
        earlier = check(plugin, record("2000-01-01T00:00:00Z"), sessions)
    finally:
        sessions.close()
    assert later.unchanged == (reference,) and later.errors == ()
    assert earlier.changed == (reference,)
