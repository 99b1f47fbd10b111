"""The pinned external tools and the shared fixtures really work (tests/conftest.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

pytestmark = pytest.mark.integration

CHARTS = Path(__file__).resolve().parent.parent / "charts"


def run(cmd: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def umbrella(tmp_path: Path, dependency: dict[str, Any], values: dict[str, Any]) -> Path:
    chart = tmp_path / "umbrella"
    chart.mkdir()
    meta = {
        "apiVersion": "v2",
        "name": "umbrella",
        "version": "1.0.0",
        "dependencies": [dependency],
    }
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    return chart


def helm_name(helm_bin: str) -> str:
    return Path(helm_bin).name


# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("helm3", ["version", "--template", "{{.Version}}"], r"^v3\.17\.3$"),
        ("helm4", ["version", "--template", "{{.Version}}"], r"^v4\.3\.1$"),
        # v5.8.1 is the kustomize inside kubectl 1.37.1 (install-tools' fallback)
        ("kustomize", ["version"], r"^v5\.(7\.1|8\.1)$"),
        ("bao", ["version"], r"^OpenBao v2\.4\.0 "),
    ],
)
def test_pinned_tool_versions(
    tool: Callable[[str], str], name: str, args: list[str], expected: str
) -> None:
    out = run([tool(name), *args]).strip()
    assert re.search(expected, out), out


# --- Helm -----------------------------------------------------------------------------------


def test_helm_umbrella_chart_resolves_range_from_http_repo(
    helm_bin: str, chart_repo: Any, helm_env: dict[str, str], tmp_path: Path
) -> None:
    chart = umbrella(
        tmp_path,
        {"name": "webapp", "version": ">=0.1.0 <1.0.0", "repository": chart_repo.url},
        {"webapp": {"replicaCount": 3, "config": {"GREETING": "hi"}}},
    )
    chart_repo.reset_counts()

    run([helm_bin, "dependency", "update", str(chart)], env=helm_env)

    lock = yaml.safe_load((chart / "Chart.lock").read_text())
    assert [(d["name"], d["version"]) for d in lock["dependencies"]] == [("webapp", "0.2.0")]
    assert (chart / "charts" / "webapp-0.2.0.tgz").is_file()
    assert chart_repo.count("/index.yaml") >= 1
    assert chart_repo.count("/webapp-0.2.0.tgz") == 1
    assert chart_repo.count("/webapp-0.1.0.tgz") == 0

    manifests = docs(run([helm_bin, "template", "rel", str(chart)], env=helm_env))
    [deployment] = by_kind(manifests, "Deployment")
    assert deployment["metadata"]["name"] == "rel-webapp"
    assert deployment["metadata"]["labels"]["helm.sh/chart"] == "webapp-0.2.0"
    assert deployment["spec"]["replicas"] == 3
    [configmap] = by_kind(manifests, "ConfigMap")
    assert configmap["data"] == {"LOG_LEVEL": "info", "GREETING": "hi"}
    [secret] = by_kind(manifests, "Secret")
    assert secret["stringData"] == {"password": "<path:kv/data/webapp#password>"}


def test_helm_dependency_update_sees_a_version_published_later(
    helm_bin: str, chart_repo: Any, helm_env: dict[str, str], tmp_path: Path
) -> None:
    # A chart of its own per Helm version, so that the session repository stays predictable.
    name = f"canary-{helm_name(helm_bin)}"
    src = tmp_path / "src" / name
    shutil.copytree(CHARTS / "webapp", src)
    src_meta = yaml.safe_load((src / "Chart.yaml").read_text())
    src_meta["name"] = name
    (src / "Chart.yaml").write_text(yaml.safe_dump(src_meta, sort_keys=False))

    chart_repo.publish(src, "0.1.0")
    chart = umbrella(
        tmp_path, {"name": name, "version": "~0.1.0", "repository": chart_repo.url}, {}
    )
    run([helm_bin, "dependency", "update", str(chart)], env=helm_env)
    assert (chart / "charts" / f"{name}-0.1.0.tgz").is_file()

    chart_repo.publish(src, "0.1.1")
    assert chart_repo.versions(name) == ["0.1.1", "0.1.0"]
    run([helm_bin, "dependency", "update", str(chart)], env=helm_env)
    lock = yaml.safe_load((chart / "Chart.lock").read_text())
    assert lock["dependencies"][0]["version"] == "0.1.1"
    assert sorted(p.name for p in (chart / "charts").iterdir()) == [f"{name}-0.1.1.tgz"]


def test_helm_umbrella_chart_from_oci_registry(
    helm_bin: str, oci_registry: Any, helm_env: dict[str, str], tmp_path: Path
) -> None:
    assert sorted(oci_registry.tags("webapp")) == ["0.1.0", "0.2.0"]
    chart = umbrella(
        tmp_path,
        {"name": "webapp", "version": ">=0.1.0 <1.0.0", "repository": oci_registry.url},
        {"webapp": {"replicaCount": 2}},
    )
    run([helm_bin, "dependency", "update", "--plain-http", str(chart)], env=helm_env)
    lock = yaml.safe_load((chart / "Chart.lock").read_text())
    assert lock["dependencies"][0]["version"] == "0.2.0"

    manifests = docs(run([helm_bin, "template", "rel", str(chart)], env=helm_env))
    [deployment] = by_kind(manifests, "Deployment")
    assert deployment["metadata"]["labels"]["helm.sh/chart"] == "webapp-0.2.0"
    assert deployment["spec"]["replicas"] == 2


def test_helm_template_straight_from_oci_reference(
    helm_bin: str, oci_registry: Any, helm_env: dict[str, str]
) -> None:
    ref = f"{oci_registry.url}/database"
    out = run([helm_bin, "template", "pg", ref, "--version", "1.0.0", "--plain-http"], env=helm_env)
    [cluster] = by_kind(docs(out), "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["name"] == "pg-db"
    [secret] = by_kind(docs(out), "Secret")
    assert secret["stringData"]["password"] == "<path:kv/data/database#password>"


# --- kustomize ------------------------------------------------------------------------------


def test_kustomize_build_name_prefix_and_config_map_generator(
    kustomize_bin: str, tmp_path: Path
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx",
                            "envFrom": [{"configMapRef": {"name": "app-config"}}],
                        }
                    ]
                },
            },
        },
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namePrefix": "dev-",
        "resources": ["deployment.yaml"],
        "configMapGenerator": [
            {"name": "app-config", "literals": ["GREETING=hello", "PASSWORD=<path:kv/data/x#y>"]}
        ],
    }
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    manifests = docs(run([kustomize_bin, "build", str(tmp_path)]))

    [configmap] = by_kind(manifests, "ConfigMap")
    assert re.fullmatch(r"dev-app-config-[a-z0-9]{10}", configmap["metadata"]["name"])
    assert configmap["data"] == {"GREETING": "hello", "PASSWORD": "<path:kv/data/x#y>"}
    [dep] = by_kind(manifests, "Deployment")
    assert dep["metadata"]["name"] == "dev-web"
    env_from = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]


# --- OpenBao --------------------------------------------------------------------------------


def test_openbao_mount_layout_and_auth_methods(openbao: Any) -> None:
    mounts = openbao.mounts()
    assert mounts["secret"]["type"] == "kv"
    assert mounts["secret"]["options"]["version"] == "1"
    assert mounts["kv"]["options"]["version"] == "2"
    assert mounts["conformance"]["options"]["version"] == "1"
    auth = openbao.client().sys.list_auth_methods()["data"]
    for method in ("approle", "userpass", "jwt", "cert", "kubernetes"):
        assert auth[f"{method}/"]["type"] == method


def test_openbao_kv2_versions(openbao: Any) -> None:
    client = openbao.client()
    kv2 = client.secrets.kv.v2
    path = f"toolchain/{uuid.uuid4().hex}"
    kv2.create_or_update_secret(path=path, secret={"password": "one"}, mount_point="kv")
    kv2.create_or_update_secret(path=path, secret={"password": "two"}, mount_point="kv")

    def read(version: int | None) -> Any:
        resp = kv2.read_secret_version(
            path=path, version=version, mount_point="kv", raise_on_deleted_version=True
        )
        return resp["data"]

    assert read(1)["data"] == {"password": "one"}
    assert read(2)["data"] == {"password": "two"}
    current = read(None)
    assert current["data"] == {"password": "two"}
    assert current["metadata"]["version"] == 2

    # The same through the raw HTTP API, as the plugin's backend will see it.
    resp = requests.get(
        f"{openbao.addr}/v1/kv/data/{path}",
        params={"version": "1"},
        headers={"X-Vault-Token": openbao.root_token},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["data"]["data"] == {"password": "one"}


def test_openbao_kv1_on_secret_mount(openbao: Any) -> None:
    client = openbao.client()
    name = f"toolchain-{uuid.uuid4().hex}"
    client.secrets.kv.v1.create_or_update_secret(
        path=name, secret={"user": "u", "port": 5432}, mount_point="secret"
    )
    resp = requests.get(
        f"{openbao.addr}/v1/secret/{name}",
        headers={"X-Vault-Token": openbao.root_token},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["data"] == {"user": "u", "port": 5432}
    denied = requests.get(
        f"{openbao.addr}/v1/secret/{name}", headers={"X-Vault-Token": "wrong"}, timeout=10
    )
    assert denied.status_code == 403


def test_openbao_seed_conformance_data(openbao: Any, conformance_dir: Path) -> None:
    seed = conformance_dir / "vault-seed.yaml"
    kv2 = openbao.client().secrets.kv.v2
    for _ in range(2):  # seeding again gives the same versions
        openbao.seed(seed)
        v1 = kv2.read_secret_version(
            path="versioned", version=1, mount_point="kv", raise_on_deleted_version=True
        )
        assert v1["data"]["data"] == {"secret": "version1"}
        current = kv2.read_secret_version(
            path="versioned", mount_point="kv", raise_on_deleted_version=True
        )
        assert current["data"]["data"] == {"secret": "version2"}
        assert current["data"]["metadata"]["version"] == 2

    client = openbao.client()
    testing = client.secrets.kv.v1.read_secret(path="testing", mount_point="secret")["data"]
    assert testing["name"] == "test-name"
    assert testing["secret-var-clear"] == "test-password"
    util_int = client.secrets.kv.v1.read_secret(path="util-int", mount_point="conformance")
    assert util_int["data"]["replicas"] == 1
    three = kv2.read_secret_version(
        path="conformance/util-specific-path-versioned",
        version=3,
        mount_point="kv",
        raise_on_deleted_version=True,
    )
    assert three["data"]["data"] == {"version": "three"}


def test_openbao_seed_from_mapping_replaces_mount_of_other_version(openbao: Any) -> None:
    openbao.seed(
        {
            "mounts": {"seedtest": {"type": "kv", "version": 2}},
            "writes": [{"path": "seedtest/data/app", "data": {"k": "v"}}],
        }
    )
    assert openbao.mounts()["seedtest"]["options"]["version"] == "2"
    openbao.seed(
        {
            "mounts": {"seedtest": {"type": "kv", "version": 1}},
            "writes": [{"path": "seedtest/app", "data": {"k": "v1"}}],
        }
    )
    assert openbao.mounts()["seedtest"]["options"]["version"] == "1"
    data = openbao.client().secrets.kv.v1.read_secret(path="app", mount_point="seedtest")
    assert data["data"] == {"k": "v1"}
