"""Tests for plugin.templating.appdir: context building and in-place app rendering."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from plugin.errors import RenderError
from plugin.templating.appdir import (
    RenderReport,
    build_context,
    render_app_dir,
)

PLACEHOLDER = (
    "<path:dso-sandbox/data/env/conf-dso/apps/global/values#image | jsonPath {.repository.docker}>"
    "/goharbor/harbor-core"
)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dsc_context(platform: str = "kubernetes", proxy: bool = False) -> dict[str, Any]:
    return {
        "dsc": {
            "global": {
                "platform": platform,
                "gitOps": {"envName": "sandbox"},
                "metrics": {
                    "enabled": platform == "openshift",
                    "additionalLabels": {"release": "prom"},
                },
            },
            "proxy": {"enabled": proxy},
            "ingress": {
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "labels": {},
            },
            "harbor": {
                "namespace": "dso-harbor",
                "postgresPvcSize": "10Gi",
                "values": {"core": {"replicas": 1}, "proxy": {"components": ["core"]}},
            },
        },
        "dsc_name": "conf-dso",
        "vaultinfra_kv_name": "dso-sandbox",
    }


HARBOR_CHART = """\
apiVersion: v2
name: harbor
version: {{ '1.17.1' | quote }}
dependencies:
- name: cluster
  alias: cluster
  version: 0.3.1
  repository: https://cloudnative-pg.io/charts
- name: harbor
  alias: harbor
  version: 1.17.1
  repository: https://helm.goharbor.io
"""

IMAGE_TEMPLATE = (
    "<path:{{ vaultinfra_kv_name }}/data/env/{{ dsc_name }}/apps/global/values#image"
    " | jsonPath {.repository.docker}>/goharbor/harbor-core"
)

HARBOR_FRAGMENTS = {
    "values/00-main.j2": """\
harbor:
  core:
    replicas: 3
    serviceAccountName: harbor-sa
    image:
      repository: @IMAGE@
  expose:
    tls:
      enabled: {{ dsc.ingress.tls is defined and dsc.ingress.tls.type != 'none' }}
    ingress:
      annotations: {{ dsc.ingress.annotations }}
      labels:
{% for k, v in dsc.ingress.labels.items() %}
        {{ k }}: {{ v }}
{% endfor %}
  metrics:
    enabled: {{ dsc.global.metrics.enabled }}
  securityContext:
    fsGroup: 10000
    runAsUser: 10000
""".replace("@IMAGE@", IMAGE_TEMPLATE),
    "values/10-affinity.j2": """\
harbor:
  core:
    affinity:
      podAntiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            labelSelector:
              matchLabels:
                app.kubernetes.io/instance: {{ dsc.global.gitOps.envName }}-{{
                  dsc.harbor.namespace }}
""",
    "values/10-platform.j2": """\
{% if dsc.global.platform == 'openshift' %}
cpn-ansible-job:
  global:
    platform: openshift
harbor:
  securityContext:
    fsGroup: null
    runAsUser: null
{% endif %}
""",
    "values/10-proxy.j2": """\
{% if dsc.proxy.enabled %}
harbor:
  proxy:
    httpProxy: <path:dso-sandbox/data/env/conf-dso/apps/global/values#proxy | jsonPath {.httpProxy}>
    components: [jobservice, registry]
  core:
    extraEnvVars:
    - name: HTTP_PROXY
      value: http://proxy:3128
{% endif %}
""",
    "values/100-cnpg.j2": """\
cluster:
  cluster:
    storage:
      size: {{ dsc.harbor.postgresPvcSize }}
    postgresql:
      parameters:
        max_worker_processes: "60"
""",
    "values/200-ansible-job.j2": """\
cpn-ansible-job:
  image: ghcr.io/cloud-pi-native/git-ansible:1
""",
    "values/300-user.j2": "{{ {'harbor': dsc.harbor['values']} | to_nice_yaml }}",
}


def make_harbor(root: Path, *, extra_env: bool = False) -> Path:
    app = root / "gitops/envs/conf-dso/apps/harbor"
    write(app, "Chart.yaml.j2", HARBOR_CHART)
    for rel, text in HARBOR_FRAGMENTS.items():
        write(app, rel, text)
    if extra_env:
        write(
            app,
            "values/00-main.j2",
            HARBOR_FRAGMENTS["values/00-main.j2"]
            + "  core:\n    extraEnvVars:\n    - name: BASE\n      value: '1'\n",
        )
    write(app, "templates/ingress.yaml.j2", "kind: Ingress\nname: {{ dsc.harbor.namespace }}\n")
    write(
        app,
        "templates/bundle-cnpg-s3-secret.yaml.j2",
        "{% if dsc.global.backup is defined and dsc.global.backup.cnpg.enabled %}\n"
        "kind: Secret\n{% endif %}\n",
    )
    write(app, "templates/secret-ansible.yaml", "kind: Secret\nname: {{ .Release.Name }}\n")
    return app


# --- build_context ---------------------------------------------------------------------


def test_build_context_merges_files_in_order(tmp_path: Path) -> None:
    app = tmp_path / "gitops/apps/harbor"
    write(
        tmp_path, "conf/releases.yaml", "dsc: {harbor: {chartVersion: 1.0.0, list: [1, 2]}, a: 1}\n"
    )
    write(tmp_path, "conf/config.yaml", "dsc: {harbor: {namespace: dso-harbor, list: [3]}}\n")
    write(app, "local.yaml", "dsc: {harbor: {chartVersion: 1.17.1}}\ndsc_name: conf-dso\n")
    context = build_context(
        tmp_path, app, ["/conf/releases.yaml", "../../../conf/config.yaml", "local.yaml"], {}
    )
    assert context["dsc"] == {
        "harbor": {"chartVersion": "1.17.1", "list": [3], "namespace": "dso-harbor"},
        "a": 1,
    }
    assert context["dsc_name"] == "conf-dso"


def test_build_context_argocd_and_env(tmp_path: Path) -> None:
    environ = {
        "ARGOCD_APP_NAME": "sandbox-dso-harbor",
        "ARGOCD_APP_NAMESPACE": "dso-harbor",
        "ARGOCD_APP_PROJECT_NAME": "default",
        "KUBE_VERSION": "1.30.2",
        "KUBE_API_VERSIONS": "v1,apps/v1, monitoring.coreos.com/v1,",
        "ARGOCD_APP_REVISION": "0123456789abcdef",
        "ARGOCD_APP_SOURCE_REPO_URL": "https://git.example.com/gitops.git",
        "ARGOCD_APP_SOURCE_PATH": "gitops/envs/conf-dso/apps/harbor",
        "ARGOCD_ENV_HELM_ARGS": "-f values.yaml",
        "ARGOCD_ENV_AVP_SECRET": "vault-plugin-secret",
        "ARGOCD_ENV_": "ignored",
        "HOME": "/root",
        "VAULT_TOKEN": "s3cr3t",
    }
    context = build_context(tmp_path, tmp_path, [], environ)
    assert context["argocd"] == {
        "app_name": "sandbox-dso-harbor",
        "namespace": "dso-harbor",
        "project": "default",
        "kube_version": "1.30.2",
        "api_versions": ["v1", "apps/v1", "monitoring.coreos.com/v1"],
        "revision": "0123456789abcdef",
        "revision_short": "",
        "repo_url": "https://git.example.com/gitops.git",
        "source_path": "gitops/envs/conf-dso/apps/harbor",
        "target_revision": "",
    }
    assert context["env"] == {"AVP_SECRET": "vault-plugin-secret", "HELM_ARGS": "-f values.yaml"}
    assert "s3cr3t" not in repr(context)
    assert build_context(tmp_path, tmp_path, [], {})["argocd"]["api_versions"] == []


@pytest.mark.parametrize("key", ["argocd", "env"])
def test_build_context_reserved_keys_are_refused(tmp_path: Path, key: str) -> None:
    write(tmp_path, "ctx.yaml", f"{key}: {{app_name: spoofed}}\n")
    with pytest.raises(RenderError, match=f"top-level key '{key}' is reserved"):
        build_context(tmp_path, tmp_path, ["ctx.yaml"], {"ARGOCD_APP_NAME": "real"})


def test_build_context_refuses_dotdot_outside_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, "secret.yaml", "a: 1\n")
    with pytest.raises(RenderError, match="resolves outside the repository"):
        build_context(repo, repo / "apps/x", ["../../../secret.yaml"], {})
    with pytest.raises(RenderError, match="resolves outside the repository"):
        build_context(repo, repo, ["/../secret.yaml"], {})


def test_build_context_refuses_symlink_outside_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, "outside.yaml", "a: 1\n")
    write(repo, "apps/x/ok.yaml", "a: 2\n")
    (repo / "apps/x/link.yaml").symlink_to(tmp_path / "outside.yaml")
    (repo / "apps/x/inside-link.yaml").symlink_to(repo / "apps/x/ok.yaml")
    with pytest.raises(RenderError, match=r"'link.yaml': refused, it resolves outside"):
        build_context(repo, repo / "apps/x", ["link.yaml"], {})
    assert build_context(repo, repo / "apps/x", ["inside-link.yaml"], {})["a"] == 2


def test_build_context_absolute_path_is_repo_relative(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", "root: x\n")
    assert build_context(tmp_path, tmp_path / "apps/a", ["/etc/passwd"], {})["root"] == "x"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("- a\n- b\n", "expected a YAML mapping at the top level, got a list"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("a: [1\n", r"context file c.yaml:2: invalid YAML"),
        ("1: x\n", "top-level key 1 is not a string"),
    ],
)
def test_build_context_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        write(tmp_path, "c.yaml", content)
    with pytest.raises(RenderError, match=message):
        build_context(tmp_path, tmp_path, ["c.yaml"], {})


def test_build_context_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(RenderError, match="is not a regular file"):
        build_context(tmp_path, tmp_path, ["d.yaml"], {})


# --- render_app_dir: activation -----------------------------------------------------------


def test_no_j2_means_nothing_happens(tmp_path: Path) -> None:
    write(tmp_path, "Chart.yaml", "apiVersion: v2\nname: x\nversion: 1.0.0  # comment\n")
    write(tmp_path, "values.yaml", "a: 1\n")
    write(tmp_path, "values/prod.yaml", "a: 2\n")  # e.g. a chart's own env files
    write(tmp_path, "templates/cm.yaml", "{{ .Values.a }}\n")
    before = {p: (tmp_path / p).read_bytes() for p in tree(tmp_path) if (tmp_path / p).is_file()}
    report = render_app_dir(tmp_path, {})
    assert report == RenderReport(app_dir=tmp_path)
    assert not report.jinja_mode
    assert report.merged_values_file is None
    after = {p: (tmp_path / p).read_bytes() for p in tree(tmp_path) if (tmp_path / p).is_file()}
    assert after == before


def test_missing_app_dir(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="does not exist or is not a directory"):
        render_app_dir(tmp_path / "nope", {})


# --- render_app_dir: S1, S2, S3 -------------------------------------------------------


def test_s1_layered_values_kubernetes(tmp_path: Path) -> None:
    app = make_harbor(tmp_path)
    report = render_app_dir(app, dsc_context("kubernetes", proxy=False), root=tmp_path)

    assert report.jinja_mode
    assert report.values_fragments == (
        "values/00-main.j2",
        "values/10-affinity.j2",
        "values/100-cnpg.j2",
        "values/200-ansible-job.j2",
        "values/300-user.j2",
    )
    assert report.skipped_fragments == ("values/10-platform.j2", "values/10-proxy.j2")
    assert report.merged_values_file == (app / "values.yaml").absolute()

    values = load(app / "values.yaml")
    assert set(values) == {"cluster", "cpn-ansible-job", "harbor"}
    assert "global" not in values["cpn-ansible-job"]
    harbor = values["harbor"]
    assert harbor["core"]["replicas"] == 1  # user value beats 00-main's 3
    assert harbor["core"]["serviceAccountName"] == "harbor-sa"
    assert harbor["proxy"] == {"components": ["core"]}
    assert harbor["expose"]["tls"]["enabled"] is False
    assert harbor["expose"]["ingress"]["annotations"] == {
        "cert-manager.io/cluster-issuer": "letsencrypt"
    }
    assert "labels" in harbor["expose"]["ingress"]
    assert harbor["expose"]["ingress"]["labels"] is None
    assert harbor["metrics"]["enabled"] is False
    assert harbor["securityContext"] == {"fsGroup": 10000, "runAsUser": 10000}
    match_labels = harbor["core"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ][0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert match_labels["app.kubernetes.io/instance"] == "sandbox-dso-harbor"
    assert values["cluster"]["cluster"]["storage"]["size"] == "10Gi"
    assert values["cluster"]["cluster"]["postgresql"]["parameters"]["max_worker_processes"] == "60"
    assert "backups" not in values["cluster"]["cluster"]
    assert harbor["core"]["image"]["repository"] == PLACEHOLDER

    assert tree(app) == [
        "Chart.yaml",
        "templates",
        "templates/ingress.yaml",
        "templates/secret-ansible.yaml",
        "values.yaml",
    ]
    assert report.skipped_blank == ("templates/bundle-cnpg-s3-secret.yaml",)
    assert (app / "templates/secret-ansible.yaml").read_text() == (
        "kind: Secret\nname: {{ .Release.Name }}\n"
    )
    assert (app / "templates/ingress.yaml").read_text() == "kind: Ingress\nname: dso-harbor\n"


def test_s2_platform_and_proxy_switch(tmp_path: Path) -> None:
    app = make_harbor(tmp_path, extra_env=True)
    render_app_dir(app, dsc_context("openshift", proxy=True))
    values = load(app / "values.yaml")
    assert values["cpn-ansible-job"]["global"]["platform"] == "openshift"
    harbor = values["harbor"]
    # fragment lists are appended in file order, the user's last
    assert harbor["proxy"]["components"] == ["jobservice", "registry", "core"]
    assert harbor["core"]["extraEnvVars"] == [
        {"name": "BASE", "value": "1"},
        {"name": "HTTP_PROXY", "value": "http://proxy:3128"},
    ]
    assert harbor["proxy"]["httpProxy"].startswith("<path:dso-sandbox/data/")
    assert harbor["metrics"]["enabled"] is True
    # explicit nulls from 10-platform replace the values and are written as null
    assert harbor["securityContext"] == {"fsGroup": None, "runAsUser": None}
    assert "fsGroup: null" in (app / "values.yaml").read_text()


def test_s3_empty_renders_and_global_values(tmp_path: Path) -> None:
    app = tmp_path / "apps/global"
    write(
        app,
        "Chart.yaml.j2",
        "apiVersion: v2\nname: global\nversion: 1.0.0\n"
        "{% if dsc.global.backup.cnpg.enabled %}\ndependencies:\n- name: cpn-job\n{% endif %}\n",
    )
    write(
        app,
        "values/10-platform.j2",
        "{% if dsc.global.platform == 'openshift' %}\n"
        "cpn-ansible-job:\n  global:\n    platform: openshift\n{% endif %}\n",
    )
    write(app, "values/300-user.j2", "global: {{ dsc.global['values'] | default({}) }}\n")
    write(
        app,
        "values/100-cnpg.j2",
        "{% if dsc.global.backup.cnpg.enabled %}\ncluster: {}\n{% endif %}\n",
    )
    write(
        app,
        "templates/bundle-cnpg-s3-secret.yaml.j2",
        "{% if false %}\nkind: Secret\n{% endif %}\n",
    )
    write(app, "templates/none.yaml.j2", "{{ none }}\n")
    context = {"dsc": {"global": {"platform": "openshift", "backup": {"cnpg": {"enabled": False}}}}}

    report = render_app_dir(app, context)

    assert load(app / "Chart.yaml") == {"apiVersion": "v2", "name": "global", "version": "1.0.0"}
    assert load(app / "values.yaml") == {
        "cpn-ansible-job": {"global": {"platform": "openshift"}},
        "global": {},
    }
    assert not (app / "templates/bundle-cnpg-s3-secret.yaml").exists()
    assert not (app / "templates/none.yaml").exists()
    assert report.skipped_blank == ("templates/bundle-cnpg-s3-secret.yaml", "templates/none.yaml")
    assert report.skipped_fragments == ("values/100-cnpg.j2",)
    assert not (app / "values").exists()
    assert not list(app.rglob("*.j2"))


def test_nulls_are_kept_in_values_yaml(tmp_path: Path) -> None:
    write(tmp_path, "values/00-main.j2", "sonarqube:\n  securityContext:\n    fsGroup: 1000\n")
    write(
        tmp_path,
        "values/10-platform.j2",
        "sonarqube:\n  securityContext:\n    fsGroup: null\n"
        "  containerSecurityContext:\n    runAsUser: ~\n",
    )
    render_app_dir(tmp_path, {})
    text = (tmp_path / "values.yaml").read_text()
    assert "fsGroup: null" in text
    assert "runAsUser: null" in text
    assert load(tmp_path / "values.yaml") == {
        "sonarqube": {
            "securityContext": {"fsGroup": None},
            "containerSecurityContext": {"runAsUser": None},
        }
    }


# --- values fragments ---------------------------------------------------------------------


def test_fragment_order_matches_ansible(tmp_path: Path) -> None:
    names = ["300-y.j2", "10-proxy.j2", "200-x.yaml", "100-cnpg.j2", "00-main.j2", "10-Zeta.j2"]
    for name in names:
        write(tmp_path, f"values/{name}", f"order: [{name!r}]\n")
    write(tmp_path, "values/.hidden.yaml", "order: [hidden]\n")
    write(tmp_path, "values/sub/nested.j2", "order: [nested]\n")
    report = render_app_dir(tmp_path, {})
    # Jinja's sort (used by the socle's Ansible) ignores case: 10-proxy < 10-Zeta
    expected = [
        "00-main.j2",
        "10-proxy.j2",
        "10-Zeta.j2",
        "100-cnpg.j2",
        "200-x.yaml",
        "300-y.j2",
    ]
    assert report.values_fragments == tuple(f"values/{n}" for n in expected)
    assert load(tmp_path / "values.yaml") == {"order": expected}
    assert any("values/sub: ignored" in w for w in report.warnings)
    assert not (tmp_path / "values").exists()


def test_fragments_fold_over_existing_values_yaml(tmp_path: Path) -> None:
    write(tmp_path, "values.yaml", "# base\na: {b: 1, l: [1]}\nz: keep\n")
    write(tmp_path, "values/10-x.yaml", "a: {c: 2, l: [2]}\ntpl: '{{ .Release.Name }}'\n")
    write(tmp_path, "templates/t.yaml.j2", "x: 1\n")
    report = render_app_dir(tmp_path, {})
    assert load(tmp_path / "values.yaml") == {
        "a": {"b": 1, "l": [1, 2], "c": 2},
        "z": "keep",
        "tpl": "{{ .Release.Name }}",  # plain fragments are not Jinja-rendered
    }
    assert report.values_fragments == ("values/10-x.yaml",)


def test_values_yaml_j2_is_the_base(tmp_path: Path) -> None:
    write(tmp_path, "values.yaml.j2", "name: {{ n }}\nl: [0]\n")
    write(tmp_path, "values/10-x.j2", "l: [{{ n | length }}]\n")
    report = render_app_dir(tmp_path, {"n": "abc"})
    assert load(tmp_path / "values.yaml") == {"name": "abc", "l": [0, 3]}
    assert report.rendered == ("values.yaml",)


def test_only_plain_fragments_with_other_j2_elsewhere(tmp_path: Path) -> None:
    write(tmp_path, "Chart.yaml.j2", "apiVersion: v2\nname: x\nversion: 1.0.0\n")
    write(tmp_path, "values/00.yaml", "a: 1\n")
    render_app_dir(tmp_path, {})
    assert load(tmp_path / "values.yaml") == {"a": 1}


def test_fragment_with_invalid_yaml_names_fragment_and_line(tmp_path: Path) -> None:
    write(tmp_path, "values/00-main.j2", "a: 1\nb:\n  c: [1\n")
    with pytest.raises(RenderError) as info:
        render_app_dir(tmp_path, {})
    message = str(info.value)
    assert message.startswith("values/00-main.j2:")
    assert "invalid YAML in the rendered output" in message
    line = int(message.split(":")[1])
    assert line in (3, 4)


def test_fragment_that_is_not_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, "values/00-main.j2", "- a\n- b\n")
    with pytest.raises(
        RenderError,
        match=r"values/00-main.j2: a values fragment must be a YAML mapping, got a list",
    ):
        render_app_dir(tmp_path, {})


def test_fragment_rendering_to_none_text_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "values/00-main.j2", "a: 1\n")
    write(tmp_path, "values/10-x.j2", "{{ none }}\n")
    write(tmp_path, "values/20-y.j2", "# only comments\n\n")
    report = render_app_dir(tmp_path, {})
    assert report.skipped_fragments == ("values/10-x.j2", "values/20-y.j2")
    assert load(tmp_path / "values.yaml") == {"a": 1}


def test_undefined_in_fragment_names_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "values/10-proxy.j2",
        "proxy:\n  enabled: true\n  url: {{ dsc.proxy.http_proxy }}\n",
    )
    message = (
        r"^values/10-proxy.j2:3: 'dsc.proxy.http_proxy' is undefined \('dsc.proxy' is undefined\)$"
    )
    with pytest.raises(RenderError, match=message):
        render_app_dir(tmp_path, {"dsc": {}})


def test_bad_existing_values_yaml(tmp_path: Path) -> None:
    write(tmp_path, "values.yaml", "- 1\n")
    write(tmp_path, "values/00.j2", "a: 1\n")
    with pytest.raises(RenderError, match=r"values\.yaml: expected a YAML mapping, got a list"):
        render_app_dir(tmp_path, {})


def test_multiline_strings_and_placeholders_round_trip(tmp_path: Path) -> None:
    write(
        tmp_path,
        "values/00.j2",
        "config:\n  policy.csv: |\n    g, admins, role:admin\n"
        "    p, cpin-sa, applications, *, *, allow\n"
        f"  image: {PLACEHOLDER}\n"
        "  oidc: |\n    rootCA: |\n      <path:kv/data/x#exposedCa | indent 2>\n",
    )
    render_app_dir(tmp_path, {})
    text = (tmp_path / "values.yaml").read_text()
    assert "policy.csv: |" in text
    assert f"image: {PLACEHOLDER}\n" in text  # no line folding
    values = load(tmp_path / "values.yaml")
    assert values["config"]["policy.csv"].endswith("p, cpin-sa, applications, *, *, allow\n")
    assert values["config"]["oidc"] == "rootCA: |\n  <path:kv/data/x#exposedCa | indent 2>\n"
    assert values["config"]["image"] == PLACEHOLDER


# --- Chart.yaml and other templates ----------------------------------------------------


def test_chart_yaml_is_reserialized_and_numeric_versions_kept_as_strings(tmp_path: Path) -> None:
    write(
        tmp_path,
        "Chart.yaml.j2",
        "# comment\nname: x\napiVersion: v2\nversion: {{ '1.0' | quote }}\nappVersion: 1.10\n"
        "dependencies:\n- name: a\n  version: {{ '>=0.0.0 <1.0.0' | quote }}\n"
        "- name: b\n  version: 2\n",
    )
    report = render_app_dir(tmp_path, {})
    chart = load(tmp_path / "Chart.yaml")
    assert chart == {
        "apiVersion": "v2",
        "appVersion": "1.10",
        "dependencies": [{"name": "a", "version": ">=0.0.0 <1.0.0"}, {"name": "b", "version": "2"}],
        "name": "x",
        "version": "1.0",
    }
    text = (tmp_path / "Chart.yaml").read_text()
    assert text.startswith("apiVersion: v2\nappVersion: '1.10'\n")  # sorted keys, comment dropped
    assert len(report.warnings) == 3
    assert any("version 1.0 is a YAML number" in w for w in report.warnings)
    assert any("dependencies[1].version 2" in w for w in report.warnings)


def test_chart_yaml_errors(tmp_path: Path) -> None:
    write(tmp_path, "Chart.yaml.j2", "{% if false %}name: x{% endif %}\n")
    with pytest.raises(RenderError, match=r"Chart\.yaml\.j2: rendered to an empty document"):
        render_app_dir(tmp_path, {})
    write(tmp_path, "Chart.yaml.j2", "name: [x\n")
    with pytest.raises(RenderError, match=r"Chart.yaml.j2:2: invalid YAML in the rendered output"):
        render_app_dir(tmp_path, {})


def test_other_j2_files_anywhere_except_charts_files_and_hidden(tmp_path: Path) -> None:
    write(tmp_path, "kustomization.yaml.j2", "resources: [{{ 'base' }}]\n")
    write(tmp_path, "base/deploy.yaml.j2", "name: {{ n }}\n")
    write(tmp_path, "crds/crd.yaml.j2", "kind: {{ 'CRD' }}\n")
    write(tmp_path, "templates/secret-vault-backuo.j2", "kind: Secret\n")
    write(tmp_path, "files/playbook.yml.j2", "{{ ansible_only }}\n")
    write(tmp_path, "charts/sub/values.yaml.j2", "{{ not_ours }}\n")
    write(tmp_path, ".github/x.j2", "{{ nope }}\n")
    report = render_app_dir(tmp_path, {"n": "web"})
    assert report.rendered == (
        "base/deploy.yaml",
        "crds/crd.yaml",
        "kustomization.yaml",
        "templates/secret-vault-backuo",
    )
    assert (tmp_path / "kustomization.yaml").read_text() == "resources: [base]\n"
    assert (tmp_path / "base/deploy.yaml").read_text() == "name: web\n"
    assert (tmp_path / "files/playbook.yml.j2").exists()
    assert (tmp_path / "charts/sub/values.yaml.j2").exists()
    assert (tmp_path / ".github/x.j2").exists()
    assert report.merged_values_file is None


def test_existing_output_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "templates/users.yaml.j2", "users: {{ undefined_var }}\n")
    write(tmp_path, "templates/users.yaml", "users: [operator-owned]\n")
    report = render_app_dir(tmp_path, {})
    assert (tmp_path / "templates/users.yaml").read_text() == "users: [operator-owned]\n"
    assert report.kept_existing == ("templates/users.yaml",)
    assert not (tmp_path / "templates/users.yaml.j2").exists()
    assert any("already exists" in w for w in report.warnings)


def test_template_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "templates/a.yaml.j2", "a: 1\nb: {{ ''.__class__ }}\n")
    with pytest.raises(RenderError, match=r"^templates/a.yaml.j2:2: access to '__class__'"):
        render_app_dir(tmp_path, {})


def test_symlinked_source_outside_root_is_refused(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret.j2", "top secret\n")
    app = tmp_path / "repo/app"
    app.mkdir(parents=True)
    (app / "templates").mkdir()
    (app / "templates/leak.yaml.j2").symlink_to(outside)
    with pytest.raises(RenderError, match=r"templates/leak\.yaml\.j2: refused, it is a symlink"):
        render_app_dir(app, {}, root=tmp_path / "repo")


def test_symlinked_source_inside_root_is_allowed(tmp_path: Path) -> None:
    shared = write(tmp_path, "repo/common/secret-ansible.yaml.j2", "name: {{ n }}\n")
    app = tmp_path / "repo/apps/x"
    (app / "templates").mkdir(parents=True)
    (app / "templates/secret-ansible.yaml.j2").symlink_to(shared)
    render_app_dir(app, {"n": "x"}, root=tmp_path / "repo")
    assert (app / "templates/secret-ansible.yaml").read_text() == "name: x\n"
    assert not (app / "templates/secret-ansible.yaml").is_symlink()
    assert shared.exists()  # only the link was removed


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    source = make_harbor(tmp_path / "src")
    outputs = []
    for run in ("a", "b"):
        copy_dir = tmp_path / run
        shutil.copytree(source, copy_dir)
        render_app_dir(copy_dir, dsc_context("openshift", proxy=True))
        outputs.append(
            {p: (copy_dir / p).read_bytes() for p in tree(copy_dir) if (copy_dir / p).is_file()}
        )
    assert outputs[0] == outputs[1]
    assert "values.yaml" in outputs[0]


# --- YAML output -------------------------------------------------------------------------

# PyYAML itself cannot round-trip the Unicode line separators NEL, LS and PS in plain or
# quoted scalars (a limitation Ansible shares); everything else must survive.


def test_report_paths_are_relative_posix(tmp_path: Path) -> None:
    write(tmp_path, "templates/a.yaml.j2", "a: 1\n")
    report = render_app_dir(tmp_path, {})
    assert report.rendered == ("templates/a.yaml",)
    assert report.removed == ("templates/a.yaml.j2",)
    assert all(not os.path.isabs(p) for p in report.rendered + report.removed)
