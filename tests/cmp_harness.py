"""Argo CD's request to a sidecar, reproduced for running `plugin` outside argocd-cmp-server.

Every CMP integration test renders through Argo CD's real cmp-server (tests/real_cmp.py, the
`sidecar` fixture). This module keeps what the real server cannot show: a command line other
than plugin.yaml's (`plugin generate --verbose`), a repository that the server's tar would
change (a symlink leaving it), a signal sent to the `plugin` process itself, and the reference
render that the real server's answer is compared with (tests/integration/cmp/
test_real_cmp_server.py). It builds what the server would give the command:

- the repository is copied into a fresh per-request directory: directories 0755, regular
  files 0644 (no execute bits), symlinks kept only when they stay inside the tree;
- the environment is the sidecar's, then the build environment (`ARGOCD_APP_*`), `KUBE_*`,
  `ARGOCD_ENV_*` (with `$VAR` interpolation of the build environment), then
  `ARGOCD_APP_PARAMETERS` and `PARAM_*`;
- the command runs in the application directory, in its own process group, with stdin empty.

Argo CD's deadline, as the real server applies it (cmpserver/plugin/plugin.go, pinned in
tests/integration/cmp/test_real_cmp_server.py): 100 ms before the request's deadline the
command itself gets SIGKILL (Go's `exec.CommandContext`; so `plugin`'s own SIGTERM handling
never runs) and its process group SIGTERM; 5 s later the group gets SIGKILL. The server does
not read `ARGOCD_EXEC_TIMEOUT`. :func:`run_direct` ends a command at its `timeout` the same way.
:func:`direct_generate` renders in the process (`PLUGIN_SERVE=off`): the reference.

This module imports nothing from the `plugin` package.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
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

#: Every sidecar runs a zygote (tests/real_cmp.py starts the server as the image does).
SERVE = os.environ.get("PLUGIN_TEST_SERVE", "") == "1"

#: What a request names when the test names none (cmp-client's defaults too).
DEFAULT_API_VERSIONS = (
    "v1",
    "apps/v1",
    "apps/v1/Deployment",
    "batch/v1",
    "networking.k8s.io/v1",
    "apiextensions.k8s.io/v1",
)

#: The real server ends its context this long before the request's deadline.
CMP_TIMEOUT_BUFFER = 0.1
#: ...and SIGKILLs the command's process group this long after SIGTERM.
CMP_CLEANUP_TIMEOUT = 5.0


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
class DirectResult:
    """A direct run of a command: exit status, output, and whether the deadline ended it."""

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


def build_env(app: App) -> dict[str, str]:
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


def generate_env(sidecar: Mapping[str, str], app: App) -> dict[str, str]:
    """The environment of `plugin generate` for `app` in a sidecar whose environment is
    `sidecar`, in the order the repo-server and the cmp-server build it."""
    env = dict(sidecar)
    build = build_env(app)
    env.update(build)
    env["KUBE_VERSION"] = app.kube_version
    env["KUBE_API_VERSIONS"] = ",".join(app.api_versions)
    for key, value in app.env.items():
        env["ARGOCD_ENV_" + key] = interpolate(value, {**build, "KUBE_VERSION": app.kube_version})
    env.update(param_env(app.parameters))
    return env


def run_direct(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
) -> DirectResult:
    """Run a command as the cmp-server runs one, ended at `timeout` the way it ends one."""
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
    timed_out = threading.Event()

    def cancel() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(CMP_CLEANUP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(max(0.0, timeout - CMP_TIMEOUT_BUFFER), cancel)
    timer.daemon = True
    timer.start()
    try:
        out, err = proc.communicate()
    finally:
        timer.cancel()
    return DirectResult(
        proc.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - started,
        timed_out.is_set(),
    )


def direct_generate(
    sidecar: Mapping[str, str],
    repo: Path,
    app: App,
    timeout: float = 60.0,
    config: Path = PLUGIN_YAML,
) -> DirectResult:
    """plugin.yaml's generate command run directly on a copy of `repo` made like the server's,
    in the process (the reference a render through the real server is compared with)."""
    spec = yaml.safe_load(config.read_text())["spec"]
    command = [*spec["generate"].get("command", []), *spec["generate"].get("args", [])]
    request_dir = Path(tempfile.mkdtemp(prefix="direct-"))
    try:
        copy_repository(repo, request_dir)
        app_dir = (request_dir / app.path).resolve()
        assert request_dir.resolve() in (app_dir, *app_dir.parents), "illegal appPath"
        env = {**generate_env(sidecar, app), "PLUGIN_SERVE": "off"}
        return run_direct(command, app_dir, env, timeout)
    finally:
        shutil.rmtree(request_dir, ignore_errors=True)


def sidecar_env(
    tmp: Path,
    *,
    helm: str | None = None,
    kustomize: str | None = None,
    secrets_file: Path | None = None,
    cache_dir: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A sidecar container's environment: the plugin on PATH, tools, caches, file backend.

    Without PLUGIN_TEST_SERVE=1 the plugin renders in-process (`PLUGIN_SERVE=off`); with it,
    tests/real_cmp.py starts a zygote beside each server."""
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
