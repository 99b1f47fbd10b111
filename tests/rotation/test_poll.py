"""`check_record` with the file backend (no server): changes by fingerprint, pinned references,
the tenant policy's walls, the rebuilt identity and errors that never hold a value.

Vault (KV v2 metadata, KV v1, logins, request counts) is covered against a real OpenBao in
tests/integration/test_rotation_poll_vault.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from plugin.config import Settings
from plugin.rotation import index, poll
from plugin.secrets.base import SecretRef
from plugin.secrets.file import FileBackend
from tests.integration.test_vault_support import make_pki
from tests.test_config import KubeAPI

CANARY = "poll-canary-Vb7n"
CANARY_NEW = "poll-canary-new-Hd3q"


def write_secrets(path: Path, password: str, versions: list[str] | None = None) -> None:
    content: dict[str, object] = {"kv/app": {"password": password}}
    if versions is not None:
        content["kv/versioned"] = {"@versions": [{"password": v} for v in versions]}
    path.write_text(yaml.safe_dump(content))


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    write_secrets(secrets, CANARY, ["one", "two"])
    return {
        "AVP_TYPE": "file",
        "AVP_FILE_PATH": str(secrets),
        "PLUGIN_CACHE_DIR": str(tmp_path / "cache"),
    }


def render(environ: dict[str, str], *refs: SecretRef, project: str = "team-a") -> index.Record:
    """What `plugin generate` records: the reads of a render through the recorder."""
    env = {
        **environ,
        "ARGOCD_APP_NAME": "app",
        "ARGOCD_APP_NAMESPACE": "argocd",
        "ARGOCD_APP_PROJECT_NAME": project,
    }
    settings = Settings(env)
    recorder = index.Recorder()
    backend = recorder.wrap(lambda: FileBackend.from_settings(settings))()
    for ref in refs:
        backend.read(ref)
    assert index.record_render(recorder, env, settings, None) is not None
    root = index.index_root(env)
    assert root is not None
    (record,) = index.read_records(root)
    return record


def check(record: index.Record, environ: dict[str, str]) -> poll.PollResult:
    sessions = poll.Sessions()
    try:
        return poll.check_record(record, environ, deadline=time.monotonic() + 30, sessions=sessions)
    finally:
        sessions.close()


def test_versioned_file_secret_records_its_version(environ: dict[str, str]) -> None:
    record = render(environ, SecretRef("kv/versioned"), SecretRef("kv/versioned", "1"))
    assert {(r.version, r.read_version) for r in record.references} == {(None, "2"), ("1", "1")}


def test_unchanged_then_changed_by_fingerprint(environ: dict[str, str]) -> None:
    record = render(environ, SecretRef("kv/app"))
    quiet = check(record, environ)
    assert (quiet.changed, quiet.errors, quiet.requests) == ((), (), 0)
    assert quiet.unchanged == record.references
    write_secrets(Path(environ["AVP_FILE_PATH"]), CANARY_NEW, ["one", "two"])
    rotated = check(record, environ)
    assert rotated.changed == record.references and rotated.stale


def test_a_secret_that_appears_or_disappears_is_a_change(environ: dict[str, str]) -> None:
    path = Path(environ["AVP_FILE_PATH"])
    path.write_text(yaml.safe_dump({"kv/other": {"x": "y"}}))
    settings = Settings({**environ, "ARGOCD_APP_NAME": "app"})
    recorder = index.Recorder()
    backend = recorder.wrap(lambda: FileBackend.from_settings(settings))()
    with pytest.raises(Exception, match="no secret"):
        backend.read(SecretRef("kv/app"))
    index.record_render(recorder, {**environ, "ARGOCD_APP_NAME": "app"}, settings, None)
    root = index.index_root(environ)
    assert root is not None
    (record,) = index.read_records(root)
    assert record.references[0].status == "missing"
    assert check(record, environ).changed == ()
    write_secrets(path, CANARY)
    assert check(record, environ).changed == record.references


def test_pinned_references_are_never_polled(environ: dict[str, str], tmp_path: Path) -> None:
    record = render(environ, SecretRef("kv/versioned", "1"))
    # Even a backend that cannot be reached any more is not asked.
    broken = {**environ, "AVP_FILE_PATH": str(tmp_path / "gone.yaml")}
    result = check(record, broken)
    assert result.pinned == record.references
    assert (result.changed, result.unchanged, result.errors) == ((), (), ())


def test_refused_paths_are_reported_and_never_read(environ: dict[str, str], tmp_path: Path) -> None:
    record = render(environ, SecretRef("kv/app"), SecretRef("kv/versioned"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"projects": [{"project": "team-a", "paths": ["kv/app"]}]}))
    # kv/versioned leaves the file: a read of it would report a change, so none proves it unread.
    write_secrets(Path(environ["AVP_FILE_PATH"]), CANARY)
    result = check(record, {**environ, "PLUGIN_TENANT_POLICY": str(policy)})
    assert [r.path for r in result.refused] == ["kv/versioned"]
    assert [r.path for r in result.unchanged] == ["kv/app"]
    assert result.errors == ()


def test_a_project_the_policy_refuses_is_not_polled(
    environ: dict[str, str], tmp_path: Path
) -> None:
    record = render(environ, SecretRef("kv/app"), project="team-z")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"projects": [{"project": "team-a", "paths": ["**"]}]}))
    result = check(record, {**environ, "PLUGIN_TENANT_POLICY": str(policy)})
    assert result.refused == record.references
    assert "project team-z is refused by the tenant policy" in result.errors[0].message


def test_a_recorded_identity_setting_the_project_may_not_set_fails_closed(
    environ: dict[str, str], tmp_path: Path
) -> None:
    record = render(environ, SecretRef("kv/app"))
    record = index.Record(
        name=record.name,
        namespace=record.namespace,
        project=record.project,
        identity={"AVP_K8S_ROLE": "someone-else"},
        references=record.references,
        rendered_at=record.rendered_at,
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"projects": [{"project": "team-a", "paths": ["**"]}]}))
    result = check(record, {**environ, "PLUGIN_TENANT_POLICY": str(policy)})
    assert result.refused == record.references and result.unchanged == ()
    assert "may not set ARGOCD_ENV_AVP_K8S_ROLE" in result.errors[0].message


def test_the_recorded_identity_is_applied_as_the_applications_setting(
    environ: dict[str, str],
) -> None:
    record = index.Record(
        name="a",
        namespace="n",
        project="p",
        identity={"AVP_K8S_ROLE": "recorded", "AVP_AUTH_TYPE": "k8s", "policy": "x"},
        references=(),
    )
    built = poll.settings_for(record, {**environ, "AVP_AUTH_TYPE": "k8s", "AVP_K8S_ROLE": "op"})
    found = built.settings.lookup("AVP_K8S_ROLE")
    assert found is not None
    assert (found.value, found.origin) == (
        "recorded",
        "environment variable ARGOCD_ENV_AVP_K8S_ROLE",
    )
    assert built.settings.get("AVP_AUTH_TYPE") == "k8s"
    # the watcher's own ARGOCD_ENV_* variables never count
    stray = poll.settings_for(record, {**environ, "ARGOCD_ENV_AVP_AUTH_TYPE": "token"})
    assert stray.settings.get("AVP_AUTH_TYPE") == "k8s"


def test_another_backend_or_address_is_an_error_never_a_request(
    environ: dict[str, str],
) -> None:
    reference = index.Reference(backend="vault", path="kv/app", address="https://evil:8200")
    record = index.Record("a", "n", "p", {}, (reference,))
    result = check(record, {**environ, "AVP_TYPE": "vault", "VAULT_ADDR": "https://bao:8200"})
    assert result.unchanged == () and result.requests == 0
    assert "recorded for Vault at https://evil:8200" in result.errors[0].message


def test_errors_never_hold_a_value(environ: dict[str, str]) -> None:
    record = render(environ, SecretRef("kv/app"))
    Path(environ["AVP_FILE_PATH"]).write_text(f"kv/app: [{CANARY}\n")
    result = check(record, environ)
    assert result.errors and result.changed == ()
    for error in result.errors:
        assert CANARY not in error.message


def test_format_1_records_are_read(tmp_path: Path) -> None:
    text = (
        '{"format": 1, "name": "a", "namespace": "n", "project": "p", "identity": {}, '
        '"rendered_at": "2026-01-01T00:00:00Z", "references": [{"backend": "vault", '
        '"path": "kv/app", "kv_version": "2", "fingerprint": "hmac-sha256:00", '
        '"future_field": "ignored"}]}'
    )
    record = index.Record.from_json(text)
    assert record is not None and record.format == 1
    assert record.references[0].read_version is None
    assert index.Record.from_json(text.replace('"format": 1', '"format": 3')) is None


def test_identity_settings_from_the_operators_kubernetes_secret_are_not_the_apps(
    environ: dict[str, str], tmp_path: Path
) -> None:
    """AVP_SECRET's settings are the operator's: equal recorded values are not re-applied as
    the Application's own (which the policy would refuse as protected names)."""
    pki = make_pki(tmp_path / "pki")
    api = KubeAPI(pki, "sa-token-value")
    try:
        token = tmp_path / "sa-token"
        token.write_text("sa-token-value\n")
        api.secrets[("argocd", "avp")] = {"AVP_K8S_ROLE": "from-secret"}
        kube = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port),
            "KUBERNETES_SA_TOKEN_PATH": str(token),
            "KUBERNETES_SA_CA_PATH": str(pki.ca_cert),
            "AVP_SECRET": "avp",
        }
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({"projects": [{"project": "p", "paths": ["**"]}]}))
        record = index.Record("a", "n", "p", {"AVP_K8S_ROLE": "from-secret"}, ())
        built = poll.settings_for(record, {**environ, **kube, "PLUGIN_TENANT_POLICY": str(policy)})
        found = built.settings.lookup("AVP_K8S_ROLE")
        assert found is not None
        assert (found.value, found.origin) == (
            "from-secret",
            "Kubernetes Secret argocd/avp key AVP_K8S_ROLE",
        )
        assert api.seen == ["/api/v1/namespaces/argocd/secrets/avp"]  # read once
    finally:
        api.stop()


def test_a_render_with_the_applications_own_credentials_is_not_polled(
    environ: dict[str, str],
) -> None:
    reference = index.Reference(backend="vault", path="kv/app", address="http://127.0.0.1:9")
    record = index.Record(
        "a", "n", "p", {index.APPLICATION_CREDENTIALS: "VAULT_TOKEN"}, (reference,)
    )
    vault = {**environ, "AVP_TYPE": "vault", "VAULT_ADDR": "http://127.0.0.1:9"}
    result = check(record, {**vault, "AVP_AUTH_TYPE": "token", "VAULT_TOKEN": "operator"})
    assert result.unchanged == () and result.changed == () and result.requests == 0
    assert "credentials the Application supplied (VAULT_TOKEN)" in result.errors[0].message


def test_answers_are_shared_per_identity_never_across_settings(
    environ: dict[str, str], tmp_path: Path
) -> None:
    record = render(environ, SecretRef("kv/app"))
    other = tmp_path / "other.yaml"
    write_secrets(other, CANARY_NEW)
    sessions = poll.Sessions()
    try:
        sessions.start_cycle()
        first = poll.check_record(
            record, environ, deadline=time.monotonic() + 30, sessions=sessions
        )
        again = poll.check_record(
            record, environ, deadline=time.monotonic() + 30, sessions=sessions
        )
        moved = poll.check_record(
            record,
            {**environ, "AVP_FILE_PATH": str(other)},
            deadline=time.monotonic() + 30,
            sessions=sessions,
        )
    finally:
        sessions.close()
    assert (first.polled, again.polled, moved.polled) == (1, 0, 1)
    assert first.changed == again.changed == () and moved.changed == record.references
