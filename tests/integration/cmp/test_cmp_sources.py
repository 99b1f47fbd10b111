"""Kustomize, plain directories, Jinja2 templates, discovery and plugin.yaml itself, through
Argo CD's real cmp-server (the `sidecar` fixture)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from plugin.argocd.request import PARAMETERS
from tests.cmp_harness import PLUGIN_WITH_DISCOVERY_YAML, PLUGIN_YAML, App
from tests.integration.cmp.conftest import SECRETS, SidecarFactory, write
from tests.integration.cmp.test_cmp_helm import simple_chart

SECRET_MANIFEST = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Secret
    metadata:
      name: db
    type: Opaque
    stringData:
      password: <path:kv/data/database#password>
    """
)


@pytest.mark.integration
def test_kustomization_with_a_sibling_base(
    tmp_path: Path, sidecar: SidecarFactory, kustomize_bin: str
) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "base/kustomization.yaml": "resources: [secret.yaml, cm.yaml]\n",
            "base/secret.yaml": SECRET_MANIFEST,
            "base/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
            "data: {user: <path:kv/data/database#username>}\n",
            "overlays/prod/kustomization.yaml": "resources: [../../base]\nnamePrefix: prod-\n"
            "namespace: prod\n",
        },
    )
    cmp = sidecar(kustomize=kustomize_bin)
    result = cmp.generate(repo, App(path="overlays/prod"))
    assert result.code == 0, result.stderr
    secret = result.one("Secret", "prod-db")
    assert secret["stringData"]["password"] == SECRETS["kv/data/database"]["password"]
    assert secret["metadata"]["namespace"] == "prod"
    assert result.one("ConfigMap", "prod-cm")["data"]["user"] == "dbuser"


@pytest.mark.integration
def test_kustomization_errors_fail_cleanly(
    tmp_path: Path, sidecar: SidecarFactory, kustomize_bin: str
) -> None:
    repo = write(tmp_path / "repo", {"app/kustomization.yaml": "resources: [missing.yaml]\n"})
    result = sidecar(kustomize=kustomize_bin).generate(repo, App(path="app"))
    assert result.code != 0 and result.stdout == ""
    assert "kustomize build failed" in result.stderr


@pytest.mark.integration
def test_plain_directory_with_stray_files(tmp_path: Path, sidecar: SidecarFactory) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "app/secret.yaml": SECRET_MANIFEST,
            "app/nested/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\n"
            "metadata: {name: web}\nspec: {replicas: 1}\n",
            "app/values.yaml": "replicaCount: 3\npassword: <path:kv/data/nope#x>\n",
            "app/notes.txt": "remember <path:kv/data/nope#x>\n",
            "app/README.md": "# notes\n",
            "app/.hidden/ignored.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: h}\n",
        },
    )
    result = sidecar().generate(repo, App(path="app"))
    assert result.code == 0, result.stderr
    kinds = sorted(m["kind"] for m in result.manifests)
    assert kinds == ["Deployment", "Secret"]
    assert result.one("Secret")["stringData"]["password"] == "db-pass-5582"


@pytest.mark.integration
def test_plain_directory_with_nothing_to_render(tmp_path: Path, sidecar: SidecarFactory) -> None:
    repo = write(tmp_path / "repo", {"app/values.yaml": "a: 1\n"})
    result = sidecar().generate(repo, App(path="app"))
    assert result.code != 0 and result.stdout == ""
    assert "no manifests" in result.stderr


@pytest.mark.integration
def test_source_type_override(tmp_path: Path, sidecar: SidecarFactory) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "app/kustomization.yaml": "resources: [missing.yaml]\n",
            "app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        },
    )
    cmp = sidecar()
    result = cmp.generate(repo, App(path="app", env={"SOURCE_TYPE": "directory"}))
    assert result.code == 0, result.stderr
    assert [m["kind"] for m in result.manifests] == ["Namespace"]
    bad = cmp.generate(repo, App(path="app", env={"SOURCE_TYPE": "jsonnet"}))
    assert bad.code != 0 and "SOURCE_TYPE" in bad.stderr


@pytest.mark.integration
def test_jinja_templates_then_helm(tmp_path: Path, sidecar: SidecarFactory, helm_bin: str) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "context/platform.yaml": "domain: example.org\nreplicas: 2\n",
            "apps/j/Chart.yaml.j2": "apiVersion: v2\nname: j\nversion: 0.1.0\n",
            "apps/j/values.yaml.j2": "host: app.{{ domain }}\nreplicas: {{ replicas }}\n"
            "ns: {{ argocd.namespace }}\n",
            "apps/j/templates/cm.yaml": textwrap.dedent(
                """\
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: j}
                data:
                  host: {{ .Values.host | quote }}
                  replicas: {{ .Values.replicas | quote }}
                  ns: {{ .Values.ns | quote }}
                  token: <path:kv/data/umbrella#apiKey>
                """
            ),
        },
    )
    cmp = sidecar(helm=helm_bin)
    app = App(
        path="apps/j",
        parameters=[{"name": "context-files", "array": ["/context/platform.yaml"]}],
    )
    result = cmp.generate(repo, app)
    assert result.code == 0, result.stderr
    assert result.one("ConfigMap")["data"] == {
        "host": "app.example.org",
        "replicas": "2",
        "ns": "demo-ns",
        "token": "api-key-0417",
    }
    assert (repo / "apps/j/Chart.yaml.j2").exists()
    assert not (repo / "apps/j/Chart.yaml").exists()


@pytest.mark.integration
def test_discovery(tmp_path: Path, sidecar: SidecarFactory) -> None:
    cmp = sidecar(config=PLUGIN_WITH_DISCOVERY_YAML)
    repo = simple_chart(tmp_path / "repo")
    write(
        repo,
        {
            "kust/kustomization.yml": "resources: []\n",
            "plain/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            "notes/README.md": "nothing\n",
            "notes/values.yaml": "a: 1\n",
        },
    )
    assert cmp.discover(repo, App(path="apps/simple"))
    assert cmp.discover(repo, App(path="kust"))
    assert cmp.discover(repo, App(path="plain"))
    assert not cmp.discover(repo, App(path="notes"))


def test_plugin_yaml_files_agree() -> None:
    plain = yaml.safe_load(PLUGIN_YAML.read_text())
    with_discovery = yaml.safe_load(PLUGIN_WITH_DISCOVERY_YAML.read_text())
    assert plain["kind"] == "ConfigManagementPlugin"
    assert plain["metadata"]["name"] == "argocd-secrets-plugin"
    assert plain["spec"]["version"] == "v1"
    assert "discover" not in plain["spec"]
    assert with_discovery["spec"]["discover"]["find"]["command"] == ["plugin", "discover", "."]
    assert plain["spec"]["generate"]["command"] == ["plugin", "generate", "."]
    assert plain["spec"]["parameters"]["dynamic"]["command"] == ["plugin", "parameters", "."]
    without_discovery = dict(with_discovery["spec"])
    del without_discovery["discover"]
    assert without_discovery == plain["spec"]
    static = {p["name"]: p for p in plain["spec"]["parameters"]["static"]}
    expected = {p.name: p for p in PARAMETERS if p.name != "helm-parameters"}
    assert set(static) == set(expected)
    for name, spec in expected.items():
        assert static[name].get("collectionType", "string") == spec.collection
