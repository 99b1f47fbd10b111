"""The zygote: import the plugin once, then fork one child per request (`plugin serve`).

Process tree for one request (all in the sidecar, all with the plugin's UID):

    zygote            imports every module, never reads a request, never loads settings;
      |               checks the peer's UID (SO_PEERCRED), forks and goes back to accept()
      +- supervisor   reads the request (argv, environment, stdio and working directory fds),
          |           answers, makes a private scratch directory, forks the worker, relays
          |           SIGTERM/SIGINT from the client, and when the client disappears (EOF:
          |           it exited or Argo CD SIGKILLed it) kills the worker's process group and
          |           every process left under it (it is a child subreaper, so helm and
          |           kustomize, which run in process groups of their own, come back to it);
          |           sends the exit status, then removes the scratch directory
          +- worker       its own session and process group; the client's stdio on 0/1/2, its
                          working directory, umask, environment and argv; runs
                          `plugin.cli.main()` exactly as an in-process run does, then exits

Forks ahead of the request: both the supervisor and its worker are forked before the
connection arrives (the fork of a large process and the child's first copy-on-write faults
cost milliseconds). The zygote keeps one spare supervisor (`Spare`), which has forked its
worker (`Waiting`); on accept, after the UID check, the zygote passes the connection to the
spare, which reads the request and passes it on, with the client's descriptors, to the
waiting worker. Neither holds anything of a request before it gets one, and each serves one.
The next spare is forked once the handed request has ended or a moment later; a connection
that finds no spare gets a supervisor (and worker) forked for it, as before.

Early status: once the command has printed everything, the worker closes its copies of the
client's stdio and reports its exit status on a pipe (`_Reporter`); the supervisor forwards it
at once when no other process of the render is left, while the worker finishes its after-work
(the reference index record of a successful `generate`, its own exit). The supervisor still
waits for the worker, kills its process group and removes the scratch directory.

Nothing of a request outlives it: the worker and the supervisor exit, and the zygote never
saw the request's bytes. The zygote replaces itself (exec, keeping the listening socket, so
no client is turned away) after `PLUGIN_SERVE_MAX_REQUESTS` requests and when a file of the
plugin changes on disk (the kernel tells it: `CodeWatch`; where inotify is missing, it compares
the files before each request and a client that arrives while it is stale renders itself).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import gc
import importlib
import io
import os
import pkgutil
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from plugin import __version__
from plugin.errors import ConfigError, UsageError
from plugin.libc import PR_SET_CHILD_SUBREAPER, PR_SET_NAME, PR_SET_PDEATHSIG, libc
from plugin.serve import client, launcher, prefault

MAX_REQUESTS_SETTING = "PLUGIN_SERVE_MAX_REQUESTS"
DEFAULT_MAX_REQUESTS = 1000
#: `off` keeps the waiting worker's memory shared with the zygote until its request comes
#: (serve.prefault: a populated worker holds tens of MiB of its own while it waits). Read
#: from the sidecar's own environment when the zygote starts; an Application cannot set it.
PREFAULT_SETTING = "PLUGIN_SERVE_PREFAULT"
#: How long `--exec` waits for the zygote to be ready before it execs the program anyway.
READY_TIMEOUT_SECONDS = 60.0
#: How long the supervisor waits for the client's request bytes.
REQUEST_TIMEOUT_SECONDS = 30.0
#: How often the zygote checks that its socket file is still its own.
CHECK_INTERVAL_SECONDS = 30.0
#: How long the supervisor lets a worker finish its after-work (the reference index record)
#: once the client has its status; then the worker's process group is killed.
AFTER_WORK_SECONDS = 30.0
#: A spare that dies sooner than this after its fork counts as a crash: the next one is forked
#: after a delay that doubles from `SPARE_FIRST_DELAY_SECONDS` up to `SPARE_MAX_DELAY_SECONDS`
#: (meanwhile each request gets a supervisor forked for it, as without spares).
SPARE_STABLE_SECONDS = 1.0
SPARE_FIRST_DELAY_SECONDS = 0.1
SPARE_MAX_DELAY_SECONDS = 30.0
#: The process name (/proc/PID/comm) of a spare while it waits: `ps` tells it from a supervisor.
SPARE_NAME = b"plugin-spare"
#: After a hand-off, the next spare is forked when that request has ended (its supervisor
#: exited) or after this long, whichever comes first: forking it at once would take CPU from
#: the render just handed over (two forks and their copy-on-write faults, on a node of few
#: cores); a connection that arrives meanwhile gets a supervisor forked for it, as without spares.
SPARE_AFTER_HAND_OFF_SECONDS = 0.25
#: Libraries that the stages import lazily: imported by the zygote so children do not.
THIRD_PARTY = (
    "yaml",
    "jinja2",
    "hvac",
    "requests",
    "urllib3",
    "certifi",
    "ssl",
    "ctypes",
    "encodings.ascii",
)
_DESCRIPTORS = 4  # stdin, stdout, stderr, working directory


class ProtocolError(Exception):
    """The request is malformed; the client is told why and renders itself."""


class AlreadyRunningError(ConfigError):
    """A zygote of this UID already answers on the socket."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        help="unix socket to listen on / ask (default: PLUGIN_SERVE_SOCKET, else a private "
        "directory under $XDG_RUNTIME_DIR or the plugin cache directory)",
    )
    parser.add_argument(
        "--status", action="store_true", help="report whether a zygote serves the socket"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        help=f"requests before the zygote replaces itself ({MAX_REQUESTS_SETTING}, "
        f"default {DEFAULT_MAX_REQUESTS})",
    )
    parser.add_argument(
        "--exec",
        dest="exec_argv",
        nargs=argparse.REMAINDER,
        metavar="PROGRAM",
        help="start the zygote in the background, then replace this process with PROGRAM "
        "[ARGS...] (in Argo CD: /var/run/argocd/argocd-cmp-server)",
    )
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)


#: How a worker says "the command is over, this is its exit status" before its after-work (see
#: `work`): called by the command line once everything it prints is out, at most once.
Report = Callable[[int], None]
#: The command line's entry point (`plugin.cli.main`), handed over by the command line itself:
#: `serve` sits below `cli` in the import order. It gets the worker's `Report`. It may rely on
#: what `work` and `supervise` guarantee: the worker is a session leader without a controlling
#: terminal, and when it ends (exit, crash, SIGKILL, its client gone) the supervisor kills its
#: process group and every process left under it (a child subreaper), so its renderers need no
#: PR_SET_PDEATHSIG of their own (`plugin.render.process` starts them through vfork then).
Entry = Callable[[Report], int]
#: Work every request would otherwise repeat first, done once in the zygote before it forks
#: (handed over by the command line: building its argument parser). It must not read a
#: request's settings, build a backend or hold anything secret.
Warm = Callable[[], object]


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    out: TextIO,
    entry: Entry,
    warm: Warm | None = None,
) -> int:
    """`plugin serve`: foreground zygote, `--status`, or `--exec PROGRAM`.

    `entry` is what a worker runs for each request (`plugin.cli.main`, with sys.argv set);
    `warm` runs once in the zygote after the imports (see `Warm`).
    """
    path = os.path.abspath(args.socket) if args.socket else client.socket_path(environ)
    if args.status:
        return status(path, out)
    max_requests = args.max_requests or max_requests_setting(environ)
    if max_requests < 1:
        raise UsageError("--max-requests must be at least 1")
    if args.exec_argv is not None:
        if not args.exec_argv:
            raise UsageError("--exec needs a program to run")
        start_detached(path, max_requests, entry, warm)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(args.exec_argv[0], args.exec_argv)  # noqa: S606 - the operator's command
    serve(path, max_requests, entry, listen_fd=args.listen_fd, warm=warm)
    return 0


def max_requests_setting(environ: Mapping[str, str]) -> int:
    text = environ.get(MAX_REQUESTS_SETTING, "").strip()
    if not text:
        return DEFAULT_MAX_REQUESTS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{MAX_REQUESTS_SETTING} must be a whole number >= 1, got {text!r}")
    return int(text)


def _say(message: str) -> None:
    """The zygote's own log line (stderr of the sidecar); never any request data."""
    with contextlib.suppress(OSError):
        os.write(2, f"plugin serve: {message}\n".encode("utf-8", "replace"))


# ---------------------------------------------------------------------------- status


def status(path: str, out: TextIO) -> int:
    """Exit 0 and print the zygote's state when one answers at `path`, else exit 1."""
    try:
        sock = client.connect(path)
    except client.UnavailableError as exc:
        out.write(f"zygote: not running ({exc})\n")
        return 1
    try:
        client.send_request(sock, "status", [])
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except (client.UnavailableError, OSError) as exc:
        out.write(f"zygote: not answering ({exc})\n")
        return 1
    finally:
        sock.close()
    out.write(b"".join(chunks).decode("utf-8", "replace"))
    return 0


# ---------------------------------------------------------------------------- start-up


def _prepare_directory(directory: str) -> None:
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    try:
        client.check_private_directory(directory)
    except client.UnavailableError as exc:
        raise ConfigError(f"plugin serve: refusing to listen: {exc}") from None


def listen(path: str) -> socket.socket:
    """A listening socket at `path` in a private directory (0700, ours), mode 0600."""
    _prepare_directory(os.path.dirname(path))
    try:
        client.connect(path, timeout=2.0).close()
    except client.UnavailableError:
        pass  # nothing answers: a stale socket file is replaced below
    else:
        raise AlreadyRunningError(f"a zygote already serves {path}")
    temporary = os.path.join(os.path.dirname(path), f".{client.SOCKET_NAME}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(temporary)
        os.chmod(temporary, 0o600)
        sock.listen(128)
        os.replace(temporary, path)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"plugin serve: cannot listen on {path}: {exc.strerror}") from None
    return sock


def preload(warm: Warm | None = None) -> None:
    """Import every module a request may need, do the work every request would repeat, then
    freeze it all out of the garbage collector.

    Only imports and facts of the machine and the program: no settings are read, no backend is
    built, nobody logs in. Each item was found in a worker's trace (strace -f) or profile:
    the first ctypes call of a process sets up libffi (the Landlock ABI probe),
    opening /proc files as text imports `encodings.ascii`, and building the argument parser
    (`warm`) looks up gettext catalogues and the terminal size for each of its options, and
    loading the system's CA certificates for an HTTPS Vault costs tens of milliseconds.
    """
    import plugin

    for info in pkgutil.walk_packages(plugin.__path__, "plugin."):
        if info.name.startswith("plugin.serve") or info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # a broken optional module must not stop the zygote
            _say(f"could not preload {info.name} ({type(exc).__name__})")
    for name in THIRD_PARTY:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from plugin.secrets.vault import tls
    from plugin.security import sandbox

    try:
        sandbox.kernel_abi()  # cached for the process: the kernel does not change under us
        _prctl()
        tls.default_trust_context()  # public CA certificates only, reloaded if they change
    except Exception as exc:
        _say(f"could not prepare a cache ({type(exc).__name__})")
    if warm is not None:
        warm()
    gc.collect()
    gc.freeze()


def code_stamp() -> dict[str, tuple[int, int, int]]:
    """(mtime, size, inode) of every loaded module file of the plugin package."""
    base = client.package_dir() + os.sep
    stamp: dict[str, tuple[int, int, int]] = {}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and filename.startswith(base):
            try:
                info = os.stat(filename)
            except OSError:
                stamp[filename] = (0, 0, 0)
            else:
                stamp[filename] = (info.st_mtime_ns, info.st_size, info.st_ino)
    return stamp


#: inotify (linux/inotify.h): a watched file was written, had its attributes (mtime, links)
#: changed, was moved or deleted; the descriptor is non-blocking and close-on-exec.
_IN_MODIFY, _IN_ATTRIB, _IN_MOVE_SELF, _IN_DELETE_SELF = 0x2, 0x4, 0x800, 0x400
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


class CodeWatch:
    """The kernel tells the zygote when a loaded module file of the plugin changes (inotify).

    Comparing `code_stamp()` before each request cost a stat() per module (75) on every
    request's path; the watch costs nothing until a file changes. An event only says "look":
    the zygote then compares the stamp, so an event that changed nothing that counts (a
    `touch` keeping the size and the mtime) does not restart it. A file replaced by a rename
    loses its last link, which is an event of the old file (IN_ATTRIB, then IN_DELETE_SELF).
    """

    MASK = _IN_MODIFY | _IN_ATTRIB | _IN_MOVE_SELF | _IN_DELETE_SELF

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def start(cls, files: Iterable[str]) -> CodeWatch | None:
        """A watch on `files`, or None (no inotify, or a limit reached): then every request
        compares the stamp, as before the watch existed."""
        libc = _libc()
        try:
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC) if libc is not None else -1
        except AttributeError:
            fd = -1
        if fd < 0:
            return None
        assert libc is not None
        for name in files:
            if libc.inotify_add_watch(fd, os.fsencode(name), cls.MASK) < 0:
                os.close(fd)
                return None
        return cls(fd)

    def drain(self) -> None:
        """Read the pending events (their content does not matter: the stamp decides)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _ensure_standard_fds() -> None:
    """0, 1 and 2 are open (on /dev/null if need be): received descriptors never land there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def start_detached(path: str, max_requests: int, entry: Entry, warm: Warm | None = None) -> bool:
    """Start a zygote in its own session; wait until it listens. False if it did not start."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the detached processes
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(null)
            serve(path, max_requests, entry, ready_fd=write_end, warm=warm)
            code = 0
        except AlreadyRunningError:
            with contextlib.suppress(OSError):
                os.write(write_end, b"1")
            code = 0
        except BaseException as exc:
            _say(f"the zygote stopped: {exc}")
        finally:
            os._exit(code)
    os.close(write_end)
    os.waitpid(pid, 0)
    try:
        ready, _, _ = select.select([read_end], [], [], READY_TIMEOUT_SECONDS)
        started = bool(ready) and os.read(read_end, 1) == b"1"
    finally:
        os.close(read_end)
    if not started:
        _say("the zygote did not start; every request renders in its own process")
    return started


# ---------------------------------------------------------------------------- the zygote


class Spare:
    """A supervisor forked before its request, waiting for the connection (`Zygote.hand_off`).

    The fork of the zygote (a large process: its page tables, then the child's first
    copy-on-write faults) costs milliseconds; a spare pays them while nobody waits. It is
    forked from the zygote as it is, holds nothing of any request and blocks in recvmsg() on
    a socket pair until the zygote passes it an accepted connection (SCM_RIGHTS) with the
    zygote's request count. It then is that request's supervisor, exactly as one forked for
    it. When the zygote's end closes (the zygote exits, is killed or re-execs: the end is
    close-on-exec) the spare reads the end and exits: a spare of old code never serves.
    """

    def __init__(self, pid: int, pidfd: int, control: socket.socket) -> None:
        self.pid = pid
        #: Readable once the spare has exited; signals sent through it never reach a reused pid.
        self.pidfd = pidfd
        self.control = control
        self.born = time.monotonic()

    def hand_off(self, conn: socket.socket, served: int) -> bool:
        """Pass the connection to the spare; False if it is gone (the caller forks instead)."""
        try:
            socket.send_fds(self.control, [b"%d" % served], [conn.fileno()])
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Forget the spare (handed a request, or dead): close the zygote's descriptors."""
        self.control.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)

    def kill(self) -> None:
        """Stop a waiting spare and reap it (on SIGTERM of the zygote and before it re-execs)."""
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            select.select([self.pidfd], [], [], 5.0)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)
        self.close()


@dataclass
class Zygote:
    listener: socket.socket
    path: str
    max_requests: int
    entry: Entry
    #: (device, inode) of the socket file as bound (fstat of a socket does not give it).
    inode: tuple[int, int] = (0, 0)
    started: float = field(default_factory=time.time)
    served: int = 0
    stamp: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: TMPDIR, TEMP and TMP of the zygote, whose temporary directory `tempfile` has found.
    temp_settings: tuple[str | None, ...] = ()
    #: Changes of the module files, told by the kernel; None: the stamp is compared per request.
    watch: CodeWatch | None = None
    #: The supervisor forked in advance for the next connection (None: forked per request).
    spare: Spare | None = None
    #: When the next spare may be forked (time.monotonic), and the delay after a crash.
    spare_due: float = 0.0
    spare_delay: float = 0.0
    #: The pidfd of the supervisor last handed a connection, until it exits (see
    #: `SPARE_AFTER_HAND_OFF_SECONDS`).
    handed: int = -1
    #: The zygote's process name, which a spare takes back once handed its request.
    name: bytes = b""
    #: Whether a waiting worker populates its memory while idle (PREFAULT_SETTING).
    prefault: bool = True
    poller: Any = field(default_factory=select.poll)

    def own_socket(self) -> bool:
        """The socket file at `path` is still this zygote's (not removed or replaced)."""
        try:
            info = os.lstat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.inode

    def status_text(self) -> str:
        return (
            "zygote: running\n"
            f"pid: {os.getppid()}\n"
            f"version: {__version__}\n"
            f"package: {client.package_dir()}\n"
            f"socket: {self.path}\n"
            f"served: {self.served}\n"
            f"max-requests: {self.max_requests}\n"
            f"uptime-seconds: {time.time() - self.started:.0f}\n"
        )

    def loop(self) -> None:
        self.listener.settimeout(CHECK_INTERVAL_SECONDS)
        self.poller.register(self.listener.fileno(), select.POLLIN)
        if self.watch is not None:
            self.poller.register(self.watch.fd, select.POLLIN)
        self.replenish()
        while True:
            timeout = CHECK_INTERVAL_SECONDS
            if self.spare is None:  # waiting out a crashed spare's delay
                timeout = min(timeout, max(0.0, self.spare_due - time.monotonic()))
            ready = {fd for fd, _ in self.poller.poll(timeout * 1000)}
            if self.handed in ready:
                self.forget_handed()
                if self.spare_delay == 0.0:
                    self.spare_due = 0.0  # the request has ended: the next spare now
            if self.spare is not None and self.spare.pidfd in ready:
                self.lost_spare()
            if not ready:
                if not self.own_socket():
                    _say(f"{self.path} is no longer this zygote's socket; stopping")
                    return
                self.restart_if_changed()  # idle: a missed event costs nobody anything
            if self.watch is not None and self.watch.fd in ready:
                # Before the connection that may be waiting: it is then served by the new
                # zygote (the socket and its queue survive the exec), never by stale code.
                self.watch.drain()
                self.restart_if_changed()
            if self.listener.fileno() in ready:
                try:
                    conn, _ = self.listener.accept()
                except (BlockingIOError, TimeoutError, InterruptedError):
                    conn = None
                if conn is not None:
                    self.dispatch(conn)
            self.replenish()

    def restart_if_changed(self) -> None:
        if code_stamp() != self.stamp:
            _say("the plugin's code changed on disk; restarting")
            self.restart()

    def dispatch(self, conn: socket.socket) -> None:
        with conn:
            try:
                uid = client.peer_uid(conn)
            except OSError:
                return
            if uid != os.getuid():
                _say(f"refused a connection from UID {uid}")
                return
            if self.watch is None and code_stamp() != self.stamp:
                _say("the plugin's code changed on disk; restarting")
                conn.close()
                self.restart()
            if not self.hand_off(conn):
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the supervisor, measured through the client
                    code = 1
                    try:
                        self.close_inherited()
                        _reset_signals()
                        code = supervise(conn, self)
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
            self.served += 1
        if self.served >= self.max_requests:
            self.restart()

    def hand_off(self, conn: socket.socket) -> bool:
        """Give the connection to the spare, if there is one alive (then forget it)."""
        spare = self.spare
        if spare is None:
            return False
        self.spare = None
        self.poller.unregister(spare.pidfd)
        handed = spare.hand_off(conn, self.served)
        if handed:
            spare.control.close()
            self.forget_handed()
            self.handed = spare.pidfd
            self.poller.register(spare.pidfd, select.POLLIN)
            self.spare_delay = 0.0
            self.spare_due = time.monotonic() + SPARE_AFTER_HAND_OFF_SECONDS
        else:
            self.retire(spare)
        return handed

    def close_inherited(self) -> None:
        """In a forked child: the zygote's descriptors are none of its business."""
        self.listener.close()
        if self.watch is not None:
            self.watch.close()
        if self.handed >= 0:
            os.close(self.handed)

    def forget_handed(self) -> None:
        if self.handed >= 0:
            self.poller.unregister(self.handed)
            with contextlib.suppress(OSError):
                os.close(self.handed)
            self.handed = -1

    def lost_spare(self) -> None:
        """The spare exited while waiting (killed, or it failed): replaced, after a delay if
        it did not live long (`SPARE_STABLE_SECONDS`), so that a crash loop does not spin."""
        spare = self.spare
        assert spare is not None
        self.spare = None
        self.poller.unregister(spare.pidfd)
        self.retire(spare)

    def retire(self, spare: Spare) -> None:
        lived = time.monotonic() - spare.born
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, os.WNOHANG)
        spare.close()
        self.delay_next_spare(failed=lived < SPARE_STABLE_SECONDS)
        _say(f"the spare supervisor {spare.pid} exited; the next one in {self.spare_delay:.1f} s")

    def delay_next_spare(self, *, failed: bool) -> None:
        """When the next spare may be forked: at once after a spare that lived, else after a
        delay doubling from `SPARE_FIRST_DELAY_SECONDS` up to `SPARE_MAX_DELAY_SECONDS`."""
        if failed:
            self.spare_delay = min(
                max(2 * self.spare_delay, SPARE_FIRST_DELAY_SECONDS), SPARE_MAX_DELAY_SECONDS
            )
        else:
            self.spare_delay = 0.0
        self.spare_due = time.monotonic() + self.spare_delay

    def replenish(self) -> None:
        """Fork the next spare, unless one waits or a crashed one's delay is not over."""
        if self.spare is not None or time.monotonic() < self.spare_due:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # SIGCHLD is held until the pidfd exists: a spare that dies at once is not reaped
        # (and its pid reused) before the zygote has a handle on it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the spare, measured through the client
                code = 1
                try:
                    ours.close()
                    self.close_inherited()
                    _reset_signals()
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                    code = wait_as_spare(theirs, self)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            theirs.close()
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            ours.close()
            theirs.close()
            self.delay_next_spare(failed=True)
            _say(f"could not fork a spare supervisor ({exc.strerror or exc})")
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.spare = Spare(pid, pidfd, ours)
        self.poller.register(pidfd, select.POLLIN)

    def stop_spare(self) -> None:
        if self.spare is not None:
            spare, self.spare = self.spare, None
            with contextlib.suppress(KeyError):
                self.poller.unregister(spare.pidfd)
            spare.kill()

    def restart(self) -> None:
        """Replace this process by a fresh zygote that keeps listening on the same socket."""
        self.stop_spare()  # forked from the code being replaced
        fd = self.listener.fileno()
        os.set_inheritable(fd, True)
        # The same interpreter flags and sys.path as this process: one started by the image's
        # launcher (`python -IS`) has no `site`, so `python -m plugin` would not find itself.
        arguments = ["serve", "--socket", self.path, "--max-requests", str(self.max_requests)]
        argv = launcher.reexec_argv([*arguments, "--listen-fd", str(fd)])
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)  # noqa: S606 - this program, again


def _reset_signals() -> None:
    """A supervisor (or spare) does not inherit the zygote's handlers."""
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _set_name(name: bytes) -> None:
    """Set this process's name (/proc/PID/comm, what `ps` shows); best effort."""
    prctl = _prctl()
    if prctl is not None and name:
        prctl(PR_SET_NAME, name[:15], 0, 0, 0)


def wait_as_spare(control: socket.socket, zygote: Zygote) -> int:
    """The spare: wait for a connection from the zygote, then supervise it (see `Spare`)."""
    _set_name(SPARE_NAME)
    _set_subreaper()  # a property of this process, not of a request: done while idle
    waiting = Waiting.fork(zygote, control)
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    try:
        message, fds, _, _ = socket.recv_fds(control, 64, 1, flags)
    except OSError:
        return 0
    control.close()
    if len(fds) != 1 or not message.isdigit():
        _close_all(fds)
        if waiting is not None:
            waiting.dispose()
        return 0  # the zygote went away (or re-exec'd): this spare's code may be stale
    _set_name(zygote.name)
    zygote.served = int(message)
    return supervise(socket.socket(fileno=fds[0]), zygote, waiting)


class Waiting:
    """A worker forked by a spare before its request: the spare's second fork, and its
    child's first copy-on-write faults, are off the request's path too.

    It holds nothing of a request: it waits (named like the spare) on a socket pair for the
    request as the client sent it, with the client's descriptors, then reads the scratch
    directory's path on a pipe and runs `work` exactly as a worker forked for the request.
    It dies with its spare (PR_SET_PDEATHSIG while it waits; the socket's end otherwise).
    """

    def __init__(self, pid: int, channel: socket.socket, setup_fd: int, report_fd: int) -> None:
        self.pid = pid
        self.channel = channel
        self.setup_fd = setup_fd
        self.report_fd = report_fd

    @classmethod
    def fork(cls, zygote: Zygote, control: socket.socket) -> Waiting | None:
        """Fork the worker (None if that fails: the request's worker is forked for it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        setup_read, setup_write = os.pipe()
        report_read, report_write = os.pipe()  # close-on-exec: helm and kustomize never hold it
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            _close_all([setup_read, setup_write, report_read, report_write])
            return None
        if pid == 0:  # pragma: no cover - the worker, measured through the client
            try:
                control.close()
                ours.close()
                _close_all([setup_write, report_read])
                wait_as_worker(theirs, setup_read, report_write, zygote, parent)
            finally:
                os._exit(70)
        theirs.close()
        _close_all([setup_read, report_write])
        return cls(pid, ours, setup_write, report_read)

    def start(self, request: Request, scratch: str) -> bool:
        """Give the worker its request; False if it is gone (one is forked instead)."""
        message = client.MAGIC + len(request.raw).to_bytes(8, "big") + request.raw
        try:
            os.write(self.setup_fd, os.fsencode(scratch) + b"\n")
            sent = socket.send_fds(self.channel, [message], request.fds)
            if sent < len(message):
                self.channel.sendall(message[sent:])
        except OSError:
            return False
        finally:
            self.channel.close()
            with contextlib.suppress(OSError):
                os.close(self.setup_fd)
            self.setup_fd = -1
        return True

    def dispose(self) -> None:
        """End a worker that gets no request (refused, status, or the client gave up)."""
        self.channel.close()
        _close_all([self.setup_fd, self.report_fd])
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def wait_as_worker(
    channel: socket.socket, setup_fd: int, report_fd: int, zygote: Zygote, parent: int
) -> None:
    """The waiting worker: its request, its scratch directory, then `work` (see `Waiting`)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        return  # the spare died before the line above
    if zygote.prefault:
        # While idle, take the copy-on-write faults its render would take (serve.prefault);
        # a request arriving meanwhile stops it.
        prefault.populate_private_memory(lambda: bool(select.select([channel], [], [], 0)[0]))
    select.select([channel], [], [])  # no timeout: a spare waits as long as it must
    try:
        request = receive(channel)
    except (ProtocolError, OSError):
        return  # the spare went away, or gave the request to another worker
    scratch = b""
    while not scratch.endswith(b"\n"):
        chunk = os.read(setup_fd, 4096)
        if not chunk:
            return
        scratch += chunk
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)  # from now on as a worker forked for its request
    channel.close()
    os.close(setup_fd)
    _set_name(zygote.name)
    work(request, os.fsdecode(scratch[:-1]), zygote.entry, report_fd)


def _reap(signum: int, frame: FrameType | None) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    path: str,
    max_requests: int,
    entry: Entry,
    *,
    listen_fd: int | None = None,
    ready_fd: int = -1,
    warm: Warm | None = None,
) -> None:
    """Run the zygote until SIGTERM (or until its socket file is taken away)."""
    _ensure_standard_fds()
    if listen_fd is not None:
        listener = socket.socket(fileno=listen_fd)
        os.set_inheritable(listen_fd, False)
    else:
        listener = listen(path)
    zygote = Zygote(listener, path, max_requests, entry)
    zygote.prefault = os.environ.get(PREFAULT_SETTING, "").strip().lower() not in client.OFF
    with contextlib.suppress(OSError), open("/proc/self/comm", "rb") as handle:
        zygote.name = handle.read().strip()
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        zygote.inode = (info.st_dev, info.st_ino)
    try:
        preload(warm)
        # A spare killed while it waits (restart, SIGTERM) leaves its waiting worker, which
        # dies with it: the zygote reaps it (in Argo CD, PID 1 is the cmp-server, which does not).
        _set_subreaper()
        loaded = code_stamp()
        zygote.watch = CodeWatch.start(loaded)  # before the stamp: no change falls between
        zygote.stamp = code_stamp() if zygote.watch is not None else loaded
        tempfile.gettempdir()
        zygote.temp_settings = temp_settings()
        signal.signal(signal.SIGCHLD, _reap)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _reap(signal.SIGCHLD, None)
        if ready_fd >= 0:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        if listen_fd is None:
            _say(f"zygote {os.getpid()} serves {path}")
        zygote.loop()
    finally:
        zygote.stop_spare()
        if zygote.own_socket():
            with contextlib.suppress(OSError):
                os.unlink(path)
        listener.close()


# ---------------------------------------------------------------------------- one request


@dataclass
class Request:
    kind: str
    version: str
    package: str
    umask: int
    stdio: list[tuple[str, str, bool, bool]]
    argv0: str
    argv: list[str]
    env: dict[bytes, bytes]
    fds: list[int]
    #: The payload as received, passed on as it is to a worker forked in advance (`Waiting`).
    raw: bytes = b""


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def parse_payload(body: bytes, fds: list[int]) -> Request:
    """Decode the NUL-separated fields of a request (see plugin.serve.client)."""
    fields = body.split(b"\0")
    try:
        kind, version, package, umask = (f.decode() for f in fields[:4])
        stdio = []
        for raw in fields[4:7]:
            encoding, errors, line, through = raw.decode().split("|")
            stdio.append((encoding, errors, line == "1", through == "1"))
        argv0 = os.fsdecode(fields[7])
        argc = int(fields[8])
        argv = [os.fsdecode(arg) for arg in fields[9 : 9 + argc]]
        envc = int(fields[9 + argc])
        env_fields = fields[10 + argc :]
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ProtocolError("malformed request") from None
    if len(argv) != argc or len(env_fields) != envc or not umask.isdigit():
        raise ProtocolError("malformed request")
    env: dict[bytes, bytes] = {}
    for item in env_fields:
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            raise ProtocolError("malformed environment")
        env[key] = value
    return Request(kind, version, package, int(umask), stdio, argv0, argv, env, fds)


def receive(conn: socket.socket) -> Request:
    """Read one request and its descriptors from the client."""
    conn.settimeout(REQUEST_TIMEOUT_SECONDS)
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    data, fds, msg_flags, _ = socket.recv_fds(conn, 65536, _DESCRIPTORS + 1, flags)
    try:
        if msg_flags & getattr(socket, "MSG_CTRUNC", 0) or len(fds) != _DESCRIPTORS:
            raise ProtocolError(f"expected {_DESCRIPTORS} descriptors, got {len(fds)}")
        header = len(client.MAGIC) + 8
        while len(data) < header:
            chunk = conn.recv(header - len(data))
            if not chunk:
                raise ProtocolError("truncated request")
            data += chunk
        if not data.startswith(client.MAGIC):
            raise ProtocolError("not a request of this protocol")
        length = int.from_bytes(data[len(client.MAGIC) : header], "big")
        if length > client.MAX_REQUEST_BYTES:
            raise ProtocolError("request too large")
        body = bytearray(data[header:])
        while len(body) < length:
            chunk = conn.recv(min(1 << 20, length - len(body)))
            if not chunk:
                raise ProtocolError("truncated request")
            body += chunk
        raw = bytes(body[:length])
        request = parse_payload(raw, list(fds))
        request.raw = raw
        return request
    except BaseException:
        _close_all(list(fds))
        raise


def _refuse(conn: socket.socket, reason: str) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(b"R" + reason.encode("utf-8", "replace").replace(b"\n", b" ") + b"\n")


@functools.cache
def _libc() -> Any:
    """The C library (ctypes), or None where it cannot be loaded."""
    try:
        return libc()
    except OSError:
        return None


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once (the zygote does it before forking: the first ctypes call
    of a process sets up libffi, which writes a probe file)."""
    try:
        return _libc().prctl  # type: ignore[no-any-return]
    except AttributeError:
        return None


def _set_subreaper() -> None:
    """Orphans of the worker (helm, kustomize) are re-parented to the supervisor, not init."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_of(parent: int) -> list[int]:
    """Processes whose parent is `parent`, zombies included.

    Read from `/proc/PID/task/TID/children` (one small file per thread of `parent`); only a
    kernel without CONFIG_PROC_CHILDREN makes it read the status of every process of the
    machine, which on a busy node costs more than the render of a small application.
    """
    try:
        tasks = os.listdir(f"/proc/{parent}/task")
        found: list[int] = []
        for tid in tasks:
            with open(f"/proc/{parent}/task/{tid}/children", "rb") as handle:
                found.extend(int(pid) for pid in handle.read().split())
    except FileNotFoundError:
        return _children_by_scan(parent)
    except OSError:
        return _children_by_scan(parent)
    return found


def _children_by_scan(parent: int) -> list[int]:
    """`children_of` the slow way: the parent field of every process in /proc."""
    from plugin.render.process import process_table  # only on kernels without the fast way

    return [pid for pid, (ppid, _, _) in process_table().items() if ppid == parent]


def sweep() -> None:
    """Kill and reap every process left under the supervisor (with their process groups)."""
    me = os.getpid()
    for _ in range(50):
        children = children_of(me)
        if not children:
            break
        for pid in children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def temp_settings() -> tuple[str | None, ...]:
    """The variables `tempfile` chooses its directory from (then /tmp, /var/tmp, /usr/tmp)."""
    return tuple(os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP"))


def _scratch(env: dict[bytes, bytes], zygote: Zygote) -> str:
    """A private directory for the request's temporary files, where the client's TMPDIR is.

    `tempfile` finds its directory by creating and writing a probe file in each candidate;
    the zygote did that once, so it is done again only when the client's variables differ.
    """
    os.environb.clear()
    os.environb.update(env)
    if temp_settings() != zygote.temp_settings:
        tempfile.tempdir = None
    return tempfile.mkdtemp(prefix="plugin-request-")


def supervise(conn: socket.socket, zygote: Zygote, waiting: Waiting | None = None) -> int:
    """The supervisor of one request (runs in the zygote's forked child, or in a spare with
    the worker it forked in advance: `waiting`)."""
    try:
        return _supervise(conn, zygote, waiting)
    finally:
        if waiting is not None and waiting.pid > 0:
            waiting.dispose()  # the request needed no worker, or it was not handed over


def _supervise(conn: socket.socket, zygote: Zygote, waiting: Waiting | None) -> int:
    try:
        request = receive(conn)
    except (ProtocolError, OSError) as exc:
        _refuse(conn, str(exc) or type(exc).__name__)
        return 0
    if request.kind == "status":
        _close_all(request.fds)
        with contextlib.suppress(OSError):
            conn.sendall(b"A" + zygote.status_text().encode())
        return 0
    package = client.package_dir()
    if request.kind != "run" or (request.version, request.package) != (__version__, package):
        _close_all(request.fds)
        _refuse(
            conn,
            f"the zygote runs {__version__} from {package}, the client "
            f"{request.version} from {request.package}",
        )
        return 0
    try:
        conn.sendall(b"A")
        go = conn.recv(1)
    except OSError:
        go = b""
    if go != b"G":  # the client gave up and renders itself
        _close_all(request.fds)
        return 0
    conn.settimeout(None)
    _set_subreaper()  # done by a spare already; one prctl when forked for the request
    scratch = _scratch(request.env, zygote)
    if waiting is not None and waiting.start(request, scratch):
        pid, report_read = waiting.pid, waiting.report_fd
        waiting.pid = -1  # the request's worker now: `_watch` waits for it
    else:
        if waiting is not None:
            waiting.dispose()
            waiting.pid = -1
        report_read, report_write = os.pipe()  # close-on-exec: helm and kustomize never hold it
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker, measured through the client
            try:
                conn.close()
                os.close(report_read)
                work(request, scratch, zygote.entry, report_write)
            finally:
                os._exit(70)
        os.close(report_write)
    _close_all(request.fds)
    try:
        wait_status, client_gone, reported = _watch(conn, pid, report_read)
    finally:
        os.close(report_read)
    sweep()  # when the client has the status, no process of its render is left but the worker
    if not client_gone and not reported:
        if os.WIFSIGNALED(wait_status):
            reply = b"K%d\n" % os.WTERMSIG(wait_status)
        else:
            reply = b"S%d\n" % os.waitstatus_to_exitcode(wait_status)
        with contextlib.suppress(OSError):
            conn.sendall(reply)
    # After the status: the client need not wait for it, nothing reads the directory any more
    # (its processes are gone) and nothing secret is in it (the guide's rule).
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _watch(conn: socket.socket, pid: int, report_fd: int) -> tuple[int, bool, bool]:
    """Wait for the worker; relay the client's signals; kill the worker if the client goes.

    Returns the worker's wait status, whether the client went away first, and whether the
    client already has its status (the worker reported it early: `_early_status`).
    """
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    poller.register(report_fd, select.POLLIN)
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    return os.waitpid(pid, 0)[1], False, False
                if fd == report_fd:
                    poller.unregister(report_fd)
                    if _early_status(conn, pid, report_fd):
                        return _after_work(pidfd, pid), False, True
                    continue
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                if not data:  # the client exited or was killed: so is its render
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                    return os.waitpid(pid, 0)[1], True, False
                for byte in data:
                    if byte in b"TI":
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGTERM if byte == ord("T") else signal.SIGINT)
    finally:
        os.close(pidfd)


def _early_status(conn: socket.socket, pid: int, report_fd: int) -> bool:
    """Forward the status the worker reported before its after-work; False to wait as before.

    The worker reports only once its command has printed everything and it has closed its
    copies of the client's stdin, stdout and stderr (see `work`). The status goes out at once
    only when no process but the worker is left under this supervisor: an orphan of the render
    (a helm plugin that stayed behind) may hold the client's stdout, which Argo CD reads to its
    end, so then the sweep comes first, as for a worker that did not report.
    """
    try:
        data = os.read(report_fd, 16)
    except OSError:
        return False
    if not (data.endswith(b"\n") and data[:-1].isdigit()):
        return False  # the worker ended (or failed) before reporting: its exit status says it
    if set(children_of(os.getpid())) != {pid}:
        return False
    with contextlib.suppress(OSError):
        conn.sendall(b"S" + data)
    return True


def _after_work(pidfd: int, pid: int) -> int:
    """Wait for a worker whose client has its status (bounded: `AFTER_WORK_SECONDS`)."""
    ready, _, _ = select.select([pidfd], [], [], AFTER_WORK_SECONDS)
    if not ready:
        _say("a worker's after-work outlasted its limit; killed")
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _stream(fd: int, spec: tuple[str, str, bool, bool], write: bool) -> io.TextIOWrapper:
    """A standard stream built the way the client's interpreter built its own."""
    encoding, errors, line_buffering, write_through = spec
    raw = io.FileIO(fd, "w" if write else "r", closefd=False)
    buffer: io.RawIOBase | io.BufferedIOBase
    if write and write_through:
        buffer = raw
    elif write:
        buffer = io.BufferedWriter(raw)
    else:
        buffer = io.BufferedReader(raw)
    return io.TextIOWrapper(
        buffer,
        encoding=encoding,
        errors=errors,
        newline="\n",
        line_buffering=line_buffering,
        write_through=write_through,
    )


class _Reporter:
    """The worker's early status (`Report`): the client may go on while the after-work runs.

    Called by the command line when everything it prints is out (before the reference index
    record of a successful `generate`), else by `work` once the command returned and its
    streams are flushed. It flushes the standard streams once more, replaces the client's
    stdin, stdout and stderr with /dev/null (this process held the last copies; Argo CD reads
    stdout to its end, so the client's exit alone does not end the request), then writes the
    status to the supervisor, which forwards it. Nothing is reported while a child process of
    the worker is alive (it may hold those descriptors): then the supervisor's sweep comes
    first, as before. Whatever happens afterwards, the worker exits with the status reported.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.code: int | None = None

    def __call__(self, code: int) -> None:
        if self.code is not None or self.fd < 0:
            return
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            if children_of(os.getpid()):
                return
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            os.close(null)
            self.code = code & 0xFF
            os.write(self.fd, b"%d\n" % self.code)
        except Exception:
            return  # the supervisor waits for this process's exit status instead
        finally:
            if self.code is not None:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = -1


def work(request: Request, scratch: str, entry: Entry, report_fd: int = -1) -> None:
    """The worker: become the client's process, run the command line, exit with its status."""
    import fcntl

    os.setsid()
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in request.fds]
    _close_all(request.fds)
    for target, fd in enumerate(high[:3]):
        os.dup2(fd, target)
    os.fchdir(high[3])
    _close_all(high)
    os.umask(request.umask)
    os.environb.clear()
    os.environb.update(request.env)
    tempfile.tempdir = scratch
    sys.argv = [request.argv0, *request.argv]
    sys.stdin = _stream(0, request.stdio[0], write=False)
    sys.stdout = _stream(1, request.stdio[1], write=True)
    sys.stderr = _stream(2, request.stdio[2], write=True)
    report = _Reporter(report_fd)
    code: int = 1
    try:
        code = entry(report)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        # Reported here when the command line did not: only the process's exit is left, which
        # for a process of this size (unmapping the zygote's heap) is not free.
        with contextlib.suppress(BaseException):
            report(code)
        os._exit(report.code if report.code is not None else code & 0xFF)
