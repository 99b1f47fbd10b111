"""Read the secrets a render will probably need while the renderer is still running.

`helm template` and `kustomize build` take tens of milliseconds to seconds, during which the
plugin only waits for them; the Vault login, the mount lookup and the reads used to start only
once they had finished. A `Prefetch` scans the files the renderer is about to read (the staged
copy: values files, templates, Kustomize resources) for inline `<path:P#K[#V]>` placeholders
and, in one background thread, logs in and reads those paths with the backend the engine will
use afterwards. The engine then asks its backend for what the *output* needs, as always:

- a path it needs that was prefetched successfully is answered from memory;
- a path it needs whose prefetch failed (missing, denied, deadline) is read again, so every
  error and message is exactly what a render without prefetch gives;
- a path it does not need was read for nothing, and nothing else happens: the reference
  index records only what the engine asked for (its recorder wraps the engine's factory,
  not the prefetch), and no error of that read can fail the render.

What stays as it was: the tenant policy and AVP_PATH_VALIDATION are checked before any path
is requested (`path_allowed`, the engine's own rule: a refused path is never sent), the
render deadline bounds the login and every read (the backend's own deadline), every value
fetched is registered with the run's redactor as soon as it arrives, and a failed render
abandons the thread (a daemon, bounded by the deadline) without waiting for it.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from plugin.errors import BackendError, DeadlineError
from plugin.placeholders import grammar
from plugin.placeholders.engine import BackendFactory, remember_values
from plugin.placeholders.substitute import Rules, path_allowed
from plugin.secrets.base import Backend, SecretData, SecretRef
from plugin.secrets.fetch import Results, fetch_all

log = logging.getLogger(__name__)

#: `false` turns the read-ahead off (a render then reads only after the renderer, as before).
PREFETCH_SETTING = "PLUGIN_PREFETCH"

#: At most this many distinct paths are read ahead. The source may name paths its output
#: never uses (a chart's per-environment branches, a Kustomize base with unused resources);
#: each costs a Vault request for nothing, so a source that names hundreds is not allowed to
#: turn every refresh into hundreds of wasted reads. 64 covers the ordinary application (a
#: handful of paths) many times over; the engine reads whatever was left out, as before.
MAX_PREFETCHED_PATHS = 64

#: The prefetch reads with one thread per this many paths (at most the backend's own
#: concurrency, `AVP_MAX_CONCURRENCY`). It reads while the renderer runs, so its reads are not
#: what the render waits for; what it costs is CPU taken from the renderer (helm uses both
#: cores of a small node) and from Vault. Each thread has its own connection (a TCP handshake,
#: a requests session) and switches the GIL with the others: five paths read by five threads
#: cost a quarter more CPU than by one thread on one keep-alive connection, for no earlier end
#: (five loopback reads take a few milliseconds, `helm template` takes tens of them).
PATHS_PER_PREFETCH_THREAD = 8

#: ...unless Vault is far: the first path is read alone (a connection, the mount lookup and the
#: read: three round trips or more), and when that took longer than this, the others are read
#: with the backend's full concurrency, as before, so that a Vault more than a few
#: milliseconds away is not read one path after another. (On a loaded two-core node the first
#: read from a loopback Vault takes 5-25 ms while helm runs; past the threshold the reads are
#: as parallel as before, plus the one round trip of reading the first path alone.)
SLOW_FIRST_READ_SECONDS = 0.025

#: Files whose first bytes hold a NUL are binary (packed charts, images): never scanned.
_BINARY_PROBE = 8192
_OPEN = b"<path:"


def scan_sources(
    roots: Sequence[Path],
    texts: Sequence[str],
    rules: Rules,
    *,
    max_bytes: int,
    max_files: int,
    limit: int = MAX_PREFETCHED_PATHS,
) -> list[SecretRef]:
    """The distinct readable refs named in `texts` and in the files beneath `roots`, in order.

    Bounded like the copy the renderer reads: at most `max_files` files and `max_bytes` bytes
    are looked at, a file larger than `max_bytes` is skipped, and so are binary files,
    symbolic links (the staged copy holds them as links; the renderer's own rules decide
    whether they are followed) and `.git`. Paths refused by the tenant policy or
    AVP_PATH_VALIDATION are left out here, so they are never requested.
    """
    found: dict[SecretRef, None] = {}
    refused: set[str] = set()

    def take(text: str) -> bool:
        for path, version in grammar.inline_references(text):
            ref = SecretRef(path, version)
            if ref in found or path in refused:
                continue
            if not path_allowed(rules, path):
                refused.add(path)
                continue
            found[ref] = None
            if len(found) >= limit:
                return False
        return True

    for text in texts:
        if not take(text):
            return list(found)
    budget = max_bytes
    files = 0
    for path in _files(roots):
        files += 1
        if files > max_files or budget <= 0:
            break
        data = _read_text(path, budget)
        if data is None:
            continue
        budget -= len(data)
        if _OPEN in data:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if not take(text):
                break
    return list(found)


def _files(roots: Sequence[Path]) -> Iterator[Path]:
    """Regular files beneath `roots` (each at most once), in a stable order."""
    seen: set[str] = set()
    for root in roots:
        if root.is_file() and not root.is_symlink():
            if str(root) not in seen:
                seen.add(str(root))
                yield root
            continue
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = sorted(name for name in subdirectories if name != ".git")
            for name in sorted(names):
                path = os.path.join(directory, name)
                if path in seen:
                    continue
                seen.add(path)
                yield Path(path)


def _read_text(path: Path, budget: int) -> bytes | None:
    """The bytes of a regular, non-binary file no larger than `budget`; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        if not _is_regular(status.st_mode) or status.st_size > budget:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            # The head first: a packed chart of dependencies is not read through.
            data = handle.read(min(_BINARY_PROBE, budget + 1))
            if b"\0" in data:
                return None
            data += handle.read(budget + 1 - len(data))
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > budget:
        return None
    return data


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


class Prefetch:
    """One render's read-ahead: started once before the renderer, consumed by the engine.

    Owns the backend session of the render (the engine's backend is a view of it, see
    `factory`) and closes it in `close`.
    """

    def __init__(
        self,
        make_backend: BackendFactory,
        rules: Rules,
        deadline: float,
        *,
        max_bytes: int,
        max_files: int,
    ) -> None:
        self._make = make_backend
        self.rules = rules
        self.deadline = deadline
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._abandoned = False
        #: What the background thread read (values and errors), complete once it ended.
        self.results: Results = {}

    def start(self, roots: Sequence[Path], texts: Sequence[str]) -> None:
        """Scan and read in a background thread; only the first call does anything."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(list(roots), list(texts)), name="prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, roots: list[Path], texts: list[str]) -> None:
        started = time.monotonic()
        try:
            refs = scan_sources(
                roots, texts, self.rules, max_bytes=self._max_bytes, max_files=self._max_files
            )
            if not refs:
                return
            backend = self._make()
            set_deadline = getattr(backend, "set_deadline", None)
            if callable(set_deadline):
                set_deadline(self.deadline)  # bounds the login too, not only the reads
            with self._lock:
                self._backend = backend
            backend.login()
            began = time.monotonic()
            results = fetch_all(backend, refs[:1], self.deadline, max_workers=1)
            remember_values(results, self.rules)
            rest = refs[1:]
            if rest:
                slow = time.monotonic() - began > SLOW_FIRST_READ_SECONDS
                workers = None if slow else prefetch_threads(len(rest))
                more = fetch_all(backend, rest, self.deadline, max_workers=workers)
                remember_values(more, self.rules)
                results.update(more)
            self.results = results
            failed = sum(isinstance(result, BackendError) for result in results.values())
            log.debug(
                "prefetched %d secret paths (%d failed) in %.3f s",
                len(refs),
                failed,
                time.monotonic() - started,
            )
        except Exception as exc:  # the engine does whatever it needs again, as today
            log.debug("prefetch stopped: %s", _reason(exc))
        finally:
            with self._lock:
                abandoned = self._abandoned
            if abandoned:
                self._close_backend()

    def wait(self) -> None:
        """Until the background thread ended; DeadlineError if it is still busy at the deadline.

        The thread's requests are bounded by the same deadline, so this waits at most as long
        as the render may last.
        """
        thread = self._thread
        if thread is None:
            return
        remaining = self.deadline - time.monotonic()
        thread.join(max(0.0, remaining) if remaining != float("inf") else None)
        if thread.is_alive():
            raise DeadlineError("the render deadline (PLUGIN_TIMEOUT) passed while reading secrets")

    def backend(self) -> Backend:
        """The render's backend, logged in: the prefetch's own, or a new one when it had none.

        Called after `wait`. Logging in again is free when the prefetch logged in (a backend
        logs in once) and repeats a failed login so that its error is today's.
        """
        with self._lock:
            backend = self._backend
            if backend is None:
                backend = self._make()
                set_deadline = getattr(backend, "set_deadline", None)
                if callable(set_deadline):
                    set_deadline(self.deadline)
                self._backend = backend
        backend.login()
        return backend

    def factory(self) -> BackendFactory:
        """Backends for the engine (and a two-phase retry): views of this one session."""
        return lambda: _PrefetchedBackend(self)

    def close(self) -> None:
        """Release the session; a thread still running closes it itself when it ends."""
        thread = self._thread
        with self._lock:
            if thread is not None and thread.is_alive():
                self._abandoned = True
                return
        self._close_backend()

    def _close_backend(self) -> None:
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()


def prefetch_threads(paths: int) -> int:
    """How many threads read `paths` ahead: one per `PATHS_PER_PREFETCH_THREAD`, at least one."""
    return max(1, -(-paths // PATHS_PER_PREFETCH_THREAD))


def _reason(exc: BaseException) -> str:
    """A backend's own message (never a value, by the `Backend` contract), else the type."""
    if isinstance(exc, BackendError | DeadlineError):
        return str(exc)
    return type(exc).__name__


class _PrefetchedBackend:
    """The `Backend` the engine sees: prefetched data first, then the real session."""

    def __init__(self, prefetch: Prefetch) -> None:
        self._prefetch = prefetch
        self._inner: Backend | None = None
        self.max_workers = 1

    def set_deadline(self, deadline_monotonic: float) -> None:
        """The session already has the render's deadline (the prefetch set it)."""
        del deadline_monotonic

    def login(self) -> None:
        self._prefetch.wait()
        self._inner = self._prefetch.backend()
        self.max_workers = int(self._inner.max_workers)

    def read(self, ref: SecretRef) -> SecretData:
        known = self._prefetch.results.get(ref)
        if known is not None and not isinstance(known, BackendError):
            return known
        if self._inner is None:
            self.login()
        assert self._inner is not None
        return self._inner.read(ref)

    def prefetched(self, ref: SecretRef) -> bool:
        """Whether `read(ref)` answers from memory (no request, no wait) data that the run's
        redactor learnt when it arrived (`fetch_all` reads it without a thread, the engine
        does not register it again)."""
        known = self._prefetch.results.get(ref)
        return known is not None and not isinstance(known, BackendError)

    def close(self) -> None:
        """The session is closed by the `Prefetch` that owns it, once."""

    def __getattr__(self, name: str) -> Any:
        # describe_access (`plugin check`) and any other optional backend capability.
        if self._inner is None:
            self.login()
        return getattr(self._inner, name)
