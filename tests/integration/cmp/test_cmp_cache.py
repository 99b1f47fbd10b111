"""The dependency caches, counted at the loopback chart repository."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cmp_harness import App
from tests.conftest import CHARTS_DIR, ChartRepo
from tests.integration.cmp.conftest import SidecarFactory
from tests.integration.cmp.test_cmp_helm import newest, umbrella_repo
from tests.real_cmp import Result

pytestmark = pytest.mark.integration

# Long enough that no render on a loaded machine outlives it; the test expires entries itself.
TTL = 600.0


def expire_indexes(cache_dir: Path) -> int:
    """Age every cached index past the TTL (freshness is the file's mtime), as time would."""
    aged = 0
    for path in cache_dir.rglob("*.json"):
        if path.parent.name == "index":
            old = path.stat().st_mtime - TTL - 1
            os.utime(path, (old, old))
            aged += 1
    return aged


def chart_version(result: Result) -> str:
    label = result.one("Secret", "shop-front")["metadata"]["labels"]["helm.sh/chart"]
    return str(label).rsplit("-", 1)[-1]


@pytest.fixture
def private_chart_repo(tmp_path: Path, helm3_bin: str) -> Iterator[ChartRepo]:
    """A chart repository of our own: this module publishes new versions into it, which must
    not change what the session-wide `chart_repo` serves to other tests."""
    repo = ChartRepo(helm3_bin, tmp_path / "private-chart-repo")
    try:
        repo.publish(CHARTS_DIR / "webapp")
        repo.publish(CHARTS_DIR / "webapp", "0.2.0")
        repo.publish(CHARTS_DIR / "database")
        repo.reset_counts()
        yield repo
    finally:
        repo.stop()


def test_index_ttl_and_archive_cache(
    tmp_path: Path, sidecar: SidecarFactory, helm_bin: str, private_chart_repo: ChartRepo
) -> None:
    chart_repo = private_chart_repo
    cache_dir = tmp_path / "plugin-cache"
    cmp = sidecar(helm=helm_bin, extra={"PLUGIN_HELM_INDEX_TTL": str(TTL)}, cache_dir=cache_dir)
    repo = umbrella_repo(tmp_path / "repo", chart_repo.url)
    app = App(name="shop", path="apps/umbrella")

    chart_repo.reset_counts()
    first = cmp.generate(repo, app)
    assert first.code == 0, first.stderr
    assert chart_repo.count("/index.yaml") == 1  # one index, shared by both dependencies
    assert chart_repo.count("/") == 3  # index + two archives
    before = chart_version(first)
    assert before == newest(chart_repo, "webapp")

    chart_repo.reset_counts()
    second = cmp.generate(repo, app)
    assert second.code == 0, second.stderr
    assert chart_repo.count("/") == 0, chart_repo.requests
    assert second.stdout == first.stdout

    # A new release inside the range: invisible until the TTL has passed...
    new_version = "0.3.0"
    chart_repo.publish(CHARTS_DIR / "webapp", new_version)
    chart_repo.reset_counts()
    third = cmp.generate(repo, app)
    assert chart_repo.count("/") == 0, chart_repo.requests
    assert chart_version(third) == before

    # ...then only the index is fetched, plus the one new archive.
    assert expire_indexes(cache_dir) == 1
    chart_repo.reset_counts()
    fourth = cmp.generate(repo, app)
    assert fourth.code == 0, fourth.stderr
    assert chart_repo.requests == ["/index.yaml", f"/webapp-{new_version}.tgz"]
    assert chart_version(fourth) == new_version

    # After the TTL with nothing new: the index alone.
    assert expire_indexes(cache_dir) == 1
    chart_repo.reset_counts()
    fifth = cmp.generate(repo, app)
    assert fifth.code == 0, fifth.stderr
    assert chart_repo.requests == ["/index.yaml"]


def test_concurrent_cold_renders_download_each_archive_once(
    tmp_path: Path, sidecar: SidecarFactory, helm3_bin: str, chart_repo: Any
) -> None:
    cmp = sidecar(helm=helm3_bin)
    repo = umbrella_repo(tmp_path / "repo", chart_repo.url)
    chart_repo.reset_counts()
    results: list[Result] = []

    def render(number: int) -> None:
        results.append(cmp.generate(repo, App(name="shop", path="apps/umbrella")))

    threads = [threading.Thread(target=render, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # Four requests at once on one server: its log cannot say which output is whose, so the
    # renders are compared as Argo CD got them.
    assert [r.ok for r in results] == [True] * 4, [r.argocd.error for r in results]
    assert len({json.dumps(r.manifests, sort_keys=True) for r in results}) == 1
    assert chart_repo.count("/index.yaml") == 1
    assert chart_repo.count("/webapp-") == 1
    assert chart_repo.count("/database-") == 1


def test_chart_lock_pins_the_version(
    tmp_path: Path, sidecar: SidecarFactory, helm4_bin: str, chart_repo: Any
) -> None:
    cmp = sidecar(helm=helm4_bin)
    repo = umbrella_repo(tmp_path / "repo", chart_repo.url)
    lock = {
        "dependencies": [
            {"name": "webapp", "repository": chart_repo.url, "version": "0.1.0"},
            {"name": "database", "repository": chart_repo.url, "version": "1.0.0"},
        ],
        "digest": "sha256:0",
        "generated": "2026-01-01T00:00:00Z",
    }
    (repo / "apps/umbrella/Chart.lock").write_text(yaml.safe_dump(lock))
    result = cmp.generate(repo, App(name="shop", path="apps/umbrella"))
    assert result.code == 0, result.stderr
    assert chart_version(result) == "0.1.0"


def test_vendored_charts_need_no_repository(
    tmp_path: Path, sidecar: SidecarFactory, helm_bin: str
) -> None:
    repo = tmp_path / "repo"
    chart = repo / "apps/vendored"
    (chart / "charts").mkdir(parents=True)
    shutil.copytree(CHARTS_DIR / "webapp", chart / "charts/webapp")
    (chart / "Chart.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v2
            name: vendored
            version: 1.0.0
            dependencies:
              - name: webapp
                version: 0.1.0
                repository: https://unreachable.invalid/charts
            """
        )
    )
    cmp = sidecar(helm=helm_bin)
    result = cmp.generate(repo, App(name="v", path="apps/vendored"))
    assert result.code == 0, result.stderr
    assert len(result.by_kind("Deployment")) == 1


def test_dependency_failure_names_repository_and_chart(
    tmp_path: Path, sidecar: SidecarFactory, helm_bin: str, chart_repo: Any
) -> None:
    repo = umbrella_repo(tmp_path / "repo", chart_repo.url)
    chart_yaml = repo / "apps/umbrella/Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace(">=0.1.0 <1.0.0", ">=5.0.0"))
    cmp = sidecar(helm=helm_bin)
    result = cmp.generate(repo, App(name="shop", path="apps/umbrella"))
    assert result.code != 0 and result.stdout == ""
    assert "webapp" in result.stderr and chart_repo.url in result.stderr
    assert ">=5.0.0" in result.stderr


def test_file_dependency_inside_the_repository(
    tmp_path: Path, sidecar: SidecarFactory, helm_bin: str
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CHARTS_DIR / "database", repo / "charts/database")
    (repo / "apps/local").mkdir(parents=True)
    (repo / "apps/local/Chart.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v2
            name: local
            version: 1.0.0
            dependencies:
              - name: database
                version: ^1.0.0
                repository: file://../../charts/database
                alias: pg
            """
        )
    )
    (repo / "apps/local/values.yaml").write_text("pg:\n  instances: 5\n")
    cmp = sidecar(helm=helm_bin)
    result = cmp.generate(repo, App(name="local", path="apps/local"))
    assert result.code == 0, result.stderr
    assert result.one("Cluster")["spec"]["instances"] == 5
    assert result.one("Secret")["stringData"]["password"] == "db-pass-5582"
    assert not (repo / "apps/local/charts").exists()  # the user's tree is not modified

    escape = repo / "apps/escape"
    escape.mkdir()
    (escape / "Chart.yaml").write_text(
        (repo / "apps/local/Chart.yaml").read_text().replace("../../charts", "../../../..")
    )
    refused = cmp.generate(repo, App(name="escape", path="apps/escape"))
    assert refused.code != 0 and refused.stdout == ""
    assert "leaves the repository" in refused.stderr


def test_oci_dependency(
    tmp_path: Path, sidecar: SidecarFactory, helm_bin: str, oci_registry: Any
) -> None:
    repositories = tmp_path / "repositories.yaml"
    repositories.write_text(
        yaml.safe_dump(
            {"repositories": [{"name": "local-oci", "url": oci_registry.url, "plainHttp": True}]}
        )
    )
    repo = tmp_path / "repo"
    (repo / "apps/oci").mkdir(parents=True)
    (repo / "apps/oci/Chart.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v2
            name: oci
            version: 1.0.0
            dependencies:
              - name: webapp
                version: ">=0.1.0 <0.2.0"
                repository: {oci_registry.url}
              - name: database
                version: 1.0.0
                repository: {oci_registry.url}
            """
        )
    )
    cmp = sidecar(helm=helm_bin, extra={"PLUGIN_HELM_REPOSITORIES": str(repositories)})
    result = cmp.generate(repo, App(name="oci", path="apps/oci"))
    assert result.code == 0, result.stderr
    assert result.one("Secret", "oci-webapp")["metadata"]["labels"]["helm.sh/chart"] == (
        "webapp-0.1.0"
    )
    assert len(result.by_kind("Cluster")) == 1
    again = cmp.generate(repo, App(name="oci", path="apps/oci"))
    assert again.stdout == result.stdout
