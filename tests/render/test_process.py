"""Renderer processes: deadline, process groups, stderr hygiene; two-phase shared reads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from plugin.errors import MissingPathError, RenderError
from plugin.manifests.yamlio import load_one
from plugin.placeholders.engine import EngineOptions, InputStream, ResolutionError, generate
from plugin.placeholders.substitute import Rules
from plugin.render import scratch
from plugin.render.detect import detect, has_templates, renderable
from plugin.render.process import (
    RENDERER_GC_DEFAULTS,
    Deadline,
    Redactor,
    StageTimeoutError,
    child_environment,
    clean_stderr,
    process_table,
    run,
)
from plugin.render.values_secrets import SharedReads
from plugin.secrets.base import SecretRef
from tests.probes import run_probe


def test_the_process_table_has_parents_groups_and_start_times() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        table = process_table()
        me = table[os.getpid()]
        assert me[:2] == (os.getppid(), os.getpgrp())
        parent, group, started = table[child.pid]
        assert (parent, group) == (os.getpid(), child.pid)
        assert started >= me[2]
    finally:
        child.kill()
        child.wait()


def test_success_and_failure(tmp_path: Path) -> None:
    done = run(
        ["sh", "-c", "echo out; echo err >&2"],
        stage="s",
        cwd=tmp_path,
        env={},
        deadline=Deadline.after(10),
    )
    assert done.stdout == b"out\n" and done.stderr == "err"
    with pytest.raises(RenderError, match=r"helm template failed \(exit status 3\):\nboom"):
        run(
            ["sh", "-c", "echo boom >&2; exit 3"],
            stage="helm template",
            cwd=tmp_path,
            env={},
            deadline=Deadline.after(10),
        )
    with pytest.raises(RenderError, match="not found"):
        run(["/nonexistent/helm"], stage="s", cwd=tmp_path, env={}, deadline=Deadline.after(10))


def test_deadline_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; wait"
    started = time.monotonic()
    with pytest.raises(StageTimeoutError, match=r"kustomize build ran out of time.*0.5 s"):
        run(
            ["sh", "-c", script],
            stage="kustomize build",
            cwd=tmp_path,
            env={},
            deadline=Deadline.after(0.5),
        )
    assert time.monotonic() - started < 5
    grandchild = int(pids.read_text())
    for _ in range(100):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        status = Path(f"/proc/{grandchild}/stat").read_text().split(")")[-1].split()[0]
        assert status == "Z"


def _stat_fields(text: str) -> list[str]:
    return text[text.rfind(")") + 2 :].split()


def test_children_stay_in_the_plugins_process_group(tmp_path: Path) -> None:
    """At Argo CD's deadline argocd-cmp-server SIGKILLs the plugin and SIGTERMs (5 s later
    SIGKILLs) the plugin's process group: a renderer in a group of its own, with whatever it
    started, was out of reach (PR_SET_PDEATHSIG kills the renderer alone)."""
    done = run(
        ["sh", "-c", "cat /proc/$$/stat"],
        stage="s",
        cwd=tmp_path,
        env={},
        deadline=Deadline.after(10),
    )
    assert int(_stat_fields(done.stdout.decode())[2]) == os.getpgrp()


def test_deadline_kills_an_orphan_the_child_left(tmp_path: Path) -> None:
    """The child's tree cannot be killed as a process group (it is the plugin's): a process
    whose parent already exited comes back to the plugin (a child subreaper) and is found."""
    pids = tmp_path / "pids"
    script = f"(sleep 30 & echo $! > {pids}); sleep 30"
    with pytest.raises(StageTimeoutError):
        run(["sh", "-c", script], stage="s", cwd=tmp_path, env={}, deadline=Deadline.after(1))
    orphan = int(pids.read_text())
    stat = Path(f"/proc/{orphan}/stat")
    assert not stat.exists() or _stat_fields(stat.read_text())[0] == "Z"


_TERMINAL_PROBE = """
import os, sys
from pathlib import Path
from plugin.render.process import Deadline, run
master, slave = os.openpty()
os.close(os.open(os.ttyname(slave), os.O_RDWR))  # the session leader takes a terminal
os.close(os.open("/dev/tty", os.O_RDWR))  # it has one
done = run(
    ["sh", "-c", "(exec 3<>/dev/tty) 2>/dev/null && echo has-tty || echo none"],
    stage="s", cwd=Path.cwd(), env={}, deadline=Deadline.after(10),
)
print(done.stdout.decode().strip())
"""


def test_children_leave_the_controlling_terminal(tmp_path: Path) -> None:
    """Sharing the plugin's process group does not mean sharing its terminal (a renderer in a
    session of its own never had one)."""
    assert run_probe(_TERMINAL_PROBE, cwd=tmp_path).strip() == "none"


def test_expired_deadline_runs_nothing(tmp_path: Path) -> None:
    with pytest.raises(StageTimeoutError, match="helm template"):
        run(["true"], stage="helm template", cwd=tmp_path, env={}, deadline=Deadline.after(-1))


def test_clean_stderr() -> None:
    redactor = Redactor()
    redactor.add(["s3cr3t-value", "ab", "multi\nline-secret"])
    raw = b"Error: bad s3cr3t-value here\nline-secret\nUSER-SUPPLIED VALUES:\npassword: x\n"
    text = clean_stderr(raw, redactor)
    assert "s3cr3t" not in text and "line-secret" not in text and "password: x" not in text
    assert "<redacted>" in text and "values output withheld" in text
    long = clean_stderr(("\n".join(f"line {n}" for n in range(100))).encode())
    assert long.startswith("…") and "line 99" in long and "line 10\n" not in long


def test_child_environment_drops_credentials() -> None:
    env = child_environment(
        {
            "PATH": "/bin",
            "VAULT_TOKEN": "t",
            "AVP_TYPE": "vault",
            "ARGOCD_ENV_X": "1",
            "HTTPS_PROXY": "p",
            "LC_ALL": "C",
        },
        {"HOME": "/tmp/h"},
    )
    assert env == {
        "PATH": "/bin",
        "HTTPS_PROXY": "p",
        "LC_ALL": "C",
        "HOME": "/tmp/h",
        **RENDERER_GC_DEFAULTS,
    }


def test_renderers_get_fewer_go_collections_unless_the_operator_chose() -> None:
    """helm and kustomize collect at 5x their live heap, capped by a memory limit; a sidecar
    that sets GOGC or GOMEMLIMIT keeps exactly its own; an Application's setting is ignored."""
    env = child_environment({"PATH": "/bin", "ARGOCD_ENV_GOGC": "off"}, {})
    assert env["GOGC"] == "400" and env["GOMEMLIMIT"] == "512MiB"
    own = child_environment({"PATH": "/bin", "GOGC": "100"}, {})
    assert own["GOGC"] == "100" and "GOMEMLIMIT" not in own
    limit = child_environment({"PATH": "/bin", "GOMEMLIMIT": "2GiB"}, {})
    assert limit["GOMEMLIMIT"] == "2GiB" and "GOGC" not in limit


class CountingBackend:
    max_workers = 2

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        self.data = data
        self.reads: list[str] = []
        self.logins = 0
        self.closed = 0

    def login(self) -> None:
        self.logins += 1

    def read(self, ref: SecretRef) -> dict[str, Any]:
        self.reads.append(ref.path)
        if ref.path not in self.data:
            raise MissingPathError(f"no secret at {ref.path}")
        return self.data[ref.path]

    def close(self) -> None:
        self.closed += 1


def test_one_read_plan_serves_both_phases() -> None:
    backend = CountingBackend({"kv/a": {"k": "va", "n": 3}, "kv/b": {"k": "vb"}})
    shared = SharedReads(lambda: backend, Rules(), time.monotonic() + 10)
    values = shared.resolve_values(
        [("values.yaml", {"x": "<path:kv/a#k>", "n": "<path:kv/a#n>"}), ("HELM_VALUES", {})]
    )
    assert values[0] == {"x": "va", "n": 3}
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    manifest += "data: {a: <path:kv/a#k>, b: <path:kv/b#k>}\n"
    out = generate([InputStream("helm template", manifest)], EngineOptions(), shared.factory())
    assert load_one(out)["data"] == {"a": "va", "b": "vb"}
    shared.close()
    assert sorted(backend.reads) == ["kv/a", "kv/b"]
    assert backend.logins == 1 and backend.closed == 1
    assert set(shared.secret_strings()) == {"va", "vb"}


def test_values_resolution_errors_name_file_and_key() -> None:
    backend = CountingBackend({"kv/a": {"k": "value-7781"}})
    shared = SharedReads(lambda: backend, Rules(), time.monotonic() + 10)
    with pytest.raises(ResolutionError) as info:
        shared.resolve_values([("values-prod.yaml", {"db": {"pw": "<path:kv/a#missing>"}})])
    message = str(info.value)
    assert "values-prod.yaml" in message and "db.pw" in message and "value-7781" not in message


def test_detection(tmp_path: Path) -> None:
    assert detect(tmp_path) == "directory"
    assert renderable(tmp_path) == ""
    (tmp_path / "notes.yaml").write_text("a: 1\n")
    assert renderable(tmp_path) == ""
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")
    assert renderable(tmp_path) == "directory"
    (tmp_path / "Kustomization").write_text("resources: []\n")
    assert detect(tmp_path) == "kustomize"
    (tmp_path / "Chart.yaml.j2").write_text("name: x\n")
    assert detect(tmp_path) == "helm" and has_templates(tmp_path)
    assert detect(tmp_path, "directory") == "directory"
    assert renderable(tmp_path / "missing") == ""


def test_kustomize_binary_choice(tmp_path: Path) -> None:
    from plugin.render.kustomize import enable_helm, kustomize_base_command, kustomize_command

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text("#!/bin/sh\n")
    kubectl.chmod(0o755)
    assert kustomize_base_command({"PATH": str(bin_dir)}) == [str(kubectl), "kustomize"]
    kustomize = bin_dir / "kustomize"
    kustomize.write_text("#!/bin/sh\n")
    kustomize.chmod(0o755)
    assert kustomize_base_command({"PATH": str(bin_dir)}) == [str(kustomize), "build"]
    assert kustomize_base_command({"KUSTOMIZE_BIN": str(kubectl)}) == [str(kubectl), "kustomize"]
    with pytest.raises(RenderError, match="KUSTOMIZE_BIN"):
        kustomize_base_command({"KUSTOMIZE_BIN": str(tmp_path / "missing")})
    with pytest.raises(RenderError, match="neither kustomize nor kubectl"):
        kustomize_base_command({"PATH": str(tmp_path)})
    assert not enable_helm({"ARGOCD_ENV_PLUGIN_KUSTOMIZE_ENABLE_HELM": "true"})
    assert enable_helm({"PLUGIN_KUSTOMIZE_ENABLE_HELM": "true"})
    assert kustomize_command(["k", "build"], Path("."), True, "/h") == [
        "k", "build", ".", "--enable-helm", "--helm-command", "/h",
    ]  # fmt: skip


def test_relative_kustomize_bin_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kustomize may run from a scratch copy, so `.tools/bin/kustomize` must not stay relative."""
    from plugin.render.kustomize import kustomize_base_command

    (tmp_path / "bin").mkdir()
    kustomize = tmp_path / "bin" / "kustomize"
    kustomize.write_text("#!/bin/sh\n")
    kustomize.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert kustomize_base_command({"KUSTOMIZE_BIN": "bin/kustomize"}) == [str(kustomize), "build"]


def test_helms_debug_hint_is_replaced_by_the_plugins_own() -> None:
    raw = (
        b"Error: YAML parse error on c/templates/x.yaml: bad\n"
        b"Use --debug flag to render out invalid YAML\n"
    )
    text = clean_stderr(raw)
    assert "Use --debug" not in text
    assert "plugin generate --verbose" in text
    assert "YAML parse error on c/templates/x.yaml" in text


def test_no_scratch_removal_runs_while_a_renderer_is_forked(tmp_path: Path) -> None:
    """`run` waits for background removals first: no thread runs while the process forks."""
    plain_rmtree = shutil.rmtree

    def slow_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name == "scratch-removal":
            time.sleep(0.3)
        plain_rmtree(path, *args, **kwargs)

    with mock.patch.object(scratch.shutil, "rmtree", slow_rmtree):
        with scratch.scratch_directory(str(tmp_path), background=True) as path:
            (path / "x").write_text("x")
        run(
            ["/bin/true"],
            stage="true",
            cwd=tmp_path,
            env={"PATH": "/bin"},
            deadline=Deadline.after(30),
        )
        assert not path.exists()
        assert not any(t.name == "scratch-removal" for t in threading.enumerate())


#: Runs `run` in a process of its own session (no controlling terminal, as a zygote worker)
#: and prints what the child saw: its parent-death signal, and how many fork hooks ran.
_START_PROBE = """
import os, sys
from pathlib import Path
from plugin.render.process import Confinement, Deadline, run
from plugin.security import sandbox
supervised, terminal = sys.argv[1] == "supervised", sys.argv[2] == "terminal"
if terminal:
    master, slave = os.openpty()
    os.close(os.open(os.ttyname(slave), os.O_RDWR))  # the session leader takes a terminal
hooks = []
os.register_at_fork(before=lambda: hooks.append(1))
probe = ("import ctypes; c = ctypes.c_int(); "  # PR_GET_PDEATHSIG
         "ctypes.CDLL(None).prctl(2, ctypes.byref(c)); print(c.value)")
off = Confinement(sandbox.Policy(), sandbox.Status("off", 0), supervised=supervised)
done = run([sys.executable, "-c", probe], stage="s", cwd=Path.cwd(), env={},
           deadline=Deadline.after(30), confinement=off)
print(done.stdout.decode().strip(), len(hooks))
"""


def _start_probe(tmp_path: Path, *flags: str) -> str:
    return run_probe(_START_PROBE, *flags, cwd=tmp_path).strip()


def test_a_zygote_worker_starts_renderers_without_code_in_the_child(tmp_path: Path) -> None:
    """Supervised (a zygote worker, whose supervisor kills what it leaves): no preexec_fn, so
    no PR_SET_PDEATHSIG in the child and no fork hook (vfork); in-process: both, as before."""
    assert _start_probe(tmp_path, "supervised", "-") == "0 0"
    assert _start_probe(tmp_path, "in-process", "-") == f"{int(signal.SIGKILL)} 1"


def test_a_worker_with_a_terminal_keeps_the_child_setup(tmp_path: Path) -> None:
    """The fast path skips leaving the terminal: taken only when there is none to leave."""
    assert _start_probe(tmp_path, "supervised", "terminal") == f"{int(signal.SIGKILL)} 1"
