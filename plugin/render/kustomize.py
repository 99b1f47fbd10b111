"""`kustomize build` (or `kubectl kustomize` when that is what the image has).

The binary comes from the sidecar's own environment (`KUSTOMIZE_BIN`, a path to `kustomize`
or to `kubectl`), else `kustomize`, else `kubectl` on PATH; an Application cannot choose it.
`--enable-helm` is opt-in for the operator (`PLUGIN_KUSTOMIZE_ENABLE_HELM=true`), with the
plugin's Helm binary and a per-render Helm home.

`check_roots` refuses, before kustomize runs, a kustomization tree that would load a
directory outside the repository (`resources: [../../elsewhere]`): see its docstring.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from plugin.config import parse_bool
from plugin.errors import RenderError
from plugin.manifests.yamlio import load_one


def kustomize_base_command(environ: Mapping[str, str]) -> list[str]:
    """`[kustomize, build]` or `[kubectl, kustomize]`, as absolute paths.

    Kustomize may run from a scratch copy: a relative KUSTOMIZE_BIN (or PATH entry) must not
    change meaning there.
    """
    configured = environ.get("KUSTOMIZE_BIN", "").strip()
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise RenderError(f"KUSTOMIZE_BIN={configured} is not an executable program")
        verb = "kustomize" if os.path.basename(found).startswith("kubectl") else "build"
        return [os.path.abspath(found), verb]
    found = shutil.which("kustomize", path=environ.get("PATH"))
    if found is not None:
        return [os.path.abspath(found), "build"]
    found = shutil.which("kubectl", path=environ.get("PATH"))
    if found is not None:
        return [os.path.abspath(found), "kustomize"]
    raise RenderError("neither kustomize nor kubectl was found (install one or set KUSTOMIZE_BIN)")


def enable_helm(environ: Mapping[str, str]) -> bool:
    text = environ.get("PLUGIN_KUSTOMIZE_ENABLE_HELM", "").strip()
    name = "PLUGIN_KUSTOMIZE_ENABLE_HELM"
    return bool(text) and parse_bool(text, name, "the sidecar environment")


def kustomize_command(
    base: list[str], app_dir: Path, helm_enabled: bool = False, helm: str = ""
) -> list[str]:
    argv = [*base, str(app_dir)]
    if helm_enabled:
        argv.append("--enable-helm")
        if helm:
            argv += ["--helm-command", helm]
    return argv


def remote_ports(environ: Mapping[str, str]) -> list[int]:
    """TCP ports a confined `kustomize build` may connect to: HTTP(S) for remote resources,
    and the port of the sidecar's proxy when one is configured."""
    ports = [80, 443]
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
            port = parsed.port
        except ValueError:
            continue
        if port is not None:
            ports.append(port)
    return ports


# ------------------------------------------------------------------------- confinement

#: The names kustomize looks for in a directory, in its order.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
#: Fields whose entries kustomize may load as a new kustomization root (a directory).
_ROOT_FIELDS = ("resources", "bases", "components", "generators", "transformers", "validators")
#: Most kustomization files walked for one render, and the largest one read.
MAX_KUSTOMIZATIONS = 10_000
MAX_KUSTOMIZATION_BYTES = 1024 * 1024


def check_roots(app_dir: Path, root: Path) -> int:
    """`kustomization_roots`, counted (see there)."""
    return len(kustomization_roots(app_dir, root))


def kustomization_roots(app_dir: Path, root: Path) -> list[Path]:
    """Refuse a kustomization tree that names a directory outside `root` (the repository).

    Kustomize's own load restrictor (`LoadRestrictionsRootOnly`, which the plugin never
    relaxes) confines every *file* a kustomization loads (patches, generator sources,
    `crds`, `configurations`, `openapi`, `replacements`) to beneath that kustomization's
    directory, symlinks included. The only way out is a *new root*: a directory entry of
    `resources`, `bases`, `components`, `generators`, `transformers` or `validators`, which
    kustomize accepts anywhere (`../../elsewhere`, `/etc`). So every kustomization reachable
    from `app_dir` is read and each such entry, resolved like kustomize does (relative to the
    kustomization's directory, symlinks followed), must stay inside `root`; a directory inside
    is walked in turn. Then every root kustomize can open is in the repository, and with its
    restrictor every file too. Remote entries (`https://…`, `git@…`, `github.com/…` that does
    not exist locally) are left to kustomize. Helm chart homes and values files of
    `helmCharts`/`helmGlobals` are checked the same way.

    Returns the directories checked (real paths, `app_dir`'s first): every root kustomize may
    load files from, which the secrets prefetch scans. Errors name the kustomization (relative to
    the repository), the field and the entry as written, never anything found outside.
    """
    real_root = Path(os.path.realpath(root))
    start = Path(os.path.realpath(app_dir))
    pending = [start]
    seen: dict[Path, None] = {}
    while pending:
        directory = pending.pop()
        if directory in seen:
            continue
        seen[directory] = None
        if len(seen) > MAX_KUSTOMIZATIONS:
            raise RenderError(
                f"the Kustomize tree has more than {MAX_KUSTOMIZATIONS} kustomizations; refused"
            )
        found = _kustomization_file(directory)
        if found is None:
            continue
        shown = _shown(found, real_root)
        data = _read_kustomization(found, shown)
        for field_name, entry in _root_entries(data):
            target = _resolve(entry, directory, real_root, shown, field_name)
            if target is not None and target.is_dir():
                pending.append(target)
        for field_name, entry in _helm_paths(data):
            _resolve(entry, directory, real_root, shown, field_name)
    return list(seen)


def _kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _read_kustomization(path: Path, shown: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_KUSTOMIZATION_BYTES:
        raise RenderError(f"{shown} is larger than {MAX_KUSTOMIZATION_BYTES} bytes; refused")
    try:
        data = load_one(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise RenderError(f"{shown} is not valid YAML") from None
    return data if isinstance(data, dict) else {}


def _root_entries(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in _ROOT_FIELDS:
        items = data.get(name)
        if isinstance(items, list):
            # Multi-line strings are inline documents (generators, transformers), not paths.
            out += [(name, item) for item in items if isinstance(item, str) and "\n" not in item]
    return out


def _helm_paths(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    helm_globals = data.get("helmGlobals")
    if isinstance(helm_globals, dict):
        out += [
            (f"helmGlobals.{key}", value)
            for key, value in helm_globals.items()
            if key in ("chartHome", "configHome") and isinstance(value, str)
        ]
    charts = data.get("helmCharts")
    for chart in charts if isinstance(charts, list) else []:
        if not isinstance(chart, dict):
            continue
        if isinstance(chart.get("valuesFile"), str):
            out.append(("helmCharts.valuesFile", chart["valuesFile"]))
        extra = chart.get("additionalValuesFiles")
        if isinstance(extra, list):
            out += [("helmCharts.additionalValuesFiles", v) for v in extra if isinstance(v, str)]
    return out


def _remote(entry: str) -> bool:
    return "://" in entry or entry.startswith(("git@", "git::"))


def _resolve(entry: str, directory: Path, root: Path, shown: str, field_name: str) -> Path | None:
    """The entry's real path when it is local; RenderError when it leaves `root`."""
    if not entry.strip() or _remote(entry):
        return None
    lexical = Path(os.path.normpath(directory / entry))
    real = Path(os.path.realpath(lexical))
    for candidate in (lexical, real):
        try:
            candidate.relative_to(root)
        except ValueError:
            raise RenderError(
                f"{shown}: {field_name} entry {entry!r} leads outside the repository; "
                "refused (Kustomize bases, components and generators must be in the "
                "repository)"
            ) from None
    return real
