"""Chart repositories: names, index.yaml, and the HTTP client against real loopback servers.

The credential tests go through `ensure_dependencies` with two real HTTP servers: the
repository answers with a redirect to a second server (another host or another port), which
records every `Authorization` header it receives.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from plugin.render import chart_repos
from plugin.render.chart_repos import (
    MAX_NAME_BYTES,
    alias_problem,
    chart_name_problem,
    http_get,
    oci_name_problem,
    oci_repository_problem,
    parse_index,
    row_problem,
)
from plugin.render.dependencies import (
    ChartCache,
    DependencyContext,
    DependencyError,
    RepoCredentials,
    Repositories,
    ensure_dependencies,
)
from plugin.render.process import Deadline, StageTimeoutError

CANARY_PASSWORD = "canary-repo-pass-5c1e"
CANARY_USER = "canary-user"


class Server:
    """A loopback HTTP server: `routes` maps a path to (status, headers, body) or a callable
    that writes the answer itself; every request's path and Authorization header is kept."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes] | Callable[[Any], None]] = {}
        self.seen: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def auth_headers(self) -> list[str | None]:
        return [auth for _, auth in self.seen]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[[str], Server]]:
    started: list[Server] = []

    def make(host: str = "127.0.0.1") -> Server:
        server = Server(host)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def index_for(name: str, version: str, body: bytes, url: str) -> bytes:
    entry = {"version": version, "urls": [url], "digest": hashlib.sha256(body).hexdigest()}
    return yaml.safe_dump({"apiVersion": "v1", "entries": {name: [entry]}}).encode()


def context(tmp_path: Path, repos: Repositories, seconds: float = 30) -> DependencyContext:
    return DependencyContext(
        cache=ChartCache(tmp_path / "cache" / "helm", 600),
        repositories=repos,
        helm="helm",
        helm_env={},
        scratch=tmp_path,
        repo_root=tmp_path,
        deadline=Deadline.after(seconds),
    )


def chart(tmp_path: Path, repository: str, name: str = "webapp") -> Path:
    path = tmp_path / "chart"
    path.mkdir(parents=True, exist_ok=True)
    dep = {"name": name, "version": "0.1.0", "repository": repository}
    meta = {"apiVersion": "v2", "name": "umb", "version": "1.0.0", "dependencies": [dep]}
    (path / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return path


def operator_repos(url: str) -> Repositories:
    creds = RepoCredentials(name="team", url=url, username=CANARY_USER, password=CANARY_PASSWORD)
    return Repositories((creds,))


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["postgresql", "my_chart.v2", "Chart-1", "a b", "é"])
def test_names_helm_accepts_are_accepted(name: str) -> None:
    assert chart_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../0123/postgresql", "/etc/evil", "a/b", "a\nb", "a\tb", "a\x00b", "x" * 200],
)
def test_names_helm_refuses_or_cannot_use_are_refused(name: str) -> None:
    assert chart_name_problem(name) is not None
    assert len("x" * 200) > MAX_NAME_BYTES


def test_alias_and_oci_rules() -> None:
    assert alias_problem("front_1-a") is None
    assert alias_problem("../x") is not None and alias_problem("a.b") is not None
    assert oci_name_problem("postgresql") is None
    for name in ("Postgres", "x:1.0.0", "x@sha256:00", "a/b", "-x"):
        assert oci_name_problem(name) is not None, name
    assert oci_repository_problem("oci://registry.example.com:5000/charts/team-a") is None
    for repository in ("oci://host/../x", "oci://-x/charts", "oci://host/Charts", "oci://h/c@d"):
        assert oci_repository_problem(repository) is not None, repository


def test_index_entries_with_hostile_names_are_dropped_and_rows_checked_on_use() -> None:
    good = {"version": "1.0.0", "urls": ["db-1.0.0.tgz"], "digest": "a" * 64}
    index = {
        "apiVersion": "v1",
        "entries": {
            "database": [good],
            "../0123/database": [good],
            "/abs/database": [good],
            "a/b": [good],
            "..": [good],
        },
    }
    parsed = parse_index(yaml.safe_dump(index).encode(), Deadline.after(10), "repo")
    assert parsed == {"database": [["1.0.0", ["db-1.0.0.tgz"], "a" * 64]]}
    assert row_problem(parsed["database"][0]) is None
    assert "version" in str(row_problem(["1.0.0/../../x", ["x.tgz"], ""]))
    assert "not http(s)" in str(row_problem(["2.0.0", ["file:///etc/passwd"], ""]))
    assert "SHA-256" in str(row_problem(["3.0.0", ["y.tgz"], "not-a-digest"]))
    assert "no download URL" in str(row_problem(["3.0.0", [], ""]))


def test_a_huge_aliased_index_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Aliases let a small index.yaml list the same versions under many names."""
    monkeypatch.setattr(chart_repos, "MAX_INDEX_ROWS", 5000)
    rows = "\n".join(f"    - {{version: 1.0.{n}, urls: [x.tgz]}}" for n in range(1000))
    names = "\n".join(f"  c{n}: *rows" for n in range(10))
    text = f"entries:\n  base: &rows\n{rows}\n{names}\n"
    with pytest.raises(DependencyError, match="more than 5000 chart versions"):
        parse_index(text.encode(), Deadline.after(30), "repo")


# ---------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("where", ["another-host", "another-port"])
def test_a_redirect_never_forwards_the_repository_credentials(
    tmp_path: Path, servers: Callable[[str], Server], where: str
) -> None:
    body = b"chart-bytes"
    elsewhere = servers("127.0.0.2" if where == "another-host" else "127.0.0.1")
    repo = servers("127.0.0.1")
    elsewhere.routes["/charts/index.yaml"] = (200, {}, index_for("webapp", "0.1.0", body, "w.tgz"))
    elsewhere.routes["/charts/w.tgz"] = (200, {}, body)
    location = {"Location": f"{elsewhere.url}/charts/index.yaml"}
    repo.routes["/charts/index.yaml"] = (302, location, b"")
    repo.routes["/charts/w.tgz"] = (302, {"Location": f"{elsewhere.url}/charts/w.tgz"}, b"")
    path = chart(tmp_path, f"{repo.url}/charts")
    ctx = context(tmp_path, operator_repos(f"{repo.url}/charts"))
    assert ensure_dependencies(path, path, ctx) == ["webapp-0.1.0.tgz"]
    token = base64.b64encode(f"{CANARY_USER}:{CANARY_PASSWORD}".encode()).decode()
    assert repo.auth_headers() == [f"Basic {token}", f"Basic {token}"]
    assert [p for p, _ in elsewhere.seen] == ["/charts/index.yaml", "/charts/w.tgz"]
    assert elsewhere.auth_headers() == [None, None], "the credentials left the repository"


def test_credentials_never_appear_in_errors(
    tmp_path: Path, servers: Callable[[str], Server]
) -> None:
    repo = servers("127.0.0.1")
    closed = servers("127.0.0.1")
    closed_url = closed.url
    closed.stop()
    url = f"http://{CANARY_USER}:{CANARY_PASSWORD}@127.0.0.1:{repo.url.rsplit(':', 1)[1]}/c"
    repo.routes["/c/index.yaml"] = (302, {"Location": f"{closed_url}/index.yaml"}, b"")
    creds = RepoCredentials(url=url, username=CANARY_USER, password=CANARY_PASSWORD)
    token = base64.b64encode(f"{CANARY_USER}:{CANARY_PASSWORD}".encode()).decode()
    for target in (url, url.replace("/c", "/missing"), f"{closed_url}/x"):
        with pytest.raises(DependencyError) as caught:
            http_get(f"{target}/index.yaml", creds, Deadline.after(10), "fetching", 1 << 20)
        message = str(caught.value)
        assert CANARY_PASSWORD not in message and token not in message, message
        assert "cannot reach" in message or "HTTP 404" in message


# ---------------------------------------------------------------------------- limits


def test_downloads_are_bounded_in_size(servers: Callable[[str], Server]) -> None:
    repo = servers("127.0.0.1")
    repo.routes["/big"] = (200, {}, b"x" * 4096)

    def chunked(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(8):
            handler.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    repo.routes["/chunked"] = chunked
    creds = RepoCredentials()
    for path in ("/big", "/chunked"):
        with pytest.raises(DependencyError, match="sent more than"):
            http_get(repo.url + path, creds, Deadline.after(10), "fetching", 2048)
    assert http_get(repo.url + "/big", creds, Deadline.after(10), "fetching", 4096) == b"x" * 4096


def test_a_server_dripping_bytes_cannot_outlast_the_deadline(
    servers: Callable[[str], Server],
) -> None:
    repo = servers("127.0.0.1")
    stop = threading.Event()

    def drip(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        while not stop.is_set():
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)

    repo.routes["/index.yaml"] = drip
    started = time.monotonic()
    try:
        with pytest.raises(StageTimeoutError, match="ran out of time"):
            http_get(repo.url + "/index.yaml", RepoCredentials(), Deadline.after(1.5), "x", 1 << 20)
    finally:
        stop.set()
    assert time.monotonic() - started < 1.5 + 2  # the deadline contract


# ---------------------------------------------------------------------------- TLS


def test_tls_settings_of_the_repositories_file(
    tmp_path: Path, servers: Callable[[str], Server]
) -> None:
    """caFile, certFile/keyFile (mutual TLS) and insecure_skip_tls_verify, against a real TLS
    server that requires a client certificate."""
    import ssl

    from tests.integration.test_vault_support import make_pki

    pki = make_pki(tmp_path / "pki")
    repo = servers("127.0.0.1")
    repo.routes["/index.yaml"] = (200, {}, b"entries: {}\n")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    repo.httpd.socket = context.wrap_socket(repo.httpd.socket, server_side=True)
    url = repo.url.replace("http://", "https://") + "/index.yaml"
    client = {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}

    def get(**settings: Any) -> bytes:
        creds = RepoCredentials(url=url, **settings)
        return http_get(url, creds, Deadline.after(10), "fetching", 1 << 20)

    assert get(ca_file=str(pki.ca_cert), **client) == b"entries: {}\n"
    assert get(insecure_skip_tls_verify=True, **client) == b"entries: {}\n"
    with pytest.raises(DependencyError, match="TLS error: certificate verify failed"):
        get(**client)
    with pytest.raises(DependencyError, match="cannot reach"):
        get(ca_file=str(pki.ca_cert))  # no client certificate


def test_netrc_credentials_are_never_sent(
    tmp_path: Path, servers: Callable[[str], Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ~/.netrc in the sidecar would otherwise hand its password to any repository an
    Application names on that host (and re-add it after a redirect)."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {CANARY_USER} password {CANARY_PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    repo = servers("127.0.0.1")
    repo.routes["/index.yaml"] = (200, {}, b"entries: {}\n")
    http_get(repo.url + "/index.yaml", RepoCredentials(), Deadline.after(10), "fetching", 1 << 20)
    assert repo.auth_headers() == [None]
