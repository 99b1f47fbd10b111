"""Helm chart dependencies: find what `charts/` lacks, fetch it through shared caches.

What `helm dependency build` would do, without a shared Helm home and with caching:

- `https://` (and `http://`) repositories: `index.yaml` is fetched by us and cached for a short
  TTL (`PLUGIN_HELM_INDEX_TTL`, default 600 s); a version range (`>=0.0.0 <1.0.0`) is resolved
  against it like `helm dependency update` (no Chart.lock) or the Chart.lock version is used;
  archives are cached forever by repository + chart + exact version (digest checked).
- `oci://` repositories: `helm pull` with the operator's registry configuration; the archive is
  cached by reference + exact version, a range's resolution for the TTL.
- `file://` (a chart kept in the same repository): copied into `charts/` (its own missing
  dependencies are built too); refused when the path leaves the repository.
- `@name` / `alias:name`: a repository named in the operator's repositories file.

Cache layout under `${PLUGIN_CACHE_DIR:-$XDG_CACHE_HOME/argocd-secrets-plugin}/helm`:
`index/<key>.json` (compact index, mtime = fetch time), `charts/<key>/<name>-<version>.tgz`,
`oci/<key>.json` (range resolutions). Writers hold an `fcntl` lock on `<file>.lock` and
replace files atomically; readers never see a partial file. When everything is cached a
render makes no network call at all.

Credentials come only from the sidecar (operator): a Helm-style repositories file
(`PLUGIN_HELM_REPOSITORIES`, default `$HELM_REPOSITORY_CONFIG` or
`$HELM_CONFIG_HOME/repositories.yaml`) and a registry config for OCI
(`PLUGIN_HELM_REGISTRY_CONFIG`, default `$HELM_REGISTRY_CONFIG` or
`$HELM_CONFIG_HOME/registry/config.json`). Never from the Application.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from plugin.config import parse_bool, parse_duration_seconds
from plugin.errors import ConfigError, RenderError
from plugin.manifests.yamlio import Loader
from plugin.render import semver
from plugin.render.copying import CopyLimits, copy_tree
from plugin.render.process import Confinement, Deadline, run
from plugin.security.redact import Redactor

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

DEFAULT_INDEX_TTL = 600.0
HTTP_TIMEOUT = 30.0
APP_CACHE_NAME = "argocd-secrets-plugin"
_ARCHIVE = re.compile(r"^(?P<name>.+)-(?P<version>v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)\.tgz$")
MAX_DEPTH = 8


class DependencyError(RenderError):
    """A dependency could not be resolved or fetched (the message names chart and repo)."""


@dataclass(frozen=True)
class Dependency:
    name: str
    version: str
    repository: str
    alias: str = ""

    def describe(self) -> str:
        label = f"{self.name} (alias {self.alias})" if self.alias else self.name
        version = f" {self.version}" if self.version else ""
        repo = f" from {_safe_url(self.repository)}" if self.repository else ""
        return f"dependency {label}{version}{repo}"


def _safe_url(url: str) -> str:
    """A URL without user-info (credentials never reach messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def _load_yaml_file(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
    except OSError as exc:
        raise RenderError(f"cannot read {path.name}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise RenderError(f"{path.name} is not valid YAML") from None


def read_chart(chart_dir: Path) -> dict[str, Any]:
    data = _load_yaml_file(chart_dir / "Chart.yaml")
    if not isinstance(data, dict):
        raise RenderError(f"{chart_dir.name}/Chart.yaml is not a mapping")
    return data


def declared_dependencies(chart_dir: Path) -> list[Dependency]:
    """Dependencies of Chart.yaml (or requirements.yaml for apiVersion v1 charts)."""
    chart = read_chart(chart_dir)
    raw = chart.get("dependencies")
    if raw is None and (chart_dir / "requirements.yaml").is_file():
        requirements = _load_yaml_file(chart_dir / "requirements.yaml")
        raw = requirements.get("dependencies") if isinstance(requirements, dict) else None
    if not raw:
        return []
    if not isinstance(raw, list):
        raise RenderError("Chart.yaml: dependencies must be a list")
    out: list[Dependency] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not item.get("name"):
            raise RenderError(f"Chart.yaml: dependency {position} has no name")
        out.append(
            Dependency(
                name=str(item["name"]),
                version=str(item.get("version") or "").strip(),
                repository=str(item.get("repository") or "").strip(),
                alias=str(item.get("alias") or ""),
            )
        )
    return out


def read_lock(chart_dir: Path) -> dict[tuple[str, str], str]:
    """(name, repository) -> exact version from Chart.lock / requirements.lock."""
    for name in ("Chart.lock", "requirements.lock"):
        path = chart_dir / name
        if path.is_file():
            data = _load_yaml_file(path)
            deps = data.get("dependencies") if isinstance(data, dict) else None
            return {
                (str(d.get("name")), str(d.get("repository") or "")): str(d.get("version"))
                for d in deps or []
                if isinstance(d, dict) and d.get("name") and d.get("version")
            }
    return {}


def present_charts(chart_dir: Path) -> set[str]:
    """Chart names available in `charts/` (directories by their Chart.yaml, archives by name)."""
    names: set[str] = set()
    charts = chart_dir / "charts"
    if not charts.is_dir():
        return names
    for entry in charts.iterdir():
        if entry.is_dir() and (entry / "Chart.yaml").is_file():
            try:
                meta = read_chart(entry)
            except RenderError:
                continue
            names.add(str(meta.get("name") or entry.name))
        elif entry.is_file():
            match = _ARCHIVE.match(entry.name)
            if match:
                names.add(match.group("name"))
    return names


def missing_dependencies(chart_dir: Path) -> list[Dependency]:
    have = present_charts(chart_dir)
    return [dep for dep in declared_dependencies(chart_dir) if dep.name not in have]


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
        return f"RepoCredentials(name={self.name!r}, url={_safe_url(self.url)!r})"


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


# ---------------------------------------------------------------------------- cache plumbing


def cache_root(environ: Mapping[str, str]) -> Path:
    explicit = environ.get("PLUGIN_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg else Path(environ.get("HOME") or tempfile.gettempdir()) / ".cache"
    return base / APP_CACHE_NAME


def index_ttl(environ: Mapping[str, str]) -> float:
    text = environ.get("PLUGIN_HELM_INDEX_TTL", "").strip()
    if not text:
        return DEFAULT_INDEX_TTL
    seconds = parse_duration_seconds(text)
    if seconds is None or seconds < 0:
        raise ConfigError(f"PLUGIN_HELM_INDEX_TTL must be a duration such as 600 or 10m: {text!r}")
    return seconds


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@contextlib.contextmanager
def _locked(path: Path, deadline: Deadline, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline.remaining() <= 0:
                    raise deadline.expired_during(f"waiting for the cache lock of {what}") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fresh(path: Path, ttl: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < ttl
    except OSError:
        return False


# ---------------------------------------------------------------------------- HTTP


def _ssl_context(creds: RepoCredentials) -> ssl.SSLContext:
    import ssl  # only paid for when something is downloaded

    context = ssl.create_default_context(cafile=creds.ca_file or None)
    if creds.cert_file:
        context.load_cert_chain(creds.cert_file, creds.key_file or None)
    if creds.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def http_get(url: str, creds: RepoCredentials, deadline: Deadline, what: str) -> bytes:
    """GET `url`; basic auth only towards the repository's own host (unless pass_all)."""
    import urllib.error  # only paid for when something is downloaded
    import urllib.request

    deadline.check(what)
    request = urllib.request.Request(url, headers={"User-Agent": "argocd-secrets-plugin"})  # noqa: S310
    if creds.username:
        same_host = urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(creds.url).netloc
        if same_host or creds.pass_credentials_all:
            import base64

            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
    timeout = max(0.1, min(HTTP_TIMEOUT, deadline.remaining()))
    context = _ssl_context(creds) if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        raise DependencyError(f"{what}: HTTP {exc.code} from {_safe_url(url)}") from None
    except urllib.error.URLError as exc:
        raise DependencyError(f"{what}: cannot reach {_safe_url(url)}: {exc.reason}") from None
    except TimeoutError:
        if deadline.remaining() <= 0:
            raise deadline.expired_during(what) from None
        raise DependencyError(f"{what}: {_safe_url(url)} timed out") from None
    except OSError as exc:
        raise DependencyError(f"{what}: {_safe_url(url)}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------- the cache


@dataclass
class ChartCache:
    """Index (TTL) and archive (forever) caches shared by concurrent renders."""

    root: Path
    ttl: float = DEFAULT_INDEX_TTL
    #: What this render fetched from the network (for logs and tests).
    fetched: list[str] = field(default_factory=list)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ChartCache:
        return cls(cache_root(environ) / "helm", index_ttl(environ))

    # -- index

    def _index_path(self, url: str) -> Path:
        return self.root / "index" / f"{_key(url.rstrip('/'))}.json"

    def index(
        self, url: str, creds: RepoCredentials, deadline: Deadline, dep: Dependency
    ) -> dict[str, list[list[Any]]]:
        """The repository's entries: name -> [[version, urls, digest], ...] (fresh within TTL)."""
        path = self._index_path(url)
        if not _fresh(path, self.ttl):
            with _locked(path.with_suffix(".lock"), deadline, f"the index of {_safe_url(url)}"):
                if not _fresh(path, self.ttl):
                    self._refresh_index(url, creds, deadline, dep, path)
        try:
            data: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            raise DependencyError(
                f"{dep.describe()}: the cached index of {_safe_url(url)} is unreadable"
            ) from None
        entries: dict[str, list[list[Any]]] = data.get("entries", {})
        return entries

    def _refresh_index(
        self, url: str, creds: RepoCredentials, deadline: Deadline, dep: Dependency, path: Path
    ) -> None:
        index_url = url.rstrip("/") + "/index.yaml"
        body = http_get(index_url, creds, deadline, f"{dep.describe()}: fetching index.yaml")
        self.fetched.append(index_url)
        try:
            raw = yaml.load(body, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
        except yaml.YAMLError:
            raise DependencyError(
                f"{dep.describe()}: index.yaml of {_safe_url(url)} is not valid YAML"
            ) from None
        if not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict):
            raise DependencyError(
                f"{dep.describe()}: {_safe_url(url)} does not look like a Helm repository"
            )
        compact: dict[str, list[list[Any]]] = {}
        for name, versions in raw["entries"].items():
            rows: list[list[Any]] = []
            for entry in versions or []:
                if not isinstance(entry, dict) or entry.get("version") is None:
                    continue
                urls = [str(u) for u in entry.get("urls") or []]
                rows.append([str(entry["version"]), urls, str(entry.get("digest") or "")])
            compact[str(name)] = rows
        payload = {"url": url, "fetched": time.time(), "entries": compact}
        _atomic_write(path, json.dumps(payload, separators=(",", ":")).encode())

    # -- archives

    def archive_path(self, url: str, name: str, version: str) -> Path:
        return self.root / "charts" / _key(url.rstrip("/")) / f"{name}-{version}.tgz"

    def fetch_archive(
        self,
        url: str,
        row: list[Any],
        creds: RepoCredentials,
        deadline: Deadline,
        dep: Dependency,
    ) -> Path:
        version, urls, digest = str(row[0]), list(row[1]), str(row[2])
        path = self.archive_path(url, dep.name, version)
        if path.is_file():
            return path
        with _locked(path.with_suffix(".lock"), deadline, f"{dep.name}-{version}"):
            if path.is_file():
                return path
            if not urls:
                raise DependencyError(f"{dep.describe()}: version {version} has no download URL")
            chart_url = urllib.parse.urljoin(url.rstrip("/") + "/", urls[0])
            body = http_get(chart_url, creds, deadline, f"{dep.describe()}: downloading {version}")
            self.fetched.append(chart_url)
            if digest and hashlib.sha256(body).hexdigest() != digest.lower():
                raise DependencyError(
                    f"{dep.describe()}: the archive of version {version} does not match the "
                    "digest in index.yaml"
                )
            _atomic_write(path, body)
        return path

    # -- OCI range resolutions

    def oci_resolution_path(self, reference: str, constraint: str) -> Path:
        return self.root / "oci" / f"{_key(reference + '|' + constraint)}.json"


# ---------------------------------------------------------------------------- building


@dataclass
class DependencyContext:
    """What `ensure_dependencies` needs for one render."""

    cache: ChartCache
    repositories: Repositories
    helm: str
    helm_env: Mapping[str, str]
    scratch: Path
    repo_root: Path
    deadline: Deadline
    redactor: Redactor | None = None
    #: Landlock policy for `helm pull`/`registry login` (network allowed, files confined).
    confinement: Confinement | None = None
    _logged_in: set[str] = field(default_factory=set)


def ensure_dependencies(
    chart_dir: Path, source_dir: Path, ctx: DependencyContext, depth: int = 0
) -> list[str]:
    """Put every dependency that `chart_dir/charts` lacks into it; returns what was added.

    `chart_dir` is the render's own copy; `source_dir` its original location, against which
    `file://` paths are resolved.
    """
    if depth > MAX_DEPTH:
        raise DependencyError(f"{chart_dir.name}: file:// dependencies nest too deeply")
    missing = missing_dependencies(chart_dir)
    if not missing:
        return []
    lock = read_lock(chart_dir)
    charts = chart_dir / "charts"
    charts.mkdir(exist_ok=True)
    added: list[str] = []
    done: set[tuple[str, str]] = set()
    for dep in missing:
        if (dep.name, dep.repository) in done:
            continue  # the same chart twice under two aliases: one copy serves both
        done.add((dep.name, dep.repository))
        ctx.deadline.check(f"building {dep.describe()}")
        repository = dep.repository
        if not repository:
            raise DependencyError(
                f"{dep.describe()}: not in charts/ and no repository is given to fetch it from"
            )
        if repository.startswith("file://"):
            added.append(_file_dependency(dep, chart_dir, source_dir, ctx, depth))
            continue
        repository = _named_repository(dep, ctx.repositories)
        locked = lock.get((dep.name, dep.repository), "")
        if repository.startswith("oci://"):
            archive = _oci_archive(dep, repository, locked or dep.version, ctx)
        elif repository.startswith(("https://", "http://")):
            archive = _http_archive(dep, repository, locked or dep.version, ctx)
        else:
            raise DependencyError(f"{dep.describe()}: unsupported repository scheme")
        target = charts / archive.name
        if not target.exists():
            try:
                os.link(archive, target)
            except OSError:
                shutil.copyfile(archive, target)
        added.append(archive.name)
    return added


def _named_repository(dep: Dependency, repositories: Repositories) -> str:
    repository = dep.repository
    for prefix in ("@", "alias:"):
        if repository.startswith(prefix):
            name = repository[len(prefix) :]
            entry = repositories.by_name(name)
            if entry is None:
                raise DependencyError(
                    f"{dep.describe()}: no repository named {name!r} in the sidecar's "
                    "repositories file (PLUGIN_HELM_REPOSITORIES)"
                )
            return entry.url
    return repository


def _http_archive(dep: Dependency, url: str, constraint: str, ctx: DependencyContext) -> Path:
    creds = ctx.repositories.for_url(url)
    if semver.is_exact(constraint):
        version = constraint.strip().removeprefix("=").strip()
        cached = _cached_exact(ctx.cache, url, dep.name, version)
        if cached is not None:
            return cached
    entries = ctx.cache.index(url, creds, ctx.deadline, dep)
    rows = entries.get(dep.name)
    if not rows:
        raise DependencyError(f"{dep.describe()}: chart {dep.name} is not in the repository index")
    try:
        wanted = semver.parse_constraint(constraint)
    except semver.VersionError as exc:
        raise DependencyError(f"{dep.describe()}: {exc}") from None
    by_version: dict[semver.Version, list[Any]] = {}
    for row in rows:
        parsed = semver.parse_version(str(row[0]))
        if parsed is not None:
            by_version.setdefault(parsed, row)
    best = wanted.best(by_version)
    if best is None:
        raise DependencyError(
            f"{dep.describe()}: no version of {dep.name} in the repository satisfies "
            f"{constraint or '*'}"
        )
    return ctx.cache.fetch_archive(url, by_version[best], creds, ctx.deadline, dep)


def _cached_exact(cache: ChartCache, url: str, name: str, version: str) -> Path | None:
    for candidate in (version, version.removeprefix("v"), "v" + version.removeprefix("v")):
        path = cache.archive_path(url, name, candidate)
        if path.is_file():
            return path
    return None


def _oci_archive(dep: Dependency, repository: str, constraint: str, ctx: DependencyContext) -> Path:
    reference = f"{repository.rstrip('/')}/{dep.name}"
    cache = ctx.cache
    exact = semver.is_exact(constraint)
    resolution = cache.oci_resolution_path(reference, constraint)
    if exact:
        version = constraint.strip().removeprefix("=").strip()
        cached = _cached_exact(cache, reference, dep.name, version)
        if cached is not None:
            return cached
    elif _fresh(resolution, cache.ttl):
        try:
            version = str(json.loads(resolution.read_bytes())["version"])
            cached = _cached_exact(cache, reference, dep.name, version)
            if cached is not None:
                return cached
        except (OSError, ValueError, KeyError):
            pass
    creds = ctx.repositories.for_url(reference)
    with _locked(resolution.with_suffix(".lock"), ctx.deadline, reference):
        archive = _helm_pull(dep, reference, constraint, creds, ctx)
        match = _ARCHIVE.match(archive.name)
        version = match.group("version") if match else constraint
        target = cache.archive_path(reference, dep.name, version)
        if not target.is_file():
            _atomic_write(target, archive.read_bytes())
        if not exact:
            _atomic_write(resolution, json.dumps({"version": version}).encode())
    return target


def _helm_pull(
    dep: Dependency,
    reference: str,
    constraint: str,
    creds: RepoCredentials,
    ctx: DependencyContext,
) -> Path:
    destination = Path(tempfile.mkdtemp(prefix="pull-", dir=ctx.scratch))
    env = dict(ctx.helm_env)
    registry_config = Path(env["HELM_REGISTRY_CONFIG"])
    if ctx.repositories.registry_config and not registry_config.exists():
        registry_config.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ctx.repositories.registry_config, registry_config)
    host = reference.removeprefix("oci://").split("/", 1)[0]
    tls: list[str] = []
    if creds.ca_file:
        tls += ["--ca-file", creds.ca_file]
    if creds.cert_file:
        tls += ["--cert-file", creds.cert_file, "--key-file", creds.key_file]
    if creds.insecure_skip_tls_verify:
        tls.append("--insecure-skip-tls-verify")
    if creds.username and creds.password and host not in ctx._logged_in:
        login = [ctx.helm, "registry", "login", host, "--username", creds.username]
        login += ["--password-stdin", *(t for t in tls if t != "--insecure-skip-tls-verify")]
        if creds.insecure_skip_tls_verify or creds.plain_http:
            login.append("--insecure")
        run(
            login,
            stage=f"helm registry login {host}",
            cwd=ctx.scratch,
            env=env,
            deadline=ctx.deadline,
            redactor=Redactor({creds.password}),
            stdin_data=creds.password.encode(),
            describe_failure=f"{dep.describe()}: logging in to {host} failed",
            confinement=_with_tls_files(ctx.confinement, creds),
        )
        ctx._logged_in.add(host)
    argv = [ctx.helm, "pull", reference, "--destination", str(destination)]
    if constraint:
        argv += ["--version", constraint]
    if creds.plain_http:
        argv.append("--plain-http")
    argv += tls
    run(
        argv,
        stage=f"pulling {dep.describe()}",
        cwd=ctx.scratch,
        env=env,
        deadline=ctx.deadline,
        redactor=ctx.redactor,
        describe_failure=f"{dep.describe()}: helm pull failed",
        confinement=_with_tls_files(ctx.confinement, creds),
    )
    ctx.cache.fetched.append(reference)
    archives = sorted(destination.glob("*.tgz"))
    if len(archives) != 1:
        raise DependencyError(f"{dep.describe()}: helm pull produced no chart archive")
    return archives[0]


def _with_tls_files(confinement: Confinement | None, creds: RepoCredentials) -> Confinement | None:
    """`helm pull` may also read the operator's TLS files for this repository; it may connect
    anywhere (the registry's port is the operator's choice)."""
    if confinement is None:
        return None
    files = [f for f in (creds.ca_file, creds.cert_file, creds.key_file) if f]
    policy = dataclasses.replace(confinement.policy.with_read(files), connect_ports=None)
    return dataclasses.replace(confinement, policy=policy)


def _file_dependency(
    dep: Dependency, chart_dir: Path, source_dir: Path, ctx: DependencyContext, depth: int
) -> str:
    relative = dep.repository.removeprefix("file://")
    source = Path(relative) if os.path.isabs(relative) else source_dir / relative
    real = Path(os.path.realpath(source))
    try:
        real.relative_to(os.path.realpath(ctx.repo_root))
    except ValueError:
        raise DependencyError(
            f"{dep.describe()}: the path leaves the repository; refused"
        ) from None
    if not (real / "Chart.yaml").is_file():
        raise DependencyError(f"{dep.describe()}: no Chart.yaml at {relative}")
    meta = read_chart(real)
    if str(meta.get("name")) != dep.name:
        raise DependencyError(
            f"{dep.describe()}: the chart at {relative} is named {meta.get('name')!r}"
        )
    if dep.version:
        found = semver.parse_version(str(meta.get("version", "")))
        try:
            wanted = semver.parse_constraint(dep.version)
        except semver.VersionError as exc:
            raise DependencyError(f"{dep.describe()}: {exc}") from None
        if found is None or not wanted.allows(found):
            raise DependencyError(
                f"{dep.describe()}: the chart at {relative} has version {meta.get('version')}"
            )
    target = chart_dir / "charts" / dep.name
    copy_tree(real, target, ctx.repo_root, CopyLimits(deadline=ctx.deadline))
    ensure_dependencies(target, real, ctx, depth + 1)
    return f"{dep.name} (file://{relative})"
