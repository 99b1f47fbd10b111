"""The reference index: which secret references each Application resolved at its last render.

Why: Argo CD caches generated manifests per Git revision, so a secret rotated in Vault reaches
nothing until the Application is re-rendered. To know which Application to re-render (and to
answer "who uses kv/data/harbor?" before a rotation) the plugin records, after each successful
`plugin generate`, what the render read.

Layout, under the plugin cache directory (`PLUGIN_CACHE_DIR`, else
`$XDG_CACHE_HOME/argocd-secrets-plugin`, else `$HOME/.cache/argocd-secrets-plugin`, the same
choice as the chart cache):

    rotation/               0700
      fingerprint.key       0600, 32 random bytes, created once per cache volume
      apps/                 0700
        <sha256>.json       0600, one Application (name = digest of [namespace, name])

Guarantees:
- No value ever enters the index. What identifies the content of a read is a keyed
  fingerprint (HMAC-SHA256 with the volume's random key over the canonical JSON of the whole
  secret at the path): without the key file nobody can test a guess against it, and the key
  never leaves the volume.
- The file name is a digest, never the tenant-chosen application name, so a hostile name
  cannot traverse, collide with the key file or exceed name limits.
- Every write is atomic (private temporary file, rename; no fsync, see write_record): a
  reader (or a SIGKILL) never sees a half-written record. Files are 0600 and directories
  0700 whatever the umask.
- Recording is best effort: the CLI calls it only after the manifests were printed, and a
  failure never fails the render.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from plugin import atomicfile
from plugin.config import ARGOCD_ENV_PREFIX, Settings
from plugin.errors import MissingPathError
from plugin.render.chart_cache import cache_root
from plugin.secrets.base import Backend, SecretData, SecretRef
from plugin.secrets.base import read_version as version_of_read
from plugin.security.policy import Decision

#: Version of the record format. 2 added `Reference.read_version`; readers accept every
#: format from 1 to this one (fields they do not know are ignored, missing ones default) and
#: skip any other, so a newer record never breaks an older reader's listing.
FORMAT = 2
READABLE_FORMATS = frozenset({1, 2})
INDEX_DIR = "rotation"
APPS_DIR = "apps"
KEY_FILE = "fingerprint.key"
KEY_BYTES = 32
FINGERPRINT_PREFIX = "hmac-sha256:"
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC

#: Non-secret settings that describe who a render logged in as (never tokens or secret ids).
IDENTITY_SETTINGS = (
    "AVP_AUTH_TYPE",
    "AVP_K8S_ROLE",
    "AVP_K8S_MOUNT_PATH",
    "AVP_CERT_ROLE",
    "AVP_JWT_ROLE",
    "AVP_MOUNT_PATH",
    "VAULT_NAMESPACE",
)

#: Settings that are (or point at, or choose) a credential. When the Application itself set
#: one (`ARGOCD_ENV_<NAME>`, the policy not overriding it), the render logged in as an identity
#: nobody else can rebuild: the record says so (`identity["application_credentials"]`, names
#: only) and the watcher refuses to poll it rather than use another identity.
CREDENTIAL_SETTINGS = (
    "VAULT_TOKEN",
    "AVP_ROLE_ID",
    "AVP_SECRET_ID",
    "AVP_USERNAME",
    "AVP_PASSWORD",
    "AVP_GITHUB_TOKEN",
    "AVP_K8S_TOKEN_PATH",
    "AVP_JWT_TOKEN_PATH",
    "VAULT_CLIENT_CERT",
    "VAULT_CLIENT_KEY",
    "AVP_SECRET",
)
APPLICATION_CREDENTIALS = "application_credentials"


class UnsafeIndexError(OSError):
    """The index directory or one of its files is unsafe to use (symlink, owner, type)."""


# ------------------------------------------------------------------ locations


def index_root(environ: Mapping[str, str]) -> Path | None:
    """`<cache dir>/rotation`, or None when the sidecar configures no cache directory."""
    root = cache_root(environ)
    return root / INDEX_DIR if root is not None else None


def private_directory(path: Path) -> None:
    """Create `path` and missing parents 0700 (whatever the umask); refuse foreign ones."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        _own_directory(directory)
    _own_directory(path)


def _own_directory(path: Path) -> None:
    """`path` must be a real directory of this user; it is made 0700."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeIndexError(f"{path} is not a directory (or is a symbolic link)")
    if info.st_uid != os.geteuid():
        raise UnsafeIndexError(f"{path} belongs to another user (uid {info.st_uid})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def app_file_name(namespace: str, name: str) -> str:
    """The record's file name: a digest of the Application's identity, never its raw text."""
    identity = json.dumps([namespace, name], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest() + ".json"


# ------------------------------------------------------------------ the volume key


def volume_key(root: Path) -> bytes:
    """The index's fingerprint key: read it, or create it once for the whole volume.

    Creation is atomic: the random bytes go to a private temporary file (mkstemp uses
    O_EXCL) which is then hard-linked to its final name; `link` fails when another process
    won the race, and that process's key is used. A reader never sees a partial key.
    """
    private_directory(root)
    path = root / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    atomicfile.write(path, os.urandom(KEY_BYTES), mode=0o600, replace=False)
    key = _read_key(path)
    if key is None:
        raise UnsafeIndexError(f"{path} could not be created")
    return key


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeIndexError(f"{path} cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise UnsafeIndexError(f"{path} is not a regular file of this user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise UnsafeIndexError(f"{path} is readable by other users (mode {info.st_mode:o})")
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise UnsafeIndexError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


def fingerprint(key: bytes, data: SecretData) -> str:
    """Keyed fingerprint of a whole secret: HMAC-SHA256 over its canonical JSON."""
    text = json.dumps(
        dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return FINGERPRINT_PREFIX + hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ records


def _fields_of(instance: Any) -> dict[str, Any]:
    """A dataclass's fields as a shallow dict (their values are strings, numbers or None)."""
    return {item.name: getattr(instance, item.name) for item in fields(instance)}


@dataclass(frozen=True)
class Reference:
    """One secret reference an Application resolved (never its value)."""

    backend: str
    path: str
    #: Vault/OpenBao address, "" for the file backend.
    address: str = ""
    #: The pinned `#version` of the placeholder, None when it follows the latest version.
    version: str | None = None
    #: "1" or "2" for Vault KV (annotation, else AVP_KV_VERSION, else 2); None when unknown.
    kv_version: str | None = None
    #: "read", or "missing" (nothing stored at the path; a `default` modifier applied).
    status: str = "read"
    #: Keyed fingerprint of what was read (see `fingerprint`); "" when missing.
    fingerprint: str = ""
    #: The version actually read: KV v2 `data.metadata.version` of the read response (the
    #: pinned version when pinned), or the version of a versioned file-backend secret. None
    #: for KV v1, unversioned secrets, missing paths and records of format 1.
    read_version: str | None = None


@dataclass(frozen=True)
class Record:
    """An Application's last successful render."""

    name: str
    namespace: str
    project: str
    #: Who the render logged in as: non-secret settings only (auth type, role, mount...).
    identity: Mapping[str, str]
    references: tuple[Reference, ...]
    rendered_at: str = ""
    format: int = FORMAT

    def to_json(self) -> str:
        # Field by field, not `asdict`: that deep-copies every value through its recursive
        # walk (twice for the references), on the path of every render before it exits.
        body = _fields_of(self)
        body["identity"] = dict(self.identity)
        body["references"] = [_fields_of(reference) for reference in self.references]
        return json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record | None:
        """A record, or None when the text is not one of this format (skipped by readers)."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("format") not in READABLE_FORMATS:
                return None
            references = tuple(_reference(item) for item in body["references"])
            identity = {str(k): str(v) for k, v in dict(body["identity"]).items()}
            return cls(
                name=str(body["name"]),
                namespace=str(body["namespace"]),
                project=str(body["project"]),
                identity=identity,
                references=references,
                rendered_at=str(body.get("rendered_at", "")),
                format=int(body["format"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


_REFERENCE_FIELDS = frozenset(field.name for field in fields(Reference))


def _reference(item: Any) -> Reference:
    """A reference from its JSON, ignoring fields this version does not know."""
    if not isinstance(item, dict):
        raise TypeError("a reference must be an object")
    known = {key: value for key, value in item.items() if key in _REFERENCE_FIELDS}
    for key, value in known.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"reference field {key} must be text")
    return Reference(**known)


def write_record(root: Path, record: Record) -> Path:
    """Store `record` atomically as `apps/<digest>.json` (0600 in 0700 directories)."""
    private_directory(root)
    apps = root / APPS_DIR
    private_directory(apps)
    path = apps / app_file_name(record.namespace, record.name)
    # No fsync: it cost 5-130 ms of every render on a shared disk. The rename alone keeps
    # the record whole for readers and across a SIGKILL (the page cache outlives the
    # process); only a machine crash can leave an empty or torn file, which readers skip
    # (`Record.from_json` -> None) until the Application's next render rewrites it.
    atomicfile.write(path, record.to_json().encode("utf-8"), mode=0o600, sync=False)
    return path


def read_records(root: Path) -> list[Record]:
    """Every record of the index (regular files of this user only), sorted by application."""
    apps = root / APPS_DIR
    try:
        names = sorted(os.listdir(apps))
    except FileNotFoundError:
        return []
    records: list[Record] = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            fd = os.open(apps / name, os.O_RDONLY | _OPEN_FLAGS)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                continue
            text = handle.read(16 * 1024 * 1024).decode("utf-8", errors="replace")
        record = Record.from_json(text)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: (r.namespace, r.name))


# ------------------------------------------------------------------ recording a render


class Recorder:
    """Remembers every read the render's backend answered, to describe it after success.

    `wrap` returns a backend factory whose backends delegate everything to the real one;
    only `read` is observed. The data objects are kept by reference (the fetch results hold
    them anyway) and turned into fingerprints only when the record is written.
    """

    def __init__(self) -> None:
        self.reads: dict[SecretRef, SecretData | None] = {}

    def wrap(self, make: Callable[[], Backend]) -> Callable[[], Backend]:
        return lambda: _RecordingBackend(make(), self)


class _RecordingBackend:
    def __init__(self, inner: Backend, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self.max_workers = int(inner.max_workers)

    def login(self) -> None:
        self._inner.login()
        # A view of a shared session (the prefetch's) knows its concurrency after login only.
        self.max_workers = int(self._inner.max_workers)

    def close(self) -> None:
        self._inner.close()

    def read(self, ref: SecretRef) -> SecretData:
        try:
            data = self._inner.read(ref)
        except MissingPathError:
            self._recorder.reads[ref] = None
            raise
        self._recorder.reads[ref] = data
        return data

    def __getattr__(self, name: str) -> Any:
        # set_deadline, describe_access and any other optional backend capability.
        return getattr(self._inner, name)


def identity_of(settings: Settings, decision: Decision | None) -> dict[str, str]:
    """A non-secret description of the identity a render used."""
    identity: dict[str, str] = {}
    if decision is not None:
        identity["policy"] = decision.overrides_origin
    for name in IDENTITY_SETTINGS:
        value = settings.get(name)
        if value:
            identity[name] = value.strip()
    supplied = [
        name
        for name in CREDENTIAL_SETTINGS
        if settings.environ.get(ARGOCD_ENV_PREFIX + name, "") != ""
        and settings.overrides.get(name, "") == ""
    ]
    if supplied:
        identity[APPLICATION_CREDENTIALS] = ",".join(supplied)
    return identity


def build_record(
    recorder: Recorder,
    environ: Mapping[str, str],
    settings: Settings,
    decision: Decision | None,
    key: bytes,
) -> Record | None:
    """The record of this render, or None when no Application is named (a local run)."""
    name = environ.get("ARGOCD_APP_NAME", "").strip()
    if not name:
        return None
    backend = (settings.get("AVP_TYPE") or "").strip()
    address = ""
    if backend == "vault":
        address = (settings.get("VAULT_AGENT_ADDR") or settings.get("VAULT_ADDR") or "").strip()
    default_kv = (settings.get("AVP_KV_VERSION") or "2").strip() if backend == "vault" else None
    references: list[Reference] = []
    # A key, not SecretRef's ordering: a path read both pinned and unpinned has a None version.
    reads = sorted(
        recorder.reads.items(),
        key=lambda item: (item[0].path, item[0].version or "", item[0].kv_version or ""),
    )
    for ref, data in reads:
        references.append(
            Reference(
                backend=backend,
                path=ref.path,
                address=address,
                version=ref.version,
                kv_version=(ref.kv_version or "").strip() or default_kv,
                status="missing" if data is None else "read",
                fingerprint="" if data is None else fingerprint(key, data),
                read_version=None if data is None else version_of_read(data),
            )
        )
    return Record(
        name=name,
        namespace=environ.get("ARGOCD_APP_NAMESPACE", "").strip(),
        project=environ.get("ARGOCD_APP_PROJECT_NAME", "").strip(),
        identity=identity_of(settings, decision),
        references=tuple(references),
        rendered_at=datetime.datetime.fromtimestamp(time.time(), datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    )


def record_render(
    recorder: Recorder,
    environ: Mapping[str, str],
    settings: Settings,
    decision: Decision | None,
) -> Path | None:
    """Write this render's record; the path written, or None when there is nothing to do.

    Raises OSError (including `UnsafeIndexError`) when the index cannot be used; the caller logs
    it and carries on (the manifests are already out).
    """
    root = index_root(environ)
    if root is None or not environ.get("ARGOCD_APP_NAME", "").strip():
        return None
    record = build_record(recorder, environ, settings, decision, volume_key(root))
    return write_record(root, record) if record is not None else None


@dataclass(frozen=True)
class Usage:
    """One row of `plugin refs`: an application that uses a path."""

    path: str
    namespace: str
    application: str
    project: str
    backend: str
    address: str
    version: str | None
    kv_version: str | None
    rendered_at: str
    #: The version the render read (KV v2), None when unknown or unversioned.
    read_version: str | None = None


def usages(records: list[Record], matches: Callable[[str], bool]) -> Iterator[Usage]:
    """Every (path, application) pair whose path `matches`, sorted by path then application."""
    rows = [
        Usage(
            path=reference.path,
            namespace=record.namespace,
            application=record.name,
            project=record.project,
            backend=reference.backend,
            address=reference.address,
            version=reference.version,
            kv_version=reference.kv_version,
            rendered_at=record.rendered_at,
            read_version=reference.read_version,
        )
        for record in records
        for reference in record.references
        if matches(reference.path)
    ]
    yield from sorted(rows, key=lambda u: (u.path, u.namespace, u.application, u.version or ""))
