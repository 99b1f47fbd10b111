"""The YAML under cmp-config/ and examples/: it parses, Kubernetes objects validate against the
Kubernetes schemas (kubernetes-validate, offline), the rest passes structural checks.

- plugin.yaml (and the variant with discovery) follows the CMP contract's rules;
- the Kustomize Component builds with the real kustomize against a minimal local stand-in of
  Argo CD's `argocd-repo-server` Deployment (the real install cannot be fetched offline), and
  the result has the sidecar with the required mounts and the restrictive securityContext;
- the Helm values hold exactly the same container and volumes as the Kustomize patch;
- the example Application and ApplicationSet select the plugin by its name and only use
  parameters the plugin knows.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from plugin.argocd.request import PARAMETERS

ROOT = Path(__file__).resolve().parents[2]
CMP_CONFIG = ROOT / "cmp-config"
INSTALL = CMP_CONFIG / "install"
COMPONENT = INSTALL / "kustomize"
PATCH = COMPONENT / "repo-server-patch.yaml"
HELM_VALUES = INSTALL / "helm-values.yaml"
PLUGIN_YAMLS = (CMP_CONFIG / "plugin.yaml", CMP_CONFIG / "plugin-with-discovery.yaml")
K8S_VERSION = kubernetes_validate.latest_version()
SIDECAR = "argocd-secrets-plugin"
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
                assert set(doc["repoServer"]) == {"extraContainers", "volumes"}
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
    repo_server = [c for c in pod["containers"] if c["name"] != SIDECAR]
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


def _build(kustomize_bin: str, tmp_path: Path, extra: str = "") -> list[dict[str, Any]]:
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
        "namespace: argocd\n"
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


def test_component_builds_onto_the_repo_server(kustomize_bin: str, tmp_path: Path) -> None:
    (deployment,) = _build(kustomize_bin, tmp_path)
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
    assert [c for c in pod["containers"] if c["name"] != SIDECAR] == stock["containers"]
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
    (deployment,) = _build(kustomize_bin, tmp_path, extra)
    sidecar = _sidecar(deployment["spec"]["template"]["spec"])
    assert sidecar["image"] == "registry.example.com/platform/argocd-secrets-plugin:1.2.3"
