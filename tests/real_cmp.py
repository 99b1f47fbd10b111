"""The real Argo CD sidecar server for the tests: ``argocd-cmp-server`` driven by ``cmp-client``.

Both are built from Argo CD's own Go module (tests/toolchain/argocd, pinned by
scripts/install-tools): ``argocd-cmp-server`` is Argo CD's cmp-server command unchanged;
``cmp-client`` calls the repo-server's own manifest generation
(``reposerver/repository.GenerateManifests``), which picks the sidecar, sends the environment,
streams the repository as tar+gzip and splits the answer, and prints what Argo CD got as JSON.

:class:`RealCmpServer` starts one cmp-server in a private directory:

- ``<dir>/config/plugin.yaml`` is a copy of the given plugin definition
  (``--config-dir-path <dir>/config``);
- the socket is ``<socket_dir>/<name>.sock`` (``ARGOCD_PLUGINSOCKFILEPATH``; several servers
  may share one socket directory, as sidecars of one repo-server do);
- the server's work directory is ``<dir>/work/_cmp_server`` (``ARGOCD_CMP_WORKDIR``; the server
  wipes it at start, so every server has its own);
- its environment is exactly ``env`` (the sidecar container's environment) plus those
  variables, and its log goes to ``<dir>/cmp-server.log``.

Requests (each one ``cmp-client`` run; ``env`` is ``spec.source.plugin.env`` without the
``ARGOCD_ENV_`` prefix, ``params`` is ``spec.source.plugin.parameters``):

- ``generate(app_dir, env, params, repo=...)`` -> :class:`CmpResult` with ``manifests``, or
  ``error`` / ``condition`` / ``cmp_message`` as Argo CD shows them;
- ``match(...)`` (MatchRepository), ``parameters(...)`` (GetParametersAnnouncement),
  ``check()`` (CheckPluginConfiguration).

``app_dir`` is the application directory; ``repo`` (default: ``app_dir`` itself) is the
repository root that is streamed, and the source path is ``app_dir`` relative to it.

With ``PLUGIN_TEST_SERVE=1`` a server is started the way the sidecar image starts it,
``plugin serve --exec argocd-cmp-server ...``: the zygote runs beside the server with the
server's environment (its socket private to the server, ``PLUGIN_SERVE_SOCKET``), and
:meth:`RealCmpServer.check_zygote` fails when the zygote served fewer connections than the
server started ``plugin`` commands (a silent fallback to in-process rendering would pass).

:class:`Sidecar` is what the CMP tests use (the ``sidecar`` fixture): it takes an
:class:`~tests.cmp_harness.App` and returns a :class:`Result` holding both what Argo CD got
(``manifests``, from the repo-server's code) and what the ``plugin`` command printed and
returned (``code``, ``stdout``, ``stderr``), read from the server's own log (JSON, debug level:
``runCommand`` logs each command's directory, stdout, stderr and exit status).
:data:`POOL` keeps one started server per (config, environment, socket directory) for the
session.

Tools: ``ARGOCD_CMP_SERVER_BIN`` / ``CMP_CLIENT_BIN`` / ``GOYAML_JSON_BIN``, else
``.tools/bin/`` (``make tools``). :func:`require` skips the test when one is missing, or
fails it when CI=true.

This module imports nothing from the ``plugin`` package.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cmp_harness import DEFAULT_API_VERSIONS, App, generate_env, run_direct

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
PLUGIN_YAML = ROOT / "cmp-config" / "plugin.yaml"
PLUGIN_WITH_DISCOVERY_YAML = ROOT / "cmp-config" / "plugin-with-discovery.yaml"

REAL_CMP_TOOL_ENV_VARS = {
    "argocd-cmp-server": "ARGOCD_CMP_SERVER_BIN",
    "cmp-client": "CMP_CLIENT_BIN",
    "goyaml-json": "GOYAML_JSON_BIN",
}

START_TIMEOUT = 30.0

#: Run every server the way the sidecar image does, `plugin serve --exec argocd-cmp-server`
#: (a zygote beside the server); CI runs the CMP suite both ways.
SERVE = os.environ.get("PLUGIN_TEST_SERVE", "") == "1"


# --- tools ----------------------------------------------------------------------------------


def find(name: str) -> str | None:
    """Path of argocd-cmp-server, cmp-client or goyaml-json, or None."""
    if name not in REAL_CMP_TOOL_ENV_VARS:
        raise ValueError(f"unknown tool {name!r}; known: {', '.join(REAL_CMP_TOOL_ENV_VARS)}")
    from_env = os.environ.get(REAL_CMP_TOOL_ENV_VARS[name])  # when set, the only candidate
    return shutil.which(from_env or str(TOOLS_BIN / name))


def require(name: str) -> str:
    """Path of the tool; skips the test when it is missing (fails it when CI=true)."""
    path = find(name)
    if path is None:
        reason = (
            f"{name} not found (set {REAL_CMP_TOOL_ENV_VARS[name]} or run `make tools` to "
            f"install it into {TOOLS_BIN})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
        pytest.skip(reason)
    return path


def plugin_name(config: Path) -> str:
    """``<metadata.name>-<spec.version>``, or ``<metadata.name>`` without a version."""
    data = yaml.safe_load(config.read_text())
    name = str(data["metadata"]["name"])
    version = (data.get("spec") or {}).get("version")
    return f"{name}-{version}" if version else name


# --- results --------------------------------------------------------------------------------


@dataclass
class CmpResult:
    """One cmp-client run: its exit status, its JSON answer and its stderr."""

    exit_code: int
    data: dict[str, Any]
    stderr: str

    @property
    def ok(self) -> bool:
        return bool(self.data.get("ok"))

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """The objects Argo CD got (Lists flattened), in order; empty on failure."""
        return list(self.data.get("manifests") or [])

    @property
    def error(self) -> str:
        """The message the repo-server returns (empty when ok)."""
        return str(self.data.get("error", ""))

    @property
    def condition(self) -> str:
        """The Application's ComparisonError message (generate only; empty when ok)."""
        return str(self.data.get("condition", ""))

    @property
    def cmp_message(self) -> str:
        """The cmp-server's gRPC status message, when the error came from it."""
        return str(self.data.get("cmp_message", ""))

    @property
    def cmp_code(self) -> str:
        return str(self.data.get("cmp_code", ""))

    @property
    def seconds(self) -> float:
        return float(self.data.get("seconds", 0.0))

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m.get("kind") == kind]


# --- the server -----------------------------------------------------------------------------


def _socket_ready(path: Path) -> bool:
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


#: One logrus text field: key=value, the value bare or Go-quoted (strconv.Quote).
_TEXT_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')
#: runCommand's error for a failed command: "`ARGS` failed CAUSE[: STDERR]".
_COMMAND_ERROR = re.compile(
    r"`(?P<args>[^`]*)` failed (?P<cause>[^:]+)(?:: (?P<stderr>.*))?\Z", re.S
)


def parse_log_line(line: str) -> dict[str, Any] | None:
    """One entry of the cmp-server's log (JSON or logrus text format); None for other lines
    (the zygote's own messages share the log)."""
    line = line.strip()
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return None
        return entry if isinstance(entry, dict) else None
    if not line.startswith("time="):
        return None
    entry = {}
    for key, value in _TEXT_FIELD.findall(line):
        entry[key] = ast.literal_eval(value) if value.startswith('"') else value
    return entry


@dataclass
class Exec:
    """One command the cmp-server ran, as its log tells it (``runCommand``): the command line,
    the directory, stdout (logged at debug level), stderr and how it ended."""

    args: str
    dir: str
    stdout: str | None = None
    stderr: str = ""
    #: 0, the exit status, or minus the signal number ("signal: killed" -> -9).
    code: int | None = None

    def finish(self, entry: Mapping[str, Any]) -> None:
        level, msg = entry.get("level"), str(entry.get("msg", ""))
        if level == "debug" and "duration" in entry:
            self.stdout = msg
        elif msg in ("Plugin command successful", "Plugin command returned zero output"):
            self.code = 0
            self.stderr = str(entry.get("stderr", ""))
        elif level == "error" and (found := _COMMAND_ERROR.match(msg)):
            cause = found.group("cause")
            if cause.startswith("exit status "):
                self.code = int(cause.removeprefix("exit status "))
            elif cause.startswith("signal: "):
                name = "SIG" + cause.removeprefix("signal: ").upper()
                self.code = -int(getattr(signal, name, signal.SIGKILL))
            else:
                self.code = -1
            self.stderr = found.group("stderr") or ""


@dataclass
class RealCmpServer:
    """One argocd-cmp-server process (see the module docstring)."""

    server_bin: str
    client_bin: str
    config: Path
    env: Mapping[str, str]
    workdir: Path
    socket_dir: Path | None = None
    log_level: str = "info"
    log_format: str = "text"
    #: Started as the image starts it, `plugin serve --exec argocd-cmp-server ...` (None: when
    #: PLUGIN_TEST_SERVE=1 and the environment does not turn the zygote off).
    serve: bool | None = None
    name: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _zygote_dir: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = plugin_name(self.config)
        if self.serve is None:
            self.serve = SERVE and self.env.get("PLUGIN_SERVE", "") != "off"
        if self.socket_dir is None:
            # Unix socket paths are limited to 107 bytes: keep the directory short.
            self.socket_dir = Path(tempfile.mkdtemp(prefix="cmp-sock-"))
            self._own_socket_dir = True
        else:
            self._own_socket_dir = False

    @property
    def socket_path(self) -> Path:
        assert self.socket_dir is not None
        return self.socket_dir / f"{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "cmp-server.log"

    @property
    def requests_dir(self) -> Path:
        """Where the server unpacks each request's repository (one directory per request)."""
        return self.workdir / "work" / "_cmp_server"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_entries(self, offset: int = 0) -> list[dict[str, Any]]:
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
        return [e for e in map(parse_log_line, text.splitlines()) if e is not None]

    def execs(self, offset: int = 0) -> list[Exec]:
        """The commands run since log position `offset`, in order (needs log level debug for
        their stdout)."""
        runs: dict[str, Exec] = {}
        for entry in self.log_entries(offset):
            exec_id = entry.get("execID")
            if not exec_id:
                continue
            if "dir" in entry and exec_id not in runs:
                runs[exec_id] = Exec(str(entry.get("msg", "")), str(entry["dir"]))
            elif exec_id in runs:
                runs[exec_id].finish(entry)
        return list(runs.values())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> RealCmpServer:
        config_dir = self.workdir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.config, config_dir / "plugin.yaml")
        (self.workdir / "work").mkdir(exist_ok=True)
        env = dict(self.env)
        env["ARGOCD_PLUGINSOCKFILEPATH"] = str(self.socket_dir)
        env["ARGOCD_CMP_WORKDIR"] = str(self.workdir / "work")
        env["ARGOCD_CMP_SERVER_LOGFORMAT"] = self.log_format
        env["ARGOCD_CMP_SERVER_LOGLEVEL"] = self.log_level
        argv = [self.server_bin, "--config-dir-path", str(config_dir)]
        if self.serve:
            # The sidecar image's command (cmp-config/install, Dockerfile). The zygote's socket
            # is private to this server, so servers of one session never share a zygote.
            plugin = shutil.which("plugin", path=env.get("PATH"))
            assert plugin, "`plugin` is not on the sidecar's PATH"
            self._zygote_dir = Path(tempfile.mkdtemp(prefix="zyg-"))
            env["PLUGIN_SERVE_SOCKET"] = str(self._zygote_dir / "serve.sock")
            argv = [plugin, "serve", "--exec", *argv]
        self._server_env = env
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT + (60 if self.serve else 0)
        while not _socket_ready(self.socket_path):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"argocd-cmp-server exited with code {self._proc.returncode}:\n"
                    f"{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"argocd-cmp-server: no socket after {START_TIMEOUT:.0f}s")
            time.sleep(0.05)
        if self.serve:
            assert self.zygote_status() is not None, f"no zygote beside the server:\n{self.log()}"
        return self

    # -- the zygote (serve)

    def zygote_status(self) -> dict[str, str] | None:
        """`plugin serve --status` with the server's environment (None: no zygote answers).
        Every call is one more connection the zygote counts."""
        assert self._zygote_dir is not None
        done = subprocess.run(
            ["plugin", "serve", "--status"],
            env=self._server_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return None
        return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)

    def plugin_execs(self) -> int:
        """How many `plugin` commands the server has started (each one a zygote client)."""
        return sum(1 for e in self.execs() if e.args.split(" ", 1)[0] == "plugin")

    def check_zygote(self) -> None:
        """Every `plugin` command the server ran was served by the zygote: a silent fallback to
        rendering in the client's own process would otherwise pass unnoticed."""
        if not self.serve:
            return
        status = self.zygote_status()
        assert status is not None, "the zygote stopped answering"
        # The zygote counts every connection taken before this one: the two status calls too.
        renders = int(status["served"]) - 1
        wanted = self.plugin_execs()
        assert renders >= wanted, f"the zygote served {renders} of {wanted} plugin commands"

    def _stop_zygote(self) -> None:
        directory, self._zygote_dir = self._zygote_dir, None
        if directory is None:
            return
        self._zygote_dir = directory
        status = self.zygote_status()
        self._zygote_dir = None
        # The zygote stops when its socket file goes; SIGTERM makes it immediate.
        shutil.rmtree(directory, ignore_errors=True)
        if status and status.get("pid", "").isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(status["pid"]), signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: on SIGTERM argocd-cmp-server only removes its socket (new
        requests fail, running ones go on) and keeps running until it is killed. Then the
        zygote, if any."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._stop_zygote()
        if self._own_socket_dir and self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> RealCmpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests

    def _run(
        self,
        op: str,
        app_dir: Path | None,
        env: Mapping[str, str] | None,
        params: Sequence[Mapping[str, Any]] | None,
        *,
        repo: Path | None = None,
        plugin: str | None = None,
        no_plugin_block: bool = False,
        app: Mapping[str, str] | None = None,
        kube_version: str = "1.29.0",
        api_versions: Sequence[str] = DEFAULT_API_VERSIONS,
        tar_exclude: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> CmpResult:
        assert self.socket_dir is not None
        argv = [
            self.client_bin,
            "-op",
            op,
            "-socket-dir",
            str(self.socket_dir),
            "-plugin",
            self.name if plugin is None else plugin,
            "-timeout",
            f"{timeout}s",
            "-kube-version",
            kube_version,
            "-api-versions",
            ",".join(api_versions),
        ]
        if app_dir is not None:
            root = Path(repo if repo is not None else app_dir).resolve()
            rel = Path(app_dir).resolve().relative_to(root)
            argv += ["-repo", str(root), "-path", rel.as_posix()]
        if no_plugin_block:
            argv.append("-no-plugin-block")
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        if params is not None:
            argv += ["-params", json.dumps(list(params))]
        for pattern in tar_exclude:
            argv += ["-tar-exclude", pattern]
        for flag, value in (app or {}).items():  # app-name, app-namespace, project, revision...
            argv += [f"-{flag}", value]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=timeout + 60,
        )
        if proc.returncode not in (0, 1) or not proc.stdout.strip():
            raise RuntimeError(f"cmp-client failed ({proc.returncode}): {proc.stderr[-3000:]}")
        return CmpResult(proc.returncode, json.loads(proc.stdout), proc.stderr)

    def generate(
        self,
        app_dir: Path,
        env: Mapping[str, str] | None = None,
        params: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> CmpResult:
        """Argo CD's manifest generation for a plugin source at ``app_dir``."""
        return self._run("generate", app_dir, env, params, **kwargs)

    def match(
        self,
        app_dir: Path,
        env: Mapping[str, str] | None = None,
        params: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> CmpResult:
        """MatchRepository: ``data["is_supported"]``, ``data["is_discovery_enabled"]``."""
        return self._run("match", app_dir, env, params, **kwargs)

    def parameters(
        self,
        app_dir: Path,
        env: Mapping[str, str] | None = None,
        params: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> CmpResult:
        """GetParametersAnnouncement: ``data["announcements"]``."""
        return self._run("parameters", app_dir, env, params, **kwargs)

    def check(self, **kwargs: Any) -> CmpResult:
        """CheckPluginConfiguration: ``data["is_discovery_configured"]``,
        ``data["provide_git_creds"]``."""
        return self._run("check", None, None, None, **kwargs)


@contextlib.contextmanager
def real_cmp_server(
    config: Path,
    env: Mapping[str, str],
    workdir: Path,
    socket_dir: Path | None = None,
) -> Iterator[RealCmpServer]:
    """A started :class:`RealCmpServer` (tools from :func:`require`), stopped on exit."""
    server = RealCmpServer(
        require("argocd-cmp-server"), require("cmp-client"), config, env, workdir, socket_dir
    )
    with server:
        yield server


class ServerPool:
    """Started servers, one per (config, environment, socket directory), reused until
    :meth:`stop_all` (a server starts in about half a second, a zygote beside it in more).

    Servers log as JSON at debug level, so that :class:`Sidecar` can read what each command
    printed."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, tuple[tuple[str, str], ...], str], RealCmpServer] = {}
        self._lock = threading.Lock()
        self._dirs: list[Path] = []
        self._scratch: dict[str, Path] = {}

    def get(
        self, env: Mapping[str, str], config: Path = PLUGIN_YAML, socket_dir: Path | None = None
    ) -> RealCmpServer:
        key = (str(config), tuple(sorted(env.items())), str(socket_dir))
        with self._lock:
            server = self._servers.get(key)
            if server is None or not server.running:
                workdir = Path(tempfile.mkdtemp(prefix="real-cmp-"))
                self._dirs.append(workdir)
                server = RealCmpServer(
                    require("argocd-cmp-server"),
                    require("cmp-client"),
                    config,
                    env,
                    workdir,
                    socket_dir,
                    log_level="debug",
                    log_format="json",
                ).start()
                self._servers[key] = server
            return server

    def scratch(self, name: str) -> Path:
        """A directory for the session (the same one for the same `name`), removed by
        :meth:`stop_all`: a sidecar home shared by the tests that use one server."""
        with self._lock:
            if name not in self._scratch:
                self._scratch[name] = Path(tempfile.mkdtemp(prefix="sidecar-"))
                self._dirs.append(self._scratch[name])
            return self._scratch[name]

    def release(self, server: RealCmpServer) -> None:
        """Stop one server (after checking its zygote) and forget it."""
        with self._lock:
            for key, known in list(self._servers.items()):
                if known is server:
                    del self._servers[key]
        try:
            if server.running:
                server.check_zygote()
        finally:
            server.stop()

    def stop_all(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
            dirs, self._dirs = self._dirs, []
            self._scratch.clear()
        problems = []
        for server in servers:
            try:
                if server.running:
                    server.check_zygote()
            except AssertionError as exc:
                problems.append(f"{server.config.name}: {exc}")
            finally:
                server.stop()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)
        assert not problems, "; ".join(problems)


#: The session's servers (stopped by tests/conftest.py at the end of the session).
POOL = ServerPool()


# --- requests the way the tests write them ---------------------------------------------------


class AmbiguousRunError(AssertionError):
    """Several requests ran at once on one server: the log cannot say which output is whose."""


@dataclass
class Result:
    """One request through the real server: what Argo CD got (``argocd``) and what the plugin
    command printed and returned (``code``, ``stdout``, ``stderr``, from the server's log)."""

    argocd: CmpResult
    execs: list[Exec]

    def _exec(self) -> Exec | None:
        if len(self.execs) > 1:
            raise AmbiguousRunError(
                f"{len(self.execs)} commands ran during this request (concurrent requests on "
                "one server): compare what Argo CD got (`manifests`, `ok`) instead"
            )
        return self.execs[0] if self.execs else None

    @property
    def ok(self) -> bool:
        return self.argocd.ok

    @property
    def code(self) -> int:
        """The command's exit status (minus the signal number when killed); -1 when the
        request failed before the command ended (no sidecar, deadline while streaming)."""
        run = self._exec()
        return -1 if run is None or run.code is None else run.code

    @property
    def stdout(self) -> str:
        run = self._exec()
        return "" if run is None or run.stdout is None else run.stdout

    @property
    def stderr(self) -> str:
        """The command's stderr (on failure: trimmed, as it reaches the Application); without a
        command, the error Argo CD shows."""
        run = self._exec()
        if run is None:
            return self.argocd.error
        return run.stderr

    @property
    def seconds(self) -> float:
        return self.argocd.seconds

    @property
    def timed_out(self) -> bool:
        """Argo CD's deadline ended the request (the plugin's own deadline does not count)."""
        if self.argocd.cmp_code == "DeadlineExceeded":
            return True
        run = self._exec() if len(self.execs) == 1 else None
        return run is not None and run.code is not None and run.code < 0

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """The objects Argo CD got (kube.SplitYAML, Lists flattened); empty when the plugin
        failed. A plugin that succeeded but whose output Argo CD refused fails here."""
        if not self.argocd.ok and self.execs and self.code == 0:
            raise AssertionError(f"the plugin exited 0 but Argo CD failed: {self.argocd.error}")
        return self.argocd.manifests

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [
            m
            for m in self.by_kind(kind)
            if name is None or m.get("metadata", {}).get("name") == name
        ]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]


def _command(block: Mapping[str, Any] | None) -> str:
    """How runCommand logs a plugin.yaml command (GetCommandArgsToLog: arguments with spaces
    quoted)."""
    words = [*(block or {}).get("command", []), *(block or {}).get("args", [])]
    return " ".join(f"'{w}'" if " " in w or not w else w for w in words)


@dataclass
class Sidecar:
    """A plugin sidecar the way the tests use it: Applications (:class:`App`) in, what Argo CD
    gets and what the plugin printed out, through the real argocd-cmp-server."""

    server: RealCmpServer
    sidecar_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sidecar_env:
            self.sidecar_env = dict(self.server.env)
        spec = yaml.safe_load(self.server.config.read_text())["spec"]
        self._generate = _command(spec.get("generate"))
        self._find = _command((spec.get("discover") or {}).get("find"))
        self._dynamic = _command((spec.get("parameters") or {}).get("dynamic"))

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def requests_dir(self) -> Path:
        return self.server.requests_dir

    @staticmethod
    def _app(app: App) -> dict[str, str]:
        return {
            "app-name": app.name,
            "app-namespace": app.namespace,
            "project": app.project,
            "revision": app.revision,
            "repo-url": app.repo_url,
            "target-revision": app.target_revision,
        }

    def generate(self, repo: Path, app: App, timeout: float = 60.0, **kwargs: Any) -> Result:
        """GenerateManifest for `app` in repository `repo`, within Argo CD's deadline
        `timeout`."""
        offset = self.server.log_size()
        got = self.server.generate(
            repo / app.path,
            dict(app.env),
            app.parameters,
            repo=repo,
            app=self._app(app),
            kube_version=app.kube_version,
            api_versions=app.api_versions,
            timeout=timeout,
            **kwargs,
        )
        runs = [e for e in self.server.execs(offset) if e.args == self._generate]
        return Result(got, runs)

    def discover(self, repo: Path, app: App) -> bool:
        """MatchRepository (plugin-with-discovery.yaml's `find` command)."""
        got = self.server.match(
            repo / app.path, dict(app.env), app.parameters, repo=repo, app=self._app(app)
        )
        assert got.ok, f"discovery error: {got.error}"
        return bool(got.data["is_supported"])

    def announcements(self, repo: Path, app: App) -> list[dict[str, Any]]:
        """GetParametersAnnouncement: the dynamic command's list, then the static one."""
        got = self.server.parameters(
            repo / app.path, dict(app.env), app.parameters, repo=repo, app=self._app(app)
        )
        assert got.ok, got.error
        return list(got.data["announcements"])

    # -- the plugin outside the server (tests/cmp_harness.py), for what the server cannot show

    def generate_env(self, app: App) -> dict[str, str]:
        """The environment the server would give `plugin generate` for `app`."""
        return generate_env(self.sidecar_env, app)

    def run(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float) -> Any:
        """Run `argv` directly (not through the server): a `--verbose` run, a repository the
        server's tar would change."""
        return run_direct(argv, cwd, env, timeout)


def goyaml_json(text: str, lib: str = "argocd", binary: str | None = None) -> list[Any]:
    """The JSON values Go reads from YAML ``text`` (``goyaml-json -lib=argocd|yamlv2``).

    Raises ValueError with Go's message when Go cannot read it."""
    proc = subprocess.run(
        [binary or require("goyaml-json"), f"-lib={lib}"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise ValueError(proc.stderr.strip())
    return [json.loads(line) for line in proc.stdout.splitlines() if line]
