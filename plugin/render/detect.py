"""What kind of source an application directory holds.

`Chart.yaml` -> Helm; `kustomization.yaml` / `kustomization.yml` / `Kustomization` ->
Kustomize; otherwise a plain directory of manifests. A name followed by `.j2` counts too
(the Jinja2 stage renders it first). Helm wins when both are present, as in Argo CD.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HELM = "helm"
KUSTOMIZE = "kustomize"
DIRECTORY = "directory"

CHART_FILES = ("Chart.yaml",)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
TEMPLATE_SUFFIX = ".j2"
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_TOP_LEVEL_KIND = re.compile(rb"^kind:[ \t]*\S", re.MULTILINE)


def _has(app_dir: Path, names: tuple[str, ...]) -> bool:
    isfile, join = os.path.isfile, os.path.join  # strings: this runs for every render
    return any(
        isfile(join(app_dir, name)) or isfile(join(app_dir, name + TEMPLATE_SUFFIX))
        for name in names
    )


def detect(app_dir: Path, override: str = "") -> str:
    """`helm`, `kustomize` or `directory`; `override` (already validated) wins when set."""
    if override:
        return override
    if _has(app_dir, CHART_FILES):
        return HELM
    if _has(app_dir, KUSTOMIZATION_FILES):
        return KUSTOMIZE
    return DIRECTORY


def has_templates(app_dir: Path) -> bool:
    """True when some non-hidden file under `app_dir` ends in `.j2`."""
    for _root, dirs, files in os.walk(app_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(name.endswith(TEMPLATE_SUFFIX) and not name.startswith(".") for name in files):
            return True
    return False


def renderable(app_dir: Path) -> str:
    """What `plugin discover` reports: the source type, or "" when nothing can be rendered.

    A plain directory counts only when some file looks like a Kubernetes object (a JSON file
    or a YAML file with a top-level `kind:`), so a folder of notes or a lone values.yaml
    does not make the plugin claim an application.
    """
    if not app_dir.is_dir():
        return ""
    kind = detect(app_dir)
    if kind != DIRECTORY:
        return kind
    if has_templates(app_dir):
        return DIRECTORY
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith(_MANIFEST_SUFFIXES):
                continue
            path = Path(root) / name
            if name.endswith(".json"):
                return DIRECTORY
            try:
                with path.open("rb") as handle:
                    head = handle.read(1 << 20)
            except OSError:
                continue
            if _TOP_LEVEL_KIND.search(head):
                return DIRECTORY
    return ""
