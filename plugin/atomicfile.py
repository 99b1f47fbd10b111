"""Writing a file whole or not at all: the one atomic writer of the plugin's caches and launcher.

Why one place: the chart cache, the token cache, the reference index and the image's launcher
all replace files that other processes read at any moment (concurrent renders, the zygote, a
reader of the index), and a SIGKILL can stop a writer anywhere. Each used to repeat the same
sequence; a difference between the copies (a forgotten unlink, a temporary file in another
directory, so `rename` crosses file systems) would be a bug in only one of them.

The sequence: a temporary file in the target's own directory, created by `tempfile.mkstemp`
(O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, so nothing planted under its name is followed or
reused), the bytes, optionally a `chmod` to the final mode and an `fsync`, then one `rename`
onto the target. A reader sees the old file or the new one, never a part. On any failure the
temporary file is removed and the error goes to the caller, which decides whether it matters.
What differs between callers is explicit: the final mode, whether the bytes are synced (the
index's records are not, see rotation/index.py), and whether an existing target is replaced
or kept (the index's volume key is created once: `link` fails where `rename` would replace).
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = None,
    sync: bool = True,
    replace: bool = True,
) -> bool:
    """Put `data` at `path` atomically; True when written, False when `replace=False` kept one.

    `mode`: the file's final permissions, whatever the umask (None: mkstemp's 0600 less the
    umask). `sync`: fsync the bytes before the rename, so a machine crash cannot leave an empty
    file under the name. `replace=False`: never overwrite; when `path` already exists (another
    process won the race) nothing is changed and False is returned.
    """
    target = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if sync:
                os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, target)
            return True
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return True
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
