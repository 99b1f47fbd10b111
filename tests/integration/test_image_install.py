"""The image's install steps, run outside Docker (no Docker engine is needed).

The `wheels` stage of the Dockerfile is repeated on a copy of exactly what the build context
holds (pyproject.toml, README.md, plugin/): the dependencies are downloaded as binary wheels
with `--require-hashes` from requirements/image.txt and the plugin wheel is built from source.
The final stage is repeated in a fresh virtual environment: `pip install --no-index` of those
wheels only, then the launcher written over the console script (`plugin.serve.launcher`).
Then the installed `plugin` runs as the sidecar would run it: with the image's environment
(its paths moved into a temporary directory), helm and kustomize found on PATH only, and
plugin.yaml run by Argo CD's real argocd-cmp-server (tests/real_cmp.py; started as the image
starts it, `plugin serve --exec argocd-cmp-server`, with PLUGIN_TEST_SERVE=1).

Needs PyPI for the wheel downloads (a missing network skips, or fails under CI=true).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from plugin import __version__
from tests.cmp_harness import App
from tests.conftest import unavailable
from tests.project.test_dockerfile import PLUGIN_YAML_PATH, final, run_smoke_test
from tests.real_cmp import POOL, RealCmpServer, Sidecar

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: What the Dockerfile COPYs into the wheels stage.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "plugin")


@dataclass(frozen=True)
class Image:
    """A stand-in of the built image: a venv holding the installed wheels, and its paths."""

    root: Path  # plays "/"
    venv: Path
    context: Path  # the build context the wheel was built from

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def plugin_yaml(self) -> Path:
        return self.root / PLUGIN_YAML_PATH.lstrip("/")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The image's ENV with its paths under `root`, PATH with the venv and usr/local/bin."""
        env = {}
        for name, value in final().env.items():
            env[name] = str(self.root / value.lstrip("/")) if value.startswith("/") else value
        env["PATH"] = os.pathsep.join(
            [str(self.bin), str(self.root / "usr" / "local" / "bin"), "/usr/bin", "/bin"]
        )
        env["TMPDIR"] = str(self.root / "tmp")
        env["LANG"] = "C.UTF-8"
        env.update(extra or {})
        return env


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_FIND_LINKS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_CACHE_DIR"] = "1"
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    work = tmp_path_factory.mktemp("image")
    context = work / "src"
    context.mkdir()
    for name in BUILD_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    wheels = work / "wheels"

    # --- stage `wheels`
    done = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-deps",
            "-r",
            str(ROOT / "requirements" / "image.txt"),
            "-d",
            str(wheels),
        ],
        env=_pip_env(),
    )
    if done.returncode != 0:
        unavailable(f"cannot download the pinned wheels from PyPI: {done.stderr[-800:]}")
    done = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", ".", "-w", str(wheels)],
        cwd=context,
        env=_pip_env(),
    )
    if done.returncode != 0:
        unavailable(f"cannot build the plugin wheel: {done.stderr[-800:]}")
    built = sorted(wheels.glob("argocd_secrets_plugin-*.whl"))
    assert len(built) == 1, [p.name for p in wheels.iterdir()]

    # --- final stage, in a fresh venv: only the verified wheels, no index
    root = work / "rootfs"
    venv = root / "venv"
    done = _run([sys.executable, "-m", "venv", str(venv)])
    assert done.returncode == 0, done.stderr
    done = _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--no-index",
            "--find-links",
            str(wheels),
            str(built[0]),
        ],
        env=_pip_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The same RUN's next step: the launcher over the console script (the venv's bin here).
    (launcher_step,) = [run for run in final().values("RUN") if "plugin.serve.launcher" in run]
    words = shlex.split(launcher_step.split("&&")[-1])
    assert words[-1] == "/usr/local/bin/plugin" and words[0] == "python"
    done = _run([str(venv / "bin" / "python"), *words[1:-1], str(venv / "bin" / "plugin")])
    assert done.returncode == 0, done.stderr
    image = Image(root=root, venv=venv, context=context)
    image.plugin_yaml.parent.mkdir(parents=True)
    shutil.copy2(ROOT / "cmp-config" / "plugin.yaml", image.plugin_yaml)
    for name, value in final().env.items():
        if value.startswith("/") and name in {"HOME", "XDG_CACHE_HOME"}:
            (root / value.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir()
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    return image


def test_installed_distribution_is_complete(image: Image) -> None:
    """Every module of the build context is in the installed package, imported from the new
    venv (not from the checkout)."""
    code = (
        "import pathlib, plugin; p = pathlib.Path(plugin.__file__).parent; "
        "print(p); print('\\n'.join(sorted(str(f.relative_to(p)) for f in p.rglob('*.py'))))"
    )
    done = _run([str(image.bin / "python"), "-c", code], cwd=image.root, env=image.env())
    assert done.returncode == 0, done.stderr
    location, *installed = done.stdout.splitlines()
    assert str(image.venv) in location
    package = image.context / "plugin"
    source = sorted(str(f.relative_to(package)) for f in package.rglob("*.py"))
    assert installed == source


def test_dependencies_are_the_pinned_ones(image: Image) -> None:
    done = _run([str(image.bin / "python"), "-m", "pip", "freeze"], env=image.env())
    assert done.returncode == 0, done.stderr
    frozen = {
        re.split(r"==| @ ", line)[0].strip().lower().replace("_", "-")
        for line in done.stdout.splitlines()
        if line.strip()
    }
    text = (ROOT / "requirements" / "image.txt").read_text()
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in text.splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert pinned <= frozen
    assert frozen - pinned <= {"argocd-secrets-plugin", "pip", "setuptools", "wheel"}


def test_plugin_version(image: Image) -> None:
    done = _run(["plugin", "version"], cwd=image.root, env=image.env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"plugin {__version__}"


def test_plugin_is_the_launcher(image: Image) -> None:
    """`plugin` runs with -IS and finds the package and its libraries in the venv only."""
    first, *rest = (image.bin / "plugin").read_text().splitlines()
    assert first == f"#!{image.bin / 'python'} -IS"
    assert "import re" not in rest
    site_packages = {str(path) for path in image.venv.glob("lib/python*/site-packages")}
    assert f"sys.path += {sorted(site_packages)!r}" in rest


def test_the_image_smoke_test_passes(image: Image, helm3_bin: str, kustomize_bin: str) -> None:
    """The Dockerfile's smoke test, as the build runs it, with the launcher of the installed
    wheels and the image's environment: the render finds PyYAML, Jinja2 and MarkupSafe."""
    _link_tools(image, helm=helm3_bin, kustomize=kustomize_bin)
    before = sorted(image.root.rglob("*"))
    done = run_smoke_test([image.bin, image.root / "usr" / "local" / "bin"], image.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(image.root.rglob("*")) == before, "the smoke test leaves nothing behind"


def demo_command() -> tuple[dict[str, str], list[str]]:
    """The `make demo` recipe: (environment assignments, plugin arguments)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^demo\s*:", line))
    commands: list[str] = []  # logical recipe lines: continuations joined, `@`/`-` dropped
    pending = ""
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        text = line.strip()
        pending += text.removesuffix("\\").strip() + " "
        if not text.endswith("\\"):
            commands.append(pending.strip().lstrip("@-"))
            pending = ""
    (command,) = [line for line in commands if re.search(r"/bin/plugin\b", line)]
    words = shlex.split(command)
    at = next(i for i, word in enumerate(words) if word.endswith("/plugin") or word == "plugin")
    # Make-specific assignments (PATH to .tools/bin) are the test environment's job here.
    env = dict(word.split("=", 1) for word in words[:at] if "$" not in word)
    return env, words[at + 1 :]


def test_demo_render_with_the_file_backend(image: Image, helm3_bin: str) -> None:
    """`make demo` with the installed plugin and the image's environment: the same output as
    with the development install."""
    assignments, arguments = demo_command()
    assert arguments and arguments[0] == "generate"
    _link_tools(image, helm=helm3_bin)
    installed = _run(["plugin", *arguments], cwd=ROOT, env=image.env(assignments))
    assert installed.returncode == 0, installed.stderr
    development = _run(
        [str(ROOT / ".venv" / "bin" / "plugin"), *arguments],
        cwd=ROOT,
        env={**os.environ, **assignments, "HELM_BIN": helm3_bin},
    )
    assert development.returncode == 0, development.stderr
    assert installed.stdout == development.stdout
    documents = [doc for doc in yaml.safe_load_all(installed.stdout) if doc]
    assert documents and all("kind" in doc for doc in documents)
    assert "<path:" not in installed.stdout


SidecarFactory = Callable[[Mapping[str, str]], Sidecar]


@pytest.fixture
def sidecar(image: Image) -> Iterator[SidecarFactory]:
    """`sidecar(settings)`: the image's plugin.yaml and environment (plus `settings`) behind a
    real argocd-cmp-server, stopped with the test."""
    made: list[RealCmpServer] = []

    def make(extra: Mapping[str, str]) -> Sidecar:
        server = POOL.get(image.env(extra), image.plugin_yaml)
        made.append(server)
        return Sidecar(server)

    yield make
    for server in made:
        POOL.release(server)


def _repo(tmp_path: Path, files: Mapping[str, str]) -> Path:
    repo = tmp_path / "repo"
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return repo


def _link_tools(image: Image, **tools: str) -> None:
    for name, target in tools.items():
        link = image.root / "usr" / "local" / "bin" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(target).resolve())


SECRETS = "kv/data/app:\n  password: pw-8812\n  user: app\n"


def test_sidecar_renders_the_demo_as_argo_cd_would(
    image: Image, sidecar: SidecarFactory, tmp_path: Path, helm3_bin: str
) -> None:
    """The demo application through plugin.yaml and the real cmp-server."""
    _link_tools(image, helm=helm3_bin)
    assignments, arguments = demo_command()
    app_path = arguments[-1]
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", repo / "examples")
    settings = {
        name: str(repo / value) if (ROOT / value).exists() else value
        for name, value in assignments.items()
    }
    server = sidecar(settings)
    assert server.name == "argocd-secrets-plugin-v1"
    result = server.generate(repo, App(name="demo", path=app_path))
    assert result.code == 0, result.stderr
    assert result.manifests
    assert "<path:" not in result.stdout


def test_sidecar_renders_a_helm_chart(
    image: Image, sidecar: SidecarFactory, tmp_path: Path, helm_bin: str
) -> None:
    """helm found on PATH only (as /usr/local/bin/helm in the image); no HELM_BIN."""
    _link_tools(image, helm=helm_bin)
    repo = _repo(
        tmp_path,
        {
            "secrets.yaml": SECRETS,
            "charts/app/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\n",
            "charts/app/values.yaml": "user: <path:kv/data/app#user>\n",
            "charts/app/templates/secret.yaml": (
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}\n"
                "  namespace: {{ .Release.Namespace }}\nstringData:\n"
                "  user: {{ .Values.user | quote }}\n"
                "  password: <path:kv/data/app#password>\n"
            ),
        },
    )
    server = sidecar({"AVP_TYPE": "file", "AVP_FILE_PATH": str(repo / "secrets.yaml")})
    result = server.generate(repo, App(name="argocd_web", namespace="web", path="charts/app"))
    assert result.code == 0, result.stderr
    (secret,) = result.manifests
    assert secret["metadata"] == {"name": "web", "namespace": "web"}
    assert secret["stringData"] == {"user": "app", "password": "pw-8812"}
    announced = server.announcements(repo, App(path="charts/app"))
    assert announced[0]["name"] == "helm-parameters"


def test_sidecar_renders_a_kustomization(
    image: Image, sidecar: SidecarFactory, tmp_path: Path, kustomize_bin: str
) -> None:
    _link_tools(image, kustomize=kustomize_bin)
    repo = _repo(
        tmp_path,
        {
            "secrets.yaml": SECRETS,
            "base/kustomization.yaml": "resources: [secret.yaml]\n",
            "base/secret.yaml": (
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\n"
                "stringData:\n  password: <path:kv/data/app#password>\n"
            ),
            "overlay/kustomization.yaml": "namespace: prod\nresources: [../base]\n",
        },
    )
    server = sidecar({"AVP_TYPE": "file", "AVP_FILE_PATH": str(repo / "secrets.yaml")})
    result = server.generate(repo, App(path="overlay"))
    assert result.code == 0, result.stderr
    (secret,) = result.manifests
    assert secret["metadata"]["namespace"] == "prod"
    assert secret["stringData"]["password"] == "pw-8812"


def test_sidecar_writes_only_to_its_writable_paths(
    image: Image, sidecar: SidecarFactory, tmp_path: Path
) -> None:
    """With the image's environment, a render leaves nothing outside /tmp and /home/plugin."""
    repo = _repo(
        tmp_path,
        {
            "secrets.yaml": SECRETS,
            "app/cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                "data:\n  user: <path:kv/data/app#user>\n"
            ),
        },
    )
    before = {p for p in image.root.rglob("*") if "venv" not in p.parts}
    server = sidecar({"AVP_TYPE": "file", "AVP_FILE_PATH": str(repo / "secrets.yaml")})
    result = server.generate(repo, App(path="app"))
    assert result.code == 0, result.stderr
    after = {p for p in image.root.rglob("*") if "venv" not in p.parts}
    writable = (image.root / "tmp", image.root / "home" / "plugin")
    for path in after - before:
        assert any(root == path or root in path.parents for root in writable), path
