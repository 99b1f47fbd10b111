"""`helm template` as Argo CD runs it (contract §6.2), built as a pure function, plus the
checks on everything an Application may pass to Helm.

- `parse_helm_args`: `HELM_ARGS` split like a shell would, then an allow-list of harmless
  flags; anything else (`--post-renderer`, `--repo`, credentials, plugins…) is refused.
- `resolve_values_files`: values files relative to the app dir, `/`-prefixed ones relative
  to the repository root, globs expanded; refused when they (or a symlink) leave the repo.
- `template_command`: the argument list, in Argo CD's order.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plugin.errors import ConfigError
from plugin.manifests.yamlio import Loader

#: Flags taking a value: canonical name -> accepted spellings.
_VALUE_FLAGS: Mapping[str, tuple[str, ...]] = {
    "--values": ("-f", "--values"),
    "--set": ("--set",),
    "--set-string": ("--set-string",),
    "--set-file": ("--set-file",),
    "--api-versions": ("-a", "--api-versions"),
    "--kube-version": ("--kube-version",),
}
_BOOL_FLAGS = ("--skip-tests", "--include-crds", "--skip-crds")
_SPELLING = {spelling: name for name, spellings in _VALUE_FLAGS.items() for spelling in spellings}
ALLOWED_HELM_ARGS = (
    "-f/--values",
    "--set",
    "--set-string",
    "--set-file",
    "--skip-tests",
    "--include-crds",
    "--skip-crds",
    "-a/--api-versions",
    "--kube-version",
)
_ENV_REFERENCE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class HelmArgs:
    """The accepted content of HELM_ARGS, by flag."""

    values_files: list[str] = field(default_factory=list)
    sets: list[tuple[str, str]] = field(default_factory=list)  # (flag, "key=value")
    set_files: list[str] = field(default_factory=list)  # "key=path[,key=path]"
    api_versions: list[str] = field(default_factory=list)
    kube_version: str = ""
    include_crds: bool | None = None
    skip_tests: bool = False


def parse_helm_args(text: str, origin: str = "HELM_ARGS") -> HelmArgs:
    """Split `text` like a POSIX shell and keep only allow-listed flags (ConfigError otherwise).

    Messages name the offending flag, never a value.
    """
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise ConfigError(f"{origin} cannot be split into arguments: {exc}") from None
    out = HelmArgs()
    position = 0
    while position < len(words):
        word = words[position]
        position += 1
        if word in _BOOL_FLAGS:
            if word == "--skip-tests":
                out.skip_tests = True
            else:
                out.include_crds = word == "--include-crds"
            continue
        name, value = _split_flag(word)
        if name is None:
            raise ConfigError(_refused(word, origin))
        if value is None:
            if position >= len(words):
                raise ConfigError(f"{origin}: flag {word} needs a value")
            value = words[position]
            position += 1
        _store(out, name, value, origin)
    return out


def _split_flag(word: str) -> tuple[str | None, str | None]:
    """(canonical flag, inline value or None) for an allowed flag; (None, None) otherwise."""
    if word.startswith("--"):
        flag, sep, value = word.partition("=")
        name = _SPELLING.get(flag)
        return (name, value if sep else None) if name else (None, None)
    if word.startswith("-") and len(word) >= 2:
        short = word[:2]
        name = _SPELLING.get(short)
        if name is None:
            return None, None
        rest = word[2:]
        if not rest:
            return name, None
        return name, rest.removeprefix("=")
    return None, None


def _refused(word: str, origin: str) -> str:
    flag = word.partition("=")[0] if word.startswith("-") else "a positional argument"
    return (
        f"{origin}: {flag} is not allowed; only {', '.join(ALLOWED_HELM_ARGS)} are accepted "
        "(everything else could run code or reach other repositories)"
    )


def _store(out: HelmArgs, name: str, value: str, origin: str) -> None:
    if name == "--values":
        out.values_files.append(value)
    elif name in ("--set", "--set-string"):
        out.sets.append((name, value))
    elif name == "--set-file":
        out.set_files.append(value)
    elif name == "--api-versions":
        out.api_versions.extend(v.strip() for v in value.split(",") if v.strip())
    elif name == "--kube-version":
        out.kube_version = value.strip().removeprefix("v")


# ------------------------------------------------------------------------------ values and env


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Argo CD's `$VAR`/`${VAR}` expansion: unknown names become empty, `$$` is a `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2) or match.group(3)
        return env.get(name, "")

    return _ENV_REFERENCE.sub(replace, text)


def escape_set_value(value: str) -> str:
    """Escape unescaped commas, unless the value is a Helm list `{a,b}` (as Argo CD)."""
    if value.startswith("{") and value.endswith("}"):
        return value
    return _UNESCAPED_COMMA.sub(r"\\,", value)


def find_repo_root(app_dir: Path, source_path: str = "") -> Path:
    """The repository root the cmp-server unpacked: the app dir minus ARGOCD_APP_SOURCE_PATH.

    Outside Argo CD (no source path, or one that does not match the directory names): the
    nearest ancestor holding `.git`, else the app dir.
    """
    app_dir = Path(os.path.abspath(app_dir))
    parts = [p for p in Path(source_path.strip().strip("/")).parts if p not in ("", ".")]
    root = app_dir
    for part in reversed(parts):
        if root.name != part or root.parent == root:
            break
        root = root.parent
    if root != app_dir:
        # All of the source path matched, or its tail only: then the cmp-server's tar root is
        # the manifest-generate-paths common root, which is where the copy starts.
        return root
    for candidate in (app_dir, *app_dir.parents):
        if (candidate / ".git").exists():
            return candidate
    return app_dir


def within(path: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def resolve_in_repo(name: str, base_dir: Path, repo_root: Path, what: str) -> Path:
    """`name` relative to `base_dir` (or to the repo root when it starts with `/`).

    The real path (symlinks followed) must stay inside the repository.
    """
    if "://" in name:
        raise ConfigError(f"{what} {name}: URLs are not accepted, use a file in the repository")
    candidate = repo_root / name.lstrip("/") if name.startswith("/") else base_dir / name
    if not within(candidate, repo_root):
        raise ConfigError(f"{what} {name} resolves outside the repository; refused")
    return Path(os.path.realpath(candidate))


def resolve_values_files(
    names: Sequence[str],
    app_dir: Path,
    repo_root: Path,
    env: Mapping[str, str],
    work_dir: Path | None = None,
) -> list[Path]:
    """Resolve every values file (after `$VAR` expansion), expanding globs; duplicates dropped.

    With `work_dir` (the render's private copy of `app_dir`), files inside the app dir are
    taken from the copy, where the Jinja2 stage may have produced them. Missing files are an
    error naming the file (Helm's own message would be less clear).
    """
    resolved: list[Path] = []
    for raw in names:
        name = expand_env(raw, env).strip()
        if not name:
            continue
        if _GLOB_CHARS.search(name):
            base = repo_root if name.startswith("/") else app_dir
            pattern = str(base / name.lstrip("/"))
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise ConfigError(f"values file pattern {name} matches no file")
            paths = [
                resolve_in_repo(os.path.relpath(m, app_dir), app_dir, repo_root, "values file")
                for m in matches
            ]
        else:
            paths = [resolve_in_repo(name, app_dir, repo_root, "values file")]
        for found in paths:
            path = _in_work_copy(found, app_dir, work_dir)
            if not path.is_file():
                raise ConfigError(f"values file {name} does not exist")
            if path not in resolved:
                resolved.append(path)
    return resolved


def _in_work_copy(path: Path, app_dir: Path, work_dir: Path | None) -> Path:
    if work_dir is None:
        return path
    try:
        relative = path.relative_to(os.path.realpath(app_dir))
    except ValueError:
        return path
    copy = work_dir / relative
    return copy if copy.is_file() or not path.is_file() else path


def resolve_set_files(
    values: Sequence[str], app_dir: Path, repo_root: Path
) -> list[tuple[str, str]]:
    """`--set-file key=path[,key=path]` with every path checked and made absolute."""
    out: list[tuple[str, str]] = []
    for value in values:
        pairs: list[str] = []
        for item in _UNESCAPED_COMMA.split(value):
            key, sep, path = item.partition("=")
            if not sep or not key or not path:
                raise ConfigError("HELM_ARGS: --set-file needs key=path")
            real = resolve_in_repo(path, app_dir, repo_root, "--set-file")
            if not real.is_file():
                raise ConfigError(f"HELM_ARGS: --set-file {key}: file {path} does not exist")
            pairs.append(f"{key}={real}")
        out.append(("--set-file", ",".join(pairs)))
    return out


def load_inline_values(text: str, origin: str) -> dict[str, Any]:
    """Parse inline values (HELM_VALUES, parameter 'values'); errors never quote the text."""
    try:
        data: Any = yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{origin} is not valid YAML{where}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{origin} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a YAML mapping of values")
    return data


# ------------------------------------------------------------------------------ command line


@dataclass(frozen=True)
class TemplateInputs:
    """Everything that becomes a `helm template` flag."""

    release_name: str = ""
    namespace: str = ""
    kube_version: str = ""
    sets: Sequence[tuple[str, str]] = ()  # (flag, "key=value"): --set/--set-string/--set-file
    values_files: Sequence[str] = ()  # in order: merged Jinja values, files, inline values
    api_versions: Sequence[str] = ()
    include_crds: bool = True
    skip_tests: bool = False


def template_command(helm: str, inputs: TemplateInputs, chart: str = ".") -> list[str]:
    """`helm template` with Argo CD's flags in Argo CD's order (contract §6.2)."""
    argv = [helm, "template", chart]
    if inputs.release_name:
        argv += ["--name-template", inputs.release_name]
    if inputs.namespace:
        argv += ["--namespace", inputs.namespace]
    if inputs.kube_version:
        argv += ["--kube-version", inputs.kube_version]
    for flag, value in inputs.sets:
        argv += [flag, value]
    for path in inputs.values_files:
        argv += ["--values", path]
    for version in inputs.api_versions:
        argv += ["--api-versions", version]
    if inputs.include_crds:
        argv.append("--include-crds")
    if inputs.skip_tests:
        argv.append("--skip-tests")
    return argv


def parameter_sets(parameters: Mapping[str, str], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """`--set key=value` for each helm parameter, sorted by key, values `$VAR`-expanded and
    comma-escaped as Argo CD does."""
    out: list[tuple[str, str]] = []
    for key in sorted(parameters):
        if not key.strip():
            raise ConfigError("parameter 'helm-parameters' has an empty key")
        value = escape_set_value(expand_env(parameters[key], env))
        out.append(("--set", f"{key}={value}"))
    return out


def dedupe(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def flatten_values(values: Any, prefix: str = "") -> dict[str, str]:
    """Chart defaults as `--set`-style keys (`image.tag`, `list[0]`), for the UI's map parameter.

    Empty maps and lists are left out; null becomes `null`; dots inside keys are escaped.
    """
    out: dict[str, str] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            name = str(key).replace(".", "\\.")
            out.update(flatten_values(value, f"{prefix}.{name}" if prefix else name))
    elif isinstance(values, list):
        for index, value in enumerate(values):
            out.update(flatten_values(value, f"{prefix}[{index}]"))
    elif prefix:
        if values is None:
            out[prefix] = "null"
        elif isinstance(values, bool):
            out[prefix] = "true" if values else "false"
        else:
            out[prefix] = str(values)
    return out
