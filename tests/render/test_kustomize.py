"""The Kustomize root check: every directory a kustomization can load stays in the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugin.errors import RenderError
from plugin.render.kustomize import check_roots


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_bases_inside_loops_remote_and_inline_entries_pass(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    tree(
        repo,
        {
            "app/kustomization.yaml": (
                "resources:\n  - ../base\n  - https://github.com/x/y//z?ref=v1\n"
                "  - github.com/x/y/z\n  - git@github.com:x/y.git\n  - cm.yaml\n"
                "generators:\n  - |\n    kind: ConfigMapGenerator\n    metadata: {name: g}\n"
            ),
            "base/Kustomization": "components:\n  - ../comp\n",
            "comp/kustomization.yml": "resources:\n  - ../base\n",  # a loop: walked once
        },
    )
    assert check_roots(repo / "app", repo) == 3


@pytest.mark.parametrize(
    "entry", ["../../elsewhere", "/etc", "../app/../../elsewhere", "link", "..//..//elsewhere"]
)
@pytest.mark.parametrize("field", ["resources", "bases", "components", "transformers"])
def test_directories_outside_are_refused(tmp_path: Path, field: str, entry: str) -> None:
    repo = tmp_path / "repo"
    tree(tmp_path, {"elsewhere/kustomization.yaml": "resources: [secret-name-canary.yaml]\n"})
    tree(repo, {"app/kustomization.yaml": f"{field}:\n  - {entry}\n"})
    os.symlink(tmp_path / "elsewhere", repo / "app" / "link")
    with pytest.raises(RenderError, match="leads outside the repository") as info:
        check_roots(repo / "app", repo)
    assert f"app/kustomization.yaml: {field} entry" in str(info.value)
    assert "secret-name-canary" not in str(info.value)


def test_helm_chart_homes_and_values_outside_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for text in (
        "helmGlobals:\n  chartHome: ../../charts\n",
        "helmCharts:\n  - name: x\n    valuesFile: /etc/passwd\n",
        "helmCharts:\n  - name: x\n    additionalValuesFiles: [../../v.yaml]\n",
    ):
        tree(repo, {"app/kustomization.yaml": text})
        with pytest.raises(RenderError, match="leads outside the repository"):
            check_roots(repo / "app", repo)


def test_oversized_or_invalid_kustomizations_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    tree(repo, {"app/kustomization.yaml": "resources: [\n"})
    with pytest.raises(RenderError, match="not valid YAML"):
        check_roots(repo / "app", repo)
    tree(repo, {"app/kustomization.yaml": "#" * (1024 * 1024 + 1)})
    with pytest.raises(RenderError, match="larger than"):
        check_roots(repo / "app", repo)
