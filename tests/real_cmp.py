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

Tools: ``ARGOCD_CMP_SERVER_BIN`` / ``CMP_CLIENT_BIN`` / ``GOYAML_JSON_BIN``, else
``.tools/bin/`` (``make tools``). :func:`require` skips the test when one is missing, or
fails it when CI=true.

This module imports nothing from the ``plugin`` package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
PLUGIN_YAML = ROOT / "cmp-config" / "plugin.yaml"
PLUGIN_WITH_DISCOVERY_YAML = ROOT / "cmp-config" / "plugin-with-discovery.yaml"

REAL_CMP_TOOL_ENV_VARS = {
    "argocd-cmp-server": "ARGOCD_CMP_SERVER_BIN",
    "cmp-client": "CMP_CLIENT_BIN",
    "goyaml-json": "GOYAML_JSON_BIN",
}

#: What cmp-client sends when a request names none (the same defaults as tests/cmp_harness.py).
DEFAULT_API_VERSIONS = (
    "v1",
    "apps/v1",
    "apps/v1/Deployment",
    "batch/v1",
    "networking.k8s.io/v1",
    "apiextensions.k8s.io/v1",
)

START_TIMEOUT = 30.0


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
    name: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = plugin_name(self.config)
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

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

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
        env["ARGOCD_CMP_SERVER_LOGFORMAT"] = "text"
        env["ARGOCD_CMP_SERVER_LOGLEVEL"] = self.log_level
        argv = [self.server_bin, "--config-dir-path", str(config_dir)]
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
        deadline = time.monotonic() + START_TIMEOUT
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
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: on SIGTERM argocd-cmp-server only removes its socket (new
        requests fail, running ones go on) and keeps running until it is killed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
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
