"""Through the real command line: generate records the index, refs reads it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugin.rotation import index
from tests.conformance import clean_environment, run_plugin

CANARY = "canary-CliRot-55e1"
KEY = "f" * 64


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"kv/app:\n  password: {CANARY}\nkv/data/harbor:\n  admin: x{CANARY}\n")
    return clean_environment(
        {
            "AVP_TYPE": "file",
            "AVP_FILE_PATH": str(secrets),
            "PLUGIN_CACHE_DIR": str(tmp_path / "cache"),
            "ARGOCD_APP_NAME": "web",
            "ARGOCD_APP_NAMESPACE": "argocd",
            "ARGOCD_APP_PROJECT_NAME": "team-a",
        }
    )


def app(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "app"
    directory.mkdir(exist_ok=True)
    (directory / "secret.yaml").write_text(text)
    return directory


MANIFEST = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n"
    "data:\n  a: <path:kv/app#password>\n  b: <path:kv/data/harbor#admin>\n"
)


def test_generate_records_and_refs_finds_the_app(tmp_path: Path, env: dict[str, str]) -> None:
    run = run_plugin(["generate", str(app(tmp_path, MANIFEST))], env)
    assert run.code == 0, run.stderr
    assert CANARY in run.stdout
    found = run_plugin(["refs", "--path", "kv/*", "-o", "json"], env)
    assert found.code == 0, found.stderr
    rows = json.loads(found.stdout)["references"]
    assert [(r["path"], r["namespace"], r["application"], r["project"]) for r in rows] == [
        ("kv/app", "argocd", "web", "team-a")
    ]
    table = run_plugin(["refs", "--path", "kv/data/harbor"], env)
    assert table.code == 0
    assert "kv/data/harbor  argocd/web" in table.stdout
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes()


def test_failed_generate_records_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    bad = MANIFEST + "  c: <path:kv/app#password | nope>\n"
    run = run_plugin(["generate", str(app(tmp_path, bad))], env)
    assert run.code == 1
    assert not (tmp_path / "cache" / index.INDEX_DIR / index.APPS_DIR).exists()


def test_index_failure_never_fails_the_render(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "not-a-dir").write_text("")
    env["PLUGIN_CACHE_DIR"] = str(tmp_path / "not-a-dir")
    run = run_plugin(["generate", str(app(tmp_path, MANIFEST)), "--verbose"], env)
    assert run.code == 0, run.stderr
    assert CANARY in run.stdout
    assert "reference index not updated" in run.stderr
    quiet = run_plugin(["generate", str(app(tmp_path, MANIFEST))], env)
    assert quiet.code == 0
    assert quiet.stderr == ""


def test_fingerprint_modifier_from_the_sidecar_environment(
    tmp_path: Path, env: dict[str, str]
) -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n"
        "data:\n  f: <path:kv/app#password | fingerprint>\n"
    )
    directory = app(tmp_path, text)
    refused = run_plugin(["generate", str(directory)], env)
    assert refused.code == 1
    assert "PLUGIN_FINGERPRINT_KEY is not set" in refused.stderr
    assert refused.stdout == ""
    env["ARGOCD_ENV_PLUGIN_FINGERPRINT_KEY"] = KEY  # an Application cannot provide it
    assert run_plugin(["generate", str(directory)], env).code == 1
    env["PLUGIN_FINGERPRINT_KEY"] = KEY
    first = run_plugin(["generate", str(directory)], env)
    assert first.code == 0, first.stderr
    assert "f: hmac-sha256:" in first.stdout
    assert CANARY not in first.stdout
    assert run_plugin(["generate", str(directory)], env).stdout == first.stdout
