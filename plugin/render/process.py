"""Running renderer programs (helm, kustomize) under the render-wide deadline.

- Each child stays in the plugin's process group, so that argocd-cmp-server's signals to that
  group at Argo CD's deadline (SIGTERM, then SIGKILL 5 s later, while it SIGKILLs the plugin
  itself) reach helm's own children too; a child in a group of its own was out of their
  reach, and `PR_SET_PDEATHSIG` kills only the child. The child loses the controlling
  terminal, if the plugin has one (as it would in a session of its own).
- When the deadline passes, stdout overflows, or the plugin receives SIGTERM, the child's whole
  tree is killed: its descendants found through /proc, and the orphans they left, which come
  back to the plugin because it is a child subreaper (`PR_SET_CHILD_SUBREAPER`). The plugin
  cannot signal its own group: it may share it with others (a shell pipeline).
- Children get a reduced environment (`child_environment`): no Vault/AVP credentials and
  nothing the Application set (`ARGOCD_ENV_*`).
- stderr is captured, shortened, cleared of Helm's values dumps and of every known secret
  value (`Redactor`, see `plugin.security.redact`) before it can appear in an error message.
- Output is bounded: at most `max_output` bytes of stdout are accepted (the child is killed
  beyond that, `PLUGIN_MAX_INPUT_SIZE`) and only the tail of stderr is kept in memory.
- Every child dies with the plugin (`PR_SET_PDEATHSIG`, also when Argo CD SIGKILLs the
  plugin) and, given a `Confinement`, runs under Landlock (`plugin.security.sandbox`): it can
  read only its work copy, the tools and system files, and write only the render's scratch.
- Content that must not touch the disk (resolved values) reaches a child through file
  descriptors (`pass_fds`, memfds) that it opens as `/proc/self/fd/N`.

How a child is started. The steps above that run in the child (leave the terminal,
PDEATHSIG, Landlock) are a `preexec_fn`, and any `preexec_fn` makes `subprocess` fork the
whole plugin (copying the page tables of a ~100 MB process, then running Python in the
child) instead of vfork: 8.6 ms against 0.6 ms until `Popen` returns in a zygote worker, on
the critical path of every render. A zygote worker (`Confinement.supervised`) needs none of
them: its supervisor kills the worker's process group and every orphan when the worker ends
(`plugin.serve.server`), which is what PDEATHSIG was for, and the worker has no controlling
terminal (it is a session leader through `setsid`; checked at each start, cheaply). The
Landlock domain is then applied by a short-lived thread to itself before it starts the child
(`sandbox.confine_thread`: the domain and NO_NEW_PRIVS are per thread and inherited by the
child), so `subprocess` uses vfork and the child is confined from its first instruction.
Everything else is the same on both paths: a ruleset that cannot be enforced fails the
render (never unconfined), errors read the same, the child is tracked and killed the same
way. Without a supervisor (in-process runs, `PLUGIN_SERVE=off`) nothing else would kill the
child if the plugin were SIGKILLed, so the `preexec_fn` stays.

With vfork no `os.register_at_fork` hook runs (CPython runs them only around a
`preexec_fn`): that is right, since the hooks exist for forked children that run Python
(`plugin.render.scratch` waits for its background removals so that no thread holds a lock
a child would inherit); a vfork child runs no Python and execs at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import re
import selectors
import signal
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, cast

from plugin.errors import PluginError, RenderError
from plugin.libc import PR_SET_CHILD_SUBREAPER, libc
from plugin.manifests.inputs import MAX_INPUT_SETTING, format_size
from plugin.security import sandbox
from plugin.security.redact import Redactor

__all__ = [
    "RENDERER_GC_DEFAULTS",
    "Completed",
    "Confinement",
    "Deadline",
    "Redactor",
    "StageTimeoutError",
    "TerminatedError",
    "child_environment",
    "clean_stderr",
    "install_signal_handlers",
    "kill_children",
    "run",
]

log = logging.getLogger(__name__)

#: Variables a renderer child may inherit from the sidecar (everything else is dropped).
_INHERITED = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "KUBECONFIG",
        "GOGC",
        "GOMEMLIMIT",
    }
)

#: Go's garbage collector settings for the renderers, unless the sidecar's environment sets
#: `GOGC` or `GOMEMLIMIT` itself (then those are passed as they are, and neither default is
#: added: `GOGC=100` alone restores Go's own behaviour).
#:
#: helm and kustomize are Go programs that live a fraction of a second: with Go's default
#: (`GOGC=100`, a first collection at a 4 MB heap, then at each doubling) an ordinary chart
#: pays several collections that free memory the process is about to give back anyway, on
#: the same two cores as the plugin's secrets prefetch and Vault. `GOGC=400` collects at five
#: times the live heap instead of twice (a quarter less CPU for `helm template` of a
#: 150-document chart, see docs/performance.md); `GOMEMLIMIT` keeps a large render near the
#: memory Go's default would use: past 512 MiB the collector runs as often as the limit needs.
RENDERER_GC_DEFAULTS: Mapping[str, str] = {"GOGC": "400", "GOMEMLIMIT": "512MiB"}
_STDERR_MAX_LINES = 12
#: Bytes of a child's stderr kept in memory (the tail; only the last lines are shown anyway).
_STDERR_KEEP = 256 * 1024
_READ_CHUNK = 64 * 1024
_PIPE_CHUNK = 64 * 1024
_STDERR_MAX_CHARS = 1500
#: Lines from which Helm starts dumping values (`--debug` output); nothing after them is kept.
_VALUES_DUMP_MARKERS = ("USER-SUPPLIED VALUES:", "COMPUTED VALUES:", "HOOKS:", "MANIFEST:")


#: Helm's advice to rerun with `--debug`, which a plugin user cannot pass (and which would dump
#: values): replaced by the plugin's own way to see more.
_HELM_DEBUG_HINT = re.compile(r"Use --debug flag to render out invalid YAML")
_OWN_HINT = (
    "(Helm's --debug is not available here: run `plugin generate --verbose` for each step, or "
    "`helm template --debug` on a local copy of the chart to see the invalid YAML)"
)


class StageTimeoutError(RenderError):
    """The render-wide deadline passed while a stage was running."""


class TerminatedError(PluginError):
    """The plugin received SIGTERM (Argo CD gave up on the request)."""


@dataclass
class Deadline:
    """The render-wide time limit (a `time.monotonic()` instant) and its configured length."""

    at: float
    seconds: float
    setting: str = "PLUGIN_TIMEOUT"

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        begin = time.monotonic() if start is None else start
        return cls(begin + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired_during(self, stage: str) -> StageTimeoutError:
        return StageTimeoutError(
            f"{stage} ran out of time: the render must finish within {self.seconds:g} s "
            f"({self.setting})"
        )

    def check(self, stage: str) -> None:
        if self.remaining() <= 0:
            raise self.expired_during(stage)


def child_environment(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a renderer child: a small allow-list of the sidecar's, the Go
    collector's settings (`RENDERER_GC_DEFAULTS`, unless the sidecar sets its own), and `extra`.

    The sidecar's environment is the operator's: an Application's settings (`ARGOCD_ENV_*`)
    never reach a renderer, so a tenant cannot change how helm spends memory.
    """
    env = {
        key: value for key, value in environ.items() if key in _INHERITED or key.startswith("LC_")
    }
    if not any(environ.get(key) for key in RENDERER_GC_DEFAULTS):
        env.update(RENDERER_GC_DEFAULTS)
    env.update(extra)
    return env


def clean_stderr(raw: bytes, redactor: Redactor | None = None) -> str:
    """Short, secret-free stderr: values dumps cut, known secrets redacted, last lines only."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    kept: list[str] = []
    for line in text.split("\n"):
        if line.strip().startswith(_VALUES_DUMP_MARKERS):
            kept.append("(values output withheld)")
            break
        if line.strip():
            kept.append(_HELM_DEBUG_HINT.sub(_OWN_HINT, line.rstrip()))
    if redactor is not None:
        kept = [redactor.clean(line) for line in kept]
    if len(kept) > _STDERR_MAX_LINES:
        kept = ["…", *kept[-_STDERR_MAX_LINES:]]
    out = "\n".join(kept)
    if len(out) > _STDERR_MAX_CHARS:
        out = "…" + out[-_STDERR_MAX_CHARS:]
    return out


#: A template location in a renderer message: `chart/templates/x.yaml:12:5`, `gotpl:1:10`.
_LOCATION = re.compile(
    r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.(?:ya?ml|tpl|txt|json|toml)|gotpl)(:\d+){0,2}"
)
_ERROR_CLASSES = (
    ("YAML parse error", "YAML parse error"),
    ("execution error", "execution error"),
    ("parse error", "parse error"),
    ("template:", "template error"),
)
_FUNCTION = re.compile(r"error calling (\w+)")
_WITHHELD = "message withheld because secrets were resolved into the values (RESOLVE_VALUES)"


def location_only(raw: bytes) -> str:
    """The renderer's error reduced to its class and location (file:line:column) per line.

    Used when secrets were injected into Helm values: a message body can then echo part of a
    secret (`tpl` of a value holding `{{`, `fail`, a schema error quoting a value) in a form
    no redactor can predict, so it is never shown.
    """
    text = raw.decode("utf-8", "replace")
    found: list[str] = []
    for line in text.splitlines():
        if not line.startswith("Error:"):
            continue
        kind = next((name for key, name in _ERROR_CLASSES if key in line), "error")
        location = _LOCATION.search(line)
        function = _FUNCTION.search(line)
        summary = kind + (f" at {location.group(0)}" if location else "")
        if function:
            summary += f" (in {function.group(1)})"
        if summary not in found:
            found.append(summary)
    return "; ".join([*found[:_STDERR_MAX_LINES], _WITHHELD])


# ---------------------------------------------------------------------------- child tracking

_children: set[subprocess.Popen[bytes]] = set()
#: When each running child started (clock ticks since boot, /proc/PID/stat field 22).
_started: dict[int, int] = {}
_children_lock = threading.Lock()
_terminating = threading.Event()
_subreaper = threading.Event()


def _become_subreaper() -> None:
    """Orphans of a child's tree are re-parented to the plugin instead of init, where the
    kill below finds them (once per process)."""
    if not _subreaper.is_set():
        with contextlib.suppress(OSError, AttributeError):
            libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _subreaper.set()


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, start time in clock ticks), from /proc.

    Reads the stat file of every process of the machine: the kill of a child's tree needs the
    whole table, and the zygote's supervisor falls back on it (`serve.server.children_of`).
    """
    found: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            found[int(name)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return found


def _now_ticks() -> int:
    """Now, in the clock ticks of /proc/PID/stat's start time (both count from boot)."""
    with open("/proc/uptime", "rb") as handle:
        return int(float(handle.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _tree(proc: subprocess.Popen[bytes], since: int) -> list[int]:
    """The child's descendants, and the orphans of its tree that the plugin adopted (its
    children in its process group, started since the child, that it did not start itself)."""
    table = process_table()
    me, group = os.getpid(), os.getpgrp()
    # No lock: this also runs in the SIGTERM handler, which may interrupt its holder.
    own = {child.pid for child in tuple(_children)}
    found: list[int] = []
    parents = [proc.pid]
    while parents:
        parent = parents.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.append(pid)
                parents.append(pid)
    for pid, (ppid, pgid, started) in table.items():
        adopted = ppid == me and pgid == group and started >= since
        if adopted and pid not in own and pid not in found:
            found.append(pid)
    return found


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child and everything under it (see the module docstring), then reap."""
    since = _started.get(proc.pid, 0)
    for _ in range(50):
        found = _tree(proc, since)
        if proc.poll() is None:
            found.append(proc.pid)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for pid in found:
            if pid != proc.pid:  # adopted orphans are the plugin's to reap (not helm's: Popen's)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    _kill_tree(proc)


def _leave_terminal() -> None:
    """In the forked child: give up the plugin's controlling terminal, if it has one."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return  # no controlling terminal: nothing to leave
    try:
        fcntl.ioctl(fd, termios.TIOCNOTTY)
    except OSError:
        pass
    finally:
        os.close(fd)


def _has_terminal() -> bool:
    """Whether the plugin has a controlling terminal (one failed open() when it has none)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def kill_children() -> None:
    """Kill every running renderer child (and its process group)."""
    with _children_lock:
        running = list(_children)
    for proc in running:
        _kill_group(proc)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _terminating.set()
    kill_children()
    raise TerminatedError("terminated by SIGTERM; renderer processes were stopped")


def install_signal_handlers() -> None:
    """SIGTERM kills the children and ends the run with a clean error (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


class _TooMuchOutputError(Exception):
    pass


def _communicate(
    proc: subprocess.Popen[bytes],
    stdin_data: bytes | None,
    deadline: Deadline,
    max_output: int | None,
) -> tuple[bytes, bytes]:
    """`communicate()` with a bound on stdout and a bounded stderr tail.

    Raises `subprocess.TimeoutExpired` at the deadline, `_TooMuchOutputError` past
    `max_output` bytes of stdout.
    """
    out = bytearray()
    err = bytearray()
    pending = memoryview(stdin_data or b"")
    with selectors.DefaultSelector() as selector:
        if proc.stdin is not None:
            if pending:
                selector.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        for output in (proc.stdout, proc.stderr):
            if output is not None:
                selector.register(output, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline.remaining()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(proc.args, deadline.seconds)
            for key, _ in selector.select(remaining):
                stream = cast("IO[bytes]", key.fileobj)
                if stream is proc.stdin:
                    try:
                        written = os.write(key.fd, pending[:_PIPE_CHUNK])
                    except BrokenPipeError:
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(stream)
                        stream.close()
                    continue
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(stream)
                    stream.close()
                elif stream is proc.stdout:
                    out += chunk
                    if max_output is not None and len(out) > max_output:
                        raise _TooMuchOutputError
                else:
                    err += chunk
                    if len(err) > _STDERR_KEEP:
                        del err[: len(err) - _STDERR_KEEP]
    remaining = deadline.remaining()
    if remaining <= 0:
        raise subprocess.TimeoutExpired(proc.args, deadline.seconds)
    proc.wait(timeout=remaining)
    return bytes(out), bytes(err)


@dataclass(frozen=True)
class Confinement:
    """The Landlock policy of one child, the sandbox status of the run (mode, ABI), and
    whether a supervisor kills the plugin's children if the plugin dies.

    `supervised`: the process is a zygote worker (`plugin.serve.server.work`), whose
    supervisor kills its process group and every orphan when it ends. The child then needs
    no code between fork and exec and starts through vfork (see the module docstring). Set
    only from the worker's entry point down (`RenderContext.supervised`): a parameter rather
    than a setting of this module, so an in-process run can never take this path by accident.
    """

    policy: sandbox.Policy
    status: sandbox.Status
    supervised: bool = False


class _ConfinementError(Exception):
    """The starting thread could not enforce the ruleset on itself: nothing was started."""


def _start_from_confined_thread(
    popen: Callable[[Callable[[], None] | None], subprocess.Popen[bytes]],
    prepared: sandbox.Prepared | None,
) -> subprocess.Popen[bytes]:
    """Start the child without a `preexec_fn` (vfork), confined by the thread that starts it.

    Without a ruleset (sandbox off or unavailable in `auto`) the calling thread starts it.
    Otherwise a new thread enforces the ruleset on itself (`sandbox.confine_thread`), starts
    the child, which inherits the domain, and ends; the calling thread only waits for it.
    The thread's exception (including `_ConfinementError`) is raised here.

    The confined thread runs only `Popen` and the registration of the child, on modules the
    process has already imported (the zygote preloads them): any file it opened itself would
    be subject to the child's policy. The cyclic garbage collector is held off meanwhile, so
    that no finalizer of another thread's objects (a temporary file's removal) runs there.
    A SIGTERM while the calling thread waits ends the render as on the other path; a child
    the thread starts after that is killed with the worker's process group (supervisor).
    """
    if prepared is None:
        return popen(None)
    outcome: list[subprocess.Popen[bytes] | BaseException] = []

    def confine_and_start() -> None:
        try:
            sandbox.confine_thread(prepared)
        except OSError:
            outcome.append(_ConfinementError())
            return
        try:
            outcome.append(popen(None))
        except BaseException as exc:  # re-raised in the calling thread
            outcome.append(exc)

    thread = threading.Thread(target=confine_and_start, name="renderer-start", daemon=True)
    collecting = gc.isenabled()
    gc.disable()
    try:
        thread.start()
        thread.join()
    finally:
        if collecting:
            gc.enable()
    if not outcome:
        raise _ConfinementError
    found = outcome[0]
    if isinstance(found, BaseException):
        raise found
    return found


@dataclass(frozen=True)
class Completed:
    stdout: bytes
    stderr: str
    seconds: float


def run(
    argv: Sequence[str],
    *,
    stage: str,
    cwd: Path,
    env: Mapping[str, str],
    deadline: Deadline,
    redactor: Redactor | None = None,
    stdin_data: bytes | None = None,
    describe_failure: str | None = None,
    max_output: int | None = None,
    confinement: Confinement | None = None,
    pass_fds: Sequence[int] = (),
    withhold_messages: bool = False,
    on_start: Callable[[], None] | None = None,
) -> Completed:
    """Run one renderer command; raise RenderError (or StageTimeoutError) naming `stage` on failure.

    The command line itself is never put into messages (it may carry --set values); with
    `withhold_messages` the child's messages are reduced to their class and location
    (`location_only`). At most
    `max_output` bytes of stdout are accepted (the child is killed beyond that) and only the
    last `_STDERR_KEEP` bytes of stderr are kept, so a runaway child cannot exhaust memory.

    `on_start` is called once the child exists, before waiting for it: work meant to overlap
    with the child (the secrets prefetch) starts there, so it neither delays the child's start
    nor has threads running while the process forks.
    """
    deadline.check(stage)
    started = time.monotonic()
    prepared = None
    if confinement is not None:
        prepared = sandbox.prepare(confinement.policy, confinement.status)
    _become_subreaper()
    since = _now_ticks()

    def popen(preexec_fn: Callable[[], None] | None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            cwd=str(cwd),
            env=dict(env),
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(pass_fds),
            # System calls only, see plugin.security.sandbox for why this is fork-safe here.
            preexec_fn=preexec_fn,  # noqa: PLW1509
        )
        with _children_lock:
            _children.add(proc)
            _started[proc.pid] = since
        return proc

    try:
        if confinement is not None and confinement.supervised and not _has_terminal():
            proc = _start_from_confined_thread(popen, prepared)
        else:
            confine = sandbox.child_setup(prepared)

            def child_setup() -> None:
                _leave_terminal()
                confine()

            proc = popen(child_setup)
    except FileNotFoundError:
        raise RenderError(f"{stage}: program {argv[0]} not found") from None
    except PermissionError:
        raise RenderError(f"{stage}: program {argv[0]} is not executable") from None
    except (subprocess.SubprocessError, _ConfinementError):
        # The child could not be confined: it never ran the program.
        raise RenderError(f"{stage}: the renderer sandbox could not be applied") from None
    finally:
        if prepared is not None:
            prepared.close()
    if _terminating.is_set():  # SIGTERM came while it started: kill_children may have missed it
        _kill_group(proc)
    try:
        if on_start is not None:
            on_start()
        try:
            out, err = _communicate(proc, stdin_data, deadline, max_output)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise deadline.expired_during(stage) from None
        except _TooMuchOutputError:
            _kill_group(proc)
            raise RenderError(
                f"{stage} produced more than {format_size(max_output or 0)} of output; "
                f"stopped ({MAX_INPUT_SETTING})"
            ) from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        with _children_lock:
            _children.discard(proc)
            _started.pop(proc.pid, None)
    seconds = time.monotonic() - started
    stderr = clean_stderr(err, redactor)
    if withhold_messages:
        stderr = location_only(err)
        if redactor is not None:
            stderr = redactor.clean(stderr)
    log.debug("%s finished in %.3f s (exit %s)", stage, seconds, proc.returncode)
    if proc.returncode != 0:
        if proc.returncode < 0:
            cause = f"killed by signal {-proc.returncode}"
        else:
            cause = f"exit status {proc.returncode}"
        what = describe_failure or f"{stage} failed"
        detail = f":\n{stderr}" if stderr else ""
        raise RenderError(f"{what} ({cause}){detail}")
    return Completed(out, stderr, seconds)
