"""The example GitOps repository (examples/): the documented command, every app on every
cluster, the plain example and the stand-in charts. The socle scenarios on the same example
are in tests/integration/cmp/test_scenarios_socle.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.cmp_harness import ROOT, VENV_BIN, split_manifests
from tests.integration.cmp.examples_support import EXAMPLES, examples_cmp, render, secret

pytestmark = pytest.mark.integration

README = EXAMPLES / "README.md"


def documented_command() -> str:
    """The shell block under "Render one app for one cluster" in examples/README.md."""
    text = README.read_text()
    section = text.split("## Render one app for one cluster", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "examples/README.md lost its command"
    return match.group(1)


def run_documented(
    cwd: Path, helm: str | None = None, command: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the documented command in `cwd` (a project root). With `helm`, that binary replaces
    .tools/bin/helm3 and the project's venv replaces .venv; without, the command runs verbatim."""
    command = command if command is not None else documented_command()
    assert "HELM_BIN=.tools/bin/helm3" in command and ".venv/bin/plugin" in command
    if helm is not None:
        command = command.replace("HELM_BIN=.tools/bin/helm3", f"HELM_BIN={helm}")
        command = command.replace(".venv/bin/plugin", str(VENV_BIN / "plugin"))
    # HOME outside the project: the plugin keeps caches and its reference index under
    # ~/.cache, which must not land in the checkout.
    with tempfile.TemporaryDirectory(prefix="documented-home-") as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
        return subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )


def unpacked_copy(tmp_path: Path, helm: str) -> Path:
    """The project as a release archive would unpack it (examples/, no .git anywhere), with
    `helm` as .tools/bin/helm3 and the project's venv as .venv (a relative HELM_BIN, as in
    the command)."""
    root = tmp_path / "unpacked"
    shutil.copytree(EXAMPLES, root / "examples")
    (root / ".tools/bin").mkdir(parents=True)
    (root / ".tools/bin/helm3").symlink_to(helm)
    (root / ".venv").symlink_to(VENV_BIN.parent)
    assert not any((parent / ".git").exists() for parent in (root, *root.parents))
    return root


def test_documented_command(tmp_path: Path, helm_bin: str) -> None:
    done = run_documented(ROOT, helm_bin)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "<path:" not in done.stdout
    manifests = split_manifests(done.stdout)
    kinds = sorted({m["kind"] for m in manifests})
    assert kinds == [
        "Cluster",
        "Deployment",
        "Ingress",
        "Job",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "vanilla-dso-registry-registry-core"
    admin = next(
        m
        for m in manifests
        if m["metadata"]["name"].endswith("-registry-core") and m["kind"] == "Secret"
    )
    assert admin["data"]["REGISTRY_ADMIN_PASSWORD"] != ""

    # The same command, verbatim, in an unpacked copy without .git gives the same output.
    copy = run_documented(unpacked_copy(tmp_path, helm_bin))
    assert copy.returncode == 0, copy.stderr
    assert copy.stdout == done.stdout


def test_documented_command_needs_the_source_path_without_git(
    tmp_path: Path, helm3_bin: str
) -> None:
    """Without ARGOCD_APP_SOURCE_PATH and without .git, the app directory is taken as the
    repository root, so /examples/clusters/... is looked for inside it: that is why the
    command sets the source path."""
    command = re.sub(r"ARGOCD_APP_SOURCE_PATH=\S+", "", documented_command())
    done = run_documented(unpacked_copy(tmp_path, helm3_bin), command=command)
    assert done.returncode == 1 and done.stdout == ""
    assert "context file '/examples/clusters/vanilla.yaml'" in done.stderr
    assert "does not exist" in done.stderr


APPS = [
    ("registry", "vanilla"),
    ("registry", "openshift"),
    ("global", "vanilla"),
    ("global", "openshift"),
    ("tests", "vanilla"),
    ("tests", "openshift"),
]


@pytest.mark.parametrize(("app", "cluster"), APPS)
def test_every_app_on_every_cluster(tmp_path: Path, helm_bin: str, app: str, cluster: str) -> None:
    result = render(examples_cmp(helm_bin), EXAMPLES, app, cluster)
    assert len(result.manifests) >= 3
    for manifest in result.manifests:
        labels = manifest["metadata"].get("labels") or {}
        instance = labels.get("app.kubernetes.io/instance")
        assert instance in (None, f"{cluster}-dso-{app}"), manifest["metadata"]["name"]


def test_plain_example(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),  # not the checkout: the plugin writes under ~/.cache
        "AVP_TYPE": "file",
        "AVP_FILE_PATH": "examples/secrets.yaml",
    }
    done = subprocess.run(
        [str(VENV_BIN / "plugin"), "generate", "examples/plain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [config] = split_manifests(done.stdout)
    assert config["data"] == {
        "registry": secret("kv/data/vanilla/global", "domain", "registry"),
        "docker": "docker.io",
    }


@pytest.mark.parametrize("chart", ["registry", "cluster", "cpn-job"])
def test_stand_in_charts_lint(tmp_path: Path, helm_bin: str, chart: str) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [helm_bin, "lint", "--strict", str(EXAMPLES / "charts" / chart)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
