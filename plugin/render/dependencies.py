"""Helm chart dependencies: find what `charts/` lacks, fetch it through the shared chart cache.

What `helm dependency build` would do, without a shared Helm home and with caching:

- `https://` (and `http://`) repositories: `index.yaml` is fetched by us and cached for a short
  TTL (`PLUGIN_HELM_INDEX_TTL`, default 600 s); a version range (`>=0.0.0 <1.0.0`) is resolved
  against it like `helm dependency update` (no Chart.lock) or the Chart.lock version is used;
  archives are cached by a digest of repository + chart + exact version and verified against
  their SHA-256 on every use (`chart_cache.py`).
- `oci://` repositories: `helm pull` with the operator's registry configuration; the archive is
  cached the same way (keyed by reference + exact version), a range's resolution for the TTL.
- `file://` (a chart kept in the same repository): copied into `charts/` (its own missing
  dependencies are built too); refused when the path leaves the repository.
- `@name` / `alias:name`: a repository named in the operator's repositories file
  (`chart_repos.py`, which also holds the HTTP client and the chart-name rules).

Every name and alias of Chart.yaml is checked against Helm's rules before anything uses it, and
the render's `charts/` gets a copy of the verified bytes, never a link into the cache. When
everything is cached a render makes no network call at all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plugin.errors import RenderError
from plugin.manifests.yamlio import Loader
from plugin.render import semver
from plugin.render.chart_cache import Archive, ChartCache, cache_root, index_ttl
from plugin.render.chart_repos import (
    MAX_ARCHIVE_BYTES,
    DependencyError,
    RepoCredentials,
    Repositories,
    alias_problem,
    chart_name_problem,
    http_get,
    load_repositories,
    oci_name_problem,
    oci_repository_problem,
    row_problem,
    safe_url,
    version_problem,
)
from plugin.render.copying import CopyLimits, copy_tree
from plugin.render.process import Confinement, Deadline, run
from plugin.security.redact import Redactor

__all__ = [
    "ChartCache",
    "Dependency",
    "DependencyContext",
    "DependencyError",
    "RepoCredentials",
    "Repositories",
    "cache_root",
    "declared_dependencies",
    "ensure_dependencies",
    "index_ttl",
    "load_repositories",
    "missing_dependencies",
    "read_lock",
]

log = logging.getLogger(__name__)

_ARCHIVE = re.compile(r"^(?P<name>.+)-(?P<version>v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)\.tgz$")
MAX_DEPTH = 8


@dataclass(frozen=True)
class Dependency:
    name: str
    version: str
    repository: str
    alias: str = ""

    def describe(self) -> str:
        label = f"{self.name} (alias {self.alias})" if self.alias else self.name
        version = f" {self.version}" if self.version else ""
        repo = f" from {safe_url(self.repository)}" if self.repository else ""
        return f"dependency {label}{version}{repo}"


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
        dep = Dependency(
            name=str(item["name"]),
            version=str(item.get("version") or "").strip(),
            repository=str(item.get("repository") or "").strip(),
            alias=str(item.get("alias") or ""),
        )
        check_dependency_names(dep, f"Chart.yaml: dependency {position}")
        out.append(dep)
    return out


def check_dependency_names(dep: Dependency, where: str) -> None:
    """Refuse a name or alias that breaks Helm's rules, before anything uses it."""
    problem = chart_name_problem(dep.name)
    if problem is not None:
        raise DependencyError(f"{where}: the chart name {dep.name!r} {problem}; refused")
    if dep.alias:
        problem = alias_problem(dep.alias)
        if problem is not None:
            raise DependencyError(f"{where}: the alias {dep.alias!r} {problem}; refused")


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
        constraint = lock.get((dep.name, dep.repository), "") or dep.version
        ctx.cache.prepare(ctx.scratch)
        if repository.startswith("oci://"):
            archive = _oci_archive(dep, repository, constraint, ctx)
        elif repository.startswith(("https://", "http://")):
            archive = _http_archive(dep, repository, constraint, ctx)
        else:
            raise DependencyError(f"{dep.describe()}: unsupported repository scheme")
        # A copy of the bytes that were just verified (never a link into the shared cache):
        # what Helm reads is what was checked. Name and version passed their checks.
        target = charts / f"{archive.name}-{archive.version}.tgz"
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue  # the same chart and version from two repositories: Helm needs one
        with os.fdopen(fd, "wb") as handle:
            handle.write(archive.data)
        added.append(target.name)
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


def _exact(constraint: str) -> str | None:
    """The version an exact constraint names (`1.2.3`, `=1.2.3`), or None for a range."""
    if not semver.is_exact(constraint):
        return None
    return constraint.strip().removeprefix("=").strip()


def _http_archive(dep: Dependency, url: str, constraint: str, ctx: DependencyContext) -> Archive:
    creds = ctx.repositories.for_url(url)
    exact = _exact(constraint)
    if exact is not None:
        cached = ctx.cache.cached(url, dep.name, exact)
        if cached is not None:
            return cached
    entries = ctx.cache.index(url, creds, ctx.deadline, dep.describe())
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
    row = by_version[best]
    problem = row_problem(row)
    if problem is not None:
        raise DependencyError(f"{dep.describe()}: {dep.name} {row[0]} in index.yaml: {problem}")
    version, urls, digest = str(row[0]), list(row[1]), str(row[2]).lower()

    def download() -> bytes:
        chart_url = urllib.parse.urljoin(url.rstrip("/") + "/", urls[0])
        what = f"{dep.describe()}: downloading {version}"
        body = http_get(chart_url, creds, ctx.deadline, what, MAX_ARCHIVE_BYTES)
        ctx.cache.fetched.append(chart_url)
        return body

    label = dep.describe()
    return ctx.cache.archive(
        url,
        dep.name,
        version,
        expected=digest,
        download=download,
        deadline=ctx.deadline,
        label=label,
    )


def _oci_archive(
    dep: Dependency, repository: str, constraint: str, ctx: DependencyContext
) -> Archive:
    for problem in (oci_repository_problem(repository), oci_name_problem(dep.name)):
        if problem is not None:
            raise DependencyError(f"{dep.describe()}: the OCI reference {problem}; refused")
    if constraint:
        try:
            semver.parse_constraint(constraint)
        except semver.VersionError as exc:
            raise DependencyError(f"{dep.describe()}: {exc}") from None
    reference = f"{repository.rstrip('/')}/{dep.name}"
    cache = ctx.cache
    exact = _exact(constraint)
    version = exact if exact is not None else cache.oci_resolution(reference, constraint)
    if version is not None:
        cached = cache.cached(reference, dep.name, version)
        if cached is not None:
            return cached
    creds = ctx.repositories.for_url(reference)
    with cache.oci_lock(reference, constraint, ctx.deadline):
        pulled = _helm_pull(dep, reference, constraint, creds, ctx)
        match = _ARCHIVE.match(pulled.name)
        version = exact or (match.group("version") if match else "")
        if version_problem(version) is not None:
            raise DependencyError(f"{dep.describe()}: helm pull produced {pulled.name!r}")
        data = pulled.read_bytes()
        archive = cache.archive(
            reference,
            dep.name,
            version,
            expected="",
            download=lambda: data,
            deadline=ctx.deadline,
            label=dep.describe(),
        )
        if exact is None:
            cache.record_oci_resolution(reference, constraint, version)
    return archive


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
        argv.append(f"--version={constraint}")
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
