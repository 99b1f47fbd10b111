"""Running renderer programs (helm, kustomize) under the render-wide deadline.

- Each child gets its own process group; when the deadline passes, or the plugin receives
  SIGTERM, the whole group is killed (helm's own children included).
- Children get a reduced environment (`child_environment`): no Vault/AVP credentials and
  nothing the Application set (`ARGOCD_ENV_*`).
- stderr is captured, shortened, cleared of Helm's values dumps and of every known secret
  value (`Redactor`) before it can appear in an error message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from plugin.errors import PluginError, RenderError

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
    }
)
_STDERR_MAX_LINES = 12
_STDERR_MAX_CHARS = 1500
#: Lines from which Helm starts dumping values (`--debug` output); nothing after them is kept.
_VALUES_DUMP_MARKERS = ("USER-SUPPLIED VALUES:", "COMPUTED VALUES:", "HOOKS:", "MANIFEST:")


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


@dataclass
class Redactor:
    """Replaces known secret values (and a Helm values dump) in text meant for users."""

    values: set[str] = field(default_factory=set)

    def add(self, values: Iterable[object]) -> None:
        for value in values:
            if isinstance(value, str) and len(value.strip()) >= 3:
                self.values.add(value)
                self.values.update(line for line in value.splitlines() if len(line.strip()) >= 3)

    def clean(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, "<redacted>")
        return text


def child_environment(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a renderer child: a small allow-list of the sidecar's, plus `extra`."""
    env = {
        key: value for key, value in environ.items() if key in _INHERITED or key.startswith("LC_")
    }
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
            kept.append(line.rstrip())
    if redactor is not None:
        kept = [redactor.clean(line) for line in kept]
    if len(kept) > _STDERR_MAX_LINES:
        kept = ["…", *kept[-_STDERR_MAX_LINES:]]
    out = "\n".join(kept)
    if len(out) > _STDERR_MAX_CHARS:
        out = "…" + out[-_STDERR_MAX_CHARS:]
    return out


# ---------------------------------------------------------------------------- child tracking

_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()
_terminating = threading.Event()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


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
) -> Completed:
    """Run one renderer command; raise RenderError (or StageTimeoutError) naming `stage` on failure.

    The command line itself is never put into messages (it may carry --set values).
    """
    deadline.check(stage)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=str(cwd),
            env=dict(env),
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise RenderError(f"{stage}: program {argv[0]} not found") from None
    except PermissionError:
        raise RenderError(f"{stage}: program {argv[0]} is not executable") from None
    with _children_lock:
        _children.add(proc)
    try:
        try:
            out, err = proc.communicate(stdin_data, timeout=max(deadline.remaining(), 0.001))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise deadline.expired_during(stage) from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        with _children_lock:
            _children.discard(proc)
    seconds = time.monotonic() - started
    stderr = clean_stderr(err, redactor)
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
