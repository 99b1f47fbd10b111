"""The shared chart cache: digest keys, verification on every use, private directories.

Real loopback repositories (the `Repo` server of test_dependencies.py) and real files; the
integration twins with Helm 3 and 4 are in tests/integration/cmp/test_cmp_chart_cache.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plugin.render.chart_cache import ChartCache, cache_root, entry_key
from plugin.render.dependencies import (
    DependencyContext,
    DependencyError,
    Repositories,
    ensure_dependencies,
)
from plugin.render.process import Deadline
from tests.render.test_dependencies import Repo


@pytest.fixture
def repo() -> Iterator[Repo]:
    server = Repo()
    yield server
    server.server.shutdown()


def chart(path: Path, deps: list[dict[str, str]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    meta = {"apiVersion": "v2", "name": "umb", "version": "1.0.0", "dependencies": deps}
    (path / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return path


def context(scratch: Path, cache: ChartCache) -> DependencyContext:
    scratch.mkdir(parents=True, exist_ok=True)
    return DependencyContext(
        cache=cache,
        repositories=Repositories(),
        helm="helm",
        helm_env={},
        scratch=scratch,
        repo_root=scratch,
        deadline=Deadline.after(30),
    )


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_no_cache_location_means_no_shared_cache_never_tmp() -> None:
    assert cache_root({}) is None
    assert cache_root({"TMPDIR": "/tmp"}) is None
    assert cache_root({"HOME": "/"}) is None
    assert cache_root({"HOME": "relative"}) is None
    assert cache_root({"PLUGIN_CACHE_DIR": "relative/dir", "HOME": "/h"}) is None
    assert cache_root({"HOME": "/h"}) == Path("/h/.cache/argocd-secrets-plugin")
    assert cache_root({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/argocd-secrets-plugin")
    assert cache_root({"PLUGIN_CACHE_DIR": "/p", "HOME": "/h"}) == Path("/p")


def test_without_a_cache_location_each_render_fetches_into_its_scratch(
    tmp_path: Path, repo: Repo
) -> None:
    repo.publish({"0.1.0": b"one"})
    cache = ChartCache.from_environ({"TMPDIR": str(tmp_path / "tmp")})
    path = chart(
        tmp_path / "chart", [{"name": "webapp", "version": "0.1.0", "repository": repo.url}]
    )
    ensure_dependencies(path, path, context(tmp_path / "scratch", cache))
    assert (path / "charts/webapp-0.1.0.tgz").read_bytes() == b"one"
    assert not cache.shared and "no cache directory" in cache.refused
    assert {p.split("/")[0] for p in files(tmp_path / "scratch")} == {"chart-cache"}
    assert not (tmp_path / "tmp").exists()


def test_entries_are_named_by_digests_and_hold_the_digest(tmp_path: Path, repo: Repo) -> None:
    repo.publish({"0.1.0": b"one"})
    cache = ChartCache(tmp_path / "cache" / "helm")
    path = chart(
        tmp_path / "chart", [{"name": "webapp", "version": "0.1.0", "repository": repo.url}]
    )
    ensure_dependencies(path, path, context(tmp_path / "s", cache))
    assert cache.shared
    names = files(tmp_path / "cache")
    key = entry_key("chart", repo.url, "webapp", "0.1.0")
    assert f"helm/charts/{key}.entry" in names
    assert all(
        re.fullmatch(r"helm/(index|charts|oci)/[0-9a-f]{64}\.(json|entry|lock)", n) for n in names
    )
    header = (tmp_path / f"cache/helm/charts/{key}.entry").read_bytes().split(b"\n", 1)[0]
    assert json.loads(header)["sha256"] == hashlib.sha256(b"one").hexdigest()
    # The render's copy is a copy, not a link into the shared cache.
    assert (path / "charts/webapp-0.1.0.tgz").stat().st_nlink == 1


@pytest.mark.parametrize("name", ["../x/webapp", "/abs/webapp", "a/b", "..", "bad\nname"])
def test_hostile_dependency_names_are_refused_before_any_request(
    tmp_path: Path, repo: Repo, name: str
) -> None:
    repo.publish({"0.1.0": b"one"})
    cache = ChartCache(tmp_path / "cache" / "helm")
    path = chart(tmp_path / "chart", [{"name": name, "version": "0.1.0", "repository": repo.url}])
    before = files(tmp_path)
    with pytest.raises(
        DependencyError, match=r"Chart.yaml: dependency 0: the chart name .* refused"
    ):
        ensure_dependencies(path, path, context(tmp_path / "s", cache))
    assert repo.requests == []
    assert files(tmp_path) == before


def test_hostile_alias_is_refused(tmp_path: Path, repo: Repo) -> None:
    dep = {"name": "webapp", "version": "0.1.0", "repository": repo.url, "alias": "../x"}
    path = chart(tmp_path / "chart", [dep])
    with pytest.raises(DependencyError, match=r"the alias '\.\./x' may only contain"):
        ensure_dependencies(path, path, context(tmp_path / "s", ChartCache(tmp_path / "c")))


@pytest.mark.parametrize("version", ["0.1.0", ">=0.1.0 <1.0.0"])
def test_a_tampered_entry_is_detected_on_use_and_fetched_again(
    tmp_path: Path, repo: Repo, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    repo.publish({"0.1.0": b"genuine"})
    deps = [{"name": "webapp", "version": version, "repository": repo.url}]
    first = chart(tmp_path / "first", deps)
    ensure_dependencies(first, first, context(tmp_path / "s1", ChartCache(tmp_path / "c")))
    [entry] = (tmp_path / "c/charts").glob("*.entry")
    header = entry.read_bytes().split(b"\n", 1)[0]
    entry.write_bytes(header + b"\nEVIL")  # bytes changed, digest kept
    repo.requests.clear()
    second = chart(tmp_path / "second", deps)
    with caplog.at_level(logging.WARNING, logger="plugin.render.chart_cache"):
        ensure_dependencies(second, second, context(tmp_path / "s2", ChartCache(tmp_path / "c")))
    assert (second / "charts/webapp-0.1.0.tgz").read_bytes() == b"genuine"
    assert repo.requests[-1] == "/charts/webapp-0.1.0.tgz"
    assert "does not match its digest" in caplog.text
    # Both changed together (a consistent forgery of header and bytes) is caught by the
    # index's own digest whenever the index is consulted.
    forged = b"EVIL"
    entry.write_bytes(
        json.dumps({"sha256": hashlib.sha256(forged).hexdigest()}).encode() + b"\n" + forged
    )
    if version != "0.1.0":
        third = chart(tmp_path / "third", deps)
        ensure_dependencies(third, third, context(tmp_path / "s3", ChartCache(tmp_path / "c")))
        assert (third / "charts/webapp-0.1.0.tgz").read_bytes() == b"genuine"


def test_a_republished_version_is_fetched_again_when_the_index_says_so(
    tmp_path: Path, repo: Repo
) -> None:
    repo.publish({"0.1.0": b"first"})
    deps = [{"name": "webapp", "version": "~0.1", "repository": repo.url}]
    one = chart(tmp_path / "one", deps)
    ensure_dependencies(one, one, context(tmp_path / "s1", ChartCache(tmp_path / "c", ttl=0)))
    repo.publish({"0.1.0": b"second"})
    two = chart(tmp_path / "two", deps)
    ensure_dependencies(two, two, context(tmp_path / "s2", ChartCache(tmp_path / "c", ttl=0)))
    assert (two / "charts/webapp-0.1.0.tgz").read_bytes() == b"second"


def loose(root: Path) -> None:
    os.chmod(root, 0o777)


def symlinked(root: Path) -> None:
    real = root.parent / "elsewhere"
    real.mkdir()
    os.rmdir(root)
    root.symlink_to(real)


def foreign(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a directory's owner needs root")
    os.chown(root, 54321, 54321)


@pytest.mark.parametrize("spoil", [loose, symlinked, foreign], ids=lambda f: f.__name__)
@pytest.mark.parametrize("level", ["base", "helm", "charts"])
def test_cache_directories_not_ours_alone_are_not_used(
    tmp_path: Path, repo: Repo, spoil: object, level: str, caplog: pytest.LogCaptureFixture
) -> None:
    repo.publish({"0.1.0": b"one"})
    base = tmp_path / "base"
    target = {"base": base, "helm": base / "helm", "charts": base / "helm/charts"}[level]
    target.mkdir(parents=True, mode=0o700)
    assert callable(spoil)
    spoil(target)
    watched = target.parent / "elsewhere" if spoil is symlinked else base
    before = files(watched)
    path = chart(
        tmp_path / "chart", [{"name": "webapp", "version": "0.1.0", "repository": repo.url}]
    )
    cache = ChartCache.from_environ({"PLUGIN_CACHE_DIR": str(base)})
    with caplog.at_level(logging.WARNING, logger="plugin.render.chart_cache"):
        ensure_dependencies(path, path, context(tmp_path / "s", cache))
    assert (path / "charts/webapp-0.1.0.tgz").read_bytes() == b"one"
    assert not cache.shared and "chart cache not used" in caplog.text
    assert files(watched) == before


@pytest.mark.parametrize(
    ("name", "repository", "problem"),
    [
        ("x:1.0.0", "oci://registry.example.com/charts", "is not a valid OCI repository name"),
        ("Postgres", "oci://registry.example.com/charts", "is not a valid OCI repository name"),
        ("db", "oci://registry.example.com/../charts", "has an invalid repository path"),
        ("db", "oci://-flag/charts", "has an invalid registry host"),
    ],
)
def test_oci_references_are_checked_before_helm_runs(
    tmp_path: Path, name: str, repository: str, problem: str
) -> None:
    path = chart(tmp_path / "chart", [{"name": name, "version": "1.0.0", "repository": repository}])
    cache = ChartCache(tmp_path / "c")
    ctx = context(tmp_path / "s", cache)
    ctx.helm = str(tmp_path / "no-such-helm")  # running helm would fail differently
    with pytest.raises(DependencyError, match=f"the OCI reference {problem}; refused"):
        ensure_dependencies(path, path, ctx)
    assert not any((tmp_path / "c").rglob("*.entry"))
