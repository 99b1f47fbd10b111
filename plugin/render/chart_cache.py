"""The chart cache shared by every render of the sidecar, safe although every team uses it.

One team must not be able to change what another team's render gets, so the cache is built
so that the mistake cannot be written:

- **Keys are digests, never names.** An entry's file name is the SHA-256 of what identifies
  it (kind, repository URL or OCI reference, chart name, exact version); a chart name such as
  `../<key>/postgresql` or `/etc/x` therefore only changes a hash.
- **Verified on every use.** Each archive is stored with the SHA-256 it had when it was
  fetched (the index's digest when the repository publishes one); every use reads the bytes,
  hashes them and compares, and the render's copy is written from those verified bytes (no
  hard link into the cache). A changed entry is logged and fetched again (the new download
  replaces it); a digest in a fresh index that differs from the stored one (a re-published
  version) also refetches.
- **Private directories.** Every cache directory must be a real directory owned by the
  plugin's user and writable by nobody else; the plugin creates them 0700. When one is not
  (another owner, group/other-writable, a symlink), the shared cache is not used at all: the
  render fetches into its own scratch directory, as it does when no cache location is
  configured (no `PLUGIN_CACHE_DIR`, `XDG_CACHE_HOME` or `HOME`). There is no fallback to a
  shared temporary directory.
- **Atomic writes, one writer.** Entries are written to a temporary file and renamed; writers
  hold an `fcntl` lock on `<key>.lock`; files are opened without following symlinks.

Layout under `${PLUGIN_CACHE_DIR:-$XDG_CACHE_HOME/argocd-secrets-plugin}/helm`:
`index/<key>.json` (compact index, mtime = fetch time, fresh for `PLUGIN_HELM_INDEX_TTL`),
`charts/<key>.entry` (a JSON header with the archive's SHA-256, chart name, version and
source, a newline, then the archive's bytes: one file, so digest and bytes change together), and
`oci/<key>.json` (a version range's resolution, fresh for the same TTL).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plugin import atomicfile
from plugin.config import parse_duration_seconds
from plugin.errors import ConfigError
from plugin.render.chart_repos import (
    MAX_INDEX_BYTES,
    DependencyError,
    Index,
    RepoCredentials,
    http_get,
    parse_index,
    safe_url,
    version_problem,
)
from plugin.render.process import Deadline

log = logging.getLogger(__name__)

DEFAULT_INDEX_TTL = 600.0
APP_CACHE_NAME = "argocd-secrets-plugin"
SUBDIRS = ("index", "charts", "oci")
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


def cache_root(environ: Mapping[str, str]) -> Path | None:
    """The shared cache's base directory, or None when the sidecar configures none.

    `PLUGIN_CACHE_DIR`, else `$XDG_CACHE_HOME/argocd-secrets-plugin`, else
    `$HOME/.cache/argocd-secrets-plugin`; relative paths and `HOME=/` do not count. Without
    any of them there is no shared cache (never one under the world-writable `$TMPDIR`).
    """
    explicit = environ.get("PLUGIN_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit) if os.path.isabs(explicit) else None
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_CACHE_NAME
    home = environ.get("HOME", "").strip()
    if home and home != "/" and os.path.isabs(home):
        return Path(home) / ".cache" / APP_CACHE_NAME
    return None


def index_ttl(environ: Mapping[str, str]) -> float:
    text = environ.get("PLUGIN_HELM_INDEX_TTL", "").strip()
    if not text:
        return DEFAULT_INDEX_TTL
    seconds = parse_duration_seconds(text)
    if seconds is None or seconds < 0:
        raise ConfigError(f"PLUGIN_HELM_INDEX_TTL must be a duration such as 600 or 10m: {text!r}")
    return seconds


def entry_key(*parts: str) -> str:
    """The file name of an entry: SHA-256 over its identifying parts, JSON-encoded."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def private_directory_problem(path: Path) -> str | None:
    """Create `path` (0700) if missing; why it cannot hold cache entries, or None."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return f"belongs to another user (uid {info.st_uid})"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return f"is writable by its group or by others (mode {mode:04o})"
    return None


@contextlib.contextmanager
def _locked(path: Path, deadline: Deadline, what: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline.remaining() <= 0:
                    raise deadline.expired_during(f"waiting for the cache lock of {what}") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes | None:
    """A regular file's bytes (symlinks not followed), or None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _fresh(path: Path, ttl: float) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and time.time() - info.st_mtime < ttl


@dataclass(frozen=True)
class Archive:
    """A chart archive's verified bytes and the exact version they are."""

    name: str
    version: str
    data: bytes


@dataclass
class ChartCache:
    """Index (TTL) and archive (verified on use) caches shared by concurrent renders.

    `root` is the shared location (None: no shared cache). `prepare` picks the directory
    this render really uses: `root` when every cache directory passes the ownership and mode
    checks, else a private one in the render's scratch directory.
    """

    root: Path | None
    ttl: float = DEFAULT_INDEX_TTL
    #: What this render fetched from the network (for logs and tests).
    fetched: list[str] = field(default_factory=list)
    #: Why the shared cache was not used ("" when it was, or before `prepare`).
    refused: str = ""
    _base: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ChartCache:
        root = cache_root(environ)
        return cls(root / "helm" if root is not None else None, index_ttl(environ))

    @property
    def shared(self) -> bool:
        return self._base is not None and self._base == self.root

    def prepare(self, scratch: Path) -> Path:
        """Check (and create) the cache directories once per render; the base to use."""
        if self._base is not None:
            return self._base
        if self.root is None:
            self.refused = "no cache directory is configured (PLUGIN_CACHE_DIR, HOME)"
            log.info("chart cache: %s; charts are fetched for this render only", self.refused)
        else:
            problem = self._check_shared(self.root)
            if problem is None:
                self._base = self.root
                return self.root
            self.refused = problem
            log.warning(
                "chart cache not used: %s; charts are fetched for this render only", problem
            )
        base = scratch / "chart-cache"
        for directory in (base, *(base / sub for sub in SUBDIRS)):
            problem = private_directory_problem(directory)
            if problem is not None:
                raise DependencyError(f"the render's own chart cache {directory} {problem}")
        self._base = base
        return base

    @staticmethod
    def _check_shared(root: Path) -> str | None:
        try:
            root.parent.parent.mkdir(parents=True, exist_ok=True)
            for directory in (root.parent, root, *(root / sub for sub in SUBDIRS)):
                problem = private_directory_problem(directory)
                if problem is not None:
                    return f"{directory} {problem}"
        except OSError as exc:
            return f"{root}: {exc.strerror or type(exc).__name__}"
        return None

    def _dir(self, sub: str) -> Path:
        if self._base is None:
            raise RuntimeError("ChartCache.prepare was not called")
        return self._base / sub

    # -- index

    def index(self, url: str, creds: RepoCredentials, deadline: Deadline, label: str) -> Index:
        """The repository's usable entries (see `parse_index`), fresh within the TTL."""
        path = self._dir("index") / f"{entry_key('index', url.rstrip('/'))}.json"
        if not _fresh(path, self.ttl):
            with _locked(path.with_suffix(".lock"), deadline, f"the index of {safe_url(url)}"):
                if not _fresh(path, self.ttl):
                    self._refresh_index(url, creds, deadline, label, path)
        body = _read(path)
        try:
            data = json.loads(body or b"")
            entries: Index = data["entries"]
        except (ValueError, KeyError, TypeError):
            raise DependencyError(
                f"{label}: the cached index of {safe_url(url)} is unreadable"
            ) from None
        return entries

    def _refresh_index(
        self, url: str, creds: RepoCredentials, deadline: Deadline, label: str, path: Path
    ) -> None:
        index_url = url.rstrip("/") + "/index.yaml"
        what = f"{label}: fetching index.yaml"
        body = http_get(index_url, creds, deadline, what, MAX_INDEX_BYTES)
        self.fetched.append(index_url)
        try:
            entries = parse_index(body, deadline, safe_url(url))
        except DependencyError as exc:
            raise DependencyError(f"{label}: {exc}") from None
        payload = {"url": safe_url(url), "fetched": time.time(), "entries": entries}
        atomicfile.write(path, json.dumps(payload, separators=(",", ":")).encode())

    # -- archives

    def _entry_path(self, source: str, name: str, version: str) -> Path:
        key = entry_key("chart", source.rstrip("/"), name, version)
        return self._dir("charts") / f"{key}.entry"

    def _verified(
        self, source: str, name: str, version: str, expected: str = "", report: bool = False
    ) -> Archive | None:
        """The cached archive when its bytes still hash to the digest recorded with them (and,
        when `expected` is given, to that one too); None otherwise.

        An entry is one file, `<header JSON>\n<archive bytes>`, replaced atomically, so the
        digest and the bytes it describes always change together.
        """
        raw = _read(self._entry_path(source, name, version))
        if raw is None:
            return None
        header, _, data = raw.partition(b"\n")
        try:
            recorded = str(json.loads(header)["sha256"])
        except (ValueError, KeyError, TypeError):
            recorded = ""
        if hashlib.sha256(data).hexdigest() != recorded:
            if report:
                log.warning(
                    "chart cache: the cached archive of %s %s from %s does not match its "
                    "digest; fetching it again",
                    name,
                    version,
                    safe_url(source),
                )
            return None
        if expected and expected != recorded:
            if report:
                log.info("chart cache: %s %s was re-published; fetching it again", name, version)
            return None
        return Archive(name, version, data)

    def cached(self, source: str, name: str, version: str) -> Archive | None:
        """An exact version already cached (spelled with or without `v`), verified."""
        bare = version.removeprefix("v")
        for candidate in dict.fromkeys((version, bare, "v" + bare)):
            found = self._verified(source, name, candidate)
            if found is not None:
                return found
        return None

    def archive(
        self,
        source: str,
        name: str,
        version: str,
        *,
        expected: str,
        download: Callable[[], bytes],
        deadline: Deadline,
        label: str,
    ) -> Archive:
        """The verified archive of `name` `version` from `source`: from the cache, or
        `download()`ed, checked against `expected` (the index's SHA-256, may be empty) and
        stored with its digest."""
        if version_problem(version) is not None:
            raise DependencyError(f"{label}: version {version!r} is not a semantic version")
        found = self._verified(source, name, version, expected)
        if found is not None:
            return found
        path = self._entry_path(source, name, version)
        with _locked(path.with_suffix(".lock"), deadline, f"{name}-{version}"):
            found = self._verified(source, name, version, expected, report=True)
            if found is not None:
                return found
            data = download()
            digest = hashlib.sha256(data).hexdigest()
            if expected and digest != expected:
                raise DependencyError(
                    f"{label}: the archive of version {version} does not match the digest "
                    "in index.yaml"
                )
            header = {"sha256": digest, "name": name, "version": version}
            header["source"] = safe_url(source)
            atomicfile.write(path, json.dumps(header).encode() + b"\n" + data)
        return Archive(name, version, data)

    # -- OCI range resolutions

    def oci_resolution(self, reference: str, constraint: str) -> str | None:
        """The exact version a range resolved to, while fresh."""
        path = self._dir("oci") / f"{entry_key('oci-range', reference, constraint)}.json"
        if not _fresh(path, self.ttl):
            return None
        try:
            version = str(json.loads(_read(path) or b"")["version"])
        except (ValueError, KeyError, TypeError):
            return None
        return version if version_problem(version) is None else None

    @contextlib.contextmanager
    def oci_lock(self, reference: str, constraint: str, deadline: Deadline) -> Iterator[None]:
        path = self._dir("oci") / f"{entry_key('oci-range', reference, constraint)}.lock"
        with _locked(path, deadline, reference):
            yield

    def record_oci_resolution(self, reference: str, constraint: str, version: str) -> None:
        path = self._dir("oci") / f"{entry_key('oci-range', reference, constraint)}.json"
        atomicfile.write(path, json.dumps({"version": version}).encode())
