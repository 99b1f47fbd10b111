"""The private scratch directory of one render, and the sweep of those left by killed renders.

When Argo CD's deadline fires first, the cmp-server SIGKILLs the plugin: no `finally` runs and
`$TMPDIR/plugin-render-*` stays behind (the work copy of a chart, a Helm home). Secrets never
are in it (resolved values reach Helm through memfds, see `plugin.render.pipeline`), but the
directories pile up. So:

- each render holds an exclusive `flock` on its scratch directory for its whole life (the
  lock dies with the process, also on SIGKILL). The directory is created under a temporary
  name (`.plugin-new-*`), locked, and only then renamed to `plugin-render-*` (a rename that
  fails when the name is taken: `renameat2(RENAME_NOREPLACE)`, or where the kernel or file
  system lacks it, an empty directory made first to reserve the name and renamed over —
  two more directory operations, each a tenth of a millisecond or more on a journalled
  disk): a `plugin-render-*` directory is locked from the moment it has that name;
- at the next start, `sweep()` removes every `plugin-render-*` directory of the same user
  whose lock is free, and `.plugin-new-*` directories older than a minute (a process killed
  between the two steps). A directory of a live render is never touched: its lock is held.

The render's own removal may run in the background (`scratch_directory(background=True)`):
the directory is no longer read once the renderer has exited, and removing a chart's copy
(1-6 ms of unlink and rmdir on a shared disk) then overlaps with the secrets engine instead of
delaying it. The lock is held until the directory is gone, so no sweep races the removal.
`wait_for_removals()` waits for them before any fork of the process (`os.register_at_fork`:
a renderer started with a `preexec_fn`, the Jinja2 stage's child, a second render's; no
thread may run while the process forks a child that runs Python, see `plugin.render.process`)
and at exit (`atexit`, which the zygote's worker also runs before it exits); a process killed
first leaves a directory the next sweep removes. A renderer a zygote worker starts through
vfork runs no hook and need not: its child runs no Python before exec, so no lock the removal
holds can stay locked in it, and the removal's descriptor is close-on-exec.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plugin.libc import libc

log = logging.getLogger(__name__)

PREFIX = "plugin-render-"
NEW_PREFIX = ".plugin-new-"
#: A `.plugin-new-*` directory younger than this may still be renamed by a live render.
NEW_MAX_AGE_SECONDS = 60.0


#: Background removals not yet waited for (`wait_for_removals`).
_removals: list[threading.Thread] = []
_removals_lock = threading.Lock()


@contextlib.contextmanager
def scratch_directory(base: str | None = None, *, background: bool = False) -> Iterator[Path]:
    """A fresh 0700 directory, locked while the render runs and removed afterwards.

    With `background`, the removal runs in a thread that holds the lock until the directory
    is gone (see the module docstring); the caller must not use the directory any more.
    """
    fresh = Path(tempfile.mkdtemp(prefix=NEW_PREFIX, dir=base))
    handle = os.open(fresh, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = fresh
    handed_over = False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        path = fresh.with_name(PREFIX + secrets.token_hex(8))
        _rename_new(fresh, path)
        try:
            yield path
        finally:
            if background:
                _remove_in_background(path, handle)
                handed_over = True
            else:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if not handed_over:
            os.close(handle)
        if path != fresh:
            shutil.rmtree(fresh, ignore_errors=True)


#: `renameat2` of the C library (glibc >= 2.28), or None.
_renameat2: Any = getattr(libc(), "renameat2", None)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
#: What `renameat2` answers when the kernel or the file system cannot do RENAME_NOREPLACE.
_NO_NOREPLACE = frozenset({errno.ENOSYS, errno.EINVAL, errno.ENOTSUP})


def _rename_new(source: Path, target: Path) -> None:
    """Rename `source` to `target`; FileExistsError (nothing replaced) when `target` exists."""
    if _renameat2 is not None:
        done = _renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if done == 0:
            return
        error = ctypes.get_errno()
        if error not in _NO_NOREPLACE:
            raise OSError(error, os.strerror(error), str(target))
    os.mkdir(target, 0o700)  # reserve the name (fails if taken), then move onto it
    os.rename(source, target)


def _remove_in_background(path: Path, handle: int) -> None:
    def remove() -> None:
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(handle)  # the lock goes with the directory

    thread = threading.Thread(target=remove, name="scratch-removal")
    with _removals_lock:
        _removals.append(thread)
    thread.start()


def wait_for_removals() -> None:
    """Until every background removal started so far has finished."""
    with _removals_lock:
        pending = list(_removals)
        _removals.clear()
    for thread in pending:
        thread.join()


atexit.register(wait_for_removals)
# Every fork, wherever it is made (subprocess runs the hooks when it has a `preexec_fn`, as a
# renderer start outside a zygote worker does): one mechanism instead of a call before each
# fork site. A vfork (a worker's renderer start) runs none, see the module docstring.
os.register_at_fork(before=wait_for_removals)


def sweep(base: str | None = None, now: float | None = None) -> list[str]:
    """Remove the scratch directories of dead renders; returns their names (for logs/tests)."""
    root = base or tempfile.gettempdir()
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        names = [name for name in os.listdir(root) if name.startswith((PREFIX, NEW_PREFIX))]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        try:
            handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # not a directory, a symlink, or gone
        try:
            info = os.fstat(handle)
            young = now - info.st_mtime < NEW_MAX_AGE_SECONDS
            if (
                not stat.S_ISDIR(info.st_mode)
                or info.st_uid != os.geteuid()
                or (name.startswith(NEW_PREFIX) and young)
            ):
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live render holds it
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
        finally:
            os.close(handle)
    if removed:
        log.debug("removed %d scratch directories left by killed renders", len(removed))
    return removed
