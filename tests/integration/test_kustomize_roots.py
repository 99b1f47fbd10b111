"""Kustomize bases outside the repository (issue 11 §3), through the real kustomize.

Kustomize's load restrictor keeps *files* beneath their kustomization, but a *directory*
entry (`resources`, `bases`, `components`, `generators`…) may be anywhere: `../../elsewhere`
rendered another directory's manifests. The plugin checks every kustomization root before
kustomize runs. The tests run with the renderer sandbox off, so that they prove the check
itself (the sandbox is a second, independent wall), and once with the default sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.security_support import Plugin, assert_failed_cleanly, assert_succeeded

pytestmark = pytest.mark.integration

OUTSIDE = "kustomize-outside-canary-P3v9"


def layout(tmp_path: Path, kind: str = "Kustomization") -> tuple[Path, Path, Path]:
    """(repository, application dir, a kustomization outside the repository)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\ndata:\n  x: {OUTSIDE}\n"
    )
    header = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
    (elsewhere / "kustomization.yaml").write_text(
        (header if kind == "Component" else "") + "resources:\n  - cm.yaml\n"
    )
    repo = tmp_path / "repo"
    app = repo / "apps" / "web"
    app.mkdir(parents=True)
    (repo / ".git").mkdir()
    (app / "ok.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n")
    return repo, app, elsewhere


@pytest.mark.parametrize(
    ("field", "entry"),
    [
        ("resources", "../../../elsewhere"),
        ("bases", "../../../elsewhere"),
        ("components", "../../../elsewhere"),
        ("resources", "ABSOLUTE"),
        ("resources", "link-to-elsewhere"),
        ("resources", "nested"),
    ],
)
def test_kustomize_bases_outside_the_repository_are_refused(
    tmp_path: Path, kustomize_bin: str, field: str, entry: str
) -> None:
    repo, app, elsewhere = layout(tmp_path, "Component" if field == "components" else "")
    if entry == "ABSOLUTE":
        entry = str(elsewhere)
    elif entry == "link-to-elsewhere":
        os.symlink(elsewhere, app / entry)
    elif entry == "nested":
        # A base inside the repository whose own base is outside.
        (repo / "base").mkdir()
        (repo / "base" / "kustomization.yaml").write_text("resources:\n  - ../../elsewhere\n")
        entry = "../../base"
    (app / "kustomization.yaml").write_text(f"resources:\n  - ok.yaml\n{field}:\n  - {entry}\n")
    plugin = Plugin(tmp_path / "home", KUSTOMIZE_BIN=kustomize_bin, PLUGIN_SANDBOX="off")
    run = plugin.generate(app)
    assert_failed_cleanly(run, [OUTSIDE], "leads outside the repository")
    assert OUTSIDE not in run.stdout


def test_kustomize_base_outside_is_refused_in_the_copy_too(
    tmp_path: Path, kustomize_bin: str, helm3_bin: str
) -> None:
    """With `--enable-helm` kustomize runs in a copy of the repository: `..` from the copy
    leads into the scratch directory and beyond, and is refused the same way."""
    _repo, app, elsewhere = layout(tmp_path)
    # Enough `..` to reach `/` from wherever the copy is, then down to the directory outside.
    entry = "../" * 40 + str(elsewhere).lstrip("/")
    (app / "kustomization.yaml").write_text(f"resources:\n  - {entry}\n")
    plugin = Plugin(
        tmp_path / "home",
        helm=helm3_bin,
        KUSTOMIZE_BIN=kustomize_bin,
        PLUGIN_SANDBOX="off",
        PLUGIN_KUSTOMIZE_ENABLE_HELM="true",
    )
    assert_failed_cleanly(plugin.generate(app), [OUTSIDE], "leads outside the repository")


@pytest.mark.parametrize("sandbox", ["off", "auto"])
def test_kustomize_bases_inside_the_repository_still_work(
    tmp_path: Path, kustomize_bin: str, sandbox: str
) -> None:
    repo, app, _elsewhere = layout(tmp_path)
    (repo / "base").mkdir()
    (repo / "base" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-base\n"
    )
    (repo / "base" / "kustomization.yaml").write_text("resources:\n  - cm.yaml\n")
    (app / "kustomization.yaml").write_text(
        "resources:\n  - ok.yaml\n  - ../../base\n"
        "generators:\n  - |\n    apiVersion: builtin\n    kind: ConfigMapGenerator\n"
        "    metadata:\n      name: inline\n    literals: [a=b]\n"
    )
    plugin = Plugin(tmp_path / "home", KUSTOMIZE_BIN=kustomize_bin, PLUGIN_SANDBOX=sandbox)
    docs = assert_succeeded(plugin.generate(app), "name: from-base", "name: ok")
    assert {doc["metadata"]["name"] for doc in docs} >= {"from-base", "ok"}
