"""Landlock confinement of renderer children: a second wall behind the path checks.

The sidecar can read every team's credentials (service-account token, Vault token cache,
operator files). Helm and Kustomize run tenant templates; the path checks of `plugin.render`
keep tenant strings away from those files, and Landlock makes them unreadable to the
renderer even if one of those checks is wrong. Landlock is unprivileged (Linux >= 5.13): a
process restricts itself and everything it starts, irrevocably.

How a child is confined:

1. In the plugin (parent), `prepare()` builds a Landlock *ruleset* from a `Policy`: read and
   execute beneath a few paths (the work copy, the tool binaries, system libraries, CA
   bundles, a handful of `/etc` files), read and write beneath the render's scratch
   directory, and, from ABI 4, no TCP bind and TCP connect only to the ports the policy
   names (none for `helm template`); from ABI 6, no abstract unix socket and no signal out of
   the domain. Everything that can fail (opening paths, unknown access rights) fails here, in
   the parent, with a clean error.
2. In the child, between fork and exec (`child_setup`, a `subprocess` `preexec_fn`), four
   system calls: `PR_SET_PDEATHSIG(SIGKILL)` (the child dies with the plugin), a check that
   the parent is still alive, `PR_SET_NO_NEW_PRIVS` and `landlock_restrict_self`.

   Or, when something else kills the child if the plugin dies (a zygote worker, whose
   supervisor kills the worker's process group and every orphan), no code in the child at
   all: a short-lived thread of the plugin confines itself (`confine_thread`) and starts the
   child, which inherits the thread's domain; see `plugin.render.process` for why.

`preexec_fn` is documented as unsafe with threads because a lock held by another thread at
fork time stays locked in the child. The function below takes no Python-level lock, imports
nothing and allocates only small objects (pymalloc, protected by the GIL the child holds);
glibc resets its malloc locks in the child of a fork. The plugin starts renderers from the
thread that runs the render, which waits for the child to end (`plugin.render.process.run`
kills it in `finally`), so PDEATHSIG — which fires when the *thread* that forked exits —
never fires early. The alternative, an exec wrapper (`python -m plugin.security.sandbox`),
costs a second interpreter start-up per renderer; see `bench/sandbox_startup.py`.

Access rights are chosen per ABI: each version adds rights (2: REFER, 3: TRUNCATE, 4: TCP,
5: IOCTL_DEV, 6: scoping); only those the kernel knows are "handled" (denied unless a rule
allows them), so the same code runs on every kernel. ABI 7 adds audit-log flags only.

`PLUGIN_SANDBOX` (sidecar environment only): `auto` (default) confines when the kernel offers
Landlock, `required` refuses to render without it, `off` never confines.
`PLUGIN_SANDBOX_TEST_ABI` (test hook, process environment only) forces the ABI the plugin
believes the kernel has, e.g. `0` to simulate a kernel without Landlock.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin.errors import ConfigError, PluginError
from plugin.libc import PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, libc

__all__ = [
    "MODE_SETTING",
    "Policy",
    "Prepared",
    "SandboxError",
    "Status",
    "abi_version",
    "confine_thread",
    "mode",
    "prepare",
    "status",
    "system_read_paths",
]

MODE_SETTING = "PLUGIN_SANDBOX"
TEST_ABI_SETTING = "PLUGIN_SANDBOX_TEST_ABI"
MODES = ("auto", "required", "off")

# System call numbers: the same on every architecture (generic numbers added in 5.13).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

# Filesystem access rights, by the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
#: Rights that make sense on a file (not a directory); others are refused by the kernel.
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_RIGHTS = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
WRITE_RIGHTS = (1 << 16) - 1  # everything beneath the path (filtered by the ABI)
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6


class SandboxError(PluginError):
    """The sandbox was required but cannot be applied."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


@functools.cache
def kernel_abi() -> int:
    """The Landlock ABI version the kernel offers (0: none), asked once per process."""
    if sys.platform != "linux":
        return 0
    version = libc().syscall(
        ctypes.c_long(_SYS_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    return max(0, int(version))


def abi_version(environ: Mapping[str, str]) -> int:
    """The ABI to use: the kernel's, or the test hook's when it is lower (never higher)."""
    forced = environ.get(TEST_ABI_SETTING, "").strip()
    found = kernel_abi()
    if forced:
        try:
            return max(0, min(found, int(forced)))
        except ValueError:
            raise ConfigError(f"{TEST_ABI_SETTING} must be a number, got {forced!r}") from None
    return found


def mode(environ: Mapping[str, str]) -> str:
    """`PLUGIN_SANDBOX` from the sidecar's own environment (an Application cannot change it)."""
    text = environ.get(MODE_SETTING, "").strip().lower() or "auto"
    if text not in MODES:
        raise ConfigError(f"{MODE_SETTING} must be one of {', '.join(MODES)}, got {text!r}")
    return text


@dataclass(frozen=True)
class Status:
    """What the sandbox does in this process: for `--verbose` and `plugin check`."""

    mode: str
    abi: int

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.abi >= 1

    def describe(self) -> str:
        if self.mode == "off":
            return "off (PLUGIN_SANDBOX=off): renderers run unconfined"
        if self.abi < 1:
            if self.mode == "required":
                return "unavailable: the kernel offers no Landlock and PLUGIN_SANDBOX=required"
            return "unavailable: the kernel offers no Landlock; renderers run unconfined"
        parts = ["filesystem"]
        if self.abi >= 4:
            parts.append("TCP")
        if self.abi >= 6:
            parts.append("signals and abstract sockets")
        return f"Landlock ABI {self.abi} ({', '.join(parts)}), PLUGIN_SANDBOX={self.mode}"


def status(environ: Mapping[str, str]) -> Status:
    return Status(mode(environ), abi_version(environ))


def require_available(environ: Mapping[str, str]) -> Status:
    """The status; SandboxError when `required` and the kernel has no Landlock (fail closed)."""
    found = status(environ)
    if found.mode == "required" and found.abi < 1:
        raise SandboxError(_UNAVAILABLE)
    return found


_UNAVAILABLE = (
    "PLUGIN_SANDBOX=required but this kernel offers no Landlock (Linux >= 5.13 with landlock "
    "in the lsm= list); refusing to run renderers unconfined"
)


# ---------------------------------------------------------------------------- policies

#: Files and directories under /etc that Go programs and TLS need; nothing else of /etc.
_ETC = (
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/gitconfig",
)
_SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
_DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


def system_read_paths(environ: Mapping[str, str]) -> list[str]:
    """System libraries, CA bundles and the few /etc files a Go renderer (or git) reads.

    Not /proc (another process's environment would be readable), not /home, /var, /run,
    /tmp or the rest of /etc (operator files, service-account token, caches).
    """
    paths = [*_SYSTEM, *_ETC]
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        value = environ.get(name, "").strip()
        if value:
            paths.extend(part for part in value.split(os.pathsep) if os.path.isabs(part))
    return paths


@dataclass(frozen=True)
class Policy:
    """What one renderer child may touch.

    `connect_ports`: None leaves TCP connect unrestricted (`helm pull`, Kustomize fetching
    remote resources); a tuple allows connecting to those ports only (empty: no TCP at all).
    TCP bind is always denied (from ABI 4).
    """

    read: Sequence[str] = ()
    write: Sequence[str] = ()
    connect_ports: Sequence[int] | None = ()
    devices: Sequence[str] = field(default=_DEVICES_RW)

    def with_read(self, paths: Iterable[str]) -> Policy:
        return Policy([*self.read, *paths], self.write, self.connect_ports, self.devices)


def program_paths(*programs: str) -> list[str]:
    """Each program and the directory holding it (after following symlinks): exec needs both
    the link and its target."""
    out: list[str] = []
    for program in programs:
        if not program:
            continue
        for path in (program, os.path.realpath(program)):
            out.append(os.path.dirname(path))
    return out


@dataclass
class Prepared:
    """A ruleset built in the parent, ready to be enforced in one child (then closed)."""

    ruleset_fd: int
    parent_pid: int

    def close(self) -> None:
        if self.ruleset_fd >= 0:
            os.close(self.ruleset_fd)
            self.ruleset_fd = -1


def _fs_rights(abi: int) -> int:
    rights = 0
    for version, mask in _FS_BY_ABI.items():
        if abi >= version:
            rights = mask
    return rights


def _syscall(number: int, *args: Any) -> int:
    lib = libc()
    result = int(lib.syscall(ctypes.c_long(number), *args))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def _add_path(ruleset: int, path: str, access: int, handled: int) -> None:
    """Allow `access` beneath `path`; a path that does not exist is skipped."""
    try:
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(handle).st_mode):
            access &= _FILE_RIGHTS
        attr = _PathBeneathAttr(access & handled, handle)
        _syscall(
            _SYS_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(handle)


def prepare(policy: Policy, found: Status) -> Prepared | None:
    """A ruleset for `policy`, or None when the sandbox is off or unavailable in `auto` mode.

    Raises SandboxError when it is required and cannot be built.
    """
    if found.mode == "required" and found.abi < 1:
        raise SandboxError(_UNAVAILABLE)
    if not found.active:
        return None
    abi = found.abi
    handled_fs = _fs_rights(abi)
    attr = _RulesetAttr(handled_fs, 0, 0)
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP
        if policy.connect_ports is not None:
            attr.handled_access_net |= NET_CONNECT_TCP
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    try:
        ruleset = _syscall(
            _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        )
    except OSError as exc:
        if found.mode == "required":
            raise SandboxError(f"Landlock ruleset could not be created: {exc.strerror}") from None
        return None
    try:
        for path in policy.read:
            _add_path(ruleset, path, READ_RIGHTS, handled_fs)
        for path in policy.devices:
            _add_path(ruleset, path, FS_READ_FILE | FS_WRITE_FILE, handled_fs)
        for path in policy.write:
            _add_path(ruleset, path, WRITE_RIGHTS, handled_fs)
        if abi >= 4 and policy.connect_ports:
            for port in sorted(set(policy.connect_ports)):
                net = _NetPortAttr(NET_CONNECT_TCP, port)
                _syscall(
                    _SYS_ADD_RULE,
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_RULE_NET_PORT),
                    ctypes.byref(net),
                    ctypes.c_uint32(0),
                )
    except OSError as exc:
        os.close(ruleset)
        raise SandboxError(f"Landlock rule could not be added: {exc.strerror}") from None
    return Prepared(ruleset, os.getpid())


def child_setup(prepared: Prepared | None, parent_pid: int | None = None) -> Callable[[], None]:
    """The `preexec_fn` of a renderer child: die with the plugin, then enforce the ruleset.

    Runs in the forked child: system calls only (see the module docstring). A failure raises,
    and `subprocess` reports it to the parent, which fails the render (never runs unconfined
    once a ruleset was prepared).
    """
    lib = libc()
    prctl = lib.prctl
    syscall = lib.syscall
    if parent_pid is None:
        parent_pid = prepared.parent_pid if prepared is not None else os.getpid()
    parent = parent_pid
    ruleset = prepared.ruleset_fd if prepared is not None else -1
    sigkill = int(signal.SIGKILL)

    def setup() -> None:
        if prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_PDEATHSIG failed")
        if os.getppid() != parent:  # the plugin died before PDEATHSIG was set
            os._exit(137)
        if ruleset < 0:
            return
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)):
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")

    return setup


def confine_thread(prepared: Prepared) -> None:
    """Enforce the ruleset on the calling thread only, for the children it starts next.

    `PR_SET_NO_NEW_PRIVS` and `landlock_restrict_self` (without the TSYNC flag, ABI 8) act on
    the calling thread alone (prctl(2), landlock_restrict_self(2)), and a process cloned by
    that thread inherits its credentials, Landlock domain included. So a short-lived thread
    that calls this and then starts a renderer gives a child confined from its first
    instruction, without code between fork and exec (which forces `subprocess` to fork
    instead of vfork, see `plugin.render.process`); the process's other threads stay free.
    The thread must start nothing else and end afterwards: the restriction cannot be undone.

    Raises OSError when the kernel refuses; the caller must then start nothing.
    """
    lib = libc()
    if lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(error)}")
    restricted = lib.syscall(
        ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(prepared.ruleset_fd), ctypes.c_uint32(0)
    )
    if restricted != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"landlock_restrict_self failed: {os.strerror(error)}")


# ---------------------------------------------------------------------------- exec wrapper


def _main(argv: Sequence[str]) -> int:
    """`python -m plugin.security.sandbox [--read P]... [--write P]... [--net PORT]... -- CMD`.

    For measuring the exec-wrapper alternative and for confining a command by hand (for
    example to check what a renderer needs): runs CMD under the same rules as the plugin.
    """
    read: list[str] = []
    write: list[str] = []
    ports: list[int] = []
    rest = list(argv)
    while rest and rest[0] != "--":
        flag = rest.pop(0)
        if not rest:
            print(f"sandbox: {flag} needs a value", file=sys.stderr)
            return 2
        value = rest.pop(0)
        if flag == "--read":
            read.append(value)
        elif flag == "--write":
            write.append(value)
        elif flag == "--net":
            ports.append(int(value))
        else:
            print(f"sandbox: unknown flag {flag}", file=sys.stderr)
            return 2
    if not rest or len(rest) < 2:
        print("sandbox: usage: --read P --write P -- COMMAND...", file=sys.stderr)
        return 2
    command = rest[1:]
    environ = dict(os.environ)
    policy = Policy([*system_read_paths(environ), *read, *program_paths(command[0])], write, ports)
    prepared = prepare(policy, require_available(environ))
    child_setup(prepared, os.getppid())()
    os.execv(command[0], command)  # noqa: S606 - the caller's own command, no shell
    return 127  # pragma: no cover - execv does not return


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
