"""The C library, for the few system calls the standard library lacks: one handle per process.

Several stages need them: the renderer sandbox (Landlock, `prctl`), the renderer runner (a
child subreaper), the scratch directories (`renameat2`), the zygote (inotify, process names,
`madvise`). They share this handle instead of each loading the library. `CDLL(None)` is the
program's own namespace, which holds the C library the interpreter is linked with; unlike
`ctypes.util.find_library("c")` it does not run `ldconfig -p` in a child process to find it.
Beside `errors` and `atomicfile`, it imports nothing of the plugin.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

#: prctl(2) options (linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


@functools.cache
def libc() -> Any:
    """The C library through ctypes (errno kept for `ctypes.get_errno`), loaded once."""
    return ctypes.CDLL(None, use_errno=True)
