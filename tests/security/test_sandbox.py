"""Landlock confinement of renderer children, proved independently of the path checks.

The renderer is started through `plugin.render.process.run` with the very policy the pipeline
builds (`RenderContext.confinement`), and handed a path outside its work copy directly: no
path check of the plugin is in the way, only the sandbox. Each test also runs the same
command unconfined (or checks the opposite case), so that it would fail without the sandbox.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.argocd.request import AppRequest
from plugin.errors import RenderError
from plugin.render.pipeline import RenderContext
from plugin.render.process import Confinement, Deadline, run
from plugin.security import sandbox
from tests.conformance import clean_environment, run_plugin
from tests.probes import run_probe

CANARY = "sandbox-canary-7Yq2"

needs_landlock = pytest.mark.skipif(
    sandbox.kernel_abi() < 1, reason="the kernel offers no Landlock"
)


def chart(root: Path) -> Path:
    """A chart that prints a value (so a values file read from outside shows up)."""
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (root / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n"
        "data:\n  leaked: {{ .Values.token | quote }}\n"
    )
    return root


def context(environ: dict[str, str]) -> RenderContext:
    return RenderContext(request=AppRequest(), environ=environ, deadline=Deadline.after(60))


def helm_policy(tmp_path: Path, helm_bin: str) -> tuple[Path, Path, Confinement]:
    """A scratch directory with the work copy of a chart, and the `helm template` policy."""
    scratch = tmp_path / "scratch"
    work = chart(scratch / "app")
    ctx = context(dict(os.environ))
    confinement = ctx.confinement(
        read=[work], write=[scratch], programs=[helm_bin], connect_ports=[]
    )
    return scratch, work, confinement


def helm_template(helm_bin: str, work: Path, scratch: Path, *extra: str, **kw: object) -> str:
    env = {"HOME": str(scratch / "home"), "TMPDIR": str(scratch), "PATH": "/usr/bin:/bin"}
    done = run(
        [helm_bin, "template", "probe", ".", *extra],
        stage="helm template",
        cwd=work,
        env=env,
        deadline=Deadline.after(60),
        **kw,  # type: ignore[arg-type]
    )
    return done.stdout.decode()


@needs_landlock
def test_a_confined_helm_cannot_read_a_file_outside(tmp_path: Path, helm_bin: str) -> None:
    """`--values /outside/token` handed straight to helm: confined, helm cannot open it."""
    outside = tmp_path / "operator" / "token.yaml"
    outside.parent.mkdir()
    outside.write_text(f"token: {CANARY}\n")
    scratch, work, confinement = helm_policy(tmp_path, helm_bin)
    # Unconfined, the same command reads the file: the test can fail.
    assert CANARY in helm_template(helm_bin, work, scratch, "--values", str(outside))
    with pytest.raises(RenderError) as caught:
        helm_template(helm_bin, work, scratch, "--values", str(outside), confinement=confinement)
    assert "permission denied" in str(caught.value)
    assert CANARY not in str(caught.value)
    # Files inside the work copy are still readable.
    (work / "mine.yaml").write_text("token: inside\n")
    assert '"inside"' in helm_template(
        helm_bin, work, scratch, "--values", "mine.yaml", confinement=confinement
    )


@needs_landlock
def test_a_confined_helm_cannot_read_through_a_symlink_in_the_chart(
    tmp_path: Path, helm_bin: str
) -> None:
    """`.Files.Get` of a symlink leading to the service-account token: empty under Landlock."""
    outside = tmp_path / "serviceaccount" / "token"
    outside.parent.mkdir()
    outside.write_text(CANARY)
    scratch, work, confinement = helm_policy(tmp_path, helm_bin)
    (work / "templates" / "file.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: file\n"
        'data:\n  token: {{ .Files.Get "token" | quote }}\n'
    )
    (work / "token").symlink_to(outside)
    assert CANARY in helm_template(helm_bin, work, scratch)
    try:
        text = helm_template(helm_bin, work, scratch, confinement=confinement)
    except RenderError as exc:  # Helm 4 fails loading the chart, Helm 3 may skip the file
        text = str(exc)
    assert CANARY not in text


@needs_landlock
def test_a_confined_child_cannot_read_the_plugins_environment(tmp_path: Path) -> None:
    """/proc is not granted: `/proc/<plugin>/environ` (Vault token, proxy) stays unreadable."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    command = ["/bin/sh", "-c", f"cat /proc/{os.getpid()}/environ"]
    env = {"PATH": "/usr/bin:/bin"}
    plain = run(command, stage="probe", cwd=scratch, env=env, deadline=Deadline.after(30))
    assert plain.stdout  # readable without the sandbox
    ctx = context(dict(os.environ))
    confinement = ctx.confinement(read=[], write=[scratch], programs=["/bin/sh"])
    with pytest.raises(RenderError, match="exit status"):
        run(
            command,
            stage="probe",
            cwd=scratch,
            env=env,
            deadline=Deadline.after(30),
            confinement=confinement,
        )


@needs_landlock
def test_a_confined_child_can_neither_connect_nor_signal_out(tmp_path: Path) -> None:
    """TCP connect (ABI 4) is refused unless the port is allowed; signals to processes outside
    the sandbox (ABI 6) are refused."""
    if sandbox.kernel_abi() < 6:
        pytest.skip("needs Landlock ABI 6")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    victim = subprocess.Popen(["sleep", "30"])
    probe = (
        "import os, socket, sys\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        "    print('connected')\nexcept OSError as e:\n    print('connect', e.errno)\n"
        f"try:\n    os.kill({victim.pid}, 0)\n    print('signalled')\n"
        "except OSError as e:\n    print('signal', e.errno)\n"
    )
    command = [sys.executable, "-I", "-S", "-c", probe]
    env = {"PATH": "/usr/bin:/bin"}
    ctx = context(dict(os.environ))
    python_home = [sys.base_prefix, sys.prefix]
    try:
        plain = run(command, stage="probe", cwd=scratch, env=env, deadline=Deadline.after(30))
        assert plain.stdout.split() == [b"connected", b"signalled"]
        for ports, expected in (([], b"connect"), ([port], b"connected")):
            confinement = ctx.confinement(
                read=python_home, write=[scratch], programs=[sys.executable], connect_ports=ports
            )
            done = run(
                command,
                stage="probe",
                cwd=scratch,
                env=env,
                deadline=Deadline.after(30),
                confinement=confinement,
            )
            lines = done.stdout.splitlines()
            assert lines[0].split()[0] == expected, lines
            assert lines[-1].split()[0] == b"signal", lines
    finally:
        listener.close()
        victim.kill()
        victim.wait()


def test_the_test_hook_forces_a_kernel_without_landlock() -> None:
    """`PLUGIN_SANDBOX_TEST_ABI=0` simulates a kernel without Landlock (test hook)."""
    assert sandbox.abi_version({sandbox.TEST_ABI_SETTING: "0"}) == 0
    assert sandbox.abi_version({}) == sandbox.kernel_abi()
    with pytest.raises(sandbox.SandboxError, match="required"):
        sandbox.require_available({sandbox.MODE_SETTING: "required", sandbox.TEST_ABI_SETTING: "0"})
    off = sandbox.status({sandbox.MODE_SETTING: "off"})
    assert not off.active
    assert sandbox.prepare(sandbox.Policy(), off) is None
    with pytest.raises(sandbox.SandboxError):
        sandbox.prepare(
            sandbox.Policy(),
            sandbox.status({"PLUGIN_SANDBOX": "required", "PLUGIN_SANDBOX_TEST_ABI": "0"}),
        )


def test_an_invalid_mode_is_refused() -> None:
    with pytest.raises(Exception, match="PLUGIN_SANDBOX must be one of"):
        sandbox.mode({sandbox.MODE_SETTING: "maybe"})


def simple_chart_dir(tmp_path: Path) -> Path:
    app = chart(tmp_path / "repo" / "app")
    (app / "values.yaml").write_text("token: <path:app#user>\n")
    return app


def plugin_env(tmp_path: Path, helm_bin: str, **extra: str) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"app:\n  user: {CANARY}\n")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return clean_environment(
        {
            "AVP_TYPE": "file",
            "AVP_FILE_PATH": str(secrets),
            "HELM_BIN": helm_bin,
            "HOME": str(home),
            "PLUGIN_CACHE_DIR": str(home / "cache"),
            "ARGOCD_APP_NAME": "probe",
            "ARGOCD_APP_NAMESPACE": "probe",
            **extra,
        }
    )


def test_required_fails_closed_without_landlock(tmp_path: Path, helm3_bin: str) -> None:
    app = simple_chart_dir(tmp_path)
    env = plugin_env(tmp_path, helm3_bin, PLUGIN_SANDBOX="required", PLUGIN_SANDBOX_TEST_ABI="0")
    done = run_plugin(["generate", str(app)], env)
    assert done.code == 1
    assert done.stdout == ""
    assert "PLUGIN_SANDBOX=required" in done.stderr
    assert "no Landlock" in done.stderr
    # auto on the same kernel renders (unconfined) and says so with --verbose.
    env["PLUGIN_SANDBOX"] = "auto"
    done = run_plugin(["generate", "--verbose", str(app)], env)
    assert done.code == 0, done.stderr
    assert "renderer sandbox: unavailable" in done.stderr
    assert CANARY not in done.stderr


@needs_landlock
def test_auto_confines_and_says_so(tmp_path: Path, helm3_bin: str) -> None:
    app = simple_chart_dir(tmp_path)
    env = plugin_env(tmp_path, helm3_bin)
    done = run_plugin(["generate", "--verbose", str(app)], env)
    assert done.code == 0, done.stderr
    assert CANARY in done.stdout
    assert f"renderer sandbox: Landlock ABI {sandbox.kernel_abi()}" in done.stderr
    check = run_plugin(["check", str(app)], env)
    assert check.code == 0, check.stderr
    assert "renderer sandbox: Landlock ABI" in check.stdout
    check_json = run_plugin(["check", "-o", "json", str(app)], env)
    assert '"sandbox": "Landlock ABI' in check_json.stdout
    off = run_plugin(["check", str(app)], {**env, "PLUGIN_SANDBOX": "off"})
    assert "renderer sandbox: off" in off.stdout


def test_children_get_a_parent_death_signal(tmp_path: Path) -> None:
    """A child of a process that is SIGKILLed dies too (PR_SET_PDEATHSIG), sandbox or not."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from plugin.render.process import Deadline, run\n"
        f"run(['/bin/sh', '-c', 'echo $$ > {pid_file}; exec sleep 60'], stage='probe',"
        " cwd=Path('.'), env={'PATH': '/usr/bin:/bin'}, deadline=Deadline.after(60))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@needs_landlock
def test_a_confined_kustomize_cannot_read_outside_even_without_its_load_restrictor(
    tmp_path: Path, kustomize_bin: str
) -> None:
    """Kustomize's own load restrictor refuses `../outside.yaml`; turned off (as a bug in the
    plugin or in Kustomize would), the sandbox still refuses it."""
    outside = tmp_path / "outside.yaml"
    outside.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\ndata:\n  x: {CANARY}\n"
    )
    repo = tmp_path / "repo"
    app = repo / "app"
    app.mkdir(parents=True)
    (app / "kustomization.yaml").write_text("resources:\n  - ../../outside.yaml\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    command = [kustomize_bin, "build", ".", "--load-restrictor", "LoadRestrictionsNone"]
    env = {"HOME": str(scratch), "TMPDIR": str(scratch), "PATH": "/usr/bin:/bin"}
    plain = run(command, stage="kustomize build", cwd=app, env=env, deadline=Deadline.after(60))
    assert CANARY.encode() in plain.stdout  # unconfined and unrestricted, it reads the file
    ctx = context(dict(os.environ))
    confinement = ctx.confinement(
        read=[repo], write=[scratch], programs=[kustomize_bin], connect_ports=[80, 443]
    )
    with pytest.raises(RenderError) as caught:
        run(
            command,
            stage="kustomize build",
            cwd=app,
            env=env,
            deadline=Deadline.after(60),
            confinement=confinement,
        )
    assert "permission denied" in str(caught.value)
    assert CANARY not in str(caught.value)


#: A zygote worker's start of helm (`RenderContext.supervised`), in a session of its own (no
#: controlling terminal, as the worker): prints one result per line for the test to check.
_WORKER_PROBE = """
import os, sys, threading
from pathlib import Path
from plugin.argocd.request import AppRequest
from plugin.errors import RenderError
from plugin.render.pipeline import RenderContext
from plugin.render.process import Deadline, run
helm, scratch, outside = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
work = scratch / "app"
hooks = []
os.register_at_fork(before=lambda: hooks.append(1))
ctx = RenderContext(request=AppRequest(), environ=dict(os.environ), deadline=Deadline.after(60),
                    supervised=True)
confinement = ctx.confinement(read=[work], write=[scratch], programs=[helm], connect_ports=[])
env = {"HOME": str(scratch / "home"), "TMPDIR": str(scratch), "PATH": "/usr/bin:/bin"}
def helm_template(*extra):
    return run([helm, "template", "probe", ".", *extra], stage="helm template", cwd=work,
               env=env, deadline=Deadline.after(60), confinement=confinement).stdout.decode()
try:
    print("outside:", helm_template("--values", str(outside)).replace("\\n", " "))
except RenderError as exc:
    print("outside:", str(exc).replace("\\n", " "))
print("inside:", "inside" in helm_template("--values", "mine.yaml"))
print("fork hooks:", len(hooks))
print("plugin reads:", outside.read_text().strip())
seen = []
thread = threading.Thread(target=lambda: seen.append(outside.read_text().strip()))
thread.start()
thread.join()
print("new thread reads:", seen[0])
"""


@needs_landlock
def test_a_zygote_workers_helm_is_confined_and_the_worker_is_not(
    tmp_path: Path, helm_bin: str
) -> None:
    """The worker starts helm from a thread that confined itself (vfork, no code in the
    child): helm cannot read outside its policy; the worker's threads, old and new, still can."""
    outside = tmp_path / "operator" / "token.yaml"
    outside.parent.mkdir()
    outside.write_text(f"token: {CANARY}\n")
    scratch, work, _ = helm_policy(tmp_path, helm_bin)
    (work / "mine.yaml").write_text("token: inside\n")
    found = run_probe(_WORKER_PROBE, helm_bin, str(scratch), str(outside), timeout=120)
    lines = dict(line.split(": ", 1) for line in found.splitlines())
    assert "permission denied" in lines["outside"]
    assert CANARY not in lines["outside"]
    assert lines["inside"] == "True"
    assert lines["fork hooks"] == "0"  # started through vfork (a preexec_fn forks)
    assert lines["plugin reads"] == f"token: {CANARY}"
    assert lines["new thread reads"] == f"token: {CANARY}"


_REFUSED_PROBE = """
import os, sys
from pathlib import Path
from unittest import mock
from plugin.errors import RenderError
from plugin.render.process import Confinement, Deadline, run
from plugin.security import sandbox
marker = Path(sys.argv[1])
required = sandbox.Status("required", sandbox.kernel_abi())
for supervised in (True, False):
    # A descriptor that is no Landlock ruleset: the kernel refuses to enforce it (EBADFD).
    refused = sandbox.Prepared(os.open(os.devnull, os.O_RDONLY), os.getpid())
    with mock.patch.object(sandbox, "prepare", return_value=refused):
        try:
            run(["/bin/sh", "-c", f"touch {marker}"], stage="helm template", cwd=Path.cwd(),
                env={}, deadline=Deadline.after(30),
                confinement=Confinement(sandbox.Policy(), required, supervised=supervised))
            print(supervised, "ran")
        except RenderError as exc:
            print(supervised, exc)
"""


@needs_landlock
def test_a_ruleset_the_starting_thread_cannot_enforce_fails_the_render(tmp_path: Path) -> None:
    """Fail closed on both paths, with the same message: nothing runs unconfined once a
    ruleset was prepared (the kernel's refusal is real: the ruleset is not a ruleset)."""
    marker = tmp_path / "ran"
    found = run_probe(_REFUSED_PROBE, str(marker))
    message = "helm template: the renderer sandbox could not be applied"
    assert found.splitlines() == [f"True {message}", f"False {message}"]
    assert not marker.exists()
