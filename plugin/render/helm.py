"""`helm template` as Argo CD runs it (contract §6.2), built as a pure function, plus the
checks on everything an Application may pass to Helm.

- `parse_helm_args`: `HELM_ARGS` split like a shell would, then an allow-list of harmless
  flags; anything else (`--post-renderer`, `--repo`, credentials, plugins…) is refused.
- `resolve_values_files`: values files relative to the app dir, `/`-prefixed ones relative
  to the repository root, globs expanded; refused when they (or a symlink) leave the repo.
- `template_command`: the argument list, in Argo CD's order. It takes files only as
  `StagedFile` (copies under generated names, `plugin.render.staging`) and the release name
  only as a checked `ReleaseName`, so no tenant-chosen text reaches Helm as a path or a
  template.

What Helm parses again, and what the plugin does about it:

- `--values` is a comma-separated (CSV) list and `--set-file` is `key=path[,key=path]` with
  `\\` escapes: files are staged copies, so Helm only ever sees generated names.
- `--name-template` is a Go template with sprig's `env`: never used; the release name is the
  positional NAME, checked against Helm's own rule first.
- `--set`/`--set-string` values go through Helm's `strvals` parser (`,` separates pairs, `\\`
  escapes the next character, `{a,b}` is a list, `.`/`[i]` build paths). It never opens a
  file, so these stay as values; one helm-parameter stays one key: its key may not hold an
  unescaped `,` or `=` and its value's unescaped commas are escaped with the right parity
  (`\\\\,` is an escaped backslash before a real separator).
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
from plugin.render.staging import StagedFile

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
_GLOB_CHARS = re.compile(r"[*?\[]")
#: Helm's release-name rule (`chartutil.ValidateReleaseName`, Helm 3 and 4): a DNS-1123
#: subdomain of at most 53 characters.
_RELEASE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
RELEASE_NAME_MAX = 53


#: What `shlex` (POSIX mode) splits words on: nothing else is blank to it.
_SHELL_BLANKS = " \t\r\n"


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
    if not text.strip(_SHELL_BLANKS):  # the common case: no HELM_ARGS at all
        return HelmArgs()
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


def _helm_escaped(text: str) -> list[tuple[str, bool]]:
    """`text` as Helm's strvals reader sees it: (character, escaped) pairs; a `\\` escapes
    the next character whatever it is. A lone trailing `\\` comes out as ("\\", True)."""
    out: list[tuple[str, bool]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            out.append((text[position + 1] if position + 1 < len(text) else "\\", True))
            position += 2
        else:
            out.append((char, False))
            position += 1
    return out


def _single_list(value: str) -> bool:
    """True when Helm reads all of `value` as one list `{a,b}` (nothing after its `}`)."""
    if not value.startswith("{"):
        return False
    chars = _helm_escaped(value[1:])
    for index, (char, escaped) in enumerate(chars):
        if char == "}" and not escaped:
            return index == len(chars) - 1
    return False


def escape_set_value(value: str) -> str:
    """One `--set` value as Helm must read it: unescaped commas escaped (as Argo CD does),
    counting backslashes the way Helm does, so `\\\\,` cannot end the value early.

    A value that is exactly one Helm list `{a,b}` is passed as a list (Argo CD's behaviour);
    any other value starting with `{` has that brace escaped so that Helm reads a string.
    """
    if _single_list(value):
        return value
    out: list[str] = []
    position = 0
    while position < len(value):
        char = value[position]
        if char == "\\":
            out.append(value[position : position + 2])
            position += 2
            continue
        if char == "," or (char == "{" and position == 0):
            out.append("\\")
        out.append(char)
        position += 1
    return "".join(out)


def check_set_key(key: str, what: str) -> None:
    """Refuse a `--set`/`--set-file` key that Helm would split into more than one key."""
    if not key.strip():
        raise ConfigError(f"{what} has an empty key")
    if (len(key) - len(key.rstrip("\\"))) % 2:
        raise ConfigError(f"{what}: key {key!r} ends with a lone backslash")
    for char, escaped in _helm_escaped(key):
        if char in ",=" and not escaped:
            raise ConfigError(f"{what}: key {key!r} holds an unescaped {char!r}; refused")


def find_repo_root(app_dir: Path, source_path: str = "") -> Path:
    """The repository root the cmp-server unpacked: the app dir minus ARGOCD_APP_SOURCE_PATH.

    Outside Argo CD (no source path, or one that does not match the directory names): the
    nearest ancestor holding `.git`, else the app dir.
    """
    # Strings, not Path objects: this runs for every render.
    app = os.path.abspath(app_dir)
    root = app
    for part in reversed(_source_parts(source_path)):
        parent = os.path.dirname(root)
        if os.path.basename(root) != part or parent == root:
            break
        root = parent
    if root != app:
        # All of the source path matched, or its tail only: then the cmp-server's tar root is
        # the manifest-generate-paths common root, which is where the copy starts.
        return Path(root)
    candidate = app
    while True:
        if os.path.exists(os.path.join(candidate, ".git")):
            return Path(candidate)
        parent = os.path.dirname(candidate)
        if parent == candidate:
            return Path(app)
        candidate = parent


def _source_parts(source_path: str) -> list[str]:
    """The directory names of ARGOCD_APP_SOURCE_PATH (no empty or `.` parts)."""
    return [p for p in source_path.strip().strip("/").split("/") if p not in ("", ".")]


def repo_root_note(app_dir: Path, source_path: str, root: Path) -> str:
    """How `find_repo_root` chose `root` when it had to guess; "" when it did not guess.

    Outside Argo CD and outside a Git checkout the application directory itself is taken as
    the repository root, so `/clusters/x.yaml` and `../values.yaml` are looked for there.
    """
    if os.path.exists(os.path.join(root, ".git")):
        return ""
    parts = _source_parts(source_path)
    if parts and os.fspath(root) != os.path.abspath(app_dir):
        return ""
    why = (
        f"ARGOCD_APP_SOURCE_PATH ({source_path}) does not end with the directory's path"
        if parts
        else "ARGOCD_APP_SOURCE_PATH is not set and the directory is not in a Git checkout"
    )
    return (
        f"(repository root assumed: {root}, because {why}; set ARGOCD_APP_SOURCE_PATH to the "
        "application's path inside the repository, or run inside a Git checkout)"
    )


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
) -> list[tuple[Path, str]]:
    """Resolve every values file (after `$VAR` expansion), expanding globs; duplicates dropped.

    Returns (real path, name for messages) pairs; the paths reach Helm only as staged copies.
    With `work_dir` (the render's private copy of `app_dir`), files inside the app dir are
    taken from the copy, where the Jinja2 stage may have produced them. Missing files are an
    error naming the file (Helm's own message would be less clear).
    """
    resolved: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in names:
        name = expand_env(raw, env).strip()
        if not name:
            continue
        if _GLOB_CHARS.search(name):
            real_root = Path(os.path.realpath(repo_root))
            paths = [
                (found, f"{name} (/{found.relative_to(real_root)})")
                for found in _expand_pattern(name, app_dir, repo_root)
            ]
        else:
            paths = [(resolve_in_repo(name, app_dir, repo_root, "values file"), name)]
        for found, shown in paths:
            path = _in_work_copy(found, app_dir, work_dir)
            if not path.is_file():
                raise ConfigError(f"values file {shown} does not exist")
            if path not in seen:
                seen.add(path)
                resolved.append((path, shown))
    return resolved


def _expand_pattern(name: str, app_dir: Path, repo_root: Path) -> list[Path]:
    """The files a values-file glob names, all inside the repository.

    The pattern is confined before it is expanded: its literal leading directories must stay
    in the repository and its wildcard part may not climb (`..`). Every match is checked again
    (symlinks). Errors name the pattern only, never a file the pattern reached, so a glob
    cannot be used to list directories outside the repository.
    """
    if "://" in name:
        raise ConfigError(
            f"values file {name}: URLs are not accepted, use a file in the repository"
        )
    base = repo_root if name.startswith("/") else app_dir
    parts = Path(name.lstrip("/")).parts
    literal: list[str] = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        literal.append(part)
    rest = parts[len(literal) :]
    outside = ConfigError(f"values file pattern {name} reaches outside the repository; refused")
    if ".." in rest or not within(base.joinpath(*literal), repo_root):
        raise outside
    matches = sorted(glob.glob(str(base / name.lstrip("/")), recursive=True))
    if not matches:
        raise ConfigError(f"values file pattern {name} matches no file")
    if not all(within(Path(match), repo_root) for match in matches):
        raise outside
    return [Path(os.path.realpath(match)) for match in matches]


def _in_work_copy(path: Path, app_dir: Path, work_dir: Path | None) -> Path:
    if work_dir is None:
        return path
    try:
        relative = path.relative_to(os.path.realpath(app_dir))
    except ValueError:
        return path
    copy = work_dir / relative
    return copy if copy.is_file() or not path.is_file() else path


def split_set_file(value: str) -> list[tuple[str, str]]:
    """`key=path[,key=path]` split as Helm would split it (`\\` escapes the next character).

    Keys are checked (`check_set_key`); paths keep their text with escapes removed.
    """
    pairs: list[tuple[str, str]] = []
    items: list[list[tuple[str, bool]]] = [[]]
    for char, escaped in _helm_escaped(value):
        if char == "," and not escaped:
            items.append([])
        else:
            items[-1].append((char, escaped))
    for item in items:
        split = next((i for i, (c, e) in enumerate(item) if c == "=" and not e), None)
        if split is None or split == 0 or split == len(item) - 1:
            raise ConfigError("HELM_ARGS: --set-file needs key=path")
        key = "".join(("\\" + c) if e else c for c, e in item[:split])
        check_set_key(key, "HELM_ARGS: --set-file")
        pairs.append((key, "".join(c for c, _ in item[split + 1 :])))
    return pairs


def resolve_set_files(
    values: Sequence[str], app_dir: Path, repo_root: Path
) -> list[tuple[str, Path]]:
    """Every `--set-file key=path[,key=path]` as (key, real path inside the repository).

    The paths go to Helm only as staged copies (`Staging.copy_set_file`), never by name.
    """
    out: list[tuple[str, Path]] = []
    for value in values:
        for key, path in split_set_file(value):
            real = resolve_in_repo(path, app_dir, repo_root, "--set-file")
            if not real.is_file():
                raise ConfigError(f"HELM_ARGS: --set-file {key}: file {path} does not exist")
            out.append((key, real))
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
class ReleaseName:
    """A release name that passed Helm's own rule, so Helm takes it literally.

    Built only through `release_name` (or directly, which checks too): the text is never a
    template (`--name-template` would run sprig's `env` and print the sidecar's environment).
    """

    value: str

    def __post_init__(self) -> None:
        if not _valid_release_name(self.value):
            raise ConfigError("release name refused: it does not follow Helm's release-name rule")


def _valid_release_name(text: str) -> bool:
    return len(text) <= RELEASE_NAME_MAX and _RELEASE_NAME.fullmatch(text) is not None


def release_name(text: str, origin: str) -> ReleaseName:
    """Check `text` against Helm's release-name rule; the error names the setting, and shows
    the value only when it is short and printable (it may be a template)."""
    if not _valid_release_name(text):
        shown = f" {text!r}" if len(text) <= 80 and text.isprintable() else ""
        raise ConfigError(
            f"release name{shown} from {origin} is not a valid Helm release name: lowercase "
            f"letters, digits, '-' and '.', starting and ending with a letter or digit, at "
            f"most {RELEASE_NAME_MAX} characters"
        )
    return ReleaseName(text)


@dataclass(frozen=True)
class TemplateInputs:
    """Everything that becomes a `helm template` argument.

    Files are `StagedFile`s only and the release name a `ReleaseName`: the types say that no
    tenant-chosen path or template can be passed (and `template_command` checks again).
    """

    release_name: ReleaseName | None = None
    namespace: str = ""
    kube_version: str = ""
    sets: Sequence[tuple[str, str]] = ()  # (flag, "key=value"): --set/--set-string
    set_files: Sequence[tuple[str, StagedFile]] = ()  # (key, staged copy)
    values_files: Sequence[StagedFile] = ()  # in order: merged Jinja values, files, inline
    api_versions: Sequence[str] = ()
    include_crds: bool = True
    skip_tests: bool = False


def template_command(helm: str, inputs: TemplateInputs, chart: str = ".") -> list[str]:
    """`helm template [NAME] CHART` with Argo CD's flags in Argo CD's order (contract §6.2).

    Values are attached with `=` (`--namespace=x`), so no value can be read as a flag.
    """
    argv = [helm, "template"]
    if inputs.release_name is not None:
        if not isinstance(inputs.release_name, ReleaseName):
            raise TypeError("the release name must be a checked ReleaseName")
        argv.append(inputs.release_name.value)
    argv.append(chart)
    if inputs.namespace:
        argv.append(f"--namespace={inputs.namespace}")
    if inputs.kube_version:
        argv.append(f"--kube-version={inputs.kube_version}")
    for flag, value in inputs.sets:
        if flag not in ("--set", "--set-string"):
            raise ValueError(f"{flag} is not a --set flag")
        argv.append(f"{flag}={value}")
    for key, staged in inputs.set_files:
        argv.append(f"--set-file={key}={_staged(staged)}")
    for staged in inputs.values_files:
        argv.append(f"--values={_staged(staged)}")
    for version in inputs.api_versions:
        argv.append(f"--api-versions={version}")
    if inputs.include_crds:
        argv.append("--include-crds")
    if inputs.skip_tests:
        argv.append("--skip-tests")
    return argv


def _staged(item: object) -> str:
    if not isinstance(item, StagedFile):
        raise TypeError("helm receives files only as StagedFile copies")
    return str(item)


def parameter_sets(parameters: Mapping[str, str], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """`--set key=value` for each helm parameter, sorted by key, values `$VAR`-expanded and
    comma-escaped as Argo CD does."""
    out: list[tuple[str, str]] = []
    for key in sorted(parameters):
        check_set_key(key, "parameter 'helm-parameters'")
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
