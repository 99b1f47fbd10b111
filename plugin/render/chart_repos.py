"""Chart repositories: the operator's credentials, the HTTP client, `index.yaml`, chart names.

Everything a repository sends is tenant input: a team can run its own repository and name it
in Chart.yaml. So chart names are checked against Helm's rule (plus what this plugin needs)
before any use, index entries that fail the checks are dropped, and the HTTP client is
`requests`, whose redirect handling removes the `Authorization` header whenever a redirect
changes host, port or scheme (Python's urllib kept it and sent the operator's repository
password to whatever host the repository redirected to).

Credentials come only from the sidecar (operator): a Helm-style repositories file
(`PLUGIN_HELM_REPOSITORIES`, default `$HELM_REPOSITORY_CONFIG` or
`$HELM_CONFIG_HOME/repositories.yaml`) and a registry config for OCI
(`PLUGIN_HELM_REGISTRY_CONFIG`, default `$HELM_REGISTRY_CONFIG` or
`$HELM_CONFIG_HOME/registry/config.json`). Never from the Application.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.config import parse_bool
from plugin.errors import ConfigError, RenderError
from plugin.render import semver
from plugin.render.process import Deadline

log = logging.getLogger(__name__)

#: One HTTP exchange never waits longer than this, nor past the render deadline.
HTTP_TIMEOUT = 30.0
#: A repository's index.yaml (the largest public ones are a few MiB) and one chart archive.
MAX_INDEX_BYTES = 32 * 1024 * 1024
MAX_ARCHIVE_BYTES = 32 * 1024 * 1024
#: Rows (chart versions) kept from one index: bounds the work a hostile index can cause.
MAX_INDEX_ROWS = 200_000
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
#: Helm's alias rule (`aliasNameFormat` in Helm's chart package).
_ALIAS = re.compile(r"[A-Za-z0-9_-]+")
#: One path component of an OCI repository name (the distribution spec's grammar).
_OCI_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_OCI_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")
#: A version as it may appear in a file name (semver's own alphabet, nothing else).
_VERSION_TEXT = re.compile(r"v?[0-9A-Za-z.+-]{1,128}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
#: File names are at most 255 bytes; `<name>-<version>.tgz` must fit.
MAX_NAME_BYTES = 120


class DependencyError(RenderError):
    """A dependency could not be resolved or fetched (the message names chart and repo)."""


def safe_url(url: str) -> str:
    """A URL without user-info (credentials never reach messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


# ---------------------------------------------------------------------------- names


def chart_name_problem(name: str) -> str | None:
    """Why `name` may not name a chart, or None.

    Helm's rule (`Metadata.Validate`): not empty, not `.` or `..`, and equal to its own base
    name (no `/`). Added here: no character Helm would silently drop or turn into a space
    (control characters, tabs, newlines), so the name checked is the name Helm uses, and a
    length that fits a file name. Names are never used as cache paths (those are digests);
    the check keeps them from naming a path in the render's own copy (`charts/<name>`).
    """
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is not allowed"
    if "/" in name:
        return "contains '/'"
    if not name.isprintable():
        return "contains a control character"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def alias_problem(alias: str) -> str | None:
    """Helm's rule for a dependency alias: letters, digits, `_` and `-` only."""
    return None if _ALIAS.fullmatch(alias) else "may only contain letters, digits, '_' and '-'"


def oci_name_problem(name: str) -> str | None:
    """An OCI chart name is one repository path component (no `:` tag, no `@` digest)."""
    return None if _OCI_COMPONENT.fullmatch(name) else "is not a valid OCI repository name"


def oci_repository_problem(repository: str) -> str | None:
    """`oci://host[:port]/path` with path components of the OCI grammar, nothing else."""
    rest = repository.removeprefix("oci://").rstrip("/")
    host, _, path = rest.partition("/")
    if not _OCI_HOST.fullmatch(host):
        return "has an invalid registry host"
    if path and not all(_OCI_COMPONENT.fullmatch(part) for part in path.split("/")):
        return "has an invalid repository path"
    return None


def version_problem(version: str) -> str | None:
    """An exact version must be a semantic version spelled in semver's own alphabet."""
    if not _VERSION_TEXT.fullmatch(version) or semver.parse_version(version) is None:
        return "is not a semantic version"
    return None


# ---------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class RepoCredentials:
    """One entry of the operator's repositories file (Helm's repositories.yaml keys)."""

    name: str = ""
    url: str = ""
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_tls_verify: bool = False
    pass_credentials_all: bool = False
    plain_http: bool = False

    def __repr__(self) -> str:  # never show the password
        return f"RepoCredentials(name={self.name!r}, url={safe_url(self.url)!r})"


@dataclass(frozen=True)
class Repositories:
    entries: tuple[RepoCredentials, ...] = ()
    registry_config: str = ""

    def by_name(self, name: str) -> RepoCredentials | None:
        return next((entry for entry in self.entries if entry.name == name), None)

    def for_url(self, url: str) -> RepoCredentials:
        """The entry whose URL is the longest prefix of `url` (or no credentials)."""
        target = url.rstrip("/")
        best: RepoCredentials | None = None
        for entry in self.entries:
            prefix = entry.url.rstrip("/")
            matches = prefix and (target == prefix or target.startswith(prefix + "/"))
            if matches and (best is None or len(prefix) > len(best.url.rstrip("/"))):
                best = entry
        return best if best is not None else RepoCredentials(url=url)


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return parse_bool(value, "repositories file flag", "repositories file")
    return False


def load_repositories(environ: Mapping[str, str]) -> Repositories:
    """The operator's repositories and registry config, from the sidecar's own environment."""
    config_home = environ.get("HELM_CONFIG_HOME", "")
    repo_file = environ.get("PLUGIN_HELM_REPOSITORIES") or environ.get("HELM_REPOSITORY_CONFIG")
    if not repo_file and config_home:
        candidate = Path(config_home) / "repositories.yaml"
        repo_file = str(candidate) if candidate.is_file() else ""
    registry = environ.get("PLUGIN_HELM_REGISTRY_CONFIG") or environ.get("HELM_REGISTRY_CONFIG")
    if not registry and config_home:
        candidate = Path(config_home) / "registry" / "config.json"
        registry = str(candidate) if candidate.is_file() else ""
    entries: list[RepoCredentials] = []
    if repo_file:
        path = Path(repo_file)
        if not path.is_file():
            raise ConfigError(f"the Helm repositories file {repo_file} does not exist")
        import yaml  # only with a repositories file (the reference index imports this module)

        from plugin.manifests.yamlio import Loader

        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
        except (OSError, yaml.YAMLError):
            raise ConfigError(
                f"the Helm repositories file {repo_file} is not readable YAML"
            ) from None
        for item in (data or {}).get("repositories") or []:
            if not isinstance(item, dict) or not item.get("url"):
                continue
            entries.append(
                RepoCredentials(
                    name=str(item.get("name") or ""),
                    url=str(item["url"]),
                    username=str(item.get("username") or ""),
                    password=str(item.get("password") or ""),
                    ca_file=str(item.get("caFile") or ""),
                    cert_file=str(item.get("certFile") or ""),
                    key_file=str(item.get("keyFile") or ""),
                    insecure_skip_tls_verify=_flag(item.get("insecure_skip_tls_verify")),
                    pass_credentials_all=_flag(item.get("pass_credentials_all")),
                    plain_http=_flag(item.get("plainHttp") or item.get("plain_http")),
                )
            )
    return Repositories(tuple(entries), registry or "")


# ---------------------------------------------------------------------------- HTTP


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


def _reason(exc: BaseException) -> str:
    """A short cause from the exception chain: the OS error or the TLS failure, no URL."""
    import socket
    import ssl

    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS error: certificate verify failed ({current.verify_message})"
        if isinstance(current, ssl.SSLError):
            return f"TLS error: {current.reason or type(current).__name__}"
        if isinstance(current, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return type(exc).__name__


def http_get(
    url: str,
    creds: RepoCredentials,
    deadline: Deadline,
    what: str,
    max_bytes: int,
) -> bytes:
    """GET `url` within the deadline and `max_bytes`; basic auth only to the repository's host.

    Basic auth is attached when `url` has the scheme, host and port of the credentials' own
    URL (or `pass_credentials_all`). On a redirect `requests` drops the `Authorization` header
    whenever host, port or scheme change, whatever `pass_credentials_all` says: a repository
    cannot forward the operator's password. Each socket read waits at most what is left of
    the render deadline, so a server dripping bytes cannot hold the render past it.
    """
    import requests  # only paid for when something is downloaded
    import urllib3

    deadline.check(what)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DependencyError(f"{what}: {safe_url(url)} is not an http(s) URL; refused")
    auth: tuple[str, str] | None = None
    if creds.username and (creds.pass_credentials_all or _origin(url) == _origin(creds.url)):
        auth = (creds.username, creds.password)
    verify: bool | str = creds.ca_file or True
    if creds.insecure_skip_tls_verify:
        verify = False
    cert: tuple[str, str] | str | None = None
    if creds.cert_file:
        cert = (creds.cert_file, creds.key_file) if creds.key_file else creds.cert_file
    timeout = max(0.1, min(HTTP_TIMEOUT, deadline.remaining()))
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    # No ~/.netrc credentials (they would go to any repository on that host, and be re-added
    # after a redirect) and no REQUESTS_CA_BUNDLE override; proxies still come from the
    # sidecar's environment (HTTPS_PROXY, NO_PROXY), as with Helm.
    session.trust_env = False
    proxies = requests.utils.get_environ_proxies(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = session.get(
                url,
                headers={"User-Agent": "argocd-secrets-plugin"},
                auth=auth,
                timeout=(timeout, timeout),
                stream=True,
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
        with response:
            if response.status_code >= 400:
                raise DependencyError(f"{what}: HTTP {response.status_code} from {safe_url(url)}")
            return _read_body(response, deadline, what, url, max_bytes)
    except requests.exceptions.TooManyRedirects:
        raise DependencyError(f"{what}: too many redirects from {safe_url(url)}") from None
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        if deadline.remaining() <= 0:
            raise deadline.expired_during(what) from None
        raise DependencyError(f"{what}: {safe_url(url)} timed out") from None
    except requests.exceptions.InvalidSchema:
        raise DependencyError(f"{what}: {safe_url(url)} redirected to a non-http(s) URL") from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise DependencyError(f"{what}: cannot reach {safe_url(url)}: {_reason(exc)}") from None
    finally:
        session.close()


def _read_body(response: Any, deadline: Deadline, what: str, url: str, max_bytes: int) -> bytes:
    too_big = f"{what}: {safe_url(url)} sent more than {max_bytes // (1024 * 1024)} MiB; refused"
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise DependencyError(too_big)
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.expired_during(what)
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(max(0.05, min(HTTP_TIMEOUT, remaining)))
        # read1: one socket read (read() would wait for a whole chunk, byte by byte).
        chunk: bytes = raw.read1(_CHUNK) if hasattr(raw, "read1") else raw.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise DependencyError(too_big)
        chunks.append(chunk)


# ---------------------------------------------------------------------------- index.yaml

#: Compact index: chart name -> [[version, [urls], sha256 hex or ""], ...]
Index = dict[str, list[list[Any]]]


def parse_index(body: bytes, deadline: Deadline, where: str) -> Index:
    """The entries of a repository's index.yaml, charts with unusable names left out.

    Names failing `chart_name_problem` are dropped here (logged at debug level). A row's
    version, digest and URLs are checked when the row is chosen (`row_problem`): checking every
    row of a large index costs more than the render can spend. `where` names the repository.
    """
    import yaml

    from plugin.manifests.yamlio import Loader

    try:
        raw = yaml.load(body, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except yaml.YAMLError:
        raise DependencyError(f"index.yaml of {where} is not valid YAML") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict):
        raise DependencyError(f"{where} does not look like a Helm repository")
    compact: Index = {}
    rows_seen = 0
    dropped = 0
    for name, versions in raw["entries"].items():
        if not isinstance(name, str) or chart_name_problem(name) is not None:
            dropped += 1
            continue
        rows: list[list[Any]] = []
        for entry in versions if isinstance(versions, list) else []:
            rows_seen += 1
            if rows_seen % 10_000 == 0:
                deadline.check(f"reading the index of {where}")
            if rows_seen > MAX_INDEX_ROWS:
                raise DependencyError(
                    f"index.yaml of {where} lists more than {MAX_INDEX_ROWS} chart versions"
                )
            if isinstance(entry, dict) and entry.get("version") is not None:
                urls = entry.get("urls")
                rows.append(
                    [
                        str(entry["version"]),
                        [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else [],
                        str(entry.get("digest") or ""),
                    ]
                )
        compact[name] = rows
    if dropped:
        log.debug("index.yaml of %s: %d charts with unusable names ignored", where, dropped)
    return compact


def row_problem(row: list[Any]) -> str | None:
    """Why the chosen index row cannot be used: its version, digest or download URL."""
    version, urls, digest = row
    if version_problem(str(version)) is not None:
        return f"version {version!r} is not a semantic version"
    if digest and not _DIGEST.fullmatch(str(digest).lower()):
        return "its digest in index.yaml is not a SHA-256"
    if not urls:
        return "it has no download URL"
    if urllib.parse.urlsplit(str(urls[0])).scheme not in ("", "http", "https"):
        return "its download URL is not http(s)"
    return None
