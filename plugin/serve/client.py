"""The client side of `plugin serve`: hand a command line to the zygote over its socket.

The console script (`plugin.__main__`) uses it before anything else, so start-up cost is the
point of this module. It imports nothing but what the interpreter has already loaded (`os`,
`sys`) and the two C modules that do the work: `_socket` (the socket object behind `socket`)
and `_signal`. The `socket` and `signal` wrappers are avoided on purpose: they build enums of
every constant at import, which cost about as much as the rest of this module's work (measured
with callgrind: 16 M of the client's 86 M instructions). `tests/serve/test_client_imports.py`
keeps this list closed.

Wire protocol (version 1) on a unix stream socket; the zygote only answers a peer of its own
UID, and the client only talks to a zygote of its own UID (`SO_PEERCRED` on both sides):

    client -> zygote  MAGIC, 8-byte length, payload (NUL-separated fields, see `_payload`),
                      with SCM_RIGHTS: stdin, stdout, stderr and the working directory
    zygote -> client  b"A" (accepted) or b"R" reason b"\\n" (refused: render here)
    client -> zygote  b"G" (go: from now on the request is the zygote's; no fallback)
    client -> zygote  b"T" / b"I" when the client gets SIGTERM / SIGINT (forwarded)
    zygote -> client  b"S" exit-status b"\\n", or b"K" signal-number b"\\n"

Anything unexpected before b"G" means "render in this process"; that is safe because the
zygote's child only starts (and touches stdout) after b"G".
"""

import _signal  # type: ignore[import-not-found]  # no stub; the C module behind `signal`
import _socket
import os
import sys

from plugin import __version__

TYPE_CHECKING = False  # typing itself is not imported: mypy reads the block below
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MAGIC = b"argocd-secrets-plugin/serve/1\0"
SOCKET_SETTING = "PLUGIN_SERVE_SOCKET"
SOCKET_NAME = "serve.sock"
APP_DIR = "argocd-secrets-plugin"
#: How long the client waits for the zygote to accept a request before rendering itself. Long
#: enough for a zygote on an overloaded node (fork and scheduling delays of seconds happen);
#: only a wedged zygote costs this much, once per request, before the in-process render.
ACCEPT_TIMEOUT_SECONDS = 20.0
#: Requests larger than this are refused by the zygote (argv + environment).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
OFF = frozenset({"off", "false", "0", "no"})


class UnavailableError(Exception):
    """The zygote cannot take this request; the reason goes to --verbose."""


def socket_path(environ: "Mapping[str, str]") -> str:
    """Where the zygote listens: PLUGIN_SERVE_SOCKET, else a private directory of the plugin.

    Default: `$XDG_RUNTIME_DIR/argocd-secrets-plugin/serve.sock` when the runtime directory is
    set, else `serve/serve.sock` in the plugin's cache directory (PLUGIN_CACHE_DIR, else
    `$XDG_CACHE_HOME/argocd-secrets-plugin`, else `$HOME/.cache/argocd-secrets-plugin`).
    Only the sidecar's environment is read: an Application's settings arrive as
    `ARGOCD_ENV_*` and cannot move the socket.
    """
    explicit = environ.get(SOCKET_SETTING, "").strip()
    if explicit:
        return os.path.abspath(explicit)
    runtime = environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return os.path.join(runtime, APP_DIR, SOCKET_NAME)
    cache = environ.get("PLUGIN_CACHE_DIR", "").strip()
    if not cache:
        xdg = environ.get("XDG_CACHE_HOME", "").strip()
        home = environ.get("HOME", "").strip() or os.path.expanduser("~")
        cache = os.path.join(xdg or os.path.join(home, ".cache"), APP_DIR)
    return os.path.join(os.path.abspath(cache), "serve", SOCKET_NAME)


def package_dir() -> str:
    """The installed plugin package: a zygote from another installation is not used."""
    import plugin

    return os.path.dirname(os.path.abspath(plugin.__file__ or ""))


def check_private_directory(path: str) -> None:
    """The socket's directory must be ours and closed to everybody else (mode 0700)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise UnavailableError(f"socket directory {path}: {exc.strerror}") from None
    if not (info.st_mode & 0o170000 == 0o040000):
        raise UnavailableError(f"socket directory {path} is not a directory")
    if info.st_uid != os.getuid():
        raise UnavailableError(f"socket directory {path} belongs to UID {info.st_uid}")
    if info.st_mode & 0o077:
        raise UnavailableError(f"socket directory {path} is open to others (mode {info.st_mode:o})")


def peer_uid(sock: _socket.socket) -> int:
    """UID of the process at the other end (struct ucred: pid, uid, gid)."""
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder)


def _stdio_field(stream: object) -> bytes:
    """How this interpreter set up a standard stream, so the child can build the same one."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    errors = getattr(stream, "errors", None) or "strict"
    line = "1" if getattr(stream, "line_buffering", False) else "0"
    through = "1" if getattr(stream, "write_through", False) else "0"
    return f"{encoding}|{errors}|{line}|{through}".encode()


def _payload(kind: str, argv: "Sequence[str]") -> bytes:
    """The request: NUL-separated fields (none of them can hold a NUL)."""
    umask = os.umask(0o022)
    os.umask(umask)
    fields = [
        kind.encode(),
        __version__.encode(),
        os.fsencode(package_dir()),
        str(umask).encode(),
        _stdio_field(sys.stdin),
        _stdio_field(sys.stdout),
        _stdio_field(sys.stderr),
        os.fsencode(sys.argv[0] if sys.argv else "plugin"),
        str(len(argv)).encode(),
        *(os.fsencode(arg) for arg in argv),
    ]
    env = [key + b"=" + value for key, value in os.environb.items()]
    fields.append(str(len(env)).encode())
    fields.extend(env)
    return b"\0".join(fields)


def _read_line(sock: _socket.socket, first: bytes) -> bytes:
    data = first
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise UnavailableError("the zygote closed the connection")
        data += chunk
        if len(data) > 4096:
            raise UnavailableError("the zygote sent an overlong line")
    return data[:-1]


def connect(path: str, timeout: float = ACCEPT_TIMEOUT_SECONDS) -> _socket.socket:
    """A connection to a zygote of this UID at `path` (UnavailableError otherwise)."""
    check_private_directory(os.path.dirname(path))
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        uid = peer_uid(sock)
        if uid != os.getuid():
            raise UnavailableError(f"the socket {path} is served by UID {uid}")
    except OSError as exc:
        sock.close()
        raise UnavailableError(f"no zygote at {path} ({exc.strerror or exc})") from None
    except UnavailableError:
        sock.close()
        raise
    return sock


def send_request(sock: _socket.socket, kind: str, argv: "Sequence[str]") -> None:
    """Send the request with stdin, stdout, stderr and the working directory; wait for b"A"."""
    body = _payload(kind, argv)
    message = MAGIC + len(body).to_bytes(8, "big") + body
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, cwd))  # C ints
        sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(message):
            sock.sendall(message[sent:])
    except OSError as exc:
        raise UnavailableError(f"sending the request failed ({exc.strerror or exc})") from None
    finally:
        os.close(cwd)
    try:
        answer = sock.recv(1)
        if answer == b"R":
            reason = _read_line(sock, b"").decode("utf-8", "replace")
            raise UnavailableError(f"the zygote refused the request: {reason}")
    except OSError as exc:
        raise UnavailableError(f"no answer from the zygote ({exc.strerror or exc})") from None
    if answer != b"A":
        reason = "the zygote closed the connection" if not answer else "protocol error"
        raise UnavailableError(reason)


def _forward(sock: _socket.socket) -> None:
    """SIGTERM/SIGINT of the client go to the child (it stops helm and prints its error)."""

    def on_signal(signum: int, frame: object) -> None:
        try:
            sock.send(b"T" if signum == _signal.SIGTERM else b"I")
        except OSError:
            os._exit(128 + signum)

    _signal.signal(_signal.SIGTERM, on_signal)
    _signal.signal(_signal.SIGINT, on_signal)


def wait_status(sock: _socket.socket) -> int:
    """The child's exit status; a child killed by a signal kills this process the same way."""
    sock.settimeout(None)
    try:
        first = sock.recv(1)
        line = _read_line(sock, b"") if first in (b"S", b"K") else b""
    except (OSError, UnavailableError):
        first, line = b"", b""
    if first == b"S" and line.isdigit():
        return int(line)
    if first == b"K" and line.isdigit():
        signum = int(line)
        if signum not in (_signal.SIGKILL, _signal.SIGSTOP):  # these have no handler to reset
            _signal.signal(signum, _signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    os.write(2, b"Error: plugin serve: the render process ended without a status\n")
    return 1


def run_in_zygote(argv: "Sequence[str]", environ: "Mapping[str, str]") -> int:
    """Run the request in the zygote; raises UnavailableError while falling back is still safe."""
    sock = connect(socket_path(environ))
    try:
        send_request(sock, "run", argv)
        try:
            sock.sendall(b"G")
        except OSError as exc:
            raise UnavailableError(f"the zygote went away ({exc.strerror or exc})") from None
        _forward(sock)
        return wait_status(sock)
    finally:
        sock.close()


def verbose(argv: "Sequence[str]") -> bool:
    """--verbose, --verbose-sensitive-output or an abbreviation argparse accepts."""
    return any(arg.startswith("--verb") for arg in argv)
