"""The only way a file reaches Helm's command line: a copy under a name the plugin generated.

Helm parses the text of its file arguments again: `--values` is a comma-separated list (CSV,
quotes included) and `--set-file` has its own `key=path,key=path` syntax with `\\` escapes.
A repository file whose *name* holds `,`, `\\,` or `=` passes any "inside the repository"
check on the whole name and then makes Helm read the absolute path that follows (the
service-account token, another team's cached Vault token).

Checking names more cleverly would be one more special case. Instead, every file Helm is given
(values files, `--set-file` sources, the Jinja2-merged values, inline and resolved values) is
first confined to the repository by the caller, then **copied** here into the render's private
scratch directory as `values-000.yaml`, `set-file-000`…, or, for content that must never touch
the disk (resolved and inline values), written to a sealed memory file that Helm opens as
`/proc/self/fd/N`. The command builder
(`plugin.render.helm.template_command`) only accepts `StagedFile`, which only `Staging`
creates, so a tenant-chosen name cannot be handed to Helm by mistake: mypy refuses it and the
builder checks the type again at run time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from pathlib import Path
from typing import Final

from plugin.errors import ConfigError, RenderError
from plugin.manifests.inputs import MAX_INPUT_SETTING, format_size

#: Characters of the scratch directory's path that no Helm parser treats specially (no `,`
#: `\` `=` `{` `"` quote, space or newline). The generated names use the same set.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]+")
#: Proof of origin: only this module holds it.
_ISSUED: Final = object()


class StagedFile:
    """A file the plugin wrote into the render's scratch directory under a generated name.

    Instances come from `Staging` only (the constructor wants a private token), so holding
    one proves that the path is plain text chosen by the plugin, never by a tenant.
    """

    __slots__ = ("_path", "label")

    def __init__(self, path: Path, label: str, token: object) -> None:
        if token is not _ISSUED:
            raise TypeError("StagedFile objects are created by Staging only")
        self._path = path
        #: What messages call it (the name the user wrote); never given to Helm.
        self.label = label

    @property
    def path(self) -> Path:
        return self._path

    def __str__(self) -> str:
        return str(self._path)

    def __repr__(self) -> str:
        return f"StagedFile({self._path.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StagedFile) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)


class Staging:
    """The render's Helm inputs: copies in a private directory (mode 0700, files 0600) and
    memory files. Use it as a context manager: the memory files are closed at the end.

    The directory is made with the first copy: most renders give Helm no values file of
    the repository, and a directory costs a tenth of a millisecond or more to make and again
    to remove on a journalled disk.

    `max_bytes` bounds each copied file (`PLUGIN_MAX_INPUT_SIZE`): a copy never reads more.
    `fds` are the memory files' descriptors, to hand to the child (`pass_fds`).
    """

    def __init__(self, directory: Path, max_bytes: int | None = None) -> None:
        self.fds: list[int] = []
        directory = Path(os.path.abspath(directory))
        if not _PLAIN_PATH.fullmatch(str(directory)):
            raise RenderError(
                "the render's scratch directory has characters that Helm would parse again "
                "(set TMPDIR to a path of letters, digits, '.', '_', '+', '-' and '/')"
            )
        self.directory = directory
        self.max_bytes = max_bytes
        self._counts: dict[str, int] = {}

    def _next(self, kind: str, suffix: str) -> Path:
        if not self._counts:
            self.directory.mkdir(mode=0o700, exist_ok=True)
        number = self._counts.get(kind, 0)
        self._counts[kind] = number + 1
        return self.directory / f"{kind}-{number:03d}{suffix}"

    def copy_values(self, source: Path, shown_as: str) -> StagedFile:
        """Copy a values file (already confined to the repository) as `values-NNN.yaml`."""
        return self._copy(source, self._next("values", ".yaml"), shown_as)

    def copy_set_file(self, source: Path, shown_as: str) -> StagedFile:
        """Copy a `--set-file` source (already confined to the repository) as `set-file-NNN`."""
        return self._copy(source, self._next("set-file", ""), shown_as)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def in_memory(self, text: str, label: str) -> StagedFile:
        """Generated values (resolved or inline) in a sealed anonymous memory file (memfd).

        They never touch the disk, even if the plugin is SIGKILLed. The child opens the file
        as `/proc/self/fd/N` (Helm 3 and 4 read `--values` from there, also under Landlock);
        the descriptor is passed with `pass_fds=staging.fds`.
        """
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is None:
            raise RenderError("resolved values need memfd_create (Linux >= 3.17); refused")
        fd = memfd_create("plugin-values", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.fds.append(fd)
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        os.lseek(fd, 0, os.SEEK_SET)
        return StagedFile(Path(f"/proc/self/fd/{fd}"), label, _ISSUED)

    def _copy(self, source: Path, target: Path, shown_as: str) -> StagedFile:
        # The source was confined by its real path; O_NOFOLLOW refuses a link swapped in since.
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            raise ConfigError(f"{shown_as} cannot be read") from None
        with os.fdopen(fd, "rb") as handle:
            if not _is_regular(handle.fileno()):
                raise ConfigError(f"{shown_as} is not a regular file")
            limit = self.max_bytes
            data = handle.read() if limit is None else handle.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise ConfigError(
                f"{shown_as} is larger than {format_size(limit)} ({MAX_INPUT_SETTING}); refused"
            )
        _write_new(target, data)
        return StagedFile(target, shown_as, _ISSUED)


_SEALS = (
    getattr(fcntl, "F_SEAL_SEAL", 1)
    | getattr(fcntl, "F_SEAL_SHRINK", 2)
    | getattr(fcntl, "F_SEAL_GROW", 4)
    | getattr(fcntl, "F_SEAL_WRITE", 8)
)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
