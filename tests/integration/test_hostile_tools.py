"""Hostile input through the real renderers: Helm echoing secret values in its errors, and
Kustomize reading files outside the application through symlinks or `..`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.security_support import Plugin, assert_failed_cleanly, assert_succeeded

pytestmark = pytest.mark.integration

CANARY = 'helm-canary-Ty6"w&z=1 x'
OUTSIDE = "outside-canary-Gh5k2"


def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(
        "kv/data/app:\n"
        f"  password: '{CANARY}'\n"
        f'  pem: "-----BEGIN X-----\\nline-{OUTSIDE}\\n-----END X-----\\n"\n'
    )
    return path


@pytest.mark.parametrize(
    "expression",
    [
        ".Values.password",
        ".Values.password | b64enc",
        ".Values.password | urlquery",
        ".Values.password | toJson",
        ".Values.password | quote",
        ".Values.pem",
        '(printf "%s:%s" "user" .Values.password) | b64enc',
    ],
)
def test_helm_errors_echoing_values_are_redacted(
    tmp_path: Path, helm_bin: str, expression: str
) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(
        "password: <path:kv/data/app#password>\npem: <path:kv/data/app#pem>\n"
    )
    (chart / "templates" / "fail.yaml").write_text(
        f'{{{{ fail (printf "bad value %s" ({expression})) }}}}\n'
    )
    plugin = Plugin(
        tmp_path / "home",
        helm=helm_bin,
        AVP_TYPE="file",
        AVP_FILE_PATH=str(secrets_file(tmp_path)),
        ARGOCD_ENV_RESOLVE_VALUES="true",
    )
    run = plugin.generate(chart)
    # Secrets were resolved into the values: the message body is withheld, the location stays.
    assert_failed_cleanly(
        run,
        [CANARY, f"line-{OUTSIDE}"],
        "helm template failed",
        "execution error at demo/templates/fail.yaml:1:",
        "message withheld",
    )
    assert "bad value" not in run.stderr


@pytest.mark.parametrize(
    "template",
    [
        "{{ tpl .Values.password . }}",  # Helm names the "function" that follows `{{`
        '{{ fail (printf "%s" (fromJson .Values.account).client_secret) }}',
        '{{ fail (printf "%s" (.Values.password | trunc 14)) }}',
    ],
)
def test_renderer_messages_are_withheld_when_values_hold_secrets(
    tmp_path: Path, helm_bin: str, template: str
) -> None:
    """A part of a secret, or a field of a JSON secret, in Helm's message: no redactor can
    predict every piece, so with resolved values only the error class and location show."""
    part = "PartCanary8xQ"
    leaf = "json-leaf-canary-5rT"
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        "kv/data/app:\n"
        f"  password: '{{{{ {part} tail-canary-93kd'\n"
        f'  account: \'{{"type": "sa", "client_secret": "{leaf}"}}\'\n'
    )
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(
        "password: <path:kv/data/app#password>\naccount: <path:kv/data/app#account>\n"
    )
    (chart / "templates" / "x.yaml").write_text(f"x: {template}\n")
    plugin = Plugin(
        tmp_path / "home",
        helm=helm_bin,
        AVP_TYPE="file",
        AVP_FILE_PATH=str(secrets),
        ARGOCD_ENV_RESOLVE_VALUES="true",
    )
    run = plugin.generate(chart)
    assert_failed_cleanly(
        run, [part, leaf, "{{ " + part[:6]], "demo/templates/x.yaml:1:", "message withheld"
    )


def kustomize_app(tmp_path: Path, resource: str) -> tuple[Path, Plugin]:
    outside = tmp_path / "outside.yaml"
    outside.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\ndata:\n  x: {OUTSIDE}\n"
    )
    repo = tmp_path / "repo"
    app = repo / "apps" / "web"
    app.mkdir(parents=True)
    (repo / ".git").mkdir()
    (app / "ok.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n")
    (app / "kustomization.yaml").write_text(f"resources:\n  - ok.yaml\n  - {resource}\n")
    return app, Plugin(tmp_path / "home")


def test_kustomize_refuses_a_symlink_leading_outside(tmp_path: Path, kustomize_bin: str) -> None:
    app, plugin = kustomize_app(tmp_path, "link.yaml")
    os.symlink(tmp_path / "outside.yaml", app / "link.yaml")
    run = plugin.generate(app, KUSTOMIZE_BIN=kustomize_bin)
    # Refused by the plugin's root check before kustomize runs (its load restrictor would
    # refuse it too: "is not in or below").
    assert_failed_cleanly(run, [OUTSIDE], "resources entry 'link.yaml' leads outside")


def test_kustomize_refuses_dotdot_files_outside_its_root(
    tmp_path: Path, kustomize_bin: str
) -> None:
    app, plugin = kustomize_app(tmp_path, "../../../outside.yaml")
    run = plugin.generate(app, KUSTOMIZE_BIN=kustomize_bin)
    assert_failed_cleanly(run, [OUTSIDE], "leads outside the repository")


def test_kustomize_inside_the_root_still_works(tmp_path: Path, kustomize_bin: str) -> None:
    app, plugin = kustomize_app(tmp_path, "ok.yaml")
    (app / "kustomization.yaml").write_text("resources:\n  - ok.yaml\n")
    assert_succeeded(plugin.generate(app, KUSTOMIZE_BIN=kustomize_bin), "name: ok")
