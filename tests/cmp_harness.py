"""A stand-in for argocd-cmp-server (contract §2), to run the plugin exactly as Argo CD does.

- the repository is copied into a fresh per-request directory: directories 0755, regular
  files 0644 (no execute bits), symlinks kept only when they stay inside the tree;
- the environment is the sidecar's, then the build environment (`ARGOCD_APP_*`), `KUBE_*`,
  `ARGOCD_ENV_*` (with `$VAR` interpolation of the build environment), then
  `ARGOCD_APP_PARAMETERS` and `PARAM_*`;
- the command comes from cmp-config/plugin.yaml and runs in the application directory,
  in its own process group, with stdin empty; at the deadline the group gets SIGTERM,
  then SIGKILL 5 s later;
- stdout is split the way Argo CD does (`kube.SplitYAMLToString` + list flattening), and
  every object must have a `kind`.

With `PLUGIN_TEST_SERVE=1` every sidecar also runs the zygote (`plugin serve`, started with
the sidecar's environment before the first request, stopped after the test by
`stop_zygotes`), so the same tests prove that renders through the zygote give what
in-process renders give; `stop_zygotes` fails the test if the zygote served fewer requests
than the harness sent (a silent fallback to in-process rendering would otherwise pass).
Without it the plugin renders in-process (`PLUGIN_SERVE=off`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_YAML = ROOT / "cmp-config" / "plugin.yaml"
PLUGIN_WITH_DISCOVERY_YAML = ROOT / "cmp-config" / "plugin-with-discovery.yaml"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV") or ROOT / ".venv") / "bin"

#: Run every sidecar with a zygote (`plugin serve`); CI runs the CMP suite both ways.
SERVE = os.environ.get("PLUGIN_TEST_SERVE", "") == "1"

DEFAULT_API_VERSIONS = (
    "v1",
    "apps/v1",
    "apps/v1/Deployment",
    "batch/v1",
    "networking.k8s.io/v1",
    "apiextensions.k8s.io/v1",
)


class ManifestError(AssertionError):
    """stdout is not what Argo CD would accept."""


@dataclass
class App:
    """What an Application contributes to a request."""

    name: str = "demo"
    namespace: str = "demo-ns"
    project: str = "default"
    path: str = "."
    repo_url: str = "https://git.example.com/team/apps.git"
    revision: str = "0123456789abcdef0123456789abcdef01234567"
    target_revision: str = "HEAD"
    kube_version: str = "1.29.0"
    api_versions: Sequence[str] = DEFAULT_API_VERSIONS
    env: Mapping[str, str] = field(default_factory=dict)
    #: spec.source.plugin.parameters; None = no parameters key (the JSON literal null).
    parameters: list[dict[str, Any]] | None = None


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """The objects Argo CD would get (raises ManifestError like Argo CD would fail)."""
        return split_manifests(self.stdout)

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


def split_manifests(stdout: str) -> list[dict[str, Any]]:
    """kube.SplitYAMLToString + the repo-server's checks and list flattening (contract §2.5)."""
    text = stdout.removesuffix("\n")
    docs: list[Any] = []
    if text.lstrip().startswith("{"):
        decoder = json.JSONDecoder()
        position = 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                break
            try:
                doc, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"failed to unmarshal manifest: {exc}") from None
            docs.append(doc)
    else:
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ManifestError(f"failed to unmarshal manifest: {exc}") from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"not an object: {str(doc)[:80]!r}")
        items = doc.get("items")
        if isinstance(items, list):
            for item in items:
                if not isinstance(item, dict):
                    raise ManifestError("a list item is not an object")
                objects.append(item)
            continue
        if not doc.get("kind"):
            raise ManifestError("Object 'Kind' is missing")
        objects.append(doc)
    return objects


def escaped(name: str) -> str:
    """PARAM_ name escaping: upper-case, then everything outside [A-Z0-9_] becomes `_`."""
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def param_env(parameters: list[dict[str, Any]] | None) -> dict[str, str]:
    if parameters is None:
        return {"ARGOCD_APP_PARAMETERS": "null"}
    env = {"ARGOCD_APP_PARAMETERS": json.dumps(parameters, sort_keys=True)}
    for item in parameters:
        base = "PARAM_" + escaped(item["name"])
        if "string" in item:
            env[base] = item["string"]
        for index, value in enumerate(item.get("array") or []):
            env[f"{base}_{index}"] = value
        for key, value in (item.get("map") or {}).items():
            env[f"{base}_{escaped(key)}"] = value
    return env


def interpolate(value: str, build_env: Mapping[str, str]) -> str:
    """Argo CD's `$VAR`/`${VAR}` expansion of plugin env values (unknown = empty, `$$` = `$`)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return build_env.get(match.group(2) or match.group(3), "")

    return re.sub(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))", replace, value)


def copy_repository(source: Path, target: Path) -> None:
    """The tar round trip: regular files 0644, directories 0755, in-tree symlinks only."""
    root = source.resolve()
    for dirpath, dirnames, filenames in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        (target / rel).mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(target / rel, 0o755)
        for name in [*dirnames, *filenames]:
            src = Path(dirpath) / name
            dst = target / rel / name
            if src.is_symlink():
                real = src.resolve()
                if root not in (real, *real.parents):
                    raise ValueError(f"symlink {src} points outside the repository")
                os.symlink(os.path.relpath(real, src.parent), dst)
                if name in dirnames:
                    dirnames.remove(name)
            elif name in filenames:
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o644)


class Zygote:
    """A `plugin serve` process with a sidecar's environment (its socket is in the cache dir)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.requests = 0
        self.status_calls = 0
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "plugin"), "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.served() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"plugin serve did not start: {err}")
            time.sleep(0.1)

    def served(self) -> int | None:
        """Connections the zygote has taken before this one (None: it does not answer)."""
        status = subprocess.run(
            [str(VENV_BIN / "plugin"), "serve", "--status"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if status.returncode != 0:
            return None  # no connection was made: nothing to count
        self.status_calls += 1
        found = re.search(r"^served: (\d+)$", status.stdout, re.M)
        assert found, status.stdout
        return int(found.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


_zygotes: dict[str, Zygote] = {}


def zygote_for(env: Mapping[str, str]) -> Zygote:
    """The zygote of a sidecar environment (one per plugin cache directory), started once."""
    key = env.get("PLUGIN_CACHE_DIR", "")
    if key not in _zygotes:
        _zygotes[key] = Zygote(env)
    return _zygotes[key]


def stop_zygotes() -> None:
    """Stop the zygotes of the test; each must have served every request it was sent."""
    zygotes = list(_zygotes.values())
    _zygotes.clear()
    problems = []
    for zygote in zygotes:
        served = zygote.served()
        zygote.stop()
        # The zygote counts every connection, the earlier `--status` calls included.
        renders = None if served is None else served - (zygote.status_calls - 1)
        if renders is None or renders < zygote.requests:
            problems.append(f"the zygote served {renders} of {zygote.requests} requests")
    assert not problems, "; ".join(problems)


class CmpServer:
    """Runs the plugin's commands like argocd-cmp-server does."""

    def __init__(
        self,
        sidecar_env: Mapping[str, str],
        workdir: Path,
        config: Path = PLUGIN_YAML,
    ) -> None:
        self.sidecar_env = dict(sidecar_env)
        self.workdir = workdir
        self.config: dict[str, Any] = yaml.safe_load(config.read_text())
        assert self.config["kind"] == "ConfigManagementPlugin"
        assert self.config["metadata"]["name"]
        self.spec: dict[str, Any] = self.config["spec"]

    @property
    def name(self) -> str:
        version = self.spec.get("version")
        base = str(self.config["metadata"]["name"])
        return f"{base}-{version}" if version else base

    # -- environments

    def build_env(self, app: App) -> dict[str, str]:
        return {
            "ARGOCD_APP_NAME": app.name,
            "ARGOCD_APP_NAMESPACE": app.namespace,
            "ARGOCD_APP_PROJECT_NAME": app.project,
            "ARGOCD_APP_REVISION": app.revision,
            "ARGOCD_APP_REVISION_SHORT": app.revision[:7],
            "ARGOCD_APP_REVISION_SHORT_8": app.revision[:8],
            "ARGOCD_APP_SOURCE_REPO_URL": app.repo_url,
            "ARGOCD_APP_SOURCE_PATH": app.path,
            "ARGOCD_APP_SOURCE_TARGET_REVISION": app.target_revision,
        }

    def generate_env(self, app: App) -> dict[str, str]:
        env = dict(self.sidecar_env)
        build = self.build_env(app)
        env.update(build)
        env["KUBE_VERSION"] = app.kube_version
        env["KUBE_API_VERSIONS"] = ",".join(app.api_versions)
        for key, value in app.env.items():
            env["ARGOCD_ENV_" + key] = interpolate(
                value, {**build, "KUBE_VERSION": app.kube_version}
            )
        env.update(param_env(app.parameters))
        return env

    def parameters_env(self, app: App) -> dict[str, str]:
        env = dict(self.sidecar_env)
        env["ARGOCD_APP_NAME"] = app.name
        env["ARGOCD_APP_SOURCE_REPO_URL"] = app.repo_url
        env["ARGOCD_APP_SOURCE_PATH"] = app.path
        env["ARGOCD_APP_SOURCE_TARGET_REVISION"] = app.target_revision
        for key, value in app.env.items():
            env["ARGOCD_ENV_" + key] = value
        env.update(param_env(app.parameters))
        return env

    # -- requests

    def _checkout(self, repo: Path, app: App) -> tuple[Path, Path]:
        request_dir = Path(tempfile.mkdtemp(prefix="req-", dir=self.workdir))
        copy_repository(repo, request_dir)
        app_dir = (request_dir / app.path).resolve()
        assert request_dir.resolve() in (app_dir, *app_dir.parents), "illegal appPath"
        return request_dir, app_dir

    def _command(self, block: Mapping[str, Any]) -> list[str]:
        return [*block.get("command", []), *block.get("args", [])]

    def run(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float) -> Result:
        if SERVE and argv and argv[0] == "plugin":
            zygote_for(self.sidecar_env).requests += 1
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
        return Result(
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - started,
            timed_out,
        )

    def generate(self, repo: Path, app: App, timeout: float = 60.0) -> Result:
        request_dir, app_dir = self._checkout(repo, app)
        try:
            env = self.generate_env(app)
            init = self.spec.get("init")
            if init and init.get("command"):
                result = self.run(self._command(init), app_dir, env, timeout)
                if result.code != 0:
                    return result
            return self.run(self._command(self.spec["generate"]), app_dir, env, timeout)
        finally:
            shutil.rmtree(request_dir, ignore_errors=True)

    def discover(self, repo: Path, app: App) -> bool:
        """MatchRepository with find.command: exit 0 and non-empty stdout = match."""
        find = self.spec["discover"]["find"]
        request_dir, app_dir = self._checkout(repo, app)
        try:
            env = {**self.sidecar_env, **self.build_env(app)}
            result = self.run(self._command(find), app_dir, env, 30.0)
        finally:
            shutil.rmtree(request_dir, ignore_errors=True)
        if result.code != 0:
            raise AssertionError(f"discovery error (exit {result.code}): {result.stderr}")
        return result.stdout.removesuffix("\n") != ""

    def announcements(self, repo: Path, app: App) -> list[dict[str, Any]]:
        """GetParametersAnnouncement: dynamic output (a JSON array) followed by the static list."""
        params = self.spec.get("parameters") or {}
        dynamic: list[dict[str, Any]] = []
        if params.get("dynamic"):
            request_dir, app_dir = self._checkout(repo, app)
            try:
                result = self.run(
                    self._command(params["dynamic"]), app_dir, self.parameters_env(app), 30.0
                )
            finally:
                shutil.rmtree(request_dir, ignore_errors=True)
            assert result.code == 0, result.stderr
            decoded = json.loads(result.stdout)  # empty output would fail here, as in Argo CD
            assert isinstance(decoded, list), "the dynamic command must print a JSON array"
            for item in decoded:
                check_announcement(item)
            dynamic = decoded
        static = list(params.get("static") or [])
        for item in static:
            check_announcement(item)
        return [*dynamic, *static]


def check_announcement(item: Any) -> None:
    """Go's decoding of a ParameterAnnouncement: string-only values, known collection types."""
    assert isinstance(item, dict) and isinstance(item.get("name"), str)
    for key in ("title", "tooltip", "itemType", "collectionType", "string"):
        assert key not in item or isinstance(item[key], str), key
    assert "required" not in item or isinstance(item["required"], bool)
    assert item.get("collectionType", "") in ("", "string", "array", "map")
    assert all(isinstance(v, str) for v in item.get("array") or [])
    assert all(
        isinstance(k, str) and isinstance(v, str) for k, v in (item.get("map") or {}).items()
    )


def sidecar_env(
    tmp: Path,
    *,
    helm: str | None = None,
    kustomize: str | None = None,
    secrets_file: Path | None = None,
    cache_dir: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A sidecar container's environment: the plugin on PATH, tools, caches, file backend."""
    home = tmp / "sidecar-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PLUGIN_CACHE_DIR": str(cache_dir or tmp / "plugin-cache"),
    }
    if not SERVE:
        env["PLUGIN_SERVE"] = "off"
    if helm:
        env["HELM_BIN"] = helm
    if kustomize:
        env["KUSTOMIZE_BIN"] = kustomize
    if secrets_file is not None:
        env["AVP_TYPE"] = "file"
        env["AVP_FILE_PATH"] = str(secrets_file)
    env.update(extra or {})
    return env
