"""The socle-gitops scenarios (spec §7) on the example repository, through Argo CD's real
cmp-server (tests/real_cmp.py).

The example (examples/) replaces the socle's upstream charts with stand-ins: `registry` for
Harbor, `cluster` for CloudNativePG's cluster chart (alias `database` instead of `cluster`) and
`cpn-job` for the post-installation Job. Every Helm render runs with Helm 3 and Helm 4.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cmp_harness import VENV_BIN
from tests.integration.cmp.examples_support import (
    EXAMPLES,
    app_for,
    b64,
    container,
    env_of,
    examples_cmp,
    jinja_stage,
    merged_values,
    render,
    secret,
    variant,
)

pytestmark = pytest.mark.integration

VANILLA = "kv/data/vanilla"
OPENSHIFT = "kv/data/openshift"


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


# ------------------------------------------------------------------------------------- S1


def test_s1_layered_values_merge(tmp_path: Path) -> None:
    """Fragments in name order, user values last and winning, blank fragments skipped."""
    report, work = jinja_stage(tmp_path, "registry", "vanilla")
    assert report.values_fragments == (
        "values/00-main.j2",
        "values/10-affinity.j2",
        "values/100-database.j2",
        "values/200-post-install.j2",
        "values/300-user.j2",
    )
    assert report.skipped_fragments == (
        "values/10-metrics.j2",
        "values/10-platform.j2",
        "values/10-proxy.j2",
    )
    assert not (work / "values").exists()
    values = yaml.safe_load((work / "values.yaml").read_text())

    assert set(values) == {"registry", "database", "cpn-ansible-job"}
    assert "global" not in values["cpn-ansible-job"]
    registry = values["registry"]
    assert registry["core"]["replicas"] == 1  # the user's value beats 00-main's 3
    assert registry["core"]["serviceAccountName"] == "registry-sa"  # 00-main's, kept
    assert registry["proxy"] == {"components": ["core"]}  # only the user's: 10-proxy skipped
    assert registry["expose"]["tls"] == {"enabled": False}
    ingress = registry["expose"]["ingress"]
    assert ingress["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert "labels" in ingress and ingress["labels"] is None  # an empty loop leaves a null
    assert registry["metrics"] == {"enabled": False}
    affinity = registry["core"]["affinity"]["podAntiAffinity"]
    term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/instance": "vanilla-dso-registry"
    }
    cluster = values["database"]["cluster"]
    assert cluster["storage"] == {"size": "10Gi"}
    assert cluster["postgresql"]["parameters"]["max_worker_processes"] == "60"
    assert cluster["instances"] == 1  # user values of the cnpg chart (alias database)
    assert "backups" not in values["database"]
    # Placeholders are plain text to Jinja2 and to the YAML round trip.
    assert registry["image"]["registry"] == (
        f"<path:{VANILLA}/global#image | jsonPath {{.repository.docker}}>"
    )


def test_s1_rendered_output(tmp_path: Path, helm_bin: str) -> None:
    result = render(examples_cmp(helm_bin), EXAMPLES, "registry", "vanilla")
    deployment = result.one("Deployment", "vanilla-dso-registry-registry-core")
    assert deployment["spec"]["replicas"] == 1
    core = container(deployment, "core")
    assert core["image"] == "docker.io/goharbor/harbor-core:v2.11.0"
    ingress = result.one("Ingress")
    assert ingress["spec"]["rules"][0]["host"] == secret(f"{VANILLA}/global", "domain", "registry")
    assert "tls" not in ingress["spec"]
    cluster = result.one("Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["name"] == "vanilla-dso-registry-database"
    assert cluster["spec"]["instances"] == 1
    assert cluster["spec"]["storage"] == {"size": "10Gi"}
    assert cluster["spec"]["imageName"] == "ghcr.io/cloudnative-pg/postgresql:16"
    assert "backup" not in cluster["spec"]
    # The chart's `tpl` of an escaped Helm expression written by Jinja2.
    assert env_of(deployment, "core")["POSTGRESQL_HOST"] == "vanilla-dso-registry-database-rw"


# ------------------------------------------------------------------------------------- S2


def test_s2_platform_and_proxy_values(tmp_path: Path) -> None:
    values = merged_values(tmp_path, "registry", "openshift")
    assert values["cpn-ansible-job"]["global"] == {"platform": "openshift"}
    # Fragments append lists; the user's list (300-user) is appended LAST. The socle's Ansible
    # prepends user lists (["core", "core", "jobservice", ...]); see examples/README.md.
    assert values["registry"]["proxy"]["components"] == [
        "core",
        "jobservice",
        "registry",
        "trivy",
        "core",
    ]
    assert values["registry"]["core"]["extraEnv"] == [
        {"name": "LOG_LEVEL", "value": "info"},  # 00-main
        {"name": "METRICS_PORT", "value": "8001"},  # 10-metrics, appended
    ]
    # `labels: {{ dict }}` prints a Python repr, which YAML reads back as a mapping.
    assert values["registry"]["metrics"]["serviceMonitor"]["labels"] == {"release": "prom"}
    assert values["registry"]["proxy"]["noProxy"] == (
        f"<path:{OPENSHIFT}/global#proxy | jsonPath {{.noProxy}}>,.local,.internal"
    )


def test_s2_platform_and_proxy_switch(tmp_path: Path, helm_bin: str) -> None:
    cmp = examples_cmp(helm_bin)
    openshift = render(cmp, EXAMPLES, "registry", "openshift")
    vanilla = render(cmp, EXAMPLES, "registry", "vanilla")

    env = env_of(openshift.one("Deployment"), "core")
    proxy = secret(f"{OPENSHIFT}/global", "proxy")
    assert env["HTTP_PROXY"] == proxy["httpProxy"] == "http://proxy:3128"
    # The chart puts its own service names in front of the user's list.
    assert env["NO_PROXY"].startswith("openshift-dso-registry-registry-core,")
    assert env["NO_PROXY"].endswith(",.svc,localhost,.local,.internal")

    assert set(openshift.one("Secret", "ansible-secret")["stringData"]) == {
        "VAULT_INFRA_TOKEN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    }
    assert openshift.one("Secret", "ansible-secret")["stringData"]["NO_PROXY"] == ".svc,localhost"
    assert set(vanilla.one("Secret", "ansible-secret")["stringData"]) == {"VAULT_INFRA_TOKEN"}

    assert "securityContext" not in container(openshift.one("Job"), "cpn-ansible-job")
    job_context = container(vanilla.one("Job"), "cpn-ansible-job")["securityContext"]
    assert job_context["runAsUser"] == 1000 and job_context["runAsNonRoot"] is True

    monitor = openshift.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert vanilla.by_kind("ServiceMonitor") == []
    assert openshift.one("Ingress")["spec"]["tls"][0]["secretName"] == "wildcard-tls"
    assert openshift.one("Ingress")["metadata"]["labels"]["router"] == "internal"


# ------------------------------------------------------------------------------------- S3


def test_s3_openshift_nulls_remove_subchart_defaults(tmp_path: Path, helm_bin: str) -> None:
    """helm/helm#32132: Helm 4 ignores a null for a subchart key in the chart's own values.yaml;
    the plugin passes the merged values.yaml as the first --values file, so both Helms drop it."""
    _, work = jinja_stage(tmp_path, "registry", "openshift")
    text = (work / "values.yaml").read_text()
    assert "runAsUser: null" in text and "fsGroup: null" in text  # serialized, not dropped
    values = yaml.safe_load(text)
    assert values["registry"]["core"]["podSecurityContext"] == {"runAsUser": None, "fsGroup": None}

    result = render(examples_cmp(helm_bin), EXAMPLES, "registry", "openshift")
    pod = result.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True}
    vanilla = render(examples_cmp(helm_bin), EXAMPLES, "registry", "vanilla")
    assert vanilla.one("Deployment")["spec"]["template"]["spec"]["securityContext"] == {
        "runAsUser": 10000,
        "fsGroup": 10000,
        "runAsNonRoot": True,
    }


def test_s3_helm4_needs_the_merged_values_as_a_values_file(tmp_path: Path, helm4_bin: str) -> None:
    """Control for the test above: with the merged values only as the chart's values.yaml,
    Helm 4 keeps runAsUser. If this fails, helm/helm#32132 is fixed in the pinned Helm 4."""
    _, work = jinja_stage(tmp_path, "registry", "openshift")
    for chart in ("registry", "cluster", "cpn-job"):
        shutil.copytree(EXAMPLES / "charts" / chart, work / "charts" / chart)
    argv = [helm4_bin, "template", "x", str(work)]
    home = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    chart_only = subprocess.run(argv, capture_output=True, text=True, check=True, env=home)
    with_file = subprocess.run(
        [*argv, "-f", str(work / "values.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env=home,
    )
    assert "runAsUser: 10000" in chart_only.stdout
    assert "runAsUser: 10000" not in with_file.stdout


def test_s3_blank_templates_and_fragments(tmp_path: Path, helm_bin: str) -> None:
    report, work = jinja_stage(tmp_path, "registry", "vanilla")
    assert report.skipped_blank == ("templates/secret-db-backup.yaml",)
    assert not (work / "templates/secret-db-backup.yaml").exists()
    assert not list(work.rglob("*.j2"))
    result = render(examples_cmp(helm_bin), EXAMPLES, "registry", "vanilla")
    assert [m["metadata"]["name"] for m in result.by_kind("Secret")].count(
        "registry-db-backup"
    ) == 0

    report, work = jinja_stage(tmp_path, "registry", "openshift")
    assert report.skipped_blank == ()
    openshift = render(examples_cmp(helm_bin), EXAMPLES, "registry", "openshift")
    assert openshift.one("Secret", "registry-db-backup")["stringData"] == {
        "ACCESS_KEY_ID": secret(f"{OPENSHIFT}/global", "backup", "s3AccessKey"),
        "ACCESS_SECRET_KEY": secret(f"{OPENSHIFT}/global", "backup", "s3SecretKey"),
    }


def test_s3_global_app_without_dependencies(tmp_path: Path, helm_bin: str) -> None:
    report, work = jinja_stage(tmp_path, "global", "vanilla")
    chart = yaml.safe_load((work / "Chart.yaml").read_text())
    assert "dependencies" not in chart
    assert yaml.safe_load((work / "values.yaml").read_text()) == {"global": {}}
    assert report.skipped_blank == ("templates/backup-s3-secret.yaml",)

    result = render(examples_cmp(helm_bin), EXAMPLES, "global", "vanilla")
    assert sorted((m["kind"], m["metadata"]["name"]) for m in result.manifests) == [
        ("ConfigMap", "platform-info"),
        ("Namespace", "dso-registry"),
        ("Namespace", "dso-tests"),
    ]
    info = result.one("ConfigMap", "platform-info")["data"]
    assert info == {
        "platform": "kubernetes",
        "environment": "development",
        "rootDomain": "apps.vanilla.example.com",
        "ingressClassName": "nginx",
        "proxy": "false",
        "metrics": "false",
    }


def test_s3_global_app_with_backups(tmp_path: Path, helm_bin: str) -> None:
    _, work = jinja_stage(tmp_path, "global", "openshift")
    chart = yaml.safe_load((work / "Chart.yaml").read_text())
    assert [(d["name"], d["alias"]) for d in chart["dependencies"]] == [
        ("cpn-job", "cpn-ansible-job")
    ]
    values = yaml.safe_load((work / "values.yaml").read_text())
    assert values["global"] == {"imagePullSecrets": [{"name": "registry-pull"}]}
    assert values["cpn-ansible-job"]["global"] == {"platform": "openshift"}

    result = render(examples_cmp(helm_bin), EXAMPLES, "global", "openshift")
    job = result.one("Job")
    # dsc.global.values reached the subchart through Helm's `global`.
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert result.one("CronJob")["spec"]["schedule"] == "7 1 * * *"
    assert [n["metadata"]["name"] for n in result.by_kind("Namespace")] == ["dso-registry"]
    assert result.one("Secret", "backup-s3")["stringData"]["AWS_ACCESS_KEY_ID"] == "AKIADEMO"


# ------------------------------------------------------------------------------------- S4


@pytest.mark.parametrize("cluster", ["vanilla", "openshift"])
def test_s4_secret_encodings(tmp_path: Path, helm_bin: str, cluster: str) -> None:
    vault = f"kv/data/{cluster}"
    result = render(examples_cmp(helm_bin), EXAMPLES, "registry", cluster)
    # The chart applied b64enc to the placeholder: decoded, replaced, encoded again.
    core = result.one("Secret", f"{cluster}-dso-registry-registry-core")
    password = secret(f"{vault}/registry", "admin", "password")
    assert core["data"]["REGISTRY_ADMIN_PASSWORD"] == b64(password)
    # Jinja-time b64encode (no placeholder) and the base64encode modifier.
    credentials = result.one("Secret", "registry-db-credentials")
    assert credentials["data"] == {
        "username": "cmVnaXN0cnk=",
        "password": b64(secret(f"{vault}/registry", "database", "password")),
    }
    # A Vault value that is already base64 is copied verbatim, not encoded twice.
    oidc = result.one("Secret", "registry-oidc")
    assert oidc["data"]["provider"] == secret(f"{vault}/registry", "oidcProvider")
    assert oidc["data"]["provider"] == b64("name: openid_connect\nlabel: Keycloak\n")
    ansible = result.one("Secret", "ansible-secret")
    assert ansible["stringData"]["VAULT_INFRA_TOKEN"] == secret(
        f"{vault}/global", "vault_infra_token"
    )
    assert ansible["metadata"]["namespace"] == "dso-registry"


# ------------------------------------------------------------------------------------- S8


def test_s8_dependencies_and_aliases(tmp_path: Path) -> None:
    _, work = jinja_stage(tmp_path, "registry", "vanilla")
    chart = yaml.safe_load((work / "Chart.yaml").read_text())
    assert chart["version"] == "2.1.0"
    assert [
        (d["name"], d["alias"], d["version"], d["repository"]) for d in chart["dependencies"]
    ] == [
        ("registry", "registry", "2.1.0", "file://../../charts/registry"),
        ("cluster", "database", "0.3.1", "file://../../charts/cluster"),
        ("cpn-job", "cpn-ansible-job", "1.1.0", "file://../../charts/cpn-job"),
    ]


def test_s8_one_chart_under_two_aliases(tmp_path: Path, helm_bin: str) -> None:
    result = render(examples_cmp(helm_bin), EXAMPLES, "tests", "vanilla")
    jobs = {job["metadata"]["name"]: job for job in result.by_kind("Job")}
    assert set(jobs) == {
        "vanilla-dso-tests-registry-integration-test",
        "vanilla-dso-tests-database-integration-test",
    }
    registry = jobs["vanilla-dso-tests-registry-integration-test"]
    database = jobs["vanilla-dso-tests-database-integration-test"]
    assert container(registry, "registry-integration-test")["image"] == (
        "ghcr.io/cloud-pi-native/tests:1"
    )
    assert container(database, "database-integration-test")["image"] == (
        "docker.io/library/postgres:16"
    )
    ping = container(registry, "registry-integration-test")["command"][2]
    assert ping == "curl -fsS https://registry.apps.vanilla.example.com/api/v2.0/ping"
    assert registry["metadata"]["annotations"] == {
        "argocd.argoproj.io/hook": "PostSync",
        "argocd.argoproj.io/hook-delete-policy": "HookSucceeded",
    }
    # Helm map-merges the alias's annotations with the chart's defaults.
    assert database["metadata"]["annotations"] == {
        "argocd.argoproj.io/hook": "Sync",
        "argocd.argoproj.io/hook-delete-policy": "HookSucceeded",
    }
    assert [c["metadata"]["name"] for c in result.by_kind("CronJob")] == [
        "vanilla-dso-tests-database-integration-test"
    ]
    assert sorted(sa["metadata"]["name"] for sa in result.by_kind("ServiceAccount")) == [
        "database-integration-test",
        "registry-integration-test",
    ]


def test_s8_version_range_against_a_chart_repository(
    tmp_path: Path, helm_bin: str, chart_repo: Any
) -> None:
    """`'>=0.0.0 <1.0.0'` (what `quote` writes) against 0.1.8, 0.2.0 and 1.0.0 gives 0.2.0."""
    for version in ("0.1.8", "0.2.0", "1.0.0"):
        if version not in chart_repo.versions("cpn-job"):
            chart_repo.publish(EXAMPLES / "charts" / "cpn-job", version)

    def change(config: dict[str, Any]) -> None:
        config["dsc"]["cpnAnsibleJob"] = {
            "helmRepoUrl": chart_repo.url,
            "chartVersion": ">=0.0.0 <1.0.0",
        }

    repo = variant(tmp_path, "ranged", "vanilla", change)
    _, work = jinja_stage(tmp_path, "registry", "ranged", repo=repo)
    assert "version: '>=0.0.0 <1.0.0'" in (work / "Chart.yaml").read_text()
    result = render(examples_cmp(helm_bin), repo, "registry", "ranged", env_name="x")
    assert result.one("Job")["metadata"]["labels"]["helm.sh/chart"] == "cpn-job-0.2.0"


def test_s8_file_dependency_version_range(tmp_path: Path, helm_bin: str) -> None:
    def ranged(config: dict[str, Any]) -> None:
        config["dsc"]["cpnAnsibleJob"]["chartVersion"] = ">=1.0.0 <2.0.0"

    def unsatisfiable(config: dict[str, Any]) -> None:
        config["dsc"]["cpnAnsibleJob"]["chartVersion"] = ">=2.0.0"

    variant(tmp_path, "ranged", "vanilla", ranged)
    repo = variant(tmp_path, "too-new", "vanilla", unsatisfiable)
    cmp = examples_cmp(helm_bin)
    result = render(cmp, repo, "registry", "ranged", env_name="x")
    assert result.one("Job")["metadata"]["labels"]["helm.sh/chart"] == "cpn-job-1.1.0"
    refused = cmp.generate(repo, app_for("registry", "too-new"))
    assert refused.code == 1 and refused.stdout == ""
    assert "cpn-job (alias cpn-ansible-job) >=2.0.0" in refused.stderr
    assert "has version 1.1.0" in refused.stderr


# ------------------------------------------------------------------------------------- S9


@pytest.mark.parametrize("cluster", ["vanilla", "openshift"])
def test_s9_post_install_job(tmp_path: Path, helm_bin: str, cluster: str) -> None:
    result = render(examples_cmp(helm_bin), EXAMPLES, "registry", cluster)
    jobs = result.by_kind("Job")
    assert len(jobs) == 1
    job = jobs[0]
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["name"] == f"{cluster}-dso-registry-cpn-ansible-job"
    assert job["metadata"]["annotations"] == {
        "argocd.argoproj.io/hook": "PostSync",
        "argocd.argoproj.io/hook-delete-policy": "HookSucceeded",
    }
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cpn-ansible-job"
    assert pod["restartPolicy"] == "OnFailure"
    assert job["spec"]["backoffLimit"] == 6
    assert result.one("ServiceAccount", "cpn-ansible-job")
    main = container(job, "cpn-ansible-job")
    ghcr = secret(f"kv/data/{cluster}/global", "image", "repository", "ghcr")
    assert main["image"] == f"{ghcr}/cloud-pi-native/git-ansible:1"
    assert main["command"][:2] == ["/bin/sh", "-c"]
    assert (
        "git clone https://github.com/cloud-pi-native/socle.git -b main socle" in main["command"][2]
    )
    assert "ansible-playbook post-install/registry.yaml" in main["command"][2]
    assert main["envFrom"][0]["secretRef"]["name"] == "ansible-secret"
    assert result.by_kind("CronJob") == []
    binding = result.one("RoleBinding", "post-install-secrets-access")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cpn-ansible-job", "namespace": "dso-registry"}
    ]


# --------------------------------------------------------------------------- failure modes


def test_undefined_variable_names_file_and_line(tmp_path: Path, helm_bin: str) -> None:
    def change(config: dict[str, Any]) -> None:
        del config["dsc"]["registry"]["postgresPvcSize"]

    repo = variant(tmp_path, "incomplete", "vanilla", change)
    result = examples_cmp(helm_bin).generate(repo, app_for("registry", "incomplete"))
    assert result.code == 1
    assert result.stdout == ""
    line = _line_of(EXAMPLES / "apps/registry/values/100-database.j2", "postgresPvcSize")
    assert (
        f"values/100-database.j2:{line}: 'dsc.registry.postgresPvcSize' is undefined"
        in result.stderr
    )


@pytest.mark.parametrize(
    "entry",
    ["/../outside.yaml", "../../../outside.yaml", "/clusters/../../outside.yaml"],
)
def test_context_file_outside_the_repository(tmp_path: Path, helm3_bin: str, entry: str) -> None:
    cmp = examples_cmp(helm3_bin)
    # Every entry names this file, just above the request's copy of the repository (the
    # server unpacks each request into a directory of its own): it exists, so the refusal is
    # not a "does not exist".
    outside = cmp.requests_dir / "outside.yaml"
    outside.write_text("dsc: {}\n")
    try:
        result = cmp.generate(EXAMPLES, app_for("registry", "vanilla", context_files=[entry]))
    finally:
        outside.unlink()
    assert result.code == 1 and result.stdout == ""
    assert f"context file {entry!r}: refused, it resolves outside the repository" in result.stderr


def test_context_file_symlink_leaving_the_repository(tmp_path: Path, helm3_bin: str) -> None:
    """Through the CLI directly: Argo CD's untar never recreates a link leaving the repository
    (it refuses a relative one and re-roots an absolute one inside the copy)."""
    repo = variant(tmp_path, "same", "vanilla", lambda config: None)
    (tmp_path / "elsewhere.yaml").write_text((repo / "clusters/vanilla.yaml").read_text())
    (repo / "clusters/link.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HELM_BIN": helm3_bin,
        "AVP_TYPE": "file",
        "AVP_FILE_PATH": str(EXAMPLES / "secrets.yaml"),
        "ARGOCD_APP_NAME": "vanilla-dso-registry",
        "ARGOCD_APP_SOURCE_PATH": "apps/registry",
        "ARGOCD_APP_PARAMETERS": json.dumps(
            [{"name": "context-files", "array": ["/clusters/link.yaml"]}]
        ),
    }
    done = subprocess.run(
        [str(VENV_BIN / "plugin"), "generate", "apps/registry"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "'/clusters/link.yaml': refused, it resolves outside the repository" in done.stderr
    env["ARGOCD_APP_PARAMETERS"] = env["ARGOCD_APP_PARAMETERS"].replace("link", "vanilla")
    control = subprocess.run(
        [str(VENV_BIN / "plugin"), "generate", "apps/registry"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert control.returncode == 0, control.stderr


SANDBOX_ESCAPES = {
    "dunder": ("{{ ''.__class__.__mro__ }}", "'__class__' (a name starting with '_')"),
    "globals": ("{{ cycler.__init__.__globals__ }}", "'__init__' (a name starting with '_')"),
    "lookup": ("{{ lookup('file', '/etc/passwd') }}", "lookup() is not available"),
    "clock": ("{{ now() }}", "now() is not available"),
    "range": ("{{ range(10**9) | list | length }}", "Range too big"),
}


@pytest.mark.parametrize("name", sorted(SANDBOX_ESCAPES))
def test_sandbox_escape_is_refused(tmp_path: Path, helm_bin: str, name: str) -> None:
    expression, message = SANDBOX_ESCAPES[name]
    template = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: escape\ndata:\n"
        f'  value: "{expression}"\n'
    )
    repo = variant(
        tmp_path,
        "same",
        "vanilla",
        lambda config: None,
        files={"apps/global/templates/escape.yaml.j2": template},
    )
    result = examples_cmp(helm_bin).generate(repo, app_for("global", "vanilla"))
    assert result.code == 1
    assert result.stdout == ""
    assert "templates/escape.yaml.j2:6: " in result.stderr
    assert message in result.stderr
    assert "root:" not in result.stderr


@pytest.mark.parametrize(("app", "cluster"), [("registry", "openshift"), ("global", "vanilla")])
def test_renders_are_deterministic(tmp_path: Path, helm_bin: str, app: str, cluster: str) -> None:
    cmp = examples_cmp(helm_bin)
    first = render(cmp, EXAMPLES, app, cluster)
    second = render(cmp, EXAMPLES, app, cluster)
    assert first.stdout == second.stdout
    assert len(first.manifests) > 2
