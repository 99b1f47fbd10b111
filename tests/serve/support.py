"""A real zygote (`plugin serve`) on a socket of the test, and helpers to run the real client."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
#: How the tests start `plugin` unless told otherwise: the package's `python -m plugin`.
MODULE = (PYTHON, "-m", "plugin")


@dataclass
class Run:
    code: int
    stdout: bytes
    stderr: bytes


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A sidecar-like environment whose socket is private to the test."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PLUGIN_CACHE_DIR": str(tmp / "cache"),
        "PLUGIN_SERVE_SOCKET": str(tmp / "run" / "serve.sock"),
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env


def file_env(tmp: Path, secrets: str, **extra: str) -> dict[str, str]:
    """`base_env` with the file backend reading `secrets` (YAML text) from the test's directory."""
    path = tmp / "secrets.yaml"
    path.write_text(secrets)
    return base_env(tmp, AVP_TYPE="file", AVP_FILE_PATH=str(path), **extra)


@contextlib.contextmanager
def serve_exec(
    argv: Sequence[str], env: Mapping[str, str], log: Path
) -> Iterator[tuple[int, dict[str, str]]]:
    """What the sidecar runs, `plugin serve --exec PROGRAM`, where PROGRAM is `serve --status`:
    yields the exit status and the status printed; the detached zygote is stopped afterwards.
    The zygote keeps the command's stderr (the container log): it goes to the file `log`."""
    with log.open("wb") as handle:
        run = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=env["HOME"],
            stdout=subprocess.PIPE,
            stderr=handle,
            timeout=120,
            check=False,
        )
    status = dict(line.split(": ", 1) for line in run.stdout.decode().splitlines())
    try:
        yield run.returncode, status
    finally:
        if "pid" in status:
            os.kill(int(status["pid"]), signal.SIGTERM)


def plugin(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    stdin: bytes = b"",
    timeout: float = 120,
    command: Sequence[str] = MODULE,
) -> Run:
    """The real console entry (`python -m plugin`, or `command`), as Argo CD would start it."""
    proc = subprocess.run(
        [*command, *argv],
        env=dict(env),
        cwd=cwd or env["HOME"],  # not the repository: `-m` puts the working directory first
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


class Zygote:
    """`plugin serve` in the foreground (`command serve`), stopped with SIGTERM."""

    def __init__(self, env: Mapping[str, str], *args: str, command: Sequence[str] = MODULE) -> None:
        self.env = dict(env)
        self.command = tuple(command)
        self.logged = ""
        self.proc = subprocess.Popen(
            [*command, "serve", *args],
            env=self.env,
            cwd=self.env["HOME"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.status() is None:
            assert self.proc.poll() is None, "plugin serve exited"
            assert time.monotonic() < deadline, "plugin serve did not start"
            time.sleep(0.1)

    def status(self) -> dict[str, str] | None:
        run = plugin(["serve", "--status"], self.env, command=self.command)
        if run.code != 0:
            return None
        return dict(re.findall(r"^([\w-]+): (.*)$", run.stdout.decode(), re.M))

    def served(self) -> int:
        """Connections taken before this `--status` one."""
        found = self.status()
        assert found is not None, "the zygote does not answer"
        return int(found["served"])

    @property
    def pid(self) -> int:
        found = self.status()
        assert found is not None
        return int(found["pid"])

    def stderr(self) -> str:
        """What the zygote logged (once it stopped)."""
        return self.logged

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stderr and not self.proc.stderr.closed:
            self.logged = self.proc.stderr.read().decode()
            self.proc.stderr.close()


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


#: The process name of a zygote's spare supervisor while it waits (plugin.serve.server).
SPARE_NAME = "plugin-spare"


def name_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def descendants(root: int, *, spares: bool = False) -> set[int]:
    """Every living process under `root` (from /proc); a waiting spare supervisor of a zygote
    (and what it forked) only with `spares`: it belongs to no request."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            parent = parent_of(int(name))
            if parent is not None:
                parents[int(name)] = parent
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        if not spares:
            frontier = {pid for pid in frontier if name_of(pid) != SPARE_NAME}
        found |= frontier
    return found


def spares_of(root: int) -> list[int]:
    """The waiting spare supervisors among the children of a zygote `root`."""
    return sorted(
        pid
        for pid in descendants(root, spares=True)
        if parent_of(pid) == root and name_of(pid) == SPARE_NAME
    )


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"
