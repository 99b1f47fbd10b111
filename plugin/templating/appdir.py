"""Jinja2 pre-rendering of an app directory, as the socle's Ansible role did before Git.

Two entry points:

:func:`build_context` builds the template variables:

* the YAML context files, in order, merged like the socle builds ``dsc``
  (``combine(recursive=True)``: mappings merge recursively, the later file wins,
  lists are *replaced*, not appended). A path is relative to the app directory,
  or to the repository root when it starts with ``/``. A file that resolves
  (symlinks included) outside the repository root, is missing, is not a regular
  file or is not a non-empty YAML mapping is refused;
* ``argocd``: ``app_name``, ``namespace``, ``project``, ``kube_version``,
  ``api_versions`` (list), ``revision``, ``revision_short``, ``repo_url``,
  ``source_path``, ``target_revision``, from the ``ARGOCD_APP_*``/``KUBE_*``
  variables (empty string / empty list when unset);
* ``env``: ``{NAME: value}`` for every ``ARGOCD_ENV_NAME`` variable.

  ``argocd`` and ``env`` are reserved: a context file with such a top-level key
  is an error (it would otherwise shadow, or be shadowed by, the Argo CD values).

:func:`render_app_dir` renders in place (the caller passes a throw-away copy).
Nothing happens unless the app directory holds at least one ``*.j2`` file
(searched recursively, skipping dot-directories and the top-level ``charts/``
and ``files/`` directories, which hold packaged subcharts and verbatim files);
so plain Helm, Kustomize and YAML apps are left untouched. Otherwise:

1. ``Chart.yaml.j2`` is rendered to ``Chart.yaml``, re-serialized like Ansible's
   ``from_yaml | to_nice_yaml(indent=2)`` (sorted keys, comments dropped), except
   that a ``version``/``appVersion``/``kubeVersion``/``dependencies[].version``
   written as a plain YAML number (``version: 1.0``, what ``"1.0" | quote``
   yields) is kept as the *string* it was written as, with a warning: Helm
   rejects numeric versions and ``1.10`` would otherwise become ``1.1``;
2. every other ``*.j2`` outside ``values/`` (``templates/*.j2``, ``crds/``,
   ``kustomization.yaml.j2``, ``values.yaml.j2``...) is rendered next to itself
   without the suffix. A render that is blank or ``None`` after stripping
   produces no file (Ansible's ``render_or_delete``). Non-``.j2`` files are never
   touched: in ``templates/`` they are Helm templates. If the output file already
   exists in the source tree, the existing file wins and the template is not
   rendered (Ansible's rule for the operator-owned ``keycloak/templates/users.yaml``);
   the report lists it and warns;
3. the ``values/`` directory, if present: its non-hidden files (not recursive,
   like ``ansible.builtin.find``), sorted by name as the socle's Ansible does
   (``find ... | sort(attribute='path')``: Jinja's sort is case-insensitive, so the
   key is the lower-cased name, then the name; for the usual names this is the
   plain order ``00-main`` < ``10-proxy`` < ``100-cnpg`` < ``200-x`` < ``300-y``).
   ``*.j2`` fragments are rendered, other fragments are used verbatim (they may
   hold Helm ``tpl`` strings). Each is parsed as YAML; a fragment that is empty,
   only comments, ``None`` or ``null`` is skipped; anything but a mapping is an
   error. They are folded with :func:`plugin.templating.merge.deep_merge` on top of
   ``values.yaml`` when it exists (after step 2), and the result is written to
   ``values.yaml`` (block style, insertion order kept, explicit nulls written
   as ``null``, multi-line strings as ``|`` blocks, no line folding);
4. the ``values/`` directory and every rendered ``*.j2`` source are deleted, so
   that Helm (which renders every file in ``templates/``) never sees them.

Helm 4 and explicit nulls (helm/helm#32132, seen with Helm 4.3.1): Helm 4 ignores
an explicit ``null`` for a *subchart* key when it comes from the chart's own
``values.yaml``, while Helm 3 honours it; both honour it when it comes from a
``--values`` file. Fragments rely on such nulls to remove subchart defaults
(e.g. ``securityContext.fsGroup: null``). :attr:`RenderReport.merged_values_file`
therefore points at the merged ``values.yaml``: the Helm stage must pass it as
the *first* ``--values`` file, before the user's ``HELM_ARGS``/``HELM_VALUES``.

Errors are :class:`plugin.errors.RenderError` naming the file and line.
Rendering is deterministic: files are processed in sorted order, the context is
copied for every template, and the sandbox has no clock, randomness or I/O.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import yaml

from plugin.errors import RenderError
from plugin.manifests.yamlio import dump
from plugin.templating.environment import create_environment, render_template
from plugin.templating.merge import combine, deep_merge

__all__ = [
    "ENV_PREFIX",
    "RESERVED_CONTEXT_KEYS",
    "RenderReport",
    "build_context",
    "render_app_dir",
]

ENV_PREFIX: Final = "ARGOCD_ENV_"
RESERVED_CONTEXT_KEYS: Final = ("argocd", "env")

_SUFFIX: Final = ".j2"
_CHART_SOURCE: Final = "Chart.yaml.j2"
_VALUES_DIR: Final = "values"
_VALUES_FILE: Final = "values.yaml"
_SKIPPED_TOP_DIRS: Final = frozenset({"charts", "files", _VALUES_DIR})
_CHART_VERSION_KEYS: Final = frozenset({"version", "appVersion", "kubeVersion"})
_NUMERIC_TAGS: Final = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_STR_TAG: Final = "tag:yaml.org,2002:str"

_YAML_LOADER: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class RenderReport:
    """What :func:`render_app_dir` did. Paths are POSIX strings relative to ``app_dir``."""

    app_dir: Path
    rendered: tuple[str, ...] = ()
    """Files written from a ``*.j2`` source, in processing order."""
    skipped_blank: tuple[str, ...] = ()
    """Outputs not written because the template rendered blank (or ``None``)."""
    kept_existing: tuple[str, ...] = ()
    """Outputs that already existed in the source tree; their template was not rendered."""
    values_fragments: tuple[str, ...] = ()
    """Values fragments folded into ``values.yaml``, in merge order."""
    skipped_fragments: tuple[str, ...] = ()
    """Values fragments that were empty after rendering and were skipped."""
    removed: tuple[str, ...] = ()
    """Sources deleted after rendering (``*.j2`` files and ``values/``)."""
    merged_values_file: Path | None = None
    """Absolute path of the merged ``values.yaml``; pass it to Helm as the first ``--values``."""
    warnings: tuple[str, ...] = ()

    @property
    def jinja_mode(self) -> bool:
        """True when the app directory had Jinja sources and was rendered."""
        return bool(self.removed)


# --------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------


def build_context(
    repo_root: Path,
    app_dir: Path,
    context_files: Sequence[str],
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """Build the template variables; see the module docstring."""
    root_real = os.path.realpath(repo_root)
    merged: dict[str, Any] = {}
    for entry in context_files:
        path = _resolve_context_file(Path(repo_root), Path(app_dir), root_real, entry)
        data = _load_context_file(path, entry)
        merged = combine(merged, data, recursive=True)
    merged["argocd"] = _argocd_variables(environ)
    merged["env"] = {
        name[len(ENV_PREFIX) :]: environ[name]
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }
    return merged


def _resolve_context_file(repo_root: Path, app_dir: Path, root_real: str, entry: str) -> str:
    if not entry or not entry.strip("/"):
        raise RenderError(f"context file {entry!r}: empty path")
    base = repo_root if entry.startswith("/") else app_dir
    real = os.path.realpath(base / entry.lstrip("/"))
    if not _is_within(real, root_real):
        raise RenderError(
            f"context file {entry!r}: refused, it resolves outside the repository (paths are "
            "relative to the app directory, or to the repository root with a leading '/')"
        )
    shown = os.path.relpath(real, root_real)
    if not os.path.lexists(real):
        raise RenderError(f"context file {entry!r}: {shown} does not exist")
    if not os.path.isfile(real):
        raise RenderError(f"context file {entry!r}: {shown} is not a regular file")
    return real


def _load_context_file(path: str, entry: str) -> dict[str, Any]:
    label = f"context file {entry}"
    data = _parse_yaml(_read_text(Path(path), label), label, rendered=False)
    if data is None:
        raise RenderError(f"{label}: the file is empty, expected a YAML mapping")
    if not isinstance(data, dict):
        raise RenderError(f"{label}: expected a YAML mapping at the top level, got {_a(data)}")
    for key in data:
        if not isinstance(key, str):
            raise RenderError(f"{label}: top-level key {key!r} is not a string")
        if key in RESERVED_CONTEXT_KEYS:
            raise RenderError(
                f"{label}: top-level key {key!r} is reserved (it is set from the Argo CD "
                "environment); rename it or nest it under another key"
            )
    return data


def _argocd_variables(environ: Mapping[str, str]) -> dict[str, Any]:
    def get(name: str) -> str:
        return environ.get(name, "")

    return {
        "app_name": get("ARGOCD_APP_NAME"),
        "namespace": get("ARGOCD_APP_NAMESPACE"),
        "project": get("ARGOCD_APP_PROJECT_NAME"),
        "kube_version": get("KUBE_VERSION"),
        "api_versions": [v.strip() for v in get("KUBE_API_VERSIONS").split(",") if v.strip()],
        "revision": get("ARGOCD_APP_REVISION"),
        "revision_short": get("ARGOCD_APP_REVISION_SHORT"),
        "repo_url": get("ARGOCD_APP_SOURCE_REPO_URL"),
        "source_path": get("ARGOCD_APP_SOURCE_PATH"),
        "target_revision": get("ARGOCD_APP_SOURCE_TARGET_REVISION"),
    }


# --------------------------------------------------------------------------------------
# App directory
# --------------------------------------------------------------------------------------


def render_app_dir(
    app_dir: Path, context: Mapping[str, Any], *, root: Path | None = None
) -> RenderReport:
    """Render the Jinja sources of ``app_dir`` in place; see the module docstring.

    ``root`` confines what may be read: a source or fragment that is a symlink
    resolving outside it is refused. It defaults to ``app_dir``; pass the
    repository root to allow symlinks to files shared between apps.
    """
    app_dir = Path(app_dir)
    if not app_dir.is_dir():
        raise RenderError(f"app directory {app_dir} does not exist or is not a directory")
    root_real = os.path.realpath(root if root is not None else app_dir)
    if not _is_within(os.path.realpath(app_dir), root_real):
        raise RenderError(f"app directory {app_dir} is outside {root}")

    sources = _find_sources(app_dir)
    values_dir = app_dir / _VALUES_DIR
    fragments, ignored = _list_fragments(values_dir) if values_dir.is_dir() else ([], [])
    if not sources and not any(name.endswith(_SUFFIX) for name in fragments):
        return RenderReport(app_dir=app_dir)

    run = _Run(app_dir, root_real, context)
    for rel in sources:
        run.render_source(rel)
    if values_dir.is_dir():
        for name in ignored:
            run.warnings.append(
                f"{_VALUES_DIR}/{name}: ignored, only the files directly in {_VALUES_DIR}/ "
                "are values fragments"
            )
        run.fold_values(fragments)
    run.remove_sources(sources, values_dir)
    return run.report()


class _Run:
    """The mutable state of one :func:`render_app_dir` call."""

    def __init__(self, app_dir: Path, root_real: str, context: Mapping[str, Any]) -> None:
        self.app_dir = app_dir
        self.root_real = root_real
        self.context = context
        self.env = create_environment()
        self.rendered: list[str] = []
        self.skipped_blank: list[str] = []
        self.kept_existing: list[str] = []
        self.fragments: list[str] = []
        self.skipped_fragments: list[str] = []
        self.removed: list[str] = []
        self.merged_values_file: Path | None = None
        self.warnings: list[str] = []

    def report(self) -> RenderReport:
        return RenderReport(
            app_dir=self.app_dir,
            rendered=tuple(self.rendered),
            skipped_blank=tuple(self.skipped_blank),
            kept_existing=tuple(self.kept_existing),
            values_fragments=tuple(self.fragments),
            skipped_fragments=tuple(self.skipped_fragments),
            removed=tuple(self.removed),
            merged_values_file=self.merged_values_file,
            warnings=tuple(self.warnings),
        )

    def render_source(self, rel: str) -> None:
        target_rel = rel[: -len(_SUFFIX)]
        target = self.app_dir / target_rel
        if os.path.lexists(target):
            self.kept_existing.append(target_rel)
            self.warnings.append(
                f"{rel}: not rendered, {target_rel} already exists in the source tree and is kept"
            )
            return
        text = render_template(self.env, self._read(rel), rel, self.context)
        if rel == _CHART_SOURCE:
            text = _canonical_chart(text, rel, self.warnings)
        elif _is_blank(text):
            self.skipped_blank.append(target_rel)
            return
        _write_text(target, text)
        self.rendered.append(target_rel)

    def fold_values(self, fragments: list[str]) -> None:
        values_file = self.app_dir / _VALUES_FILE
        merged: dict[str, Any] = {}
        if os.path.lexists(values_file):
            base = _parse_yaml(self._read(_VALUES_FILE), _VALUES_FILE, rendered=False)
            if base is not None and not isinstance(base, dict):
                raise RenderError(f"{_VALUES_FILE}: expected a YAML mapping, got {_a(base)}")
            merged = base or {}
        for name in fragments:
            rel = f"{_VALUES_DIR}/{name}"
            text = self._read(rel)
            is_template = name.endswith(_SUFFIX)
            if is_template:
                text = render_template(self.env, text, rel, self.context)
            data = _parse_yaml(text, rel, rendered=is_template)
            if data is None or data in ("None", "null"):
                self.skipped_fragments.append(rel)
                continue
            if not isinstance(data, dict):
                raise RenderError(
                    f"{rel}: a values fragment must be a YAML mapping, got {_a(data)}"
                )
            merged = deep_merge(merged, data)
            self.fragments.append(rel)
        _write_text(values_file, dump(merged, anchors=False))
        self.merged_values_file = values_file.absolute()

    def remove_sources(self, sources: list[str], values_dir: Path) -> None:
        for rel in sources:
            (self.app_dir / rel).unlink()
            self.removed.append(rel)
        if values_dir.is_symlink():
            values_dir.unlink()
            self.removed.append(f"{_VALUES_DIR}/")
        elif values_dir.is_dir():
            shutil.rmtree(values_dir)
            self.removed.append(f"{_VALUES_DIR}/")

    def _read(self, rel: str) -> str:
        path = self.app_dir / rel
        if not _is_within(os.path.realpath(path), self.root_real):
            raise RenderError(f"{rel}: refused, it is a symlink resolving outside the repository")
        return _read_text(path, rel)


def _find_sources(app_dir: Path) -> list[str]:
    """Relative paths of the ``*.j2`` files outside ``values/``; ``Chart.yaml.j2`` first."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(app_dir):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(app_dir).as_posix())
        top = str(rel_dir) == "."
        dirnames[:] = sorted(
            name
            for name in dirnames
            if not name.startswith(".") and not (top and name in _SKIPPED_TOP_DIRS)
        )
        for name in filenames:
            if name.startswith(".") or not name.endswith(_SUFFIX):
                continue
            if os.path.isfile(os.path.join(dirpath, name)):
                found.append(name if top else str(rel_dir / name))
    return sorted(found, key=lambda rel: (rel != _CHART_SOURCE, rel))


def _list_fragments(values_dir: Path) -> tuple[list[str], list[str]]:
    """(fragment file names in merge order, ignored non-file entries)."""
    fragments: list[str] = []
    ignored: list[str] = []
    with os.scandir(values_dir) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            (fragments if entry.is_file() else ignored).append(entry.name)
    fragments.sort(key=lambda name: (name.lower(), name))
    ignored.sort()
    return fragments, ignored


# --------------------------------------------------------------------------------------
# Chart.yaml
# --------------------------------------------------------------------------------------


def _canonical_chart(text: str, label: str, warnings: list[str]) -> str:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RenderError(f"{label}: rendered to an empty document, a chart needs a Chart.yaml")
        if not isinstance(node, yaml.MappingNode):
            raise RenderError(f"{label}: the rendered Chart.yaml is not a YAML mapping")
        for key, value in _pairs(node):
            if key in _CHART_VERSION_KEYS:
                _keep_as_string(value, label, key, warnings)
            elif key == "dependencies" and isinstance(value, yaml.SequenceNode):
                for index, dependency in enumerate(value.value):
                    for dep_key, dep_value in _pairs(dependency):
                        if dep_key == "version":
                            where = f"dependencies[{index}].version"
                            _keep_as_string(dep_value, label, where, warnings)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise RenderError(_yaml_error(exc, label, rendered=True)) from None
    finally:
        loader.dispose()
    return dump(data, sort_keys=True, anchors=False)


def _pairs(node: yaml.Node) -> Iterator[tuple[str, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                yield key.value, value


def _keep_as_string(node: yaml.Node, label: str, where: str, warnings: list[str]) -> None:
    if isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in _NUMERIC_TAGS:
        node.tag = _STR_TAG
        warnings.append(
            f"{label}: {where} {node.value} is a YAML number; kept as the string "
            f"{node.value!r} (Helm needs a string; quote it in the template)"
        )


# --------------------------------------------------------------------------------------
# Files and YAML
# --------------------------------------------------------------------------------------


def _is_within(path_real: str, root_real: str) -> bool:
    return os.path.commonpath([root_real, path_real]) == root_real


def _is_blank(text: str) -> bool:
    return text.strip() in ("", "None")


def _read_text(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RenderError(f"{label}: not valid UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise RenderError(f"{label}: cannot read the file: {exc.strerror}") from None


def _write_text(path: Path, text: str) -> None:
    """Write a regular file; an existing symlink is replaced, never followed."""
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")


def _parse_yaml(text: str, label: str, *, rendered: bool) -> Any:
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise RenderError(_yaml_error(exc, label, rendered=rendered)) from None


def _yaml_error(exc: yaml.YAMLError, label: str, *, rendered: bool) -> str:
    where = " in the rendered output" if rendered else ""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        problem = exc.problem or exc.context or "invalid YAML"
        return f"{label}:{exc.problem_mark.line + 1}: invalid YAML{where}: {problem}"
    return f"{label}: invalid YAML{where}: {exc}"


def _a(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (str, "a string"), (list, "a list")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__!r} value"
