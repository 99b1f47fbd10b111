"""The plugin behind the real Argo CD: argocd-cmp-server 3.6.2 built from Argo CD's Go module,
driven by cmp-client through the repo-server's own code (tests/real_cmp.py).

Every render is compared with the direct, in-process `plugin generate` of the same request
(tests/cmp_harness.py builds its copy and environment) as Argo CD's own YAML splitter reads it
(goyaml-json), so a render through the server (and the zygote, PLUGIN_TEST_SERVE=1) is held to
the direct answer. Failures are compared word for word
with the messages Argo CD builds. The last tests pin down the real server's deadline handling,
which the plugin's own deadline (PLUGIN_TIMEOUT) is designed around.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cmp_harness import (
    DEFAULT_API_VERSIONS,
    PLUGIN_WITH_DISCOVERY_YAML,
    PLUGIN_YAML,
    App,
    DirectResult,
    direct_generate,
    sidecar_env,
)
from tests.integration.cmp.conftest import SECRETS, RealCmpFactory, write
from tests.real_cmp import CmpResult, RealCmpServer, goyaml_json, plugin_name, require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
PLUGIN = plugin_name(PLUGIN_YAML)  # argocd-secrets-plugin-v1

SECRET_MANIFEST = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Secret
    metadata:
      name: db
    type: Opaque
    stringData:
      username: <path:kv/data/database#username>
      password: <path:kv/data/database#password>
    """
)
CONFIGMAP = textwrap.dedent(
    """\
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: settings
    data:
      replicas: "3"
      enabled: "true"
      empty: ""
    """
)


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sidecar home per module (helm cache, plugin cache, secrets file)."""
    root = tmp_path_factory.mktemp("real-cmp-sidecar")
    (root / "secrets.yaml").write_text(yaml.safe_dump(SECRETS))
    return root


def sidecar(
    home: Path,
    secrets: Path | None = None,
    *,
    helm: str | None = None,
    kustomize: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The sidecar container's environment (PATH has .venv/bin, where `plugin` lives)."""
    return sidecar_env(
        home,
        helm=helm,
        kustomize=kustomize,
        secrets_file=secrets or home / "secrets.yaml",
        extra=extra,
    )


def direct(env: Mapping[str, str], repo: Path, app: App, timeout: float = 60.0) -> DirectResult:
    """`plugin generate .` in-process on a copy made like the server's (tests/cmp_harness.py)."""
    return direct_generate(env, repo, app, timeout=timeout)


def real(server: RealCmpServer, repo: Path, app: App, **kwargs: Any) -> CmpResult:
    """The same request through argocd-cmp-server and the repo-server's code."""
    return server.generate(
        repo / app.path,
        dict(app.env),
        app.parameters,
        repo=repo,
        app={
            "app-name": app.name,
            "app-namespace": app.namespace,
            "project": app.project,
            "revision": app.revision,
            "repo-url": app.repo_url,
            "target-revision": app.target_revision,
        },
        kube_version=app.kube_version,
        api_versions=app.api_versions,
        **kwargs,
    )


def go_read(stdout: str) -> list[Any]:
    """What Argo CD's splitter makes of a plugin's stdout (Lists flattened like the
    repo-server)."""
    objects: list[Any] = []
    for doc in goyaml_json(stdout):
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            objects.extend(doc["items"])
        else:
            objects.append(doc)
    return objects


def same_render(server: RealCmpServer, env: Mapping[str, str], repo: Path, app: App) -> CmpResult:
    """Render through the real server and directly; both must succeed with the same objects."""
    got = real(server, repo, app)
    want = direct(env, repo, app)
    assert want.code == 0, want.stderr
    assert got.ok, got.data
    assert got.exit_code == 0
    assert got.manifests == go_read(want.stdout)
    assert got.manifests, "an empty render"
    assert "<path:" not in str(got.manifests)
    return got


# --- plugin.yaml as Argo CD reads it ---------------------------------------------------------


def test_check_plugin_configuration(real_cmp: RealCmpFactory, home: Path) -> None:
    plain = real_cmp(sidecar(home)).check()
    assert plain.ok, plain.data
    assert plain.data["is_discovery_configured"] is False
    assert plain.data["provide_git_creds"] is False
    discovering = real_cmp(sidecar(home), config=PLUGIN_WITH_DISCOVERY_YAML).check()
    assert discovering.data["is_discovery_configured"] is True


def test_socket_is_named_after_the_plugin(real_cmp: RealCmpFactory, home: Path) -> None:
    server = real_cmp(sidecar(home))
    assert server.socket_path.name == f"{PLUGIN}.sock"
    assert server.socket_path.is_socket()
    assert "No discovery configuration is defined for plugin argocd-secrets-plugin" in server.log()


def test_sigterm_only_removes_the_socket(home: Path, tmp_path: Path) -> None:
    """On SIGTERM (a pod being stopped) argocd-cmp-server removes its socket and stays up: new
    requests fail, and it ends only with SIGKILL at the end of the grace period."""
    server = RealCmpServer(
        require("argocd-cmp-server"), require("cmp-client"), PLUGIN_YAML, sidecar(home), tmp_path
    )
    with server:
        assert server.pid is not None and server.check().ok
        os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while server.socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.socket_path.exists()
        time.sleep(1)
        assert server.running
        refused = server.check()
        assert not refused.ok
        assert "connect: no such file or directory" in refused.error


def test_zygote_beside_the_server_as_the_image_starts_it(home: Path, tmp_path: Path) -> None:
    """`plugin serve --exec argocd-cmp-server` (the image's command): the server replaces the
    `plugin` process, the zygote serves every `plugin` command it runs, and the check that the
    PLUGIN_TEST_SERVE=1 run relies on notices a render that did not go through the zygote."""
    env = {k: v for k, v in sidecar(home).items() if k != "PLUGIN_SERVE"}
    server = RealCmpServer(
        require("argocd-cmp-server"),
        require("cmp-client"),
        PLUGIN_YAML,
        env,
        tmp_path / "server",
        serve=True,
        log_level="debug",
        log_format="json",
    )
    (tmp_path / "server").mkdir()
    repo = write(tmp_path / "repo", {"app/secret.yaml": SECRET_MANIFEST})
    with server:
        assert server.pid is not None
        assert Path(f"/proc/{server.pid}/exe").resolve() == Path(server.server_bin).resolve()
        for _ in range(2):
            got = server.generate(repo / "app", repo=repo)
            assert got.ok and got.manifests[0]["stringData"] == SECRETS["kv/data/database"]
        assert server.plugin_execs() == 2
        server.check_zygote()
        status = server.zygote_status()
        assert status is not None
        os.kill(int(status["pid"]), signal.SIGKILL)  # from now on the client renders itself
        assert server.generate(repo / "app", repo=repo).ok
        with pytest.raises(AssertionError, match="zygote"):
            server.check_zygote()


# --- renders compared with plugin generate ---------------------------------------------------


EXAMPLE_API_VERSIONS = (*DEFAULT_API_VERSIONS, "monitoring.coreos.com/v1")


def example_app(app: str, cluster: str, via_env: bool = False) -> App:
    """The Application an ApplicationSet would make (examples/README.md), the cluster named by
    the `context-files` parameter, or by the CONTEXT_FILES setting (as `make demo` does)."""
    context = f"/clusters/{cluster}.yaml"
    return App(
        name=f"{cluster}-dso-{app}",
        namespace=f"dso-{app}",
        path=f"apps/{app}",
        api_versions=EXAMPLE_API_VERSIONS,
        env={"CONTEXT_FILES": context} if via_env else {},
        parameters=None if via_env else [{"name": "context-files", "array": [context]}],
    )


@pytest.mark.parametrize("cluster", ["vanilla", "openshift"])
@pytest.mark.parametrize("app", ["registry", "global", "tests"])
def test_examples(
    real_cmp: RealCmpFactory, home: Path, helm3_bin: str, app: str, cluster: str
) -> None:
    env = sidecar(home, EXAMPLES / "secrets.yaml", helm=helm3_bin)
    got = same_render(real_cmp(env), env, EXAMPLES, example_app(app, cluster))
    assert got.data["source_type"] == "Plugin"


def test_example_registry_with_the_demo_settings(
    real_cmp: RealCmpFactory, home: Path, helm3_bin: str
) -> None:
    """`make demo`'s settings (file backend, CONTEXT_FILES) give what the parameter gives."""
    env = sidecar(home, EXAMPLES / "secrets.yaml", helm=helm3_bin)
    server = real_cmp(env)
    by_setting = same_render(server, env, EXAMPLES, example_app("registry", "vanilla", True))
    by_parameter = real(server, EXAMPLES, example_app("registry", "vanilla"))
    assert by_setting.manifests == by_parameter.manifests
    kinds = sorted({m["kind"] for m in by_setting.manifests})
    assert kinds == [
        "Cluster",
        "Deployment",
        "Ingress",
        "Job",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    deployment = next(m for m in by_setting.manifests if m["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "vanilla-dso-registry-registry-core"


def test_plain_directory(real_cmp: RealCmpFactory, home: Path, tmp_path: Path) -> None:
    repo = write(
        tmp_path / "repo",
        {"apps/plain/secret.yaml": SECRET_MANIFEST, "apps/plain/cm.yaml": CONFIGMAP},
    )
    env = sidecar(home)
    got = same_render(real_cmp(env), env, repo, App(path="apps/plain"))
    secret = next(m for m in got.manifests if m["kind"] == "Secret")
    assert secret["stringData"] == SECRETS["kv/data/database"]
    configmap = next(m for m in got.manifests if m["kind"] == "ConfigMap")
    assert configmap["data"] == {"replicas": "3", "enabled": "true", "empty": ""}


def test_helm_chart(real_cmp: RealCmpFactory, home: Path, helm_bin: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tests" / "charts" / "webapp", repo / "apps" / "webapp")
    env = sidecar(home, helm=helm_bin)
    app = App(
        name="web",
        namespace="web-ns",
        path="apps/webapp",
        parameters=[{"name": "values", "string": "replicaCount: 2\n"}],
    )
    got = same_render(real_cmp(env), env, repo, app)
    secret = next(m for m in got.manifests if m["kind"] == "Secret")
    assert secret["stringData"]["password"] == SECRETS["kv/data/webapp"]["password"]
    deployment = next(m for m in got.manifests if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["name"] == "web-webapp"  # release name = Application name


def test_kustomization(
    real_cmp: RealCmpFactory, home: Path, kustomize_bin: str, tmp_path: Path
) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "base/kustomization.yaml": "resources: [secret.yaml, cm.yaml]\n",
            "base/secret.yaml": SECRET_MANIFEST,
            "base/cm.yaml": CONFIGMAP,
            "overlays/prod/kustomization.yaml": "resources: [../../base]\nnamePrefix: prod-\n"
            "namespace: prod\n",
        },
    )
    env = sidecar(home, kustomize=kustomize_bin)
    got = same_render(real_cmp(env), env, repo, App(path="overlays/prod"))
    secret = next(m for m in got.manifests if m["kind"] == "Secret")
    assert secret["metadata"] == {"name": "prod-db", "namespace": "prod"}
    assert secret["stringData"]["password"] == SECRETS["kv/data/database"]["password"]


# --- a failing render, as the Application shows it -------------------------------------------


def test_unresolved_placeholder_fails_with_argocds_message(
    real_cmp: RealCmpFactory, home: Path, tmp_path: Path
) -> None:
    repo = write(
        tmp_path / "repo",
        {
            "apps/broken/secret.yaml": SECRET_MANIFEST,
            "apps/broken/missing.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n"
            "stringData: {key: <path:kv/data/missing#key>}\n",
        },
    )
    env = sidecar(home)
    app = App(name="broken-app", path="apps/broken")
    want = direct(env, repo, app)
    assert want.code == 1 and want.stdout == ""
    got = real(real_cmp(env), repo, app)
    assert not got.ok and got.exit_code == 1
    assert got.manifests == []
    # The cmp-server's status: the command, Go's exit error, then the plugin's stderr.
    assert got.cmp_code == "Unknown"
    assert got.cmp_message == (
        f"error generating manifests: `plugin generate .` failed exit status 1: "
        f"{want.stderr.strip()}"
    )
    # The repo-server's wrapping, then what the Application condition says.
    assert got.error == (
        'CMP processing failed for application "broken-app": error generating manifests in '
        f"cmp: rpc error: code = Unknown desc = {got.cmp_message}"
    )
    assert got.condition == (
        "Failed to load target state: failed to generate manifest for source 1 of 1: "
        f"rpc error: code = Unknown desc = {got.error}"
    )
    assert "kv/data/missing" in got.condition
    for value in SECRETS["kv/data/database"].values():
        assert str(value) not in got.condition  # the resolved secrets never reach the UI


@pytest.mark.parametrize("level", ["info", "debug"])
def test_cmp_server_log_and_secrets(home: Path, tmp_path: Path, level: str) -> None:
    """What reaches the sidecar's log: never a secret at info level (the plugin keeps them off
    stderr, which the cmp-server logs), the whole output at debug level (docs/security.md)."""
    repo = write(tmp_path / "repo", {"apps/plain/secret.yaml": SECRET_MANIFEST})
    server = RealCmpServer(
        require("argocd-cmp-server"),
        require("cmp-client"),
        PLUGIN_YAML,
        sidecar(home),
        tmp_path / "server",
        log_level=level,
    )
    (tmp_path / "server").mkdir()
    with server:
        assert server.generate(repo / "apps/plain", repo=repo).ok
        write(repo, {"apps/plain/bad.yaml": "kind: ConfigMap\ndata: {x: <path:kv/data/nope#x>}\n"})
        assert not server.generate(repo / "apps/plain", repo=repo).ok
    log = server.log()
    assert "`plugin generate .` failed exit status 1" in log
    leaked = [v for v in SECRETS["kv/data/database"].values() if str(v) in log]
    assert leaked == ([] if level == "info" else list(SECRETS["kv/data/database"].values()))


# --- discovery (plugin-with-discovery.yaml) --------------------------------------------------


@pytest.fixture(scope="module")
def discovering(
    real_cmp: RealCmpFactory, home: Path, helm3_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> RealCmpServer:
    """The discovery variant alone in its socket directory, like a single sidecar."""
    socket_dir = tmp_path_factory.mktemp("cmp-disc")
    return real_cmp(sidecar(home, helm=helm3_bin), PLUGIN_WITH_DISCOVERY_YAML, socket_dir)


def discovery_repo(root: Path) -> Path:
    return write(
        root,
        {
            "apps/chart/Chart.yaml": "apiVersion: v2\nname: simple\nversion: 0.1.0\n",
            "apps/chart/templates/secret.yaml": SECRET_MANIFEST,
            "apps/notes/README.md": "nothing to render here\n",
        },
    )


def test_discovery_matches_what_the_plugin_renders(
    discovering: RealCmpServer, tmp_path: Path
) -> None:
    repo = discovery_repo(tmp_path / "repo")
    chart = discovering.match(repo / "apps/chart", repo=repo)
    assert chart.data == {**chart.data, "ok": True, "is_supported": True}
    assert chart.data["is_discovery_enabled"] is True
    notes = discovering.match(repo / "apps/notes", repo=repo)
    assert notes.data == {**notes.data, "ok": True, "is_supported": False}


def test_discovery_selects_the_sidecar_without_a_name(
    discovering: RealCmpServer, tmp_path: Path
) -> None:
    repo = discovery_repo(tmp_path / "repo")
    named = discovering.generate(repo / "apps/chart", repo=repo)
    unnamed = discovering.generate(repo / "apps/chart", repo=repo, plugin="")
    # No plugin block at all: Argo CD asks the sidecars before looking for Chart.yaml.
    detected = discovering.generate(repo / "apps/chart", repo=repo, no_plugin_block=True)
    for result in (named, unnamed, detected):
        assert result.ok, result.data
        assert result.data["source_type"] == "Plugin"
        assert result.manifests == named.manifests
    assert named.manifests[0]["stringData"] == SECRETS["kv/data/database"]


def test_discovery_refusal_names_the_plugin(discovering: RealCmpServer, tmp_path: Path) -> None:
    repo = discovery_repo(tmp_path / "repo")
    named = discovering.generate(repo / "apps/notes", repo=repo)
    assert not named.ok and named.manifests == []
    assert named.error == (
        'CMP processing failed for application "demo": could not find cmp-server plugin with '
        f'name "{PLUGIN}" supporting the given repository'
    )
    unnamed = discovering.generate(repo / "apps/notes", repo=repo, plugin="")
    assert unnamed.error.endswith("could not find plugin supporting the given repository")


def test_parameters_announcement(discovering: RealCmpServer, tmp_path: Path) -> None:
    repo = discovery_repo(tmp_path / "repo")
    write(repo, {"apps/chart/values.yaml": "image:\n  tag: v1\nreplicas: 2\n"})
    got = discovering.parameters(repo / "apps/chart", repo=repo)
    assert got.ok, got.data
    announcements = got.data["announcements"]
    static = yaml.safe_load(PLUGIN_WITH_DISCOVERY_YAML.read_text())["spec"]["parameters"]["static"]
    # dynamic first (the chart's values as one map parameter), then the static list
    assert announcements[0]["name"] == "helm-parameters"
    assert announcements[0]["collectionType"] == "map"
    assert announcements[0]["map"] == {"image.tag": "v1", "replicas": "2"}
    assert [a["name"] for a in announcements[1:]] == [s["name"] for s in static]


# --- deadlines: what the real cmp-server does, and what the plugin does about it -------------


#: The fake helm below records its pids in the test's directory, which the renderer sandbox
#: (rightly) does not let it write: these tests are about killing, not confinement.
UNCONFINED = {"PLUGIN_SANDBOX": "off"}


def slow_helm(tmp_path: Path) -> tuple[Path, Path]:
    """A `helm` that starts a grandchild and hangs; it records both pids (helm's first)."""
    pids = tmp_path / "pids"
    script = tmp_path / "slow-helm"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n")
    script.chmod(0o755)
    return script, pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def chart_repo(root: Path) -> Path:
    return write(
        root,
        {
            "apps/chart/Chart.yaml": "apiVersion: v2\nname: simple\nversion: 0.1.0\n",
            "apps/chart/templates/cm.yaml": CONFIGMAP,
        },
    )


#: What the client sees when the deadline passes while the command still holds its stdout: the
#: gRPC deadline, reported either way depending on which side of the stream notices first.
DEADLINE_MESSAGES = (
    "context deadline exceeded",
    "stream terminated by RST_STREAM with error code: CANCEL",
)


def deadline_render(real_cmp: RealCmpFactory, home: Path, tmp_path: Path) -> tuple[CmpResult, Path]:
    """A render that hangs in helm, cut by a 3 s Argo CD deadline (PLUGIN_TIMEOUT is 50 s)."""
    script, pids = slow_helm(tmp_path)
    server = real_cmp(sidecar(home, helm=str(script), extra=UNCONFINED))
    repo = chart_repo(tmp_path / "repo")
    return server.generate(repo / "apps/chart", repo=repo, timeout=3.0), pids


def test_argocd_deadline_kills_the_render(
    real_cmp: RealCmpFactory, home: Path, tmp_path: Path
) -> None:
    """Argo CD's deadline first. 100 ms before it the cmp-server SIGKILLs `plugin generate`
    (so the plugin's own SIGTERM handling never runs) and SIGTERMs its process group, where
    helm is (it also dies with the plugin, PR_SET_PDEATHSIG). When all is gone within
    those 100 ms the Application shows "failed signal: killed" with no word of a deadline;
    otherwise the gRPC deadline."""
    got, pids = deadline_render(real_cmp, home, tmp_path)
    assert not got.ok and got.manifests == []
    killed = "error generating manifests: `plugin generate .` failed signal: killed"
    assert (got.cmp_code, got.cmp_message) in [
        ("Unknown", killed),
        *(("DeadlineExceeded", message) for message in DEADLINE_MESSAGES),
    ]
    assert got.condition.endswith(f"desc = {got.cmp_message}")
    assert 2.8 <= got.seconds < 5.0
    helm = int(pids.read_text().split()[0])
    assert wait_dead([helm], timeout=3.0) == [], "helm outlived the deadline"


def test_argocd_deadline_kills_what_helm_started(
    real_cmp: RealCmpFactory, home: Path, tmp_path: Path
) -> None:
    """helm's own children (plugins, post-renderers, credential helpers; here a `sleep`) die
    too. In process: helm stays in the plugin's process group, which the cmp-server SIGTERMs
    (PR_SET_PDEATHSIG alone reaches only helm); with the zygote: its supervisor kills what is
    left under the worker when the client is killed."""
    got, pids = deadline_render(real_cmp, home, tmp_path)
    assert not got.ok
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 2
    try:
        assert wait_dead(started, timeout=3.0) == [], "a child of helm outlived the deadline"
    finally:
        for pid in started:  # the test's own processes: leave none behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_plugin_timeout_ends_first_with_a_message(
    real_cmp: RealCmpFactory, home: Path, tmp_path: Path
) -> None:
    """PLUGIN_TIMEOUT below Argo CD's deadline: the Application shows the plugin's reason."""
    script, pids = slow_helm(tmp_path)
    server = real_cmp(sidecar(home, helm=str(script), extra={"PLUGIN_TIMEOUT": "4", **UNCONFINED}))
    repo = chart_repo(tmp_path / "repo")
    got = server.generate(repo / "apps/chart", repo=repo, timeout=30.0)
    assert not got.ok and got.cmp_code == "Unknown"
    assert got.cmp_message.startswith("error generating manifests: `plugin generate .` failed")
    assert "helm template ran out of time" in got.condition
    assert "PLUGIN_TIMEOUT" in got.condition
    assert got.seconds < 10
    assert wait_dead([int(line) for line in pids.read_text().split()], timeout=5.0) == []


def shell_plugin(tmp_path: Path, script: str) -> Path:
    """A plugin.yaml whose generate command is a shell script."""
    config = tmp_path / "shell-plugin" / "plugin.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "ConfigManagementPlugin",
                "metadata": {"name": "shell"},
                "spec": {"generate": {"command": ["sh", "-c", script]}},
            }
        )
    )
    return config


def test_exec_timeout_does_not_apply_to_sidecars(
    real_cmp: RealCmpFactory, home: Path, tmp_path: Path
) -> None:
    """ARGOCD_EXEC_TIMEOUT is not read by argocd-cmp-server: only the request deadline (and
    the plugin's own PLUGIN_TIMEOUT) bound a render."""
    config = shell_plugin(tmp_path, "sleep 2; cat cm.yaml")
    server = real_cmp({**sidecar(home), "ARGOCD_EXEC_TIMEOUT": "1s"}, config)
    repo = write(tmp_path / "repo", {"app/cm.yaml": CONFIGMAP})
    got = server.generate(repo / "app", repo=repo, timeout=20.0)
    assert got.ok, got.data
    assert got.seconds >= 2
    assert got.manifests[0]["metadata"]["name"] == "settings"


def test_sigkill_follows_sigterm_five_seconds_later(
    real_cmp: RealCmpFactory, home: Path, tmp_path: Path
) -> None:
    """At the deadline the command's process group gets SIGTERM and the command itself
    SIGKILL; whatever ignores SIGTERM is killed 5 s later. The answer does not wait."""
    pidfile = tmp_path / "child.pid"
    config = shell_plugin(
        tmp_path, 'trap "" TERM; sleep 60 & echo $! > "$ARGOCD_ENV_PIDFILE"; wait'
    )
    server = real_cmp(sidecar(home), config)
    repo = write(tmp_path / "repo", {"app/cm.yaml": CONFIGMAP})
    started = time.monotonic()
    got = server.generate(repo / "app", {"PIDFILE": str(pidfile)}, repo=repo, timeout=2.0)
    answered = time.monotonic() - started
    assert not got.ok and got.cmp_code == "DeadlineExceeded"
    assert got.cmp_message in DEADLINE_MESSAGES
    assert answered < 4.0
    child = int(pidfile.read_text())
    deadline_at = started + 2.0
    time.sleep(max(0.0, deadline_at + 1.0 - time.monotonic()))
    assert alive(child), "SIGTERM is ignored: the child lives on until SIGKILL"
    assert wait_dead([child], timeout=deadline_at + 7.0 - time.monotonic()) == []
    assert time.monotonic() - deadline_at >= 4.5


# --- goyaml-json: Go's YAML readers, for the YAML writer's tests ------------------------------


def test_goyaml_json_reads_like_go() -> None:
    """YAML 1.1 typing as Argo CD reads it (sigs.k8s.io/yaml) and as yaml.v2 types it."""
    text = "a: yes\nb: 010\nc: 1.0\nn: 1e3\nd: 2024-01-01\n1: int\n"
    assert goyaml_json(text) == [
        {"a": True, "b": 8, "c": 1, "false": 1000, "d": "2024-01-01", "1": "int"}
    ]
    assert type(goyaml_json("c: 1.0\n")[0]["c"]) is int  # JSON 1: the float is gone
    (tagged,) = goyaml_json(text, lib="yamlv2")
    assert tagged["t"] == "map"
    entries = {(k["t"], k["v"]): v for k, v in tagged["v"]}
    assert entries[("str", "a")] == {"t": "bool", "v": True}
    assert entries[("str", "b")] == {"t": "int", "v": "8"}
    assert entries[("str", "c")] == {"t": "float", "v": "1"}
    assert entries[("bool", False)] == {"t": "float", "v": "1000"}  # the key `n` is a bool
    assert entries[("int", "1")] == {"t": "str", "v": "int"}
    # Argo CD skips empty documents; yaml.v2 returns them as null.
    assert goyaml_json("---\n---\nkind: A\n") == [{"kind": "A"}]
    assert goyaml_json("---\n---\nkind: A\n", lib="yamlv2")[0] == {"t": "null", "v": None}
    with pytest.raises(ValueError, match=r"json: unsupported value: \+Inf"):
        goyaml_json("x: .inf\n")  # a manifest Argo CD cannot read at all
