"""The YAML under cmp-config/ and examples/: it parses, Kubernetes objects validate against the
Kubernetes schemas (kubernetes-validate, offline), the rest passes structural checks.

- plugin.yaml (and the variant with discovery) follows the CMP contract's rules;
- the Kustomize Component builds with the real kustomize against a minimal local stand-in of
  Argo CD's `argocd-repo-server` Deployment (the real install cannot be fetched offline), and
  the result has the sidecar with the required mounts and the restrictive securityContext;
- the Helm values hold exactly the same containers and volumes as the Kustomize patch, and the
  same RBAC rules (`repoServer.rbac`) as the Component's Role;
- the rotation watcher (`plugin watch`) is a second container of the repo-server pod sharing the
  sidecar's cache volume and identity; its Role and RoleBinding, built by kustomize and applied
  to the real kube-apiserver (`kube_api`), let the repo-server's service account do exactly what
  the watcher needs (SubjectAccessReview), nothing more;
- the example Application and ApplicationSet select the plugin by its name and only use
  parameters the plugin knows.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from plugin.argocd.request import PARAMETERS
from plugin.config import WatchSettings
from plugin.rotation.kube import KubeClient, KubeConfig, KubeError
from plugin.rotation.lease import DEFAULT_LEASE_NAME, ElectionConfig, LeaderElector
from tests.kube_fixture import KubeAPI, wait_for

ROOT = Path(__file__).resolve().parents[2]
CMP_CONFIG = ROOT / "cmp-config"
INSTALL = CMP_CONFIG / "install"
COMPONENT = INSTALL / "kustomize"
PATCH = COMPONENT / "repo-server-patch.yaml"
HELM_VALUES = INSTALL / "helm-values.yaml"
PLUGIN_YAMLS = (CMP_CONFIG / "plugin.yaml", CMP_CONFIG / "plugin-with-discovery.yaml")
K8S_VERSION = kubernetes_validate.latest_version()
SIDECAR = "argocd-secrets-plugin"
WATCHER = "argocd-secrets-plugin-watch"
WATCH_RBAC = COMPONENT / "watch-rbac.yaml"
WATCH_LEASE = "argocd-secrets-plugin-watch"
PLUGIN_CONTAINERS = {SIDECAR, WATCHER}
#: The default of PLUGIN_WATCH_PORT (/metrics and /healthz of `plugin watch`): the manifests
#: leave the setting unset, so their port and probe must follow the code's default.
WATCH_PORT = WatchSettings().port
PLACEHOLDER_IMAGE = "ghcr.io/example/argocd-secrets-plugin:0.1.0"

#: Custom resources and tool files that have no Kubernetes schema: checked by hand below.
CUSTOM_GROUPS = {"argoproj.io", "kustomize.config.k8s.io"}

RESTRICTED_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 999,
    "runAsGroup": 999,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
REQUIRED_MOUNTS = {
    "var-files": "/var/run/argocd",
    "plugins": "/home/argocd/cmp-server/plugins",
    "cmp-tmp": "/tmp",
    "plugin-home": "/home/plugin",
    "plugin-cache": "/home/plugin/.cache",
    "plugin-sa-token": "/var/run/secrets/kubernetes.io/serviceaccount",
}

# A minimal stand-in of Argo CD's stock argocd-repo-server Deployment: the parts the patch
# relies on (names, the stock container, copyutil, the var-files/plugins/tmp volumes).
STAND_IN_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: argocd-repo-server
  labels:
    app.kubernetes.io/name: argocd-repo-server
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: argocd-repo-server
  template:
    metadata:
      labels:
        app.kubernetes.io/name: argocd-repo-server
    spec:
      serviceAccountName: argocd-repo-server
      automountServiceAccountToken: false
      containers:
        - name: argocd-repo-server
          image: quay.io/argoproj/argocd:v3.5.1
          args: [/usr/local/bin/argocd-repo-server]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: plugins
              mountPath: /home/argocd/cmp-server/plugins
      initContainers:
        - name: copyutil
          image: quay.io/argoproj/argocd:v3.5.1
          command: [sh, -c]
          args:
            - /bin/cp --update=none /usr/local/bin/argocd /var/run/argocd/argocd &&
              /bin/ln -s /var/run/argocd/argocd /var/run/argocd/argocd-cmp-server
          volumeMounts:
            - name: var-files
              mountPath: /var/run/argocd
      volumes:
        - name: tmp
          emptyDir: {}
        - name: var-files
          emptyDir: {}
        - name: plugins
          emptyDir: {}
"""


# ------------------------------------------------------------------------------ discovery


def _is_chart_template(path: Path) -> bool:
    """A file in the `templates/` folder of a Helm chart (Go templates, not YAML)."""
    for parent in path.parents:
        if parent.name == "templates" and (parent.parent / "Chart.yaml").is_file():
            return True
        if parent == ROOT:
            return False
    return False


def yaml_files() -> list[Path]:
    files: list[Path] = []
    for base in (CMP_CONFIG, ROOT / "examples"):
        for path in sorted(base.rglob("*")):
            if path.suffix in {".yaml", ".yml"} and path.is_file() and not _is_chart_template(path):
                files.append(path)
    return files


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def kustomize_patches() -> set[Path]:
    """Files used as patches by a kustomization: partial objects, validated after the build."""
    found: set[Path] = set()
    for path in yaml_files():
        for doc in documents(path):
            if isinstance(doc, dict) and doc.get("kind") in {"Kustomization", "Component"}:
                for patch in doc.get("patches") or []:
                    if isinstance(patch, dict) and "path" in patch:
                        found.add((path.parent / patch["path"]).resolve())
    return found


def kubernetes_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in yaml_files():
        for doc in documents(path):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                yield path, doc


def _ids(value: object) -> str:
    return str(value.relative_to(ROOT)) if isinstance(value, Path) else ""


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("path", yaml_files(), ids=_ids)
def test_yaml_parses(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert any(doc is not None for doc in docs), f"{path} holds no document"


def test_patches_are_found() -> None:
    assert kustomize_patches() == {PATCH.resolve()}


def test_the_expected_files_exist() -> None:
    found = {str(p.relative_to(ROOT)) for p in yaml_files()}
    for name in (
        "cmp-config/plugin.yaml",
        "cmp-config/install/kustomize/kustomization.yaml",
        "cmp-config/install/kustomize/repo-server-patch.yaml",
        "cmp-config/install/kustomize/watch-rbac.yaml",
        "cmp-config/install/helm-values.yaml",
        "cmp-config/install/vault-settings.example.yaml",
        "cmp-config/install/networkpolicy.yaml",
        "cmp-config/examples/application.yaml",
        "cmp-config/examples/applicationset.yaml",
    ):
        assert name in found, name


def _validate(doc: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(part) for part in exc.path)
        pytest.fail(f"{where}: {doc['kind']} {path}: {exc.message}")


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        (p, d)
        for p, d in kubernetes_objects()
        if _group(d["apiVersion"]) not in CUSTOM_GROUPS and p.resolve() not in kustomize_patches()
    ],
    ids=lambda v: _ids(v) or (v.get("kind", "") if isinstance(v, dict) else ""),
)
def test_kubernetes_objects_validate(path: Path, doc: dict[str, Any]) -> None:
    group = _group(doc["apiVersion"])
    try:
        _validate(doc, str(path.relative_to(ROOT)))
    except kubernetes_validate.SchemaNotFoundError:
        # A custom resource (e.g. in an example chart): only Kubernetes' own groups must have
        # a schema.
        assert group and "." in group and not group.endswith("k8s.io"), (
            f"{path}: no schema for {doc['apiVersion']} {doc['kind']}"
        )


def test_non_kubernetes_yaml_is_known() -> None:
    """YAML without apiVersion/kind must be a mapping, and the known ones have their shape."""
    for path in yaml_files():
        for doc in documents(path):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                continue
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            if path == HELM_VALUES:
                assert set(doc) == {"repoServer"}
                assert set(doc["repoServer"]) == {"extraContainers", "volumes", "rbac"}
            elif path.name == "secrets.yaml":  # file-backend secrets: path -> mapping
                for key, value in doc.items():
                    assert isinstance(key, str) and isinstance(value, dict), f"{path}: {key}"


# ------------------------------------------------------------------------------ plugin.yaml

_SPEC_KEYS = {
    "version",
    "init",
    "generate",
    "discover",
    "parameters",
    "preserveFileMode",
    "provideGitCreds",
}
_ANNOUNCEMENT_KEYS = {
    "name",
    "title",
    "tooltip",
    "required",
    "itemType",
    "collectionType",
    "string",
    "array",
    "map",
}


def _check_command(block: Any, where: str) -> None:
    assert isinstance(block, dict), f"{where} must be a mapping"
    assert set(block) <= {"command", "args"}, f"{where}: unknown keys {set(block)}"
    command = block.get("command")
    assert isinstance(command, list) and command, f"{where}.command must be a non-empty list"
    assert all(isinstance(word, str) and word for word in command), f"{where}.command"
    assert all(isinstance(word, str) for word in block.get("args") or []), f"{where}.args"
    # No shell: a pipeline would hide failures (contract §7, problem 11).
    assert command[0] not in {"sh", "bash", "/bin/sh", "/bin/bash"}, f"{where} runs a shell"
    assert command[0] == "plugin", f"{where}: the image's console script is `plugin`"


@pytest.mark.parametrize("path", PLUGIN_YAMLS, ids=_ids)
def test_plugin_yaml_follows_the_contract(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert config["apiVersion"] == "argoproj.io/v1alpha1"
    assert config["kind"] == "ConfigManagementPlugin"
    name = config["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    spec = config["spec"]
    assert set(spec) <= _SPEC_KEYS, f"unknown spec keys (Argo CD ignores them): {set(spec)}"
    assert isinstance(spec["version"], str) and spec["version"], "spec.version"
    _check_command(spec["generate"], "spec.generate")
    if "init" in spec:
        _check_command(spec["init"], "spec.init")
    assert not spec.get("provideGitCreds"), "the plugin needs no Git credentials"

    parameters = spec.get("parameters") or {}
    assert set(parameters) <= {"static", "dynamic"}
    if "dynamic" in parameters:
        _check_command(parameters["dynamic"], "spec.parameters.dynamic")
    names: list[str] = []
    for item in parameters.get("static") or []:
        assert set(item) <= _ANNOUNCEMENT_KEYS, f"unknown announcement keys {set(item)}"
        names.append(item["name"])
        for key in ("name", "title", "tooltip"):
            assert isinstance(item.get(key), str) and item[key], f"{item.get('name')}: {key}"
        assert item.get("collectionType", "string") in {"", "string", "array", "map"}
        assert isinstance(item.get("required", False), bool)
        assert isinstance(item.get("string", ""), str)
        assert all(isinstance(v, str) for v in item.get("array") or [])
        assert all(isinstance(v, str) for v in (item.get("map") or {}).values())
    assert len(names) == len(set(names)), "duplicate static parameters"
    kinds = {spec.name: spec.collection for spec in PARAMETERS}
    for item in parameters.get("static") or []:
        assert item["name"] in kinds, f"static parameter {item['name']} unknown to the plugin"
        assert item.get("collectionType", "string") == kinds[item["name"]], item["name"]
    # helm-parameters is announced dynamically only (no duplicate in the UI).
    assert set(kinds) - set(names) == {"helm-parameters"}


def test_discovery_only_where_documented() -> None:
    plain = yaml.safe_load(PLUGIN_YAMLS[0].read_text())
    assert "discover" not in plain["spec"], "the default plugin.yaml selects by name only"
    variant = yaml.safe_load(PLUGIN_YAMLS[1].read_text())
    discover = variant["spec"]["discover"]
    defined = [key for key in ("fileName", "find") if key in discover]
    assert defined == ["find"] and set(discover["find"]) <= {"command", "args", "glob"}
    _check_command({k: v for k, v in discover["find"].items() if k != "glob"}, "discover.find")
    docs = (ROOT / "docs" / "cmp.md").read_text()
    assert "plugin-with-discovery.yaml" in docs


def test_both_plugin_yamls_define_the_same_plugin() -> None:
    plain, variant = (yaml.safe_load(p.read_text()) for p in PLUGIN_YAMLS)
    variant["spec"].pop("discover")
    assert plain == variant


def plugin_name() -> str:
    config = yaml.safe_load(PLUGIN_YAMLS[0].read_text())
    return f"{config['metadata']['name']}-{config['spec']['version']}"


# ------------------------------------------------------------------------------ Applications


def _sources(app: dict[str, Any]) -> list[dict[str, Any]]:
    spec = app["spec"]["template"]["spec"] if app["kind"] == "ApplicationSet" else app["spec"]
    return [spec["source"]] if "source" in spec else list(spec.get("sources") or [])


def test_example_applications_select_the_plugin() -> None:
    known = {spec.name: spec.collection for spec in PARAMETERS}
    seen = set()
    for path, doc in kubernetes_objects():
        if doc["apiVersion"] != "argoproj.io/v1alpha1":
            continue
        if doc["kind"] not in {"Application", "ApplicationSet"}:
            continue
        seen.add(doc["kind"])
        plugin_sources = [s for s in _sources(doc) if "plugin" in s]
        assert plugin_sources, f"{path}: no source uses the plugin"
        for source in plugin_sources:
            plugin = source["plugin"]
            assert plugin["name"] == plugin_name(), f"{path}: plugin.name"
            for entry in plugin.get("env") or []:
                assert set(entry) == {"name", "value"}, entry
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", entry["name"]), entry
                assert isinstance(entry["value"], str), f"{entry['name']}: quote the value"
            for parameter in plugin.get("parameters") or []:
                name = parameter["name"]
                assert name in known, f"{path}: unknown parameter {name}"
                kinds = set(parameter) - {"name"}
                assert kinds == {known[name]}, f"{path}: {name} must be given as {known[name]}"
                value = parameter[known[name]]
                if known[name] == "array":
                    assert all(isinstance(v, str) for v in value)
                elif known[name] == "map":
                    assert all(isinstance(v, str) for v in value.values())
                else:
                    assert isinstance(value, str)
    assert seen == {"Application", "ApplicationSet"}


# ------------------------------------------------------------------------------ the sidecar


def _patch_pod() -> dict[str, Any]:
    return yaml.safe_load(PATCH.read_text())["spec"]["template"]["spec"]


def _sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    matches = [c for c in pod["containers"] if c["name"] == SIDECAR]
    assert len(matches) == 1
    return matches[0]


def check_sidecar_pod(pod: dict[str, Any]) -> None:
    """What every installation must give the sidecar (contract §5)."""
    sidecar = _sidecar(pod)
    # The zygote is started first, then the process becomes argocd-cmp-server (docs/cmp.md).
    assert sidecar["command"] == ["plugin", "serve", "--exec", "/var/run/argocd/argocd-cmp-server"]
    assert sidecar["securityContext"] == RESTRICTED_SECURITY_CONTEXT
    resources = sidecar["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    for name, path in REQUIRED_MOUNTS.items():
        assert mounts[name]["mountPath"] == path, name
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) <= set(volumes), "every mount needs a volume"
    for name in ("cmp-tmp", "plugin-home", "plugin-cache"):
        assert "emptyDir" in volumes[name], f"{name} must be an emptyDir"
    # The sidecar's /tmp is its own, never the repo-server's.
    repo_server = [c for c in pod["containers"] if c["name"] not in PLUGIN_CONTAINERS]
    for container in repo_server:
        for mount in container.get("volumeMounts") or []:
            if mount["mountPath"] == "/tmp":
                assert mount["name"] != mounts["cmp-tmp"]["name"]
    assert [e["secretRef"]["name"] for e in sidecar["envFrom"]] == ["argocd-secrets-plugin-vault"]
    # Kubernetes auth: a service-account token, projected into the sidecar only.
    sources = volumes["plugin-sa-token"]["projected"]["sources"]
    assert any("serviceAccountToken" in s for s in sources)
    assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
    vault_token = volumes["plugin-vault-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert vault_token["audience"] == "vault"
    for container in repo_server:
        names = {m["name"] for m in container.get("volumeMounts") or []}
        assert not names & {"plugin-sa-token", "plugin-vault-token", "plugin-cache"}
    check_watcher_pod(pod)


def _watcher(pod: dict[str, Any]) -> dict[str, Any]:
    matches = [c for c in pod["containers"] if c["name"] == WATCHER]
    assert len(matches) == 1
    return matches[0]


def check_watcher_pod(pod: dict[str, Any]) -> None:
    """The rotation watcher: same image, identity and cache volume as the sidecar (the index and
    the Vault token cache live there), its own /tmp, no readiness probe (it would take the whole
    repo-server out of its Service)."""
    sidecar, watcher = _sidecar(pod), _watcher(pod)
    assert watcher["command"] == ["plugin", "watch"]
    assert "args" not in watcher
    env = {e["name"] for e in watcher.get("env") or []}
    assert not env & {"PLUGIN_WATCH_PORT", "PLUGIN_WATCH_BIND"}  # the port below is the default
    assert watcher["image"] == sidecar["image"]
    assert watcher["envFrom"] == sidecar["envFrom"]
    assert watcher["securityContext"] == RESTRICTED_SECURITY_CONTEXT  # same UID: the index is 0700
    assert {"cpu", "memory"} <= set(watcher["resources"]["requests"])
    assert "memory" in watcher["resources"]["limits"]
    sidecar_mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    mounts = {m["name"]: m for m in watcher["volumeMounts"]}
    for shared in ("plugin-cache", "plugin-sa-token", "plugin-vault-token"):
        assert mounts[shared] == sidecar_mounts[shared], shared
    # nothing of the renders' scratch space, of the cmp-server socket or of the repo-server
    assert not set(mounts) & {"cmp-tmp", "plugin-home", "var-files", "plugins", "tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["watch-tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["watch-tmp"]
    assert set(mounts) <= set(volumes)
    assert "readinessProbe" not in watcher and "startupProbe" not in watcher
    probe = watcher["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    (port,) = watcher["ports"]
    assert probe["port"] == port["name"]
    assert port["containerPort"] == WATCH_PORT


def test_patch_gives_the_sidecar_what_it_needs() -> None:
    pod = _patch_pod()
    sidecar = _sidecar(pod)
    assert sidecar["image"] == PLACEHOLDER_IMAGE
    # The patch alone lacks the stock volumes; add them as the stand-in has them.
    pod = copy.deepcopy(pod)
    pod["volumes"] += [{"name": "var-files", "emptyDir": {}}, {"name": "plugins", "emptyDir": {}}]
    check_sidecar_pod(pod)


def test_helm_values_match_the_kustomize_patch() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())["repoServer"]
    pod = _patch_pod()
    assert values["extraContainers"] == pod["containers"]
    assert values["volumes"] == pod["volumes"]
    # the chart's repo-server Role (bound to its service account) gets the watcher's rules
    (role,) = [doc for doc in documents(WATCH_RBAC) if doc["kind"] == "Role"]
    assert values["rbac"] == role["rules"]
    # Rendered through the chart's `tpl`: no template markers.
    assert "{{" not in HELM_VALUES.read_text()


def test_helm_values_validate_in_a_deployment() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())["repoServer"]
    deployment = yaml.safe_load(STAND_IN_DEPLOYMENT)
    deployment["metadata"]["namespace"] = "argocd"
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"] += values["extraContainers"]
    pod["volumes"] += values["volumes"]
    _validate(deployment, str(HELM_VALUES.relative_to(ROOT)))
    check_sidecar_pod(pod)


def test_settings_secret_example_holds_placeholders_only() -> None:
    from tests.project.test_docs_reference import reference_rows

    documented = set(reference_rows())
    (secret,) = documents(INSTALL / "vault-settings.example.yaml")
    assert (
        secret["kind"] == "Secret" and secret["metadata"]["name"] == "argocd-secrets-plugin-vault"
    )
    for key, value in secret["stringData"].items():
        assert key in documented, f"{key} is not a documented setting"
        if key.endswith(("_ID", "PASSWORD", "TOKEN")):
            assert "REPLACE" in value, key
        if key.endswith("_ADDR"):
            assert "example.com" in value, key
    text = (INSTALL / "vault-settings.example.yaml").read_text()
    for commented in re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]+):", text, flags=re.MULTILINE):
        assert commented in documented, f"{commented} (commented out) is not documented"


def test_network_policy_allows_what_the_sidecar_needs() -> None:
    (policy,) = documents(INSTALL / "networkpolicy.yaml")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "argocd-repo-server"
    }
    ports = {
        (port.get("protocol", "TCP"), port["port"])
        for rule in policy["spec"]["egress"]
        for port in rule.get("ports") or []
    }
    for needed in (("UDP", 53), ("TCP", 53), ("TCP", 8200), ("TCP", 443), ("TCP", 6443)):
        assert needed in ports, needed
    assert ("TCP", 6379) in ports, "the repo-server itself needs Redis"


# ------------------------------------------------------------------------------ kustomize build


def _build(
    kustomize_bin: str, tmp_path: Path, extra: str = "", namespace: str = "argocd"
) -> list[dict[str, Any]]:
    base = tmp_path / "stand-in-base"
    base.mkdir()
    (base / "deployment.yaml").write_text(STAND_IN_DEPLOYMENT)
    (base / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [deployment.yaml]\n"
    )
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {namespace}\n"
        "resources: [../stand-in-base]\n"
        f"components: [{os.path.relpath(COMPONENT, overlay)}]\n" + extra
    )
    done = subprocess.run(
        [kustomize_bin, "build", str(overlay)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _by_kind(built: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {doc["kind"]: doc for doc in built}
    assert sorted(kinds) == ["Deployment", "Role", "RoleBinding"], [d["kind"] for d in built]
    return kinds


def test_component_builds_onto_the_repo_server(kustomize_bin: str, tmp_path: Path) -> None:
    deployment = _by_kind(_build(kustomize_bin, tmp_path))["Deployment"]
    assert deployment["metadata"] == {
        "name": "argocd-repo-server",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-repo-server"},
    }
    _validate(deployment, "kustomize build")
    pod = deployment["spec"]["template"]["spec"]
    check_sidecar_pod(pod)
    assert _sidecar(pod)["image"] == PLACEHOLDER_IMAGE
    # The stock parts are untouched.
    stock = yaml.safe_load(STAND_IN_DEPLOYMENT)["spec"]["template"]["spec"]
    assert [c for c in pod["containers"] if c["name"] not in PLUGIN_CONTAINERS] == stock[
        "containers"
    ]
    assert pod["initContainers"] == stock["initContainers"]
    assert pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for volume in stock["volumes"]:
        assert volumes[volume["name"]] == volume


def test_component_image_is_replaceable(kustomize_bin: str, tmp_path: Path) -> None:
    extra = (
        "images:\n"
        "  - name: ghcr.io/example/argocd-secrets-plugin\n"
        "    newName: registry.example.com/platform/argocd-secrets-plugin\n"
        "    newTag: 1.2.3\n"
    )
    deployment = _by_kind(_build(kustomize_bin, tmp_path, extra))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    for container in (_sidecar(pod), _watcher(pod)):
        assert container["image"] == "registry.example.com/platform/argocd-secrets-plugin:1.2.3"


# ------------------------------------------------------------------------------ watcher RBAC


def test_watch_rbac_follows_the_install_namespace(kustomize_bin: str, tmp_path: Path) -> None:
    built = _by_kind(_build(kustomize_bin, tmp_path, namespace="argo-prod"))
    role, binding = built["Role"], built["RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "argo-prod"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    # no namespace on the subject: the binding's own, wherever Argo CD is installed
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "argocd-repo-server"}]
    for doc in (role, binding):
        _validate(doc, "kustomize build")


#: (verb, resource, name or "") -> allowed, for the repo-server's service account in its namespace
WATCHER_ACCESS = {
    ("get", "applications.argoproj.io", "any-app"): True,
    ("patch", "applications.argoproj.io", "any-app"): True,
    ("get", "leases.coordination.k8s.io", WATCH_LEASE): True,
    ("update", "leases.coordination.k8s.io", WATCH_LEASE): True,
    ("create", "leases.coordination.k8s.io", ""): True,
    # nothing else
    ("list", "applications.argoproj.io", ""): False,
    ("watch", "applications.argoproj.io", ""): False,
    ("update", "applications.argoproj.io", "any-app"): False,
    ("create", "applications.argoproj.io", ""): False,
    ("delete", "applications.argoproj.io", "any-app"): False,
    ("patch", "appprojects.argoproj.io", "default"): False,
    ("get", "leases.coordination.k8s.io", "another-controller-lease"): False,
    ("update", "leases.coordination.k8s.io", "another-controller-lease"): False,
    ("patch", "leases.coordination.k8s.io", WATCH_LEASE): False,
    ("delete", "leases.coordination.k8s.io", WATCH_LEASE): False,
    ("list", "leases.coordination.k8s.io", ""): False,
    ("get", "secrets", "argocd-secrets-plugin-vault"): False,
    ("list", "secrets", ""): False,
    ("get", "configmaps", "argocd-cm"): False,
    ("patch", "deployments.apps", "argocd-repo-server"): False,
}


@pytest.mark.integration
def test_watch_rbac_allows_exactly_what_the_watcher_needs(
    kustomize_bin: str, kube_api: KubeAPI, tmp_path: Path
) -> None:
    """The Role and RoleBinding as kustomize builds them, on the real API server, in a namespace
    of their own (the session's other tests bind roles to accounts of `argocd`)."""
    namespace = f"argocd-{uuid.uuid4().hex[:8]}"
    built = _by_kind(_build(kustomize_bin, tmp_path, namespace=namespace))
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube_api.apply(built["Role"])
    kube_api.apply(built["RoleBinding"])
    user = f"system:serviceaccount:{namespace}:argocd-repo-server"

    def allowed(verb: str, resource: str, name: str, ns: str = namespace) -> bool:
        attrs = {"namespace": ns, **({"name": name} if name else {})}
        return bool(kube_api.can(user, verb, resource, **attrs))

    wait_for(
        lambda: allowed("patch", "applications.argoproj.io", "any-app"),
        "RBAC of the shipped Role",
        timeout=30,
        interval=0.05,
    )
    found = {key: allowed(*key) for key in WATCHER_ACCESS}
    assert found == WATCHER_ACCESS
    # namespaced: Applications and Leases elsewhere are out of reach
    assert not allowed("patch", "applications.argoproj.io", "any-app", ns="argocd")
    assert not allowed("create", "leases.coordination.k8s.io", "", ns="default")


@pytest.mark.integration
def test_watch_rbac_is_enough_for_the_watcher_code(
    kustomize_bin: str, kube_api: KubeAPI, tmp_path: Path
) -> None:
    """With a real token of the bound service account, the watcher's client elects itself on
    the shipped Lease name and patches an Application: the Role misses nothing it does."""
    assert DEFAULT_LEASE_NAME == WATCH_LEASE
    namespace = f"argocd-{uuid.uuid4().hex[:8]}"
    built = _by_kind(_build(kustomize_bin, tmp_path, namespace=namespace))
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    account = {"apiVersion": "v1", "kind": "ServiceAccount"}
    kube_api.apply({**account, "metadata": {"name": "argocd-repo-server", "namespace": namespace}})
    kube_api.apply(built["Role"])
    kube_api.apply(built["RoleBinding"])
    issued = kube_api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/argocd-repo-server/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "guestbook", "namespace": namespace},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example.invalid/a.git", "path": "."},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "x"},
        },
    }
    kube_api.apply(app)

    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(issued["status"]["token"])
    (sa_dir / "namespace").write_text(namespace)
    shutil.copyfile(kube_api.ca_file, sa_dir / "ca.crt")
    host, port = kube_api.url.removeprefix("https://").rsplit(":", 1)
    config = KubeConfig.in_cluster(
        {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "PLUGIN_KUBE_SERVICE_ACCOUNT_DIR": str(sa_dir),
        }
    )
    with KubeClient(config) as client:
        elector = LeaderElector(client, ElectionConfig(identity="repo-server-0_test"))
        wait_for(elector.step, "the watcher leads on the shipped Lease", timeout=30, interval=0.1)
        patched = client.request_hard_refresh("guestbook")
        assert patched["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "hard"
        assert elector.release()
        with pytest.raises(KubeError, match="HTTP 403 Forbidden"):  # another Lease: no
            client.update_lease(
                {"metadata": {"name": "other", "namespace": namespace, "resourceVersion": "1"}}
            )
    lease = kube_api.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{WATCH_LEASE}"
    )
    assert lease["spec"]["holderIdentity"] == ""
