"""Running an in-process stage (the Jinja2 templating) in a forked child with budgets.

Jinja2 runs tenant code inside the plugin's own interpreter. Its sandbox refuses unsafe
attributes but cannot bound work: nested loops ran 40 s with `PLUGIN_TIMEOUT=5`, doubling a
string reached 3.1 GB in 5 s, and Python's `re` has no timeout. Checking the clock between
stages cannot stop that, so the stage runs in a child forked from the plugin (after every
import, so it starts in microseconds) that

- dies with the plugin (`PR_SET_PDEATHSIG`) and is killed by the parent at the render
  deadline, whatever it is doing (a catastrophic regular expression included);
- has an address-space limit (`RLIMIT_AS`, `PLUGIN_MAX_TEMPLATE_MEMORY`): an allocation past
  it raises `MemoryError` in the child, never in the plugin;
- may write no file larger than a bound (`RLIMIT_FSIZE`);
- sends back a small JSON report (never pickle: the parent must not execute what a child
  that ran tenant code sends) or a clean error message, over a pipe read with a size cap.

`child_setup`, run in the child before the stage, is where further confinement (Landlock)
is applied.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import sys
from collections.abc import Callable
from typing import Any

from plugin.errors import ConfigError, InputError, PluginError, RenderError
from plugin.manifests.inputs import format_size
from plugin.render.process import Deadline

MAX_TEMPLATE_MEMORY_SETTING = "PLUGIN_MAX_TEMPLATE_MEMORY"
DEFAULT_MAX_TEMPLATE_MEMORY = 1024 * 1024 * 1024
#: The most bytes of report a child may send back.
_MAX_REPORT = 4 * 1024 * 1024
#: Exit status of a child that could not report (its message is lost, the status tells why).
_NO_REPORT = 70
_MEMORY_REPORT = b'{"error": "memory"}'
#: Errors a child may report, re-raised with their class in the parent.
_KINDS: dict[str, type[PluginError]] = {
    "ConfigError": ConfigError,
    "InputError": InputError,
    "RenderError": RenderError,
}


class StageBudgetError(RenderError):
    """An isolated stage used more memory than its budget, or ended abnormally."""


def run_isolated(
    stage: str,
    work: Callable[[], Any],
    *,
    deadline: Deadline,
    memory: int,
    max_file_size: int | None = None,
    child_setup: Callable[[], None] | None = None,
) -> Any:
    """Run `work()` in a forked child; return its JSON-serialisable result.

    Raises the child's `PluginError` message as a RenderError, `StageBudgetError` naming
    `PLUGIN_MAX_TEMPLATE_MEMORY` when the child ran out of memory, and the deadline's
    StageTimeoutError (naming `PLUGIN_TIMEOUT`) when it ran out of time.
    """
    deadline.check(stage)
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, measured through the parent
        os.close(read_fd)
        _child(write_fd, work, memory, max_file_size, child_setup)
    os.close(write_fd)
    try:
        report = _read_report(read_fd, pid, stage, deadline)
    finally:
        os.close(read_fd)
    return _outcome(report, _reap(pid), stage, memory)


def _child(
    write_fd: int,
    work: Callable[[], Any],
    memory: int,
    max_file_size: int | None,
    child_setup: Callable[[], None] | None,
) -> None:  # pragma: no cover - runs in the child
    """The child's whole life; never returns (the parent's cleanup must not run twice)."""
    status = _NO_REPORT
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG
        if child_setup is not None:
            child_setup()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if max_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))
        try:
            payload = json.dumps({"result": work()}).encode()
        except MemoryError as exc:
            where = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else ""
            payload = json.dumps({"error": "memory", "where": where}).encode()
        except PluginError as exc:
            kind = type(exc).__name__ if type(exc) in _KINDS.values() else "RenderError"
            payload = json.dumps({"error": "plugin", "kind": kind, "message": str(exc)}).encode()
        except RecursionError:
            payload = json.dumps({"error": "plugin", "message": "nested too deeply"}).encode()
        except OSError as exc:
            payload = json.dumps({"error": "plugin", "message": _os_problem(exc)}).encode()
        except Exception as exc:  # reported by its type only, never by its text
            payload = json.dumps({"error": "unexpected", "type": type(exc).__name__}).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
        status = 0
    except MemoryError:
        with contextlib.suppress(OSError):
            os.write(write_fd, _MEMORY_REPORT)
        status = 0
    except BaseException:  # the child must reach os._exit whatever happens
        status = _NO_REPORT
    finally:
        os._exit(status)


def _os_problem(exc: OSError) -> str:
    import errno

    if exc.errno == errno.EFBIG:
        return "a rendered file is larger than the size allowed for one file"
    return f"file system error ({exc.strerror or type(exc).__name__})"


def _read_report(read_fd: int, pid: int, stage: str, deadline: Deadline) -> bytes:
    """Read the child's report until EOF; kill it at the deadline or past `_MAX_REPORT`."""
    data = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(read_fd, selectors.EVENT_READ)
        while True:
            remaining = deadline.remaining()
            if remaining <= 0 or not selector.select(timeout=remaining):
                if deadline.remaining() > 0:
                    continue
                _kill(pid)
                raise deadline.expired_during(stage)
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return bytes(data)
            data += chunk
            if len(data) > _MAX_REPORT:
                _kill(pid)
                raise StageBudgetError(f"{stage} sent back more than {format_size(_MAX_REPORT)}")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> int:
    """The child's wait status (it has closed its end of the pipe, so it is ending)."""
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, 0)[1]
    return 0


def _outcome(report: bytes, status: int, stage: str, memory: int) -> Any:
    budget = f"{format_size(memory)} of memory ({MAX_TEMPLATE_MEMORY_SETTING})"
    try:
        decoded = json.loads(report) if report else None
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        if os.WIFSIGNALED(status):
            raise StageBudgetError(
                f"{stage} was stopped by signal {os.WTERMSIG(status)} (its budget is {budget})"
            )
        raise StageBudgetError(f"{stage} ended without a result (its budget is {budget})")
    if "result" in decoded:
        return decoded["result"]
    error = decoded.get("error")
    if error == "memory":
        where = str(decoded.get("where") or "")
        prefix = f"{where}: " if where else ""
        raise StageBudgetError(f"{prefix}{stage} needed more than {budget}; stopped")
    if error == "plugin":
        kind = _KINDS.get(str(decoded.get("kind")), RenderError)
        raise kind(str(decoded.get("message", "")))
    raise RenderError(f"{stage} failed unexpectedly ({decoded.get('type', 'error')})")
