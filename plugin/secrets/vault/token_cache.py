"""On-disk Vault token cache: one private entry per identity, shared safely between processes.

Fixes AVP's cache problems (issues #658, #675, #490):

- **One entry per identity.** The file name is the SHA-256 of the Vault address, namespace,
  auth method, mount and role/user (`cache_key`), never of a secret, so two roles, two
  namespaces or two Vault servers never share a token.
- **Private files.** The directory is created 0700 (tightened if it is ours and looser), entries
  are written 0600, symlinks are not followed and files owned by another user are ignored.
- **Atomic writes.** A temporary file in the same directory, fsync, then `os.replace`
  (`plugin/atomicfile.py`).
- **One login for N concurrent renders.** `obtain` holds an exclusive `flock` on a per-identity
  `.lock` file across "check the cache -> log in -> write the entry", so 50 processes starting at
  once log in once; the others wait and then read the fresh entry.
- **Expiry.** Entries record `expires_at` (wall clock, from the login's `lease_duration`; lease 0,
  e.g. a root token, means no expiry). An entry is reused only while more than
  `min(60 s, max(1 s, 10% of the lease))` is left, so no `lookup-self` round trip is needed.
- **Robust.** A corrupt, truncated or foreign entry is ignored and overwritten. When no cache
  directory can be used (HOME unset, read-only file system, a file in the way) the cache is
  disabled with an info-level log note and every run logs in, as without a cache.

Default directory: `$AVP_TOKEN_CACHE_DIR`, else
`$XDG_CACHE_HOME/argocd-secrets-plugin/vault-tokens`, else
`$HOME/.cache/argocd-secrets-plugin/vault-tokens`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin import atomicfile
from plugin.config import Settings
from plugin.secrets.vault.auth.base import LoginResult

log = logging.getLogger(__name__)

APP_DIR = "argocd-secrets-plugin"
CACHE_DIR_NAME = "vault-tokens"
FORMAT_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024
DEFAULT_LOCK_TIMEOUT = 30.0


def cache_key(parts: Sequence[str]) -> str:
    """Hex SHA-256 over the identity parts (address, namespace, method, mount, role/user)."""
    return hashlib.sha256(json.dumps(list(parts), separators=(",", ":")).encode()).hexdigest()


def expiry_margin(lease_duration: int) -> float:
    """Seconds before expiry at which a cached token stops being reused."""
    return min(60.0, max(1.0, lease_duration * 0.1))


def default_cache_dir(settings: Settings) -> tuple[Path | None, str]:
    """The cache directory and how it was chosen; (None, reason) when there is none."""
    override = settings.lookup("AVP_TOKEN_CACHE_DIR")
    if override is not None:
        return Path(override.value).expanduser(), f"AVP_TOKEN_CACHE_DIR from {override.origin}"
    xdg = settings.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR / CACHE_DIR_NAME, "XDG_CACHE_HOME"
    home = settings.environ.get("HOME", "").strip()
    if not home or home == "/":
        return None, "HOME is not set"
    return Path(home) / ".cache" / APP_DIR / CACHE_DIR_NAME, "HOME"


@dataclass(frozen=True)
class CachedLogin:
    """A token to use, when it expires (wall clock) and whether it came from the cache."""

    result: LoginResult
    expires_at: float | None
    from_cache: bool


def _expires_at(result: LoginResult, obtained_at: float) -> float | None:
    return obtained_at + result.lease_duration if result.lease_duration > 0 else None


def fresh_login(login: Callable[[], LoginResult]) -> CachedLogin:
    """Log in without any cache."""
    obtained_at = time.time()
    result = login()
    return CachedLogin(result, _expires_at(result, obtained_at), from_cache=False)


class TokenCache:
    """A directory of token entries; build it with `TokenCache.open`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def open(cls, directory: Path) -> TokenCache | None:
        """Create/check the directory; None (logged) when it cannot hold private entries."""
        try:
            _make_private_dirs(directory)
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            if info.st_uid != os.geteuid():
                log.info(
                    "token cache disabled: %s belongs to another user (uid %d)",
                    directory,
                    info.st_uid,
                )
                return None
            if stat.S_IMODE(info.st_mode) & 0o077:
                os.chmod(directory, 0o700)
            handle, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            log.info(
                "token cache disabled: cannot use %s (%s); logging in on every run",
                directory,
                exc.strerror or type(exc).__name__,
            )
            return None
        return cls(directory)

    def entry_path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def obtain(
        self,
        key: str,
        identity: str,
        login: Callable[[], LoginResult],
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        reject_token: str | None = None,
    ) -> CachedLogin:
        """A valid cached token for `key`, or a fresh login written to the cache.

        The per-identity lock is held from the cache check until the new entry is written.
        `reject_token` is a token known to be invalid (revoked mid-run): an entry still holding
        it is not reused, but an entry another process refreshed meanwhile is.
        """
        with self._locked(key, lock_timeout) as locked:
            if locked:
                cached = self._read(key)
                if cached is not None and cached.result.token != reject_token:
                    log.info("using the cached Vault token of %s", identity)
                    return cached
            obtained_at = time.time()
            result = login()
            expires_at = _expires_at(result, obtained_at)
            if locked:
                self._write(key, identity, result, obtained_at, expires_at)
            return CachedLogin(result, expires_at, from_cache=False)

    @contextlib.contextmanager
    def _locked(self, key: str, timeout: float) -> Iterator[bool]:
        """Hold the identity's lock; yields False (cache bypassed) if it cannot be taken."""
        path = self.directory / f"{key}.lock"
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.info(
                "token cache bypassed: cannot open lock file %s (%s)",
                path,
                exc.strerror or type(exc).__name__,
            )
            yield False
            return
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            pause = 0.005
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        log.info(
                            "token cache bypassed: lock %s still held after %.1fs", path, timeout
                        )
                        yield False
                        return
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)

    def _read(self, key: str) -> CachedLogin | None:
        path = self.entry_path(key)
        try:
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.info("ignoring token cache entry %s: %s", path, exc.strerror or type(exc).__name__)
            return None
        try:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                log.info("ignoring token cache entry %s: not a regular file of ours", path)
                return None
            with os.fdopen(os.dup(handle), "rb") as stream:
                raw = stream.read(MAX_ENTRY_BYTES + 1)
        except OSError as exc:
            log.info("ignoring token cache entry %s: %s", path, exc.strerror or type(exc).__name__)
            return None
        finally:
            os.close(handle)
        entry = _parse_entry(raw, key)
        if entry is None:
            log.info("ignoring corrupt token cache entry %s; it will be replaced", path)
            return None
        if entry.expires_at is not None:
            left = entry.expires_at - time.time()
            if left < expiry_margin(entry.result.lease_duration):
                log.info("cached Vault token in %s expires in %.0fs; logging in again", path, left)
                return None
        return entry

    def _write(
        self,
        key: str,
        identity: str,
        result: LoginResult,
        obtained_at: float,
        expires_at: float | None,
    ) -> None:
        document = {
            "format": FORMAT_VERSION,
            "key": key,
            "identity": identity,
            "token": result.token,
            "lease_duration": result.lease_duration,
            "renewable": result.renewable,
            "obtained_at": obtained_at,
            "expires_at": expires_at,
        }
        data = json.dumps(document, indent=1).encode()
        try:
            atomicfile.write(self.entry_path(key), data)
        except OSError as exc:
            log.info(
                "could not write the token cache entry for %s: %s",
                identity,
                exc.strerror or type(exc).__name__,
            )


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents with mode 0700, whatever the umask.

    (`Path.mkdir(parents=True)` creates parents with 0777 & ~umask: with umask 000 anyone
    could list them or swap the cache directory.) Each directory created here must then be a
    real directory of the plugin's user; the parent of the cache directory must not be
    writable by other users unless it is sticky (like /tmp), or they could replace the cache.
    """
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise PermissionError(errno.EPERM, f"{path} is not a directory of this user")
        os.chmod(path, 0o700)
    parent = os.stat(directory.parent)
    if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        raise PermissionError(errno.EPERM, f"{directory.parent} is writable by other users")


def _parse_entry(raw: bytes, key: str) -> CachedLogin | None:
    if len(raw) > MAX_ENTRY_BYTES:
        return None
    try:
        document: Any = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    token = document.get("token")
    lease = document.get("lease_duration")
    renewable = document.get("renewable", False)
    expires_at = document.get("expires_at")
    if (
        document.get("format") != FORMAT_VERSION
        or document.get("key") != key
        or not isinstance(token, str)
        or not token
        or not isinstance(lease, int)
        or isinstance(lease, bool)
        or lease < 0
        or not isinstance(renewable, bool)
    ):
        return None
    if expires_at is not None and (
        not isinstance(expires_at, int | float)
        or isinstance(expires_at, bool)
        or not math.isfinite(expires_at)
    ):
        return None
    if lease > 0 and expires_at is None:
        return None
    return CachedLogin(
        LoginResult(token=token, lease_duration=lease, renewable=renewable),
        float(expires_at) if expires_at is not None else None,
        from_cache=True,
    )
