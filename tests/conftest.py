"""Shared fixtures: pinned external tools, an OpenBao dev server, a Helm chart repository and an
OCI registry, all on loopback.

Tools are found through HELM3_BIN / HELM4_BIN / KUSTOMIZE_BIN / BAO_BIN / REGISTRY_BIN, else in
``.tools/bin/`` (``make tools``). A missing tool skips the test, or fails it when CI=true.
Tests that use any of these fixtures are marked ``integration`` automatically.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import hvac
import hypothesis
import pytest
import requests
import yaml

from tests.kube_fixture import kube_api  # noqa: F401  (real kube-apiserver + etcd)

# Property tests judge correctness, never speed: no per-example deadline and no "too slow"
# health check, so that a loaded machine (CI, parallel builds) cannot fail them. Speed is
# measured in bench/.
hypothesis.settings.register_profile(
    "project",
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.load_profile("project")

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
CHARTS_DIR = Path(__file__).resolve().parent / "charts"

TOOL_ENV_VARS = {
    "helm3": "HELM3_BIN",
    "helm4": "HELM4_BIN",
    "kustomize": "KUSTOMIZE_BIN",
    "bao": "BAO_BIN",
    "registry": "REGISTRY_BIN",
}

# Fixtures that need external programs: a test using one of them is marked `integration`.
INTEGRATION_FIXTURES = frozenset(
    {
        "tool",
        "helm3_bin",
        "helm4_bin",
        "helm_bin",
        "kustomize_bin",
        "bao_bin",
        "registry_bin",
        "openbao",
        "chart_repo",
        "oci_registry",
        "kube_api",
    }
)

# OpenBao auth methods enabled at their default mounts (OpenBao has no github auth method).
OPENBAO_AUTH_METHODS = ("approle", "userpass", "jwt", "cert", "kubernetes")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI where every test must really run."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


# --- tools ----------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """Path of a pinned tool (helm3, helm4, kustomize, bao, registry), or None."""
    if name not in TOOL_ENV_VARS:
        raise ValueError(f"unknown tool {name!r}; known: {', '.join(TOOL_ENV_VARS)}")
    from_env = os.environ.get(TOOL_ENV_VARS[name])  # when set, it is the only candidate
    return shutil.which(from_env or str(TOOLS_BIN / name))


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        unavailable(
            f"{name} not found (set {TOOL_ENV_VARS[name]} or run `make tools` to install "
            f"it into {TOOLS_BIN})"
        )
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """``tool("helm3")`` -> path; skips (fails under CI=true) when the tool is missing."""
    return require_tool


@pytest.fixture(scope="session")
def helm3_bin() -> str:
    return require_tool("helm3")


@pytest.fixture(scope="session")
def helm4_bin() -> str:
    return require_tool("helm4")


@pytest.fixture(scope="session", params=["helm3", "helm4"])
def helm_bin(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once with Helm 3 and once with Helm 4."""
    return require_tool(str(request.param))


@pytest.fixture(scope="session")
def kustomize_bin() -> str:
    return require_tool("kustomize")


@pytest.fixture(scope="session")
def bao_bin() -> str:
    return require_tool("bao")


@pytest.fixture(scope="session")
def registry_bin() -> str:
    return require_tool("registry")


def isolated_helm_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose Helm cache/config/data live under ``home`` (no HELM_* inherited)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    for key in [k for k in env if k.startswith("HELM_")]:
        del env[key]
    for part in ("cache", "config", "data"):
        (home / part).mkdir(parents=True, exist_ok=True)
        env[f"HELM_{part.upper()}_HOME"] = str(home / part)
    return env


@pytest.fixture
def helm_env(tmp_path: Path) -> dict[str, str]:
    """os.environ with HELM_CACHE_HOME/HELM_CONFIG_HOME/HELM_DATA_HOME in a fresh temp dir."""
    return isolated_helm_env(tmp_path / "helm-home")


@pytest.fixture(scope="session", autouse=True)
def _stop_real_cmp_servers() -> Iterator[None]:
    """The argocd-cmp-servers of the session (tests/real_cmp.py `POOL`) and their zygotes stop
    at its end; each zygote must have served every `plugin` command of its server."""
    yield
    real_cmp = sys.modules.get("tests.real_cmp")
    if real_cmp is not None:
        real_cmp.POOL.stop_all()


@pytest.hookimpl(tryfirst=True)  # before the `-m` selection, so that it sees the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# --- shared/ conformance data ---------------------------------------------------------------


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The read-only AVP conformance data (shared/conformance/avp beside the repository)."""
    env = os.environ.get("AVP_CONFORMANCE_DIR")
    path = Path(env) if env else ROOT.parent / "shared" / "conformance" / "avp"
    if not (path / "cases.yaml").is_file():
        unavailable(f"AVP conformance data not found at {path} (set AVP_CONFORMANCE_DIR)")
    return path


# --- processes and ports --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def log_tail(path: Path, redact: str | None = None, size: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"
    return text.replace(redact, "<redacted>") if redact else text


def wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(requests.RequestException):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s")


def start_server(
    argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path, ready: Callable[[], bool]
) -> subprocess.Popen[bytes]:
    """Start a loopback server logging to `log_path` and wait until `ready()`; stop it if not."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(ready, proc, Path(argv[0]).name)
    except RuntimeError:
        stop_process(proc)
        raise
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "AVP_", "OTEL_"))
    }
    env.update(extra)
    return env


# --- OpenBao --------------------------------------------------------------------------------


class OpenBao:
    """An OpenBao dev server on loopback (in-memory storage), configured like AVP's test Vault.

    Mounts: ``secret/`` KV v1 (remounted), ``kv/`` KV v2, ``conformance/`` KV v1. Auth methods
    ``auth_methods`` are enabled at their default paths.
    """

    auth_methods = OPENBAO_AUTH_METHODS

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.root_token = secrets.token_hex(16)
        self.log_path = workdir / "openbao.log"
        self.port = 0
        self.addr = ""
        self._proc: subprocess.Popen[bytes] | None = None

    # lifecycle
    def start(self, attempts: int = 3) -> None:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = clean_env(BAO_DEV_ROOT_TOKEN_ID=self.root_token, HOME=str(home))
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self.addr = f"http://127.0.0.1:{self.port}"
            argv = [
                self.binary,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ]
            try:
                self._proc = start_server(argv, env, self.workdir, self.log_path, self._healthy)
                break
            except RuntimeError as err:
                if attempt == attempts:
                    tail = log_tail(self.log_path, redact=self.root_token)
                    raise RuntimeError(f"{err}; log {self.log_path}:\n{tail}") from None
        self._configure()

    def _healthy(self) -> bool:
        resp = requests.get(f"{self.addr}/v1/sys/health", timeout=2)
        return resp.status_code == 200

    def _configure(self) -> None:
        client = self.client()
        self._ensure_mount(client, "secret", "kv", {"version": "1"})
        self._ensure_mount(client, "kv", "kv", {"version": "2"})
        self._ensure_mount(client, "conformance", "kv", {"version": "1"})
        enabled = client.sys.list_auth_methods()
        enabled = enabled.get("data", enabled)
        for method in self.auth_methods:
            if f"{method}/" not in enabled:
                client.sys.enable_auth_method(method_type=method, path=method)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # API
    def client(self) -> hvac.Client:
        """A fresh hvac client authenticated with the root token."""
        return hvac.Client(url=self.addr, token=self.root_token, timeout=30)

    def mounts(self) -> dict[str, dict[str, Any]]:
        """The secret engines: mount path without trailing slash -> {type, options, ...}."""
        table = self.client().sys.list_mounted_secrets_engines()
        table = table.get("data", table)
        return {k.rstrip("/"): v for k, v in table.items() if isinstance(v, dict)}

    @staticmethod
    def _ensure_mount(
        client: hvac.Client, path: str, engine: str, options: Mapping[str, str]
    ) -> None:
        table = client.sys.list_mounted_secrets_engines()
        table = table.get("data", table)
        current = table.get(f"{path}/")
        if current is not None:
            cur_opts = current.get("options") or {}
            same = current.get("type") == engine and all(
                str(cur_opts.get(k)) == str(v) for k, v in options.items()
            )
            if same:
                return
            client.sys.disable_secrets_engine(path=path)
        client.sys.enable_secrets_engine(backend_type=engine, path=path, options=dict(options))

    def seed(self, description: Mapping[str, Any] | Path | str, *, reset: bool = True) -> None:
        """Apply a seed in the format of shared/conformance/avp/vault-seed.yaml.

        ``description``: a mapping, or the path of such a YAML file. ``mounts`` are enabled (a
        mount of another type or KV version is replaced: its data is lost); ``writes`` are
        applied in order. For a KV v2 mount the path is ``<mount>/data/<name>`` and
        ``{"data": data}`` is sent, so each write adds a version. With ``reset`` (the default),
        the versions of every KV v2 secret written are deleted before its first write, so
        that seeding twice gives the same version numbers.
        """
        if isinstance(description, (str, Path)):
            description = yaml.safe_load(Path(description).read_text())
        assert isinstance(description, Mapping)
        client = self.client()
        for mount, mount_spec in (description.get("mounts") or {}).items():
            spec = dict(mount_spec or {})
            engine = str(spec.pop("type", "kv"))
            options = {str(k): str(v) for k, v in (spec.pop("options", None) or {}).items()}
            if "version" in spec:
                options["version"] = str(spec.pop("version"))
            self._ensure_mount(client, str(mount).strip("/"), engine, options)

        mounts = self.mounts()
        cleared: set[str] = set()
        for write in description.get("writes") or []:
            path = str(write["path"]).strip("/")
            data = write.get("data") or {}
            mount = max((m for m in mounts if path.startswith(f"{m}/")), key=len, default=None)
            if mount is None:
                raise ValueError(f"seed: no secret engine is mounted for {path!r}")
            options = mounts[mount].get("options") or {}
            if mounts[mount].get("type") == "kv" and str(options.get("version")) == "2":
                name = path[len(mount) + 1 :]
                name = name.removeprefix("data/")
                if reset and path not in cleared:
                    client.adapter.delete(f"/v1/{mount}/metadata/{name}")
                    cleared.add(path)
                client.adapter.post(f"/v1/{mount}/data/{name}", json={"data": data})
            else:
                client.adapter.post(f"/v1/{path}", json=data)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A running OpenBao dev server (see :class:`OpenBao`), shared by the whole session."""
    server = OpenBao(require_tool("bao"), tmp_path_factory.mktemp("openbao"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- Helm chart repository over HTTP -------------------------------------------------------


def package_chart(
    helm: str, chart_dir: Path, dest: Path, version: str | None, env: Mapping[str, str]
) -> Path:
    """``helm package`` ``chart_dir`` into ``dest``, with ``version`` written into Chart.yaml."""
    with tempfile.TemporaryDirectory(prefix="chart-") as tmp:
        work = Path(tmp) / chart_dir.name
        shutil.copytree(chart_dir, work)
        chart_yaml = work / "Chart.yaml"
        meta = yaml.safe_load(chart_yaml.read_text())
        if version is not None:
            meta["version"] = version
            chart_yaml.write_text(yaml.safe_dump(meta, sort_keys=False))
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [helm, "package", str(work), "--destination", str(dest)],
            check=True,
            capture_output=True,
            env=dict(env),
        )
        return dest / f"{meta['name']}-{meta['version']}.tgz"


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    repo: ChartRepo

    def do_GET(self) -> None:
        self.repo._record(self.path)
        super().do_GET()

    def do_HEAD(self) -> None:
        self.repo._record(self.path)
        super().do_HEAD()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ChartRepo:
    """A Helm chart repository (``index.yaml`` + ``.tgz``) served over loopback HTTP.

    Published at start: webapp 0.1.0 and 0.2.0, database 1.0.0 (sources in tests/charts).
    ``requests`` lists the paths requested, in order (e.g. ``/index.yaml``,
    ``/webapp-0.2.0.tgz``).
    """

    def __init__(self, helm: str, workdir: Path) -> None:
        self.helm = helm
        self.root = workdir / "repo"
        self.root.mkdir(parents=True, exist_ok=True)
        self.helm_env = isolated_helm_env(workdir / "helm-home")
        self.requests: list[str] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_CountingHandler,), {"repo": self})
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(self.root))
        )
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def count(self, path_prefix: str = "/") -> int:
        """How many requests had a path starting with ``path_prefix``."""
        with self._lock:
            return sum(1 for p in self.requests if p.startswith(path_prefix))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def publish(self, chart_dir: Path | str, version: str | None = None) -> Path:
        """Package ``chart_dir`` (as ``version`` if given) into the repository and re-index."""
        tgz = package_chart(self.helm, Path(chart_dir), self.root, version, self.helm_env)
        subprocess.run(
            [self.helm, "repo", "index", str(self.root), "--url", self.url],
            check=True,
            capture_output=True,
            env=self.helm_env,
        )
        return tgz

    def versions(self, name: str) -> list[str]:
        """Versions of chart ``name`` in index.yaml."""
        index = yaml.safe_load((self.root / "index.yaml").read_text())
        return [str(e["version"]) for e in index.get("entries", {}).get(name, [])]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def chart_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepo]:
    """A loopback Helm chart repository (see :class:`ChartRepo`), shared by the session."""
    repo = ChartRepo(require_tool("helm3"), tmp_path_factory.mktemp("chart-repo"))
    try:
        repo.publish(CHARTS_DIR / "webapp")
        repo.publish(CHARTS_DIR / "webapp", "0.2.0")
        repo.publish(CHARTS_DIR / "database")
        repo.reset_counts()
        yield repo
    finally:
        repo.stop()


# --- OCI registry ---------------------------------------------------------------------------


class OciRegistry:
    """A CNCF distribution registry (plain HTTP, no auth) on loopback, storage in a temp dir.

    Charts are pushed under ``oci://<host>/charts``: ``url`` is that prefix, and a chart's
    reference is ``f"{url}/{name}"``. Helm needs ``--plain-http`` to talk to it.
    """

    def __init__(self, binary: str, helm: str, workdir: Path) -> None:
        self.binary = binary
        self.helm = helm
        self.workdir = workdir
        self.log_path = workdir / "registry.log"
        self.helm_env = isolated_helm_env(workdir / "helm-home")
        self.port = 0
        self.host = ""
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self.host = f"127.0.0.1:{self.port}"
            self.url = f"oci://{self.host}/charts"
            config = {
                "version": 0.1,
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(storage)}},
                "http": {"addr": self.host},
            }
            config_path = self.workdir / "config.yml"
            config_path.write_text(yaml.safe_dump(config))
            env = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_SDK_DISABLED="true")
            argv = [self.binary, "serve", str(config_path)]
            try:
                self._proc = start_server(argv, env, self.workdir, self.log_path, self._ready)
                return
            except RuntimeError as err:
                if attempt == attempts:
                    tail = log_tail(self.log_path)
                    raise RuntimeError(f"{err}; log {self.log_path}:\n{tail}") from None

    def _ready(self) -> bool:
        return requests.get(f"http://{self.host}/v2/", timeout=2).status_code == 200

    def push(self, chart_dir: Path | str, version: str | None = None) -> str:
        """Package and ``helm push`` a chart; returns its reference ``oci://host/charts/name``."""
        with tempfile.TemporaryDirectory(prefix="oci-push-") as tmp:
            tgz = package_chart(self.helm, Path(chart_dir), Path(tmp), version, self.helm_env)
            subprocess.run(
                [self.helm, "push", str(tgz), self.url, "--plain-http"],
                check=True,
                capture_output=True,
                env=self.helm_env,
            )
        name = yaml.safe_load((Path(chart_dir) / "Chart.yaml").read_text())["name"]
        return f"{self.url}/{name}"

    def tags(self, name: str) -> list[str]:
        """Tags (chart versions) of ``charts/<name>`` from the registry API."""
        resp = requests.get(f"http://{self.host}/v2/charts/{name}/tags/list", timeout=10)
        resp.raise_for_status()
        return list(resp.json().get("tags") or [])

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    """A loopback OCI registry holding webapp 0.1.0, 0.2.0 and database 1.0.0."""
    registry = OciRegistry(
        require_tool("registry"), require_tool("helm3"), tmp_path_factory.mktemp("oci")
    )
    try:
        registry.start()
        registry.push(CHARTS_DIR / "webapp")
        registry.push(CHARTS_DIR / "webapp", "0.2.0")
        registry.push(CHARTS_DIR / "database")
        yield registry
    finally:
        registry.stop()
