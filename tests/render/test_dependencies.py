"""Dependency detection, repository credentials and the index/archive caches (loopback HTTP)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plugin.errors import ConfigError
from plugin.render.dependencies import (
    ChartCache,
    Dependency,
    DependencyContext,
    DependencyError,
    RepoCredentials,
    Repositories,
    declared_dependencies,
    ensure_dependencies,
    load_repositories,
    missing_dependencies,
    read_lock,
)
from plugin.render.process import Deadline


class Repo:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.auth: list[str | None] = []
        repo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                repo.requests.append(self.path)
                repo.auth.append(self.headers.get("Authorization"))
                body = repo.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/charts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, versions: dict[str, bytes], digest_ok: bool = True) -> None:
        entries = []
        for version, body in versions.items():
            self.files[f"/charts/webapp-{version}.tgz"] = body
            digest = hashlib.sha256(body if digest_ok else b"other").hexdigest()
            entries.append(
                {"version": version, "urls": [f"webapp-{version}.tgz"], "digest": digest}
            )
        index = {"apiVersion": "v1", "entries": {"webapp": entries}}
        self.files["/charts/index.yaml"] = yaml.safe_dump(index).encode()


@pytest.fixture
def repo() -> Iterator[Repo]:
    server = Repo()
    yield server
    server.server.shutdown()


def chart(tmp_path: Path, deps: list[dict[str, str]]) -> Path:
    path = tmp_path / "chart"
    path.mkdir(parents=True, exist_ok=True)
    meta = {"apiVersion": "v2", "name": "umb", "version": "1.0.0", "dependencies": deps}
    (path / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return path


def context(
    tmp_path: Path, ttl: float = 600, repos: Repositories | None = None
) -> DependencyContext:
    return DependencyContext(
        cache=ChartCache(tmp_path / "cache", ttl),
        repositories=repos or Repositories(),
        helm="helm",
        helm_env={},
        scratch=tmp_path,
        repo_root=tmp_path,
        deadline=Deadline.after(30),
    )


def test_declared_missing_and_lock(tmp_path: Path) -> None:
    path = chart(
        tmp_path,
        [
            {"name": "a", "version": "1.0.0", "repository": "https://x", "alias": "one"},
            {"name": "b", "version": "^2", "repository": "oci://r/c"},
            {"name": "c", "version": "1.0.0", "repository": "file://../c"},
        ],
    )
    assert [d.name for d in declared_dependencies(path)] == ["a", "b", "c"]
    (path / "charts/c").mkdir(parents=True)
    (path / "charts/c/Chart.yaml").write_text("name: c\nversion: 1.0.0\n")
    (path / "charts/b-2.1.0.tgz").write_bytes(b"")
    assert [d.name for d in missing_dependencies(path)] == ["a"]
    (path / "Chart.lock").write_text(
        yaml.safe_dump(
            {"dependencies": [{"name": "a", "repository": "https://x", "version": "1.0.0"}]}
        )
    )
    assert read_lock(path) == {("a", "https://x"): "1.0.0"}


def test_range_resolution_and_caches(tmp_path: Path, repo: Repo) -> None:
    repo.publish({"0.1.0": b"one", "0.2.0": b"two", "1.0.0": b"big"})
    path = chart(
        tmp_path, [{"name": "webapp", "version": ">=0.1.0 <1.0.0", "repository": repo.url}]
    )
    ctx = context(tmp_path, ttl=0.5)
    assert ensure_dependencies(path, path, ctx) == ["webapp-0.2.0.tgz"]
    assert (path / "charts/webapp-0.2.0.tgz").read_bytes() == b"two"
    assert repo.requests == ["/charts/index.yaml", "/charts/webapp-0.2.0.tgz"]

    # A second chart within the TTL: no request at all.
    repo.requests.clear()
    other = chart(
        tmp_path / "second", [{"name": "webapp", "version": "~0.2", "repository": repo.url}]
    )
    ensure_dependencies(other, other, context(tmp_path, ttl=0.5))
    assert repo.requests == []

    # After the TTL: the index only; a new release in range is picked up.
    time.sleep(0.6)
    repo.publish({"0.1.0": b"one", "0.2.0": b"two", "0.3.0": b"three"})
    third = chart(tmp_path / "third", [{"name": "webapp", "version": "<1", "repository": repo.url}])
    ensure_dependencies(third, third, context(tmp_path, ttl=0.5))
    assert repo.requests == ["/charts/index.yaml", "/charts/webapp-0.3.0.tgz"]

    # Exact versions already cached need no index at all, even after the TTL.
    time.sleep(0.6)
    repo.requests.clear()
    exact = chart(
        tmp_path / "exact", [{"name": "webapp", "version": "0.1.0", "repository": repo.url}]
    )
    ensure_dependencies(exact, exact, context(tmp_path, ttl=0.5))
    assert repo.requests == ["/charts/index.yaml", "/charts/webapp-0.1.0.tgz"]
    repo.requests.clear()
    again = chart(
        tmp_path / "again", [{"name": "webapp", "version": "0.1.0", "repository": repo.url}]
    )
    ensure_dependencies(again, again, context(tmp_path, ttl=0))
    assert repo.requests == []


def test_failures_name_chart_and_repository(tmp_path: Path, repo: Repo) -> None:
    repo.publish({"0.1.0": b"one"}, digest_ok=False)
    path = chart(tmp_path, [{"name": "webapp", "version": "0.1.0", "repository": repo.url}])
    with pytest.raises(DependencyError, match=r"webapp 0.1.0 from http://127.*digest"):
        ensure_dependencies(path, path, context(tmp_path))
    path = chart(tmp_path, [{"name": "webapp", "version": ">=2", "repository": repo.url}])
    with pytest.raises(DependencyError, match=r"webapp >=2 from .*satisfies >=2"):
        ensure_dependencies(path, path, context(tmp_path))
    path = chart(tmp_path, [{"name": "nope", "version": "1.0.0", "repository": repo.url}])
    with pytest.raises(DependencyError, match=r"nope 1.0.0 from .*not in the repository index"):
        ensure_dependencies(path, path, context(tmp_path))
    bad = chart(tmp_path, [{"name": "x", "version": "1.0.0", "repository": repo.url + "/missing"}])
    with pytest.raises(
        DependencyError, match=r"x 1.0.0 from .*/missing: fetching index.yaml: HTTP 404"
    ):
        ensure_dependencies(bad, bad, context(tmp_path))
    named = chart(tmp_path, [{"name": "x", "version": "1.0.0", "repository": "@internal"}])
    with pytest.raises(DependencyError, match="no repository named 'internal'"):
        ensure_dependencies(named, named, context(tmp_path))


def test_credentials_from_the_operator_only(tmp_path: Path, repo: Repo) -> None:
    repo.publish({"0.1.0": b"one"})
    repos = Repositories(
        (
            RepoCredentials(
                name="internal", url="http://127.0.0.1:1/other", username="u", password="p"
            ),
            RepoCredentials(name="mine", url=repo.url, username="user", password="s3cret-pass"),
        )
    )
    assert repos.for_url(repo.url + "/sub").name == "mine"
    assert repos.for_url("https://elsewhere.example.com").username == ""
    assert "s3cret-pass" not in repr(repos)
    path = chart(tmp_path, [{"name": "webapp", "version": "0.1.0", "repository": "@mine"}])
    ensure_dependencies(path, path, context(tmp_path, repos=repos))
    assert all(header and header.startswith("Basic ") for header in repo.auth)


def test_load_repositories(tmp_path: Path) -> None:
    file = tmp_path / "repositories.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "repositories": [
                    {
                        "name": "a",
                        "url": "https://a.example.com",
                        "username": "u",
                        "password": "p",
                        "insecure_skip_tls_verify": True,
                    },
                    {"name": "r", "url": "oci://registry.example.com/charts", "plainHttp": True},
                ]
            }
        )
    )
    repos = load_repositories({"PLUGIN_HELM_REPOSITORIES": str(file)})
    assert [r.name for r in repos.entries] == ["a", "r"]
    assert repos.entries[0].insecure_skip_tls_verify and repos.entries[1].plain_http
    # ARGOCD_ENV_* (the Application) cannot point at a credentials file.
    assert load_repositories({"ARGOCD_ENV_PLUGIN_HELM_REPOSITORIES": str(file)}).entries == ()
    with pytest.raises(ConfigError, match="does not exist"):
        load_repositories({"PLUGIN_HELM_REPOSITORIES": str(tmp_path / "nope.yaml")})


def test_dependency_describe() -> None:
    dep = Dependency("webapp", ">=1", "https://user:pw@charts.example.com/x", "front")
    assert dep.describe() == "dependency webapp (alias front) >=1 from https://charts.example.com/x"
