"""Tenant policy: parsing, glob semantics, decisions, and the CLI enforcing them (file backend).

The Vault side (each project logging in with its own role, one cached token per identity) is
in tests/integration/test_tenant_policy_vault.py.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from plugin.config import load_settings
from plugin.errors import ConfigError
from plugin.security.policy import (
    APP_SETTINGS,
    VAULT_KEYS,
    PolicyDeniedError,
    Rule,
    TenantPolicy,
    apply,
    decide,
    is_protected,
    normalise_path,
)
from tests.conformance import clean_environment, run_plugin

CANARY_A = "canary-team-a-Qm7x0Ls9"
CANARY_B = "canary-team-b-Wp3z8Kd1"

POLICY = """\
projects:
  - project: team-a
    paths: ["kv/data/team-a/**", "kv/shared/*"]
    vault:
      AVP_AUTH_TYPE: approle
      AVP_ROLE_ID: role-a
      avp_secret_id: secret-a
  - project: "team-*"
    paths: ["kv/data/{team}/x"]
    allowEnv: [HELM_VALUES, "FEATURE_*", AVP_KV_VERSION, "AVP_*"]
  - project: "*"
"""


def policy(text: str = POLICY) -> TenantPolicy:
    return TenantPolicy.parse(text, "test policy")


# ------------------------------------------------------------------------------ parsing


def test_rules_are_parsed_in_order() -> None:
    parsed = policy()
    assert [rule.project for rule in parsed.rules] == ["team-a", "team-*", "*"]
    first = parsed.rules[0]
    assert first.vault == {
        "AVP_AUTH_TYPE": "approle",
        "AVP_ROLE_ID": "role-a",
        "AVP_SECRET_ID": "secret-a",
    }
    assert first.allow_env is None
    assert parsed.rules[1].allow_env == ("HELM_VALUES", "FEATURE_*", "AVP_KV_VERSION", "AVP_*")
    assert parsed.rules[2].paths == ()


def test_first_matching_rule_wins() -> None:
    parsed = policy()
    assert parsed.rule_for("team-a") is parsed.rules[0]
    assert parsed.rule_for("team-b") is parsed.rules[1]
    assert parsed.rule_for("other") is parsed.rules[2]
    assert TenantPolicy.parse("projects: [{project: team-a}]").rule_for("team-b") is None
    assert TenantPolicy.parse("projects: []").rule_for("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("projects: {}", "'projects' must be a list"),
        ("rules: []", "single key 'projects'"),
        ("- a", "single key 'projects'"),
        ("projects: [{paths: [a]}]", "rule 1: 'project' must be a non-empty string"),
        ("projects: [{project: a, path: [x]}]", "rule 1: unknown key(s) path"),
        ("projects: [{project: a, paths: x}]", "'paths' must be a list of strings"),
        ("projects: [{project: a, vault: {VAULT_ADDR: http://evil}}]", "may not set VAULT_ADDR"),
        ("projects: [{project: a, vault: {AVP_K8S_ROLE: [a]}}]", "must be a single value"),
        ("projects: [{project: a, vault: [x]}]", "'vault' must be a mapping"),
        ("projects: [{project: a, allowEnv: A}]", "'allowEnv' must be a list of strings"),
        ("projects: [a: [", "is not valid YAML (line 2"),
    ],
)
def test_invalid_policies_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy(text)
    assert message in str(info.value)
    assert str(info.value).startswith("test policy")


def test_policy_file_problems_fail_closed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the tenant policy .*PLUGIN_TENANT_POLICY"):
        apply({"PLUGIN_TENANT_POLICY": str(tmp_path / "missing.yaml")})
    binary = tmp_path / "bad.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        apply({"PLUGIN_TENANT_POLICY": str(binary)})
    assert apply({}) is None
    assert apply({"PLUGIN_TENANT_POLICY": "  "}) is None
    # the Application cannot name (or disable) the policy
    assert apply({"ARGOCD_ENV_PLUGIN_TENANT_POLICY": str(binary)}) is None


# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        ("kv/data/team-a/**", "kv/data/team-a/db", True),
        ("kv/data/team-a/**", "kv/data/team-a/deep/er/db", True),
        ("kv/data/team-a/**", "/kv/data/team-a/db/", True),
        ("kv/data/team-a/**", " kv/data/team-a/db ", True),
        ("kv/data/team-a/**", "kv/data/team-a", False),
        ("kv/data/team-a/**", "kv/data/team-ab/db", False),
        ("kv/data/team-a/**", "kv/data/team-b/db", False),
        ("kv/data/team-a/**", "KV/data/team-a/db", False),
        ("kv/shared/*", "kv/shared/one", True),
        ("kv/shared/*", "kv/shared/one/two", False),
        ("kv/shared/?", "kv/shared/x", True),
        ("kv/shared/?", "kv/shared/xy", False),
        ("kv/*/team-a/*", "kv/data/team-a/db", True),
        ("kv/**/db", "kv/data/team-a/db", True),
        ("**", "anything/at/all", True),
        ("kv/data/[ab]", "kv/data/[ab]", True),  # no character classes: literal text
        ("kv/data/[ab]", "kv/data/a", False),
        ("kv/data/a.b", "kv/data/axb", False),  # regex characters are literal
        # traversal and odd characters are refused whatever the patterns
        ("**", "kv/data/team-a/../team-b/db", False),
        ("kv/data/team-a/**", "kv/data/team-a/../team-b/db", False),
        ("kv/data/team-a/**", "kv/data/team-a/./db", False),
        ("kv/data/team-a/**", "kv/data/team-a//db", False),
        ("kv/data/team-a/**", "kv/data/team-a/db%2f..%2fx", False),
        ("kv/data/team-a/**", "kv/data/team-a/db?version=1", False),
        ("kv/data/team-a/**", "kv/data/team-a/db\\x", False),
        ("kv/data/team-a/**", "kv/data/team-a/d\nb", False),
        ("kv/data/team-a/**", "kv/data/team-a/d\x00b", False),
        ("**", "", False),
        ("**", "/", False),
    ],
)
def test_path_globs(pattern: str, path: str, allowed: bool) -> None:
    assert Rule("p", paths=(pattern,)).allows_path(path) is allowed


def test_normalise_path() -> None:
    assert normalise_path(" /kv/data/a/ ") == "kv/data/a"
    assert normalise_path("kv/../a") is None


def test_no_paths_means_nothing_can_be_read() -> None:
    assert not Rule("p").allows_path("kv/data/anything")


# ------------------------------------------------------------------------------ settings


def test_protected_settings() -> None:
    for name in ("AVP_AUTH_TYPE", "AVP_K8S_ROLE", "VAULT_ADDR", "PLUGIN_TIMEOUT", "HELM_BIN",
                 "KUSTOMIZE_BIN", "BAO_ADDR", "KUBERNETES_SERVICE_HOST", "AVP_PATH_VALIDATION",
                 "AVP_SECRET", "AVP_TYPE", "AVP_FILE_PATH", "PLUGIN_TENANT_POLICY"):  # fmt: skip
        assert is_protected(name), name
    for name in (*APP_SETTINGS, "CLUSTER", "ENVIRONMENT", "FEATURE_X"):
        assert not is_protected(name), name


def test_every_setting_an_application_can_reach_is_classified() -> None:
    """A new setting read by the code must be an application setting or protected.

    Names read only from the process environment (not through `Settings`) cannot be changed
    by an Application at all; they are listed here so that adding a name forces a decision.
    """
    from tests.project.test_docs_reference import variables_read_by_code

    process_only = {
        "PATH", "HOME", "XDG_CACHE_HOME", "KUBE_VERSION", "KUBE_API_VERSIONS",
        "ARGOCD_APP_PARAMETERS", "XDG_RUNTIME_DIR",
    }  # fmt: skip
    unclassified = sorted(
        name
        for name in variables_read_by_code()
        if not is_protected(name)
        and name not in APP_SETTINGS
        and name not in process_only
        and not name.startswith("ARGOCD_APP_")
    )
    assert unclassified == []


def test_default_environment_rule() -> None:
    rule = Rule("p")
    assert rule.env_allowed("HELM_VALUES")
    assert rule.env_allowed("MY_FLAG")
    assert not rule.env_allowed("AVP_AUTH_TYPE")
    assert not rule.env_allowed("VAULT_ADDR")


def test_allow_env_replaces_the_default_and_globs_never_grant_protected_names() -> None:
    rule = policy().rules[1]
    assert rule.env_allowed("HELM_VALUES")
    assert rule.env_allowed("FEATURE_X")
    assert rule.env_allowed("AVP_KV_VERSION")  # listed by its exact name
    assert not rule.env_allowed("AVP_AUTH_TYPE")  # "AVP_*" is a glob
    assert not rule.env_allowed("VALUES_FILES")  # not listed: the default no longer applies
    assert not rule.env_allowed("MY_FLAG")


def test_decide_refuses_forbidden_settings_naming_variable_and_project() -> None:
    parsed = policy()
    env = {
        "ARGOCD_APP_PROJECT_NAME": "team-a",
        "ARGOCD_ENV_AVP_AUTH_TYPE": "token",
        "ARGOCD_ENV_VAULT_ADDR": "http://evil.example",
        "ARGOCD_ENV_HELM_VALUES": "a: 1",
        "ARGOCD_ENV_AVP_K8S_ROLE": "",  # empty means unset: ignored
    }
    with pytest.raises(PolicyDeniedError) as info:
        decide(parsed, env)
    assert str(info.value) == (
        "project team-a may not set ARGOCD_ENV_AVP_AUTH_TYPE, ARGOCD_ENV_VAULT_ADDR "
        "(application settings refused by the tenant policy)"
    )
    assert "evil" not in str(info.value)


def test_decide_refuses_projects_without_a_rule() -> None:
    parsed = TenantPolicy.parse("projects: [{project: team-a, paths: ['**']}]")
    with pytest.raises(PolicyDeniedError) as info:
        decide(parsed, {"ARGOCD_APP_PROJECT_NAME": "team-b"})
    assert str(info.value) == (
        "project team-b is refused by the tenant policy (no rule for this project)"
    )
    with pytest.raises(PolicyDeniedError, match=r"project \(none: ARGOCD_APP_PROJECT_NAME"):
        decide(parsed, {})


def test_overrides_win_over_every_other_layer(tmp_path: Path) -> None:
    decision = decide(policy(), {"ARGOCD_APP_PROJECT_NAME": "team-a"})
    config = tmp_path / "c.yaml"
    config.write_text("AVP_ROLE_ID: from-file\n")
    settings = load_settings(
        {"AVP_ROLE_ID": "from-env", "ARGOCD_ENV_AVP_ROLE_ID": "from-app", "VAULT_ADDR": "x"},
        str(config),
        overrides=decision.overrides,
        overrides_origin=decision.overrides_origin,
    )
    found = settings.lookup("AVP_ROLE_ID")
    assert found is not None
    assert (found.value, found.origin) == (
        "role-a",
        "tenant policy rule 1 (team-a) key AVP_ROLE_ID",
    )
    assert settings.get("VAULT_ADDR") == "x"  # other layers still apply below
    assert decision.path_refusal("kv/data/team-a/db") is None
    assert decision.path_refusal("kv/data/team-b/db") == (
        "project team-a may not read path kv/data/team-b/db (tenant policy)"
    )


def test_vault_keys_are_identity_settings_only() -> None:
    assert "VAULT_ADDR" not in VAULT_KEYS
    assert "AVP_TYPE" not in VAULT_KEYS
    assert "AVP_PATH_VALIDATION" not in VAULT_KEYS


# ------------------------------------------------------------------------------ the CLI


def secret_forms(value: str) -> list[str]:
    return [
        value,
        base64.b64encode(value.encode()).decode(),
        json.dumps(value)[1:-1],
        urllib.parse.quote(value, safe=""),
    ]


def assert_clean(text: str, *values: str) -> None:
    for value in values:
        for form in secret_forms(value):
            assert form not in text, "a secret form leaked"


@pytest.fixture
def sidecar(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        json.dumps(
            {
                "kv/data/team-a/app": {"password": CANARY_A},
                "kv/data/team-b/app": {"password": CANARY_B},
            }
        )
    )
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "projects:\n"
        "  - project: team-a\n    paths: [kv/data/team-a/**]\n"
        "  - project: team-b\n    paths: [kv/data/team-b/**]\n"
        "    allowEnv: [HELM_VALUES, AVP_KV_VERSION]\n"
    )
    return clean_environment(
        {
            "AVP_TYPE": "file",
            "AVP_FILE_PATH": str(secrets),
            "PLUGIN_TENANT_POLICY": str(policy_file),
        }
    )


def manifest(tmp_path: Path, *paths: str, name: str = "app.yaml") -> Path:
    lines = "".join(f"  k{i}: <path:{path}#password>\n" for i, path in enumerate(paths))
    target = tmp_path / "app" / name
    target.parent.mkdir(exist_ok=True)
    target.write_text(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n{lines}")
    return target.parent


def app_env(sidecar: dict[str, str], project: str, **settings: str) -> dict[str, str]:
    env = {**sidecar, "ARGOCD_APP_PROJECT_NAME": project, "ARGOCD_APP_NAME": "app"}
    env.update({f"ARGOCD_ENV_{key}": value for key, value in settings.items()})
    return env


def test_cli_project_reads_its_own_paths(tmp_path: Path, sidecar: dict[str, str]) -> None:
    run = run_plugin(
        ["generate", str(manifest(tmp_path, "kv/data/team-a/app"))], app_env(sidecar, "team-a")
    )
    assert run.code == 0, run.stderr
    assert CANARY_A in run.stdout


def test_cli_other_teams_path_is_refused_before_any_read(
    tmp_path: Path, sidecar: dict[str, str]
) -> None:
    app = manifest(tmp_path, "kv/data/team-a/app", "kv/data/team-b/app")
    run = run_plugin(["generate", str(app)], app_env(sidecar, "team-a"))
    assert run.code == 1
    assert run.stdout == ""
    assert (
        "app.yaml (document 1, Secret/s): stringData.k1: <path:kv/data/team-b/app#password>: "
        "path not allowed: project team-a may not read path kv/data/team-b/app (tenant policy)"
    ) in run.stderr
    assert "team-a/**" not in run.stderr  # the rules themselves are never shown
    assert_clean(run.stderr, CANARY_A, CANARY_B)


def test_cli_traversal_is_refused(tmp_path: Path, sidecar: dict[str, str]) -> None:
    app = manifest(tmp_path, "kv/data/team-a/../team-b/app")
    run = run_plugin(["generate", str(app)], app_env(sidecar, "team-a"))
    assert run.code == 1 and run.stdout == ""
    assert "project team-a may not read path kv/data/team-a/../team-b/app" in run.stderr
    assert_clean(run.stderr, CANARY_A, CANARY_B)


def test_cli_annotation_path_is_checked(tmp_path: Path, sidecar: dict[str, str]) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  annotations:\n"
        "    avp.kubernetes.io/path: kv/data/team-b/app\nstringData:\n  p: <password>\n"
    )
    run = run_plugin(["generate", str(app)], app_env(sidecar, "team-a"))
    assert run.code == 1 and run.stdout == ""
    assert "project team-a may not read path kv/data/team-b/app (tenant policy)" in run.stderr
    assert_clean(run.stderr, CANARY_B)


def test_cli_project_without_rule_is_refused(tmp_path: Path, sidecar: dict[str, str]) -> None:
    app = manifest(tmp_path, "kv/data/team-a/app")
    for project in ("team-c", ""):
        run = run_plugin(["generate", str(app)], app_env(sidecar, project))
        assert run.code == 1 and run.stdout == ""
        assert "is refused by the tenant policy (no rule for this project)" in run.stderr
        assert_clean(run.stderr, CANARY_A, CANARY_B)


def test_cli_forbidden_setting_is_refused(tmp_path: Path, sidecar: dict[str, str]) -> None:
    app = manifest(tmp_path, "kv/data/team-a/app")
    for name, value in (
        ("AVP_FILE_PATH", "/etc/passwd"),
        ("AVP_PATH_VALIDATION", ".*"),
        ("PLUGIN_TIMEOUT", "3600"),
        ("AVP_TYPE", "vault"),
    ):
        run = run_plugin(["generate", str(app)], app_env(sidecar, "team-a", **{name: value}))
        assert run.code == 1 and run.stdout == "", name
        assert f"project team-a may not set ARGOCD_ENV_{name} (application setting" in run.stderr
    allowed = run_plugin(
        ["generate", str(app)], app_env(sidecar, "team-a", HELM_VALUES="a: 1", OTHER="x")
    )
    assert allowed.code == 0, allowed.stderr
    # team-b's rule replaces the default list: only what it names may be set
    listed = run_plugin(
        ["generate", str(manifest(tmp_path, "kv/data/team-b/app"))],
        app_env(sidecar, "team-b", AVP_KV_VERSION="2"),
    )
    assert listed.code == 0, listed.stderr
    other = run_plugin(["generate", str(app)], app_env(sidecar, "team-b", OTHER="x"))
    assert "project team-b may not set ARGOCD_ENV_OTHER" in other.stderr


def test_cli_path_validation_still_applies(tmp_path: Path, sidecar: dict[str, str]) -> None:
    app = manifest(tmp_path, "kv/data/team-a/app")
    env = {**app_env(sidecar, "team-a"), "AVP_PATH_VALIDATION": "^secret/"}
    run = run_plugin(["generate", str(app)], env)
    assert run.code == 1 and run.stdout == ""
    assert "disallowed by AVP_PATH_VALIDATION ^secret/" in run.stderr
    assert_clean(run.stderr, CANARY_A)


def test_cli_stdin_and_check_follow_the_policy(tmp_path: Path, sidecar: dict[str, str]) -> None:
    text = (manifest(tmp_path, "kv/data/team-b/app") / "app.yaml").read_bytes()
    run = run_plugin(["generate", "-"], app_env(sidecar, "team-a"), stdin=text)
    assert run.code == 1 and run.stdout == ""
    assert "project team-a may not read path kv/data/team-b/app" in run.stderr
    check = run_plugin(["check", str(tmp_path / "app"), "-o", "json"], app_env(sidecar, "team-a"))
    assert check.code == 1
    rows: list[dict[str, Any]] = json.loads(check.stdout)["placeholders"]
    assert [row["status"] for row in rows] == ["path not allowed"]
    assert_clean(check.stdout + check.stderr, CANARY_A, CANARY_B)


def test_cli_without_policy_behaves_as_before(tmp_path: Path, sidecar: dict[str, str]) -> None:
    env = {k: v for k, v in sidecar.items() if k != "PLUGIN_TENANT_POLICY"}
    app = manifest(tmp_path, "kv/data/team-a/app", "kv/data/team-b/app")
    run = run_plugin(["generate", str(app)], {**env, "ARGOCD_APP_PROJECT_NAME": "x"})
    assert run.code == 0, run.stderr
    assert CANARY_A in run.stdout and CANARY_B in run.stdout


def test_values_phase_refuses_before_reading() -> None:
    """Two-phase secrets (RESOLVE_VALUES) plan their own reads: the policy applies there too."""
    import time

    from plugin.placeholders.engine import ResolutionError
    from plugin.placeholders.substitute import Rules
    from plugin.render.values_secrets import SharedReads

    made: list[str] = []

    def backend() -> Any:
        made.append("backend")
        raise AssertionError("no backend may be created for a refused path")

    decision = decide(policy(), {"ARGOCD_APP_PROJECT_NAME": "team-a"})
    shared = SharedReads(backend, Rules(path_check=decision.path_refusal), time.monotonic() + 5)
    with pytest.raises(ResolutionError) as info:
        shared.resolve_values([("values.yaml", {"p": "<path:kv/data/team-b/db#password>"})])
    assert "project team-a may not read path kv/data/team-b/db (tenant policy)" in str(info.value)
    assert made == []
