"""Two teams, one sidecar, one chart cache: team-a cannot change what team-b's render gets.

team-b depends on `database` 1.0.0 from the session's loopback repository (`chart_repo`).
team-a runs a repository of its own, serving a look-alike `database` chart that adds a
ConfigMap `pwned-by-team-a`; it tries to place that chart in team-b's cache slot through the
dependency name, or by changing the cached archive on disk. Helm 3 and Helm 4 render.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cmp_harness import App
from tests.conftest import CHARTS_DIR, ChartRepo, package_chart
from tests.integration.cmp.conftest import SidecarFactory, write
from tests.real_cmp import Result

pytestmark = pytest.mark.integration

MARKER = "pwned-by-team-a"


def evil_database(root: Path) -> Path:
    """A chart named `database` 1.0.0, like team-b's, plus a ConfigMap that shows it ran."""
    chart = root / "database"
    shutil.copytree(CHARTS_DIR / "database", chart)
    (chart / "templates/pwned.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {MARKER}\ndata: {{}}\n"
    )
    return chart


@pytest.fixture
def team_a_repo(tmp_path: Path, helm3_bin: str) -> Iterator[ChartRepo]:
    repo = ChartRepo(helm3_bin, tmp_path / "team-a-repo")
    try:
        repo.publish(evil_database(tmp_path / "team-a-src"))
        repo.reset_counts()
        yield repo
    finally:
        repo.stop()


def app_repo(root: Path, name: str, dependency: str, repository: str) -> Path:
    deps = [{"name": dependency, "version": "1.0.0", "repository": repository}]
    meta = {"apiVersion": "v2", "name": name, "version": "1.0.0", "dependencies": deps}
    return write(root, {f"apps/{name}/Chart.yaml": yaml.safe_dump(meta)})


def rename_index_entry(repo: ChartRepo, old: str, new: str) -> None:
    index_path = repo.root / "index.yaml"
    index = yaml.safe_load(index_path.read_text())
    index["entries"][new] = index["entries"].pop(old)
    index_path.write_text(yaml.safe_dump(index))


def files_outside(root: Path, cache: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and cache not in p.parents}


def assert_genuine(result: Result) -> None:
    assert result.code == 0, result.stderr
    assert MARKER not in result.stdout, "team-b rendered team-a's chart"
    assert result.one("Secret", "team-b-db-credentials")["stringData"]["password"] == (
        "db-pass-5582"
    )


@pytest.mark.parametrize("shape", ["traversal", "absolute"])
def test_a_dependency_name_cannot_poison_another_teams_slot(
    tmp_path: Path,
    sidecar: SidecarFactory,
    helm_bin: str,
    chart_repo: ChartRepo,
    team_a_repo: ChartRepo,
    shape: str,
) -> None:
    cache = tmp_path / "plugin-cache"
    # The slot of team-b's repository in the layout the cache used to have
    # (charts/<sha256(url)[:24]>/<name>-<version>.tgz), or an absolute path.
    slot = hashlib.sha256(chart_repo.url.encode()).hexdigest()[:24]
    hostile = {
        "traversal": f"../{slot}/database",
        "absolute": str(tmp_path / "outside" / "database"),
    }[shape]
    rename_index_entry(team_a_repo, "database", hostile)
    cmp = sidecar(helm=helm_bin)
    repo_a = app_repo(tmp_path / "repo-a", "team-a", hostile, team_a_repo.url)
    repo_b = app_repo(tmp_path / "repo-b", "team-b", "database", chart_repo.url)
    before = files_outside(tmp_path, cache)

    attack = cmp.generate(repo_a, App(name="team-a", project="team-a", path="apps/team-a"))
    chart_repo.reset_counts()
    victim = cmp.generate(repo_b, App(name="team-b", project="team-b", path="apps/team-b"))

    assert_genuine(victim)
    assert chart_repo.count("/database-1.0.0.tgz") == 1, "team-b's own repository was used"
    assert attack.code != 0 and attack.stdout == ""
    assert f"the chart name {hostile!r}" in attack.stderr and "refused" in attack.stderr
    assert team_a_repo.count("/") == 0, "refused before any request"
    assert files_outside(tmp_path, cache) == before, "nothing written outside the cache"
    assert not (tmp_path / "outside").exists()


def test_a_tampered_cached_archive_is_detected_and_fetched_again(
    tmp_path: Path,
    sidecar: SidecarFactory,
    helm_bin: str,
    chart_repo: ChartRepo,
) -> None:
    cache = tmp_path / "plugin-cache"
    cmp = sidecar(helm=helm_bin)
    repo_b = app_repo(tmp_path / "repo-b", "team-b", "database", chart_repo.url)
    app = App(name="team-b", project="team-b", path="apps/team-b")
    chart_repo.reset_counts()
    assert_genuine(cmp.generate(repo_b, app))
    assert chart_repo.count("/database-1.0.0.tgz") == 1

    # Whoever can write the cache swaps the archive's bytes for team-a's chart.
    evil = package_chart(
        chart_repo.helm,
        evil_database(tmp_path / "evil-src"),
        tmp_path / "evil-pkg",
        None,
        chart_repo.helm_env,
    ).read_bytes()
    tampered = 0
    for path in (cache / "helm" / "charts").rglob("*"):
        if path.suffix == ".tgz":  # the layout the cache used to have
            path.write_bytes(evil)
            tampered += 1
        elif path.suffix == ".entry":
            header = path.read_bytes().split(b"\n", 1)[0]
            path.write_bytes(header + b"\n" + evil)
            tampered += 1
    assert tampered == 1

    again = cmp.generate(repo_b, app)
    assert_genuine(again)
    assert chart_repo.count("/database-1.0.0.tgz") == 2, "fetched again after the check failed"
    third = cmp.generate(repo_b, app)
    assert_genuine(third)
    assert chart_repo.count("/database-1.0.0.tgz") == 2, "the repaired entry serves again"


def test_hostile_names_in_a_tenant_index_are_ignored(
    tmp_path: Path,
    sidecar: SidecarFactory,
    helm_bin: str,
    team_a_repo: ChartRepo,
) -> None:
    """team-a's index lists the chart only under a path-like name: no render can reach it."""
    cache = tmp_path / "plugin-cache"
    rename_index_entry(team_a_repo, "database", str(tmp_path / "outside" / "database"))
    cmp = sidecar(helm=helm_bin)
    repo_a = app_repo(tmp_path / "repo-a", "team-a", "database", team_a_repo.url)
    before = files_outside(tmp_path, cache)
    result = cmp.generate(repo_a, App(name="team-a", project="team-a", path="apps/team-a"))
    assert result.code != 0 and result.stdout == ""
    assert "chart database is not in the repository index" in result.stderr
    assert team_a_repo.requests == ["/index.yaml"]
    assert files_outside(tmp_path, cache) == before
    [index] = (cache / "helm" / "index").glob("*.json")
    assert yaml.safe_load(index.read_text())["entries"] == {}


def test_the_shared_cache_is_private(
    tmp_path: Path, sidecar: SidecarFactory, helm_bin: str, chart_repo: ChartRepo
) -> None:
    """Created 0700; a cache directory others may write is not used (the render still works)."""
    cache = tmp_path / "plugin-cache"
    cmp = sidecar(helm=helm_bin)
    repo_b = app_repo(tmp_path / "repo-b", "team-b", "database", chart_repo.url)
    app = App(name="team-b", project="team-b", path="apps/team-b")
    assert_genuine(cmp.generate(repo_b, app))
    for directory in (cache, cache / "helm", *(cache / "helm").iterdir()):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    entries = sorted((cache / "helm" / "charts").iterdir())
    (cache / "helm" / "charts").chmod(0o777)
    chart_repo.reset_counts()
    assert_genuine(cmp.generate(repo_b, app))
    assert chart_repo.count("/database-1.0.0.tgz") == 1, "fetched for this render only"
    assert sorted((cache / "helm" / "charts").iterdir()) == entries
