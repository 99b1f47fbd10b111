"""`plugin serve` end to end: a real zygote, the real client (`python -m plugin`), real files.

What a render through the zygote prints and returns is what an in-process render prints and
returns; when the zygote cannot serve (absent, stale socket, other version, other UID) the
client renders itself; concurrent requests with different identities stay apart; the zygote
replaces itself after N requests and when its code changes.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plugin.serve import client, server
from tests.serve.support import PYTHON as PYTHON_BIN
from tests.serve.support import (
    ROOT,
    Zygote,
    alive,
    descendants,
    file_env,
    plugin,
    serve_exec,
    spares_of,
)

CANARY = "canary-serve-Zq81x"
MANIFEST = (
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app  # keep\n"
    "stringData:\n  user: <path:app#user>\n  port: <path:app#port>\n"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return file_env(tmp_path, f"app:\n  user: {CANARY}\n  port: 80\n")


def both_ways(argv: list[str], env: dict[str, str], **kwargs: object) -> tuple[object, object]:
    inproc = plugin(argv, {**env, "PLUGIN_SERVE": "off"}, **kwargs)  # type: ignore[arg-type]
    served = plugin(argv, env, **kwargs)  # type: ignore[arg-type]
    return inproc, served


CASES = {
    "file": lambda d: (["generate", str(d / "m.yaml")], {}),
    "stdin": lambda d: (["generate", "-"], {"stdin": MANIFEST.encode()}),
    "directory": lambda d: (["generate", "."], {"cwd": d}),
    "check": lambda d: (["check", str(d / "m.yaml"), "-o", "json"], {}),
    "missing-key": lambda d: (["generate", str(d / "bad.yaml")], {}),
    "usage-error": lambda d: (["generate", "--no-such-flag"], {}),
    "version": lambda d: (["version"], {}),
    "help": lambda d: (["--help"], {}),
    "discover": lambda d: (["discover", str(d)], {}),
    "invalid-utf8": lambda d: (["generate", "-"], {"stdin": b"a: \xff\n"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_and_status_are_those_of_an_in_process_run(
    case: str, tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "m.yaml").write_text(MANIFEST)
    (tmp_path / "bad.yaml").write_text(MANIFEST.replace("#port", "#nope"))
    argv, kwargs = CASES[case](app if case != "missing-key" else tmp_path)
    before = zygote.served()
    inproc, served = both_ways(argv, env, **kwargs)
    # The earlier --status and the render (the in-process run never connects).
    assert zygote.served() == before + 2, "the render did not go through the zygote"
    assert (served.code, served.stdout, served.stderr) == (  # type: ignore[attr-defined]
        inproc.code,  # type: ignore[attr-defined]
        inproc.stdout,  # type: ignore[attr-defined]
        inproc.stderr,  # type: ignore[attr-defined]
    )


def test_a_secret_reaches_stdout_only(tmp_path: Path, env: dict[str, str], zygote: Zygote) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    run = plugin(["generate", str(tmp_path / "m.yaml")], env)
    assert run.code == 0 and CANARY.encode() in run.stdout
    zygote.stop()
    assert CANARY not in zygote.stderr()


def test_no_zygote_renders_in_process_and_says_so_under_verbose(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    quiet = plugin(["generate", str(tmp_path / "m.yaml")], env)
    loud = plugin(["generate", "--verbose", str(tmp_path / "m.yaml")], env)
    assert quiet.code == loud.code == 0 and CANARY.encode() in quiet.stdout
    assert b"serve" not in quiet.stderr
    lines = [line for line in loud.stderr.splitlines() if line.startswith(b"plugin: serve:")]
    assert len(lines) == 1 and b"rendering in this process" in lines[0]


def test_a_stale_socket_is_ignored_and_replaced(tmp_path: Path, env: dict[str, str]) -> None:
    path = Path(env["PLUGIN_SERVE_SOCKET"])
    path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a crashed zygote leaves behind
    (tmp_path / "m.yaml").write_text(MANIFEST)
    run = plugin(["generate", "--verbose", str(tmp_path / "m.yaml")], env)
    assert run.code == 0 and CANARY.encode() in run.stdout
    assert b"plugin: serve: no zygote at" in run.stderr
    zygote = Zygote(env)  # a new zygote takes the stale socket's place
    try:
        assert zygote.served() >= 0
        again = plugin(["generate", str(tmp_path / "m.yaml")], env)
        assert again.stdout == run.stdout
    finally:
        zygote.stop()


def test_a_zygote_of_another_version_is_not_used(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    """The client of another installation (another package path) renders itself."""
    other = tmp_path / "other-install"
    shutil.copytree(ROOT / "plugin", other / "plugin", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "m.yaml").write_text(MANIFEST)
    before = zygote.served()
    run = plugin(
        ["generate", "--verbose", str(tmp_path / "m.yaml")], {**env, "PYTHONPATH": str(other)}
    )
    assert run.code == 0 and CANARY.encode() in run.stdout
    assert b"the zygote refused the request: the zygote runs" in run.stderr
    # `served` counts connections: the earlier --status, and this client's (refused) one.
    assert zygote.served() == before + 2


def test_an_insecure_socket_directory_is_refused_by_both_sides(
    tmp_path: Path, env: dict[str, str]
) -> None:
    directory = Path(env["PLUGIN_SERVE_SOCKET"]).parent
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    run = plugin(["serve"], env, timeout=60)
    assert run.code == 1 and b"is open to others" in run.stderr
    with pytest.raises(client.UnavailableError, match="open to others"):
        client.connect(env["PLUGIN_SERVE_SOCKET"])


def _served_by_another_uid(path: Path) -> int:
    """A listener at `path` whose credentials (fixed at listen()) are those of UID 65534."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            sock.listen(1)
            time.sleep(30)
        finally:
            os._exit(0)
    return pid


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another UID")
def test_the_client_refuses_a_socket_served_by_another_uid(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = Path(env["PLUGIN_SERVE_SOCKET"])
    path.parent.mkdir(mode=0o700)
    pid = _served_by_another_uid(path)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.connect(str(path))
            except client.UnavailableError as exc:
                if "served by UID 65534" in str(exc):
                    break
                assert time.monotonic() < deadline, str(exc)
                time.sleep(0.05)
            else:
                pytest.fail("a socket of another UID was accepted")
        (tmp_path / "m.yaml").write_text(MANIFEST)
        run = plugin(["generate", "--verbose", str(tmp_path / "m.yaml")], env)
        assert run.code == 0 and CANARY.encode() in run.stdout
        assert b"served by UID 65534" in run.stderr
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another UID")
def test_the_zygote_refuses_a_peer_of_another_uid(env: dict[str, str]) -> None:
    # pytest's temporary directories are closed to others: this socket lives in /tmp.
    base = Path(tempfile.mkdtemp(prefix="serve-uid-"))
    base.chmod(0o711)
    path = base / "run" / "serve.sock"
    zygote = Zygote({**env, "PLUGIN_SERVE_SOCKET": str(path)})
    # Open the way on purpose, so that only SO_PEERCRED stands between UID 65534 and the zygote.
    path.parent.chmod(0o711)
    path.chmod(0o666)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        answer = b"?"
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(path))
            answer = b"EOF" if sock.recv(1) == b"" else b"ANSWERED"
        except ConnectionResetError:
            answer = b"EOF"
        except OSError as exc:
            answer = f"error {exc}".encode()
        finally:
            os.write(write_end, answer)
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    answer = os.read(read_end, 100)
    os.close(read_end)
    zygote.stop()
    shutil.rmtree(base)
    assert answer == b"EOF"
    assert "refused a connection from UID 65534" in zygote.stderr()


def test_concurrent_clients_with_different_identities_get_their_own_outputs(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST + "  app: <path:app#name>\n")
    tenants = []
    for index in range(8):
        secrets = tmp_path / f"secrets-{index}.yaml"
        secrets.write_text(
            f"app:\n  user: tenant-{index}-user\n  port: {index}\n  name: n{index}\n"
        )
        tenants.append({**env, "AVP_FILE_PATH": str(secrets), "ARGOCD_APP_NAME": f"app{index}"})
    before = zygote.served()
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda e: plugin(["generate", str(manifest)], e), tenants))
    assert zygote.served() == before + 1 + 8  # the earlier --status, then the 8 renders
    for index, run in enumerate(runs):
        assert run.code == 0, run.stderr
        text = run.stdout.decode()
        assert f"user: tenant-{index}-user" in text and f"app: n{index}" in text
        others = [f"tenant-{other}-user" for other in range(8) if other != index]
        assert not any(name in text for name in others)


def test_the_zygote_replaces_itself_after_max_requests(tmp_path: Path, env: dict[str, str]) -> None:
    zygote = Zygote(env, "--max-requests", "3")
    try:
        pid = zygote.pid
        (tmp_path / "m.yaml").write_text(MANIFEST)
        runs = [plugin(["generate", str(tmp_path / "m.yaml")], env) for _ in range(5)]
        assert all(run.code == 0 and run.stdout == runs[0].stdout for run in runs)
        deadline = time.monotonic() + 60
        while (status := zygote.status()) is None:  # the replacement may still be importing
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # More than 3 connections were made: the count started again in the same process
        # (exec keeps the process id and the listening socket).
        assert int(status["pid"]) == pid and int(status["served"]) < 3
    finally:
        zygote.stop()


def test_a_code_change_on_disk_restarts_the_zygote(tmp_path: Path, env: dict[str, str]) -> None:
    """A copy of the package is served; changing one of its files makes the zygote re-exec
    before the next request, which is never served by the code it had loaded."""
    install = tmp_path / "install"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "plugin", install / "plugin", ignore=ignore)
    env = {**env, "PYTHONPATH": str(install)}
    zygote = Zygote(env)
    try:
        assert b"docs/configuration.md" in plugin(["--help"], env).stdout
        old_spare = _one_spare(zygote)
        module = install / "plugin" / "cli.py"
        module.write_text(module.read_text().replace("docs/configuration.md", "docs/changed.md"))
        run = plugin(["--help"], env)
        assert run.code == 0 and b"docs/changed.md" in run.stdout, "served by stale code"
        assert not alive(old_spare), "the spare forked from the old code is still waiting"
        deadline = time.monotonic() + 60
        while zygote.status() is None:
            assert time.monotonic() < deadline, "the zygote did not come back"
            time.sleep(0.2)
        before = zygote.served()
        again = plugin(["--help"], env)
        assert zygote.served() == before + 2  # --status and the render: served again
        assert b"docs/changed.md" in again.stdout
        zygote.stop()
        assert "the plugin's code changed on disk; restarting" in zygote.stderr()
    finally:
        zygote.stop()


def test_a_request_does_not_stat_every_module_when_the_kernel_watches_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With inotify the stamp is compared when a file changed, not on each request's path."""
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    watch = server.CodeWatch.start([str(module)])
    assert watch is not None
    compared: list[int] = []
    monkeypatch.setattr(server, "code_stamp", lambda: compared.append(1) or {})
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote = server.Zygote(listener, str(tmp_path / "s.sock"), 10, lambda report: 0, watch=watch)
    ours, theirs = socket.socketpair()
    theirs.close()  # the supervisor reads the end of the request, refuses it and exits
    try:
        zygote.dispatch(ours)
        os.wait()
        assert zygote.served == 1 and compared == []
        assert not select.select([watch.fd], [], [], 0)[0]
        module.write_text("x = 22\n")
        assert select.select([watch.fd], [], [], 10)[0], "inotify did not report the change"
        watch.drain()
        assert not select.select([watch.fd], [], [], 0)[0]
    finally:
        listener.close()
        watch.close()


def test_status_without_a_zygote_exits_1(env: dict[str, str]) -> None:
    run = plugin(["serve", "--status"], env)
    assert run.code == 1 and run.stdout.startswith(b"zygote: not running")


def test_socket_path_defaults() -> None:
    assert client.socket_path({"PLUGIN_SERVE_SOCKET": "/s/x.sock"}) == "/s/x.sock"
    assert client.socket_path({"XDG_RUNTIME_DIR": "/run/user/9"}) == (
        "/run/user/9/argocd-secrets-plugin/serve.sock"
    )
    assert client.socket_path({"PLUGIN_CACHE_DIR": "/c"}) == "/c/serve/serve.sock"
    assert client.socket_path({"HOME": "/h"}) == (
        "/h/.cache/argocd-secrets-plugin/serve/serve.sock"
    )
    # An Application's setting arrives as ARGOCD_ENV_*: it cannot move the socket.
    assert client.socket_path({"HOME": "/h", "ARGOCD_ENV_PLUGIN_SERVE_SOCKET": "/evil"}) == (
        "/h/.cache/argocd-secrets-plugin/serve/serve.sock"
    )


def test_exec_starts_a_detached_zygote_then_becomes_the_program(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """What the sidecar does: `plugin serve --exec PROGRAM` (here PROGRAM asks for the status)."""
    program = [PYTHON_BIN, "-m", "plugin", "serve"]
    with serve_exec([*program, "--exec", *program, "--status"], env, tmp_path / "log") as (
        code,
        status,
    ):
        assert code == 0 and status["zygote"] == "running"
        pid = int(status["pid"])
        assert pid != code and Path(f"/proc/{pid}").exists()
        # Past the zygote's periodic check of its socket file, it still serves.
        time.sleep(server.CHECK_INTERVAL_SECONDS + 2)
        assert plugin(["serve", "--status"], env).code == 0


PRELOAD_PROBE = """
import sys
from plugin.serve import server
from plugin import libc
from plugin.security import sandbox
from plugin.secrets.vault import tls
warmed = []
server.preload(lambda: warmed.append(True))
print(warmed == [True], sandbox.kernel_abi.cache_info().currsize,
      libc.libc.cache_info().currsize, "encodings.ascii" in sys.modules,
      tls._default_trust_context.cache_info().currsize)
"""


def test_the_zygote_does_once_what_every_request_would_repeat() -> None:
    """Found in a worker's strace: the Landlock probe ran `ldconfig -p` (find_library) in every
    worker, reading /proc as text imported a codec, the parser was rebuilt per request, the
    system's CA certificates were loaded for every HTTPS Vault."""
    proc = subprocess.run(
        [PYTHON_BIN, "-c", PRELOAD_PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.split() == ["True", "1", "1", "True", "1"]


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def test_children_are_found_without_reading_every_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The supervisor's sweep reads its own children list, not /proc/*/stat of the machine."""

    def scan(parent: int) -> list[int]:
        raise AssertionError("scanned every process of the machine")

    monkeypatch.setattr(server, "_children_by_scan", scan)
    running = subprocess.Popen(["sleep", "30"])
    exited = subprocess.Popen(["true"])
    try:
        while _state(exited.pid) != "Z":  # a zombie is a child until it is reaped
            time.sleep(0.01)
        found = server.children_of(os.getpid())
        assert {running.pid, exited.pid} <= set(found)
    finally:
        running.kill()
        running.wait()
        exited.wait()


def test_the_scan_of_every_process_finds_the_same_children() -> None:
    """The fallback for kernels without /proc/PID/task/TID/children: same children, zombies too
    (it reads the process table of `plugin.render.process`)."""
    running = subprocess.Popen(["sleep", "30"])
    exited = subprocess.Popen(["true"])
    try:
        while _state(exited.pid) != "Z":
            time.sleep(0.01)
        scanned = server._children_by_scan(os.getpid())
        assert {running.pid, exited.pid} <= set(scanned)
        assert sorted(scanned) == sorted(server.children_of(os.getpid()))
        assert os.getpid() not in scanned and server._children_by_scan(running.pid) == []
    finally:
        running.kill()
        running.wait()
        exited.wait()


SCRATCH_PROBE = """
import os, sys, tempfile
from plugin.serve import server

class Zygote:
    temp_settings = ()

zygote = Zygote()
zygote_dir = tempfile.gettempdir()
zygote.temp_settings = server.temp_settings()
same = {k.encode(): v.encode() for k, v in os.environ.items()}
real_probe = tempfile._get_default_tempdir
def probe(*args):
    raise SystemExit("tempfile probed its candidates again")
tempfile._get_default_tempdir = probe
first = server._scratch(same, zygote)
tempfile._get_default_tempdir = real_probe
second = server._scratch({**same, b"TMPDIR": sys.argv[1].encode()}, zygote)
print(os.path.dirname(first) == zygote_dir, os.path.dirname(second) == sys.argv[1])
os.rmdir(first)
os.rmdir(second)
"""


def test_the_scratch_directory_is_found_without_probing_unless_tmpdir_differs(
    tmp_path: Path,
) -> None:
    """`tempfile` writes a probe file per candidate directory; the zygote did it once."""
    proc = subprocess.run(
        [PYTHON_BIN, "-c", SCRATCH_PROBE, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.split() == ["True", "True"]


#: A zygote whose workers wait, before the reference index record of a successful generate,
#: until the test opens the FIFO named by the request's SERVE_TEST_GATE (a test's own zygote:
#: the plugin has no such hook). The record is the after-work the early status does not wait for.
GATED_ZYGOTE = """
import os, sys
from plugin import cli
recorded = cli._record_references
def gated(*args, **kwargs):
    with open(os.environ["SERVE_TEST_GATE"], "rb") as gate:
        gate.read()
    return recorded(*args, **kwargs)
cli._record_references = gated
sys.exit(cli.main())
"""


def _records(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["PLUGIN_CACHE_DIR"]) / "rotation" / "apps").glob("*.json"))


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _open_gate(gate: Path) -> None:
    with gate.open("wb"):
        pass  # the worker's open() returns, its read() sees the end: the record goes on


def test_the_client_has_its_status_and_output_while_the_after_work_runs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The early status: the worker reports once the manifests are out and it has closed the
    client's stdio; the reference index record runs after the client exited (here it waits
    for the test), then the worker, its process group and its scratch directory are gone."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    env = {**env, "ARGOCD_APP_NAME": "app", "ARGOCD_APP_NAMESPACE": "ns"}
    zygote = Zygote(env, command=(PYTHON_BIN, "-c", GATED_ZYGOTE))
    try:
        (tmp_path / "m.yaml").write_text(MANIFEST)
        request_env = {**env, "SERVE_TEST_GATE": str(gate), "TMPDIR": str(scratch_parent)}
        inproc_env = {**request_env, "PLUGIN_SERVE": "off"}
        argv = ["generate", str(tmp_path / "m.yaml")]
        try:
            # communicate() returns once the client exited AND its stdout and stderr reached
            # their end: no process holds them while the worker waits at the gate.
            served = plugin(argv, request_env, timeout=60)
            assert not _records(env), "the record was written before the status"
            assert list(scratch_parent.iterdir()), "the worker's scratch is there while it works"
            workers = descendants(zygote.proc.pid)
            assert workers, "the after-work is not running"
        finally:
            _open_gate(gate)
        _wait_until(lambda: bool(_records(env)), "the after-work did not record the render")
        _wait_until(lambda: not descendants(zygote.proc.pid), "the worker did not end")
        _wait_until(lambda: not list(scratch_parent.iterdir()), "the scratch was not removed")
        # `python -m plugin` without the zygote's gate: nobody may wait on the FIFO any more
        # (a thread opening it would block forever, and the test process could not exit).
        inproc = plugin(argv, inproc_env)
        assert (served.code, served.stdout, served.stderr) == (
            inproc.code,
            inproc.stdout,
            inproc.stderr,
        )
        assert served.code == 0 and CANARY.encode() in served.stdout
    finally:
        zygote.stop()


def test_with_verbose_the_status_waits_for_the_record_it_logs(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    """Under --verbose the record logs a line: the status (and stderr's end) come after it."""
    env = {**env, "ARGOCD_APP_NAME": "app", "ARGOCD_APP_NAMESPACE": "ns"}
    (tmp_path / "m.yaml").write_text(MANIFEST)
    inproc, served = both_ways(["generate", "--verbose", str(tmp_path / "m.yaml")], env)
    assert served.code == inproc.code == 0  # type: ignore[attr-defined]
    last = b"plugin: reference index: 1 references recorded\n"
    assert served.stderr.endswith(last) and inproc.stderr.endswith(last)  # type: ignore[attr-defined]


#: Stands in for helm where only the start of the renderer matters: helm cannot report how it
#: was started, this prints it as a manifest (its PR_SET_PDEATHSIG, set only by code run in
#: the child between fork and exec).
PROBE_HELM = """#!/usr/bin/python3 -I
import ctypes
signal = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(signal))  # PR_GET_PDEATHSIG
print("apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: probe\\ndata:")
print(f"  pdeathsig: '{signal.value}'")
"""


def test_a_workers_renderer_starts_without_code_in_the_child(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    """Through the zygote the renderer starts through vfork (its supervisor kills what the
    worker leaves, so no PR_SET_PDEATHSIG is needed); in-process runs keep setting it."""
    helm = tmp_path / "bin" / "helm"
    helm.parent.mkdir()
    helm.write_text(PROBE_HELM)
    helm.chmod(0o755)
    app = tmp_path / "chart"
    (app / "templates").mkdir(parents=True)
    (app / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    env = {**env, "HELM_BIN": str(helm), "ARGOCD_APP_NAME": "probe"}
    inproc, served = both_ways(["generate", "."], env, cwd=app)
    assert inproc.code == served.code == 0, (inproc.stderr, served.stderr)  # type: ignore[attr-defined]
    assert b"pdeathsig: '9'" in inproc.stdout  # type: ignore[attr-defined]
    assert b"pdeathsig: '0'" in served.stdout  # type: ignore[attr-defined]


def test_a_worker_killed_mid_render_takes_its_renderer_with_it(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    """A worker starts its renderer without PR_SET_PDEATHSIG (vfork, `plugin.render.process`):
    when the worker itself is SIGKILLed (the OOM killer), its supervisor kills the renderer.
    The renderer is a program that never ends by itself (a chart that never finishes)."""
    pid_file = tmp_path / "renderer.pid"
    helm = tmp_path / "bin" / "helm"
    helm.parent.mkdir()
    helm.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    helm.chmod(0o755)
    app = tmp_path / "chart"
    (app / "templates").mkdir(parents=True)
    (app / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    env = {
        **env,
        "HELM_BIN": str(helm),
        "ARGOCD_APP_NAME": "probe",
        "PLUGIN_SANDBOX": "off",
    }  # it writes its pid
    client_proc = subprocess.Popen(
        [PYTHON_BIN, "-m", "plugin", "generate", "."],
        cwd=app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the renderer never started"
            time.sleep(0.05)
        renderer = int(pid_file.read_text())
        stat = Path(f"/proc/{renderer}/stat").read_text()
        worker = int(stat[stat.rfind(")") + 2 :].split()[1])
        os.kill(worker, signal.SIGKILL)
        out, _ = client_proc.communicate(timeout=60)
        # The client dies as its worker did (it once failed setting SIGKILL's handler).
        assert client_proc.returncode == -signal.SIGKILL and out == b""
        deadline = time.monotonic() + 20
        while alive(renderer):
            assert time.monotonic() < deadline, "the renderer outlived its SIGKILLed worker"
            time.sleep(0.1)
    finally:
        if client_proc.poll() is None:
            client_proc.kill()
            client_proc.communicate()


def _one_spare(zygote: Zygote) -> int:
    """The zygote's spare supervisor, once the processes of earlier requests are gone."""
    deadline = time.monotonic() + 60
    while True:
        found = spares_of(zygote.proc.pid)
        if len(found) == 1 and not descendants(zygote.proc.pid):
            return found[0]
        assert len(found) <= 1, f"more than one spare: {found}"
        assert time.monotonic() < deadline, f"no single spare: {found}"
        time.sleep(0.05)


def test_a_spare_waits_for_the_next_request_and_serves_it(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    """The supervisor is forked before its connection arrives: the request is served by the
    spare that waited (it is gone afterwards) and exactly one new spare waits again."""
    (tmp_path / "m.yaml").write_text(MANIFEST)
    first = _one_spare(zygote)
    # Its worker, forked in advance, waits with it; nothing else runs under a spare.
    waiting = descendants(first, spares=True)
    assert len(waiting) == 1 and descendants(first) == set()
    run = plugin(["generate", str(tmp_path / "m.yaml")], env)
    assert run.code == 0 and CANARY.encode() in run.stdout
    second = _one_spare(zygote)
    assert second != first and not alive(first)
    # Several requests, one after the other: never more than one spare at a time.
    for _ in range(3):
        assert plugin(["generate", str(tmp_path / "m.yaml")], env).stdout == run.stdout
    assert _one_spare(zygote) not in (first, second)


def _replaced(zygote: Zygote, killed: int) -> bool:
    return not alive(killed) and spares_of(zygote.proc.pid) not in ([], [killed])


def test_a_killed_spare_is_replaced(tmp_path: Path, env: dict[str, str], zygote: Zygote) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    for _ in range(2):
        killed = _one_spare(zygote)
        os.kill(killed, signal.SIGKILL)
        _wait_until(functools.partial(_replaced, zygote, killed), "the spare was not replaced")
        run = plugin(["generate", str(tmp_path / "m.yaml")], env)
        assert run.code == 0 and CANARY.encode() in run.stdout
    zygote.stop()
    assert f"the spare supervisor {killed} exited" in zygote.stderr()


def test_sigterm_of_the_zygote_leaves_no_process_behind(
    tmp_path: Path, env: dict[str, str]
) -> None:
    zygote = Zygote(env)
    try:
        (tmp_path / "m.yaml").write_text(MANIFEST)
        assert plugin(["generate", str(tmp_path / "m.yaml")], env).code == 0
        spare = _one_spare(zygote)
        under = descendants(zygote.proc.pid, spares=True)
        assert spare in under
    finally:
        zygote.stop()
    # zygote.stop() returned once the zygote was reaped: what it started is gone already.
    assert [pid for pid in under if alive(pid)] == []


def test_a_spare_that_keeps_dying_is_replaced_ever_more_slowly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash loop does not spin: the delay before the next spare doubles, up to a bound."""
    monkeypatch.setattr(server, "wait_as_spare", lambda control, zygote: 3)
    monkeypatch.setattr(server, "SPARE_FIRST_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(server, "SPARE_MAX_DELAY_SECONDS", 0.2)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote = server.Zygote(listener, str(tmp_path / "s.sock"), 10, lambda report: 0)
    delays = []
    try:
        for _ in range(4):
            zygote.replenish()
            spare = zygote.spare
            assert spare is not None
            assert select.select([spare.pidfd], [], [], 10)[0], "the failing spare did not exit"
            zygote.lost_spare()
            delays.append(zygote.spare_delay)
            zygote.replenish()
            assert zygote.spare is None, "a spare was forked again without waiting"
            time.sleep(max(0.0, zygote.spare_due - time.monotonic()))
    finally:
        zygote.stop_spare()
        listener.close()
    assert delays == [0.05, 0.1, 0.2, 0.2]


def test_the_spare_and_its_waiting_worker_serve_the_next_request(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Both forks happened before the request: the spare becomes its supervisor and the worker
    it forked in advance runs the command (here seen in its after-work, held at a gate), both
    under the zygote's own process name again."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    env = {**env, "ARGOCD_APP_NAME": "app", "ARGOCD_APP_NAMESPACE": "ns"}
    zygote = Zygote(env, command=(PYTHON_BIN, "-c", GATED_ZYGOTE))
    try:
        (tmp_path / "m.yaml").write_text(MANIFEST)
        spare = _one_spare(zygote)
        (worker,) = descendants(spare, spares=True)
        try:
            served = plugin(
                ["generate", str(tmp_path / "m.yaml")], {**env, "SERVE_TEST_GATE": str(gate)}
            )
            assert served.code == 0 and CANARY.encode() in served.stdout
            assert {spare, worker} <= descendants(zygote.proc.pid)
            assert (
                Path(f"/proc/{worker}/comm").read_text()
                == Path(f"/proc/{zygote.proc.pid}/comm").read_text()
            )
        finally:
            _open_gate(gate)
        _wait_until(lambda: not alive(worker) and not alive(spare), "the request did not end")
    finally:
        zygote.stop()


def _private_dirty_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError(f"no Private_Dirty for {pid}")


def _waiting_worker_memory(env: dict[str, str]) -> int:
    """Private dirty KiB of the spare's waiting worker, once it has settled."""
    zygote = Zygote(env)
    try:
        spare = _one_spare(zygote)
        (worker,) = descendants(spare, spares=True)
        settled, last = 0, -1
        deadline = time.monotonic() + 30
        while settled < 3 and time.monotonic() < deadline:  # populating takes tens of ms
            now = _private_dirty_kib(worker)
            settled = settled + 1 if now == last else 0
            last = now
            time.sleep(0.1)
        return last
    finally:
        zygote.stop()


def test_the_waiting_worker_takes_its_copy_on_write_faults_while_it_waits(
    env: dict[str, str],
) -> None:
    """With the default setting the waiting worker owns its heap before the request (the
    faults its render would take are taken while idle); PLUGIN_SERVE_PREFAULT=off leaves the
    memory shared with the zygote."""
    populated = _waiting_worker_memory(env)
    shared = _waiting_worker_memory({**env, "PLUGIN_SERVE_PREFAULT": "off"})
    assert populated > shared + 8 * 1024, (populated, shared)
