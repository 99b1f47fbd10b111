"""Helm applications through Argo CD's real cmp-server (the `sidecar` fixture), with Helm 3
and Helm 4 (`helm_bin`)."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cmp_harness import App
from tests.integration.cmp.conftest import SECRETS, SidecarFactory, write
from tests.real_cmp import Sidecar

pytestmark = pytest.mark.integration


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def newest(chart_repo: Any, name: str, below: str = "1.0.0") -> str:
    versions = [v for v in chart_repo.versions(name) if _version_key(v) < _version_key(below)]
    return max(versions, key=_version_key)


def umbrella_repo(root: Path, repo_url: str) -> Path:
    """apps/umbrella: webapp by range (alias front) + database pinned (alias db)."""
    return write(
        root,
        {
            "apps/umbrella/Chart.yaml": textwrap.dedent(
                f"""\
                apiVersion: v2
                name: umbrella
                version: 1.0.0
                dependencies:
                  - name: webapp
                    version: ">=0.1.0 <1.0.0"
                    repository: {repo_url}
                    alias: front
                  - name: database
                    version: 1.0.0
                    repository: {repo_url}
                    alias: db
                """
            ),
            "apps/umbrella/values.yaml": textwrap.dedent(
                """\
                front:
                  replicaCount: 2
                  config:
                    API_KEY: <path:kv/data/umbrella#apiKey>
                db:
                  instances: 3
                """
            ),
            "apps/umbrella/values-prod.yaml": "front:\n  replicaCount: 4\n",
            "README.md": "# apps\n",
        },
    )


def simple_chart(root: Path, path: str = "apps/simple", **files: str) -> Path:
    base = {
        f"{path}/Chart.yaml": "apiVersion: v2\nname: simple\nversion: 0.1.0\n",
        f"{path}/values.yaml": "replicas: 1\nmessage: hello\n",
        f"{path}/templates/cm.yaml": textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: {{ .Release.Name }}-cm
              namespace: {{ .Release.Namespace }}
            data:
              message: {{ .Values.message | quote }}
              replicas: {{ .Values.replicas | quote }}
              kube: {{ .Capabilities.KubeVersion.Version | quote }}
            """
        ),
    }
    base.update({f"{path}/{name}": text for name, text in files.items()})
    return write(root, base)


@pytest.fixture
def cmp(sidecar: SidecarFactory, helm_bin: str) -> Sidecar:
    return sidecar(helm=helm_bin)


def test_umbrella_chart_with_repository_dependencies(
    tmp_path: Path, cmp: Sidecar, chart_repo: Any
) -> None:
    repo = umbrella_repo(tmp_path / "repo", chart_repo.url)
    app = App(name="argocd_shop", namespace="shop", path="apps/umbrella")
    result = cmp.generate(repo, app)
    assert result.code == 0, result.stderr
    front = result.one("Secret", "shop-front")
    assert front["stringData"]["password"] == SECRETS["kv/data/webapp"]["password"]
    assert front["metadata"]["labels"]["helm.sh/chart"].endswith(newest(chart_repo, "webapp"))
    config = result.one("ConfigMap", "shop-front")
    assert config["data"]["API_KEY"] == SECRETS["kv/data/umbrella"]["apiKey"]
    assert result.one("Deployment")["spec"]["replicas"] == 2
    db = result.one("Secret", "shop-db-credentials")
    assert db["stringData"] == {"username": "dbuser", "password": "db-pass-5582"}
    assert result.one("Cluster")["spec"]["instances"] == 3
    assert "<path:" not in result.stdout
    assert result.stderr == ""


def test_helm_values_override_values_files(tmp_path: Path, cmp: Sidecar) -> None:
    repo = simple_chart(
        tmp_path / "repo",
        **{"values-prod.yaml": "replicas: 3\nmessage: prod\n"},
    )
    app = App(
        path="apps/simple",
        env={"VALUES_FILES": "values-prod.yaml", "HELM_VALUES": "replicas: 5\n"},
    )
    result = cmp.generate(repo, app)
    assert result.code == 0, result.stderr
    data = result.one("ConfigMap")["data"]
    assert data == {"message": "prod", "replicas": "5", "kube": "v1.29.0"}
    assert result.one("ConfigMap")["metadata"]["namespace"] == "demo-ns"


def test_kube_api_versions_gate_a_service_monitor(tmp_path: Path, cmp: Sidecar) -> None:
    monitor = textwrap.dedent(
        """\
        {{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" }}
        apiVersion: monitoring.coreos.com/v1
        kind: ServiceMonitor
        metadata:
          name: {{ .Release.Name }}
        spec:
          endpoints: [{port: http}]
        {{- end }}
        """
    )
    repo = simple_chart(tmp_path / "repo", **{"templates/monitor.yaml": monitor})
    without = cmp.generate(repo, App(path="apps/simple"))
    assert without.code == 0, without.stderr
    assert without.by_kind("ServiceMonitor") == []
    api = ("v1", "monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor")
    with_monitor = cmp.generate(repo, App(path="apps/simple", api_versions=api))
    assert with_monitor.code == 0, with_monitor.stderr
    assert len(with_monitor.by_kind("ServiceMonitor")) == 1


CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      names: {kind: Widget, plural: widgets}
      scope: Namespaced
      versions: [{name: v1, served: true, storage: true}]
    """
)


def test_include_crds_unless_skipped(tmp_path: Path, cmp: Sidecar) -> None:
    repo = simple_chart(tmp_path / "repo", **{"crds/widget.yaml": CRD})
    result = cmp.generate(repo, App(path="apps/simple"))
    assert result.code == 0, result.stderr
    assert len(result.by_kind("CustomResourceDefinition")) == 1
    skipped = cmp.generate(
        repo, App(path="apps/simple", parameters=[{"name": "skip-crds", "string": "true"}])
    )
    assert skipped.code == 0, skipped.stderr
    assert skipped.by_kind("CustomResourceDefinition") == []


@pytest.mark.parametrize(
    ("app_name", "env", "parameters", "release"),
    [
        ("myapp", {}, None, "myapp"),
        ("team-ns_myapp", {}, None, "myapp"),
        ("team-ns_myapp", {"RELEASE_NAME": "from-env"}, None, "from-env"),
        (
            "myapp",
            {"RELEASE_NAME": "from-env"},
            [{"name": "release-name", "string": "from-param"}],
            "from-param",
        ),
    ],
)
def test_release_name_rules(
    tmp_path: Path,
    cmp: Sidecar,
    app_name: str,
    env: dict[str, str],
    parameters: list[dict[str, Any]] | None,
    release: str,
) -> None:
    repo = simple_chart(tmp_path / "repo")
    app = App(name=app_name, path="apps/simple", env=env, parameters=parameters)
    result = cmp.generate(repo, app)
    assert result.code == 0, result.stderr
    assert result.one("ConfigMap")["metadata"]["name"] == f"{release}-cm"


def test_parameters_of_each_kind(tmp_path: Path, cmp: Sidecar) -> None:
    repo = simple_chart(
        tmp_path / "repo",
        **{
            "values-a.yaml": "message: from-a\nreplicas: 2\n",
            "templates/test-pod.yaml": textwrap.dedent(
                """\
                apiVersion: v1
                kind: Pod
                metadata:
                  name: {{ .Release.Name }}-test
                  annotations: {"helm.sh/hook": test}
                spec:
                  containers: [{name: t, image: busybox}]
                """
            ),
        },
    )
    write(repo, {"shared/values-common.yaml": "extra: 1\nmessage: common\n"})
    parameters = [
        {"name": "values-files", "array": ["/shared/values-common.yaml", "values-a.yaml"]},
        {"name": "values", "string": "replicas: 7\n"},
        {"name": "helm-parameters", "map": {"message": "from-set,with-comma"}},
        {"name": "namespace", "string": "other-ns"},
        {"name": "skip-tests", "string": "true"},
    ]
    result = cmp.generate(repo, App(path="apps/simple", parameters=parameters))
    assert result.code == 0, result.stderr
    cm = result.one("ConfigMap")
    assert cm["data"]["message"] == "from-set,with-comma"
    assert cm["data"]["replicas"] == "7"
    assert cm["metadata"]["namespace"] == "other-ns"
    assert result.by_kind("Pod") == []

    bad = cmp.generate(repo, App(path="apps/simple", parameters=[{"name": "nope", "string": "x"}]))
    assert bad.code != 0 and bad.stdout == ""
    assert "unknown parameter 'nope'" in bad.stderr


def test_dynamic_parameters_announce_chart_defaults(tmp_path: Path, cmp: Sidecar) -> None:
    repo = simple_chart(tmp_path / "repo")
    announced = cmp.announcements(repo, App(path="apps/simple"))
    names = [item["name"] for item in announced]
    assert names[0] == "helm-parameters"
    assert announced[0]["collectionType"] == "map"
    assert announced[0]["map"] == {"replicas": "1", "message": "hello"}
    assert {"values-files", "values", "release-name", "namespace", "skip-crds"} <= set(names)
    assert len(names) == len(set(names))
    # A directory that is not a chart still gets a JSON array.
    write(tmp_path / "plain", {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\n"})
    assert cmp.announcements(tmp_path / "plain", App())[0]["name"] == "values-files"


def test_refused_helm_args(tmp_path: Path, cmp: Sidecar) -> None:
    repo = simple_chart(tmp_path / "repo")
    for args in ("--post-renderer ./evil.sh", "--repo https://x.example.com", "--password x"):
        result = cmp.generate(repo, App(path="apps/simple", env={"HELM_ARGS": args}))
        assert result.code != 0
        assert result.stdout == ""
        assert "HELM_ARGS" in result.stderr and "not allowed" in result.stderr
        assert "evil" not in result.stderr
    allowed = cmp.generate(
        repo,
        App(path="apps/simple", env={"HELM_ARGS": "-f values.yaml --set-string replicas=9"}),
    )
    assert allowed.code == 0, allowed.stderr
    assert allowed.one("ConfigMap")["data"]["replicas"] == "9"


def test_values_file_escaping_the_repository(tmp_path: Path, cmp: Sidecar) -> None:
    """The symlink case runs `plugin` directly: Argo CD's untar never recreates a link that
    leaves the repository (it refuses a relative one and re-roots an absolute one)."""
    outside = tmp_path / "outside.yaml"
    outside.write_text("message: stolen\n")
    repo = simple_chart(tmp_path / "repo")
    for name in ("../../../outside.yaml", "/../outside.yaml"):
        result = cmp.generate(repo, App(path="apps/simple", env={"VALUES_FILES": name}))
        assert result.code != 0 and result.stdout == ""
        assert "outside the repository" in result.stderr
    # Such a link never reaches the plugin through Argo CD, so its own check runs directly.
    os.symlink(outside, repo / "apps/simple/link.yaml")
    env = {**cmp.generate_env(App(path="apps/simple")), "ARGOCD_ENV_VALUES_FILES": "link.yaml"}
    direct = cmp.run(["plugin", "generate", "."], repo / "apps/simple", env, 60)
    assert direct.code != 0 and direct.stdout == ""
    assert "outside the repository" in direct.stderr


def test_failing_helm_template(tmp_path: Path, cmp: Sidecar) -> None:
    repo = simple_chart(
        tmp_path / "repo",
        **{
            "templates/fail.yaml": '{{ fail (printf "bad password %s" .Values.password) }}\n',
            "values.yaml": "password: <path:kv/data/webapp#password>\nmessage: hi\nreplicas: 1\n",
        },
    )
    app = App(path="apps/simple", env={"RESOLVE_VALUES": "true"})
    result = cmp.generate(repo, app)
    assert result.code != 0
    assert result.stdout == ""
    assert "helm template failed" in result.stderr
    # Secrets were resolved into the values: Helm's message is withheld, its location shown.
    assert "execution error at simple/templates/fail.yaml:1:" in result.stderr
    assert "message withheld" in result.stderr
    assert "bad password" not in result.stderr
    assert SECRETS["kv/data/webapp"]["password"] not in result.stderr
    assert len(result.stderr) < 2500


def test_two_phase_secrets_reach_helm_functions(tmp_path: Path, cmp: Sidecar) -> None:
    template = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Secret
        metadata:
          name: creds
          annotations:
            checksum: {{ .Values.password | sha256sum }}
        data:
          password: {{ .Values.password | b64enc }}
          both: {{ printf "%s:%s" .Values.user .Values.password | b64enc }}
        """
    )
    repo = simple_chart(
        tmp_path / "repo",
        **{
            "templates/secret.yaml": template,
            "values.yaml": "password: <path:kv/data/database#password>\nmessage: a\nreplicas: 1\n",
        },
    )
    app = App(
        path="apps/simple",
        env={
            "RESOLVE_VALUES": "true",
            "HELM_VALUES": "user: <path:kv/data/database#username>\n",
        },
    )
    result = cmp.generate(repo, app)
    assert result.code == 0, result.stderr
    secret = result.one("Secret", "creds")
    password = SECRETS["kv/data/database"]["password"]
    assert (
        secret["metadata"]["annotations"]["checksum"]
        == hashlib.sha256(password.encode()).hexdigest()
    )
    assert base64.b64decode(secret["data"]["password"]).decode() == password
    assert base64.b64decode(secret["data"]["both"]).decode() == f"dbuser:{password}"


_HARBOR_LIKE = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Secret
    metadata:
      name: registry
    data:
      REGISTRY_HTPASSWD: {{ htpasswd "admin" .Values.password | b64enc }}
      REGISTRY_PASSWORD: {{ .Values.password | b64enc }}
    stringData:
      url: {{ .Values.url }}
    """
)


def _harbor_like(root: Path) -> Path:
    """Harbor's pattern: a placeholder consumed by htpasswd (bcrypt) and b64enc."""
    return simple_chart(
        root,
        **{
            "templates/secret.yaml": _HARBOR_LIKE,
            "values.yaml": "password: <path:kv/data/database#password>\n"
            "url: <path:kv/data/database#username>\nmessage: a\nreplicas: 1\n",
        },
    )


def test_consumed_placeholders_switch_to_two_phases_by_default(
    tmp_path: Path, cmp: Sidecar
) -> None:
    """Through the server; the `--verbose` log is read from a direct run (plugin.yaml's
    command has no `--verbose`, and no setting turns it on)."""
    repo = _harbor_like(tmp_path / "repo")
    result = cmp.generate(repo, App(path="apps/simple", env={}))
    assert result.code == 0, result.stderr
    secret = result.one("Secret", "registry")
    password = SECRETS["kv/data/database"]["password"]
    assert base64.b64decode(secret["data"]["REGISTRY_PASSWORD"]).decode() == password
    htpasswd = base64.b64decode(secret["data"]["REGISTRY_HTPASSWD"]).decode()
    assert htpasswd.startswith("admin:$2")  # a bcrypt hash (of the value, not the placeholder)
    assert secret["stringData"]["url"] == SECRETS["kv/data/database"]["username"]
    verbose = cmp.run(
        ["plugin", "generate", "--verbose", "."],
        repo / "apps/simple",
        cmp.generate_env(App(path="apps/simple")),
        60,
    )
    assert verbose.code == 0, verbose.stderr
    assert "RESOLVE_VALUES=auto" in verbose.stderr
    assert password not in verbose.stderr


def test_consumed_placeholders_are_an_error_with_resolve_values_false(
    tmp_path: Path, cmp: Sidecar
) -> None:
    repo = _harbor_like(tmp_path / "repo")
    result = cmp.generate(repo, App(path="apps/simple", env={"RESOLVE_VALUES": "false"}))
    assert result.code != 0
    assert result.stdout == ""
    assert "<path:kv/data/database#password>" in result.stderr
    assert "RESOLVE_VALUES" in result.stderr


def test_placeholders_reaching_the_output_keep_one_phase(tmp_path: Path, cmp: Sidecar) -> None:
    """A direct run: only `--verbose` tells one phase from two (plugin.yaml's command has no
    such flag)."""
    repo = simple_chart(
        tmp_path / "repo",
        **{"values.yaml": "message: <path:kv/data/database#password>\nreplicas: 1\n"},
    )
    env = cmp.generate_env(App(path="apps/simple"))
    run = cmp.run(["plugin", "generate", "--verbose", "."], repo / "apps/simple", env, 60)
    assert run.code == 0, run.stderr
    assert "RESOLVE_VALUES=auto" not in run.stderr


def test_zero_manifests_is_an_error_unless_allowed(tmp_path: Path, cmp: Sidecar) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "apps/empty/Chart.yaml": "apiVersion: v2\nname: empty\nversion: 0.1.0\n",
            "apps/empty/templates/nothing.yaml": "{{- if false }}x: y{{ end }}\n",
        },
    )
    result = cmp.generate(repo, App(path="apps/empty"))
    assert result.code != 0 and result.stdout == ""
    assert "no manifests" in result.stderr
    allowed = cmp.generate(repo, App(path="apps/empty", env={"ALLOW_EMPTY": "true"}))
    assert allowed.code == 0, allowed.stderr
    assert allowed.manifests == []


#: The fake helm below records its pids in the test's directory, which the renderer sandbox
#: (rightly) does not let it write: these tests are about killing, not confinement.
UNCONFINED = {"PLUGIN_SANDBOX": "off"}


def slow_helm(tmp_path: Path) -> tuple[Path, Path]:
    """A `helm` that starts a grandchild and hangs; it records both pids."""
    pids = tmp_path / "pids"
    script = tmp_path / "slow-helm"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n")
    script.chmod(0o755)
    return script, pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def test_deadline_kills_helm_and_names_the_stage(tmp_path: Path, sidecar: SidecarFactory) -> None:
    script, pids = slow_helm(tmp_path)
    cmp = sidecar(helm=str(script), extra={"PLUGIN_TIMEOUT": "4", **UNCONFINED})
    repo = simple_chart(tmp_path / "repo")
    result = cmp.generate(repo, App(path="apps/simple"), timeout=30)
    assert not result.timed_out
    assert result.code != 0 and result.stdout == ""
    assert "helm template ran out of time" in result.stderr
    assert "PLUGIN_TIMEOUT" in result.stderr
    assert result.seconds < 10
    started = [int(line) for line in pids.read_text().split()]
    assert _wait_dead(started) == []


def test_sigterm_kills_children(tmp_path: Path, sidecar: SidecarFactory) -> None:
    """SIGTERM to `plugin` alone, directly: the real server SIGKILLs the command when it sends
    its group SIGTERM, so the plugin's own SIGTERM handling (children killed, exit 143) is
    reachable only this way (and through the zygote's relay, tests/serve/)."""
    script, pids = slow_helm(tmp_path)
    cmp = sidecar(helm=str(script), extra=UNCONFINED)
    repo = simple_chart(tmp_path / "repo")
    app_dir = repo / "apps/simple"
    proc = subprocess.Popen(
        ["plugin", "generate", "."],
        cwd=app_dir,
        env=cmp.generate_env(App(path="apps/simple")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if pids.exists() and len(pids.read_text().split()) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert out == b""
    assert b"SIGTERM" in err
    started = [int(line) for line in pids.read_text().split()]
    assert _wait_dead(started) == []
