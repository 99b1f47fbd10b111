"""Copying a tenant's chart or Kustomize tree into the private work copy, within budgets.

A tree is hostile input: two `..` symlinks inside a chart made a copy that followed links grow
exponentially (378 MB and 98,000 files in 10 s), and Helm follows directory links when it
loads a chart, looping on the same trees. So the copy

- never follows a link that stays inside the copied tree: it is recreated as a relative link
  (the copy is as large as the tree itself);
- materialises a link leading elsewhere inside the repository (a shared values file, a
  sibling chart in a monorepo), with the same rules inside it and loop detection, and refuses
  a link leading outside the repository or to nothing;
- then proves that following every link of the copy, as Helm and Kustomize will, terminates
  (no loop) and stays within the file and byte budgets;
- counts files and bytes while it copies and checks the render deadline, so no tree can keep
  it busy beyond `PLUGIN_TIMEOUT`, `PLUGIN_MAX_COPY_FILES` or `PLUGIN_MAX_COPY_SIZE`.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from plugin.errors import RenderError
from plugin.manifests.inputs import format_size
from plugin.render.process import Deadline

MAX_COPY_FILES_SETTING = "PLUGIN_MAX_COPY_FILES"
MAX_COPY_SIZE_SETTING = "PLUGIN_MAX_COPY_SIZE"
DEFAULT_MAX_COPY_FILES = 20_000
DEFAULT_MAX_COPY_SIZE = 256 * 1024 * 1024
#: Entries copied between two looks at the clock.
_CHECK_EVERY = 256
#: Names never copied (a repository's own metadata).
_SKIPPED = frozenset({".git"})


class CopyBudgetError(RenderError):
    """A copied tree is larger than a budget, loops, or took longer than the deadline."""


@dataclass(frozen=True)
class CopyLimits:
    """The budgets of one copy (and of the tree a renderer sees when it follows links)."""

    max_files: int = DEFAULT_MAX_COPY_FILES
    max_bytes: int = DEFAULT_MAX_COPY_SIZE
    deadline: Deadline | None = None


@dataclass
class _Copier:
    source: str
    target: str
    root: str
    limits: CopyLimits
    files: int = 0
    size: int = 0
    seen: int = field(default=0)
    #: Symlinks met (kept as links or materialised).
    links: int = 0

    def display(self, path: str) -> str:
        """A path for messages: relative to the copied tree (or the repository)."""
        base = self.source if _inside(path, self.source) else self.root
        return os.path.relpath(path, base)

    def tick(self) -> None:
        self.seen += 1
        deadline = self.limits.deadline
        if deadline is not None and self.seen % _CHECK_EVERY == 0 and deadline.remaining() <= 0:
            raise CopyBudgetError(
                f"copying {self.display(self.source)} ran out of time: the render must finish "
                f"within {deadline.seconds:g} s ({deadline.setting})"
            )

    def count(self, size: int, where: str) -> None:
        self.files += 1
        self.size += size
        if self.files > self.limits.max_files:
            raise CopyBudgetError(
                f"{where}: the tree has more than {self.limits.max_files} files "
                f"({MAX_COPY_FILES_SETTING}); refused"
            )
        if self.size > self.limits.max_bytes:
            raise CopyBudgetError(
                f"{where}: the tree is larger than {format_size(self.limits.max_bytes)} "
                f"({MAX_COPY_SIZE_SETTING}); refused"
            )

    def copy_dir(self, real_dir: str, dest: str, materialising: frozenset[str]) -> None:
        if not (os.path.isdir(dest) and not os.path.islink(dest)):
            os.mkdir(dest, 0o700)
        with os.scandir(real_dir) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            self.tick()
            if entry.name in _SKIPPED:
                continue
            out = os.path.join(dest, entry.name)
            if entry.is_symlink():
                self.copy_link(entry.path, out, materialising)
            elif entry.is_dir(follow_symlinks=False):
                self.copy_dir(entry.path, out, materialising)
            elif entry.is_file(follow_symlinks=False):
                self.copy_file(entry.path, out, entry.stat(follow_symlinks=False).st_size)
            # FIFOs, sockets and devices are never copied (Git cannot hold them anyway; a
            # FIFO would block the copy).

    def copy_file(self, real: str, out: str, size: int) -> None:
        self.count(size, self.display(real))
        _copy_regular_file(real, out, self.display(real))

    def copy_link(self, path: str, out: str, materialising: frozenset[str]) -> None:
        self.links += 1
        real = os.path.realpath(path)
        name = self.display(path)
        if not _inside(real, self.root):
            raise RenderError(f"symlink {name} points outside the repository; refused")
        try:
            info = os.stat(real)
        except OSError:
            raise RenderError(f"symlink {name} leads to nothing (or to a loop); refused") from None
        if _inside(real, self.source):
            # Stays inside the work copy: keep it a link, with a target inside the copy.
            mapped = os.path.join(self.target, os.path.relpath(real, self.source))
            os.symlink(os.path.relpath(mapped, os.path.dirname(out)), out)
            self.count(0, name)
            return
        if stat.S_ISDIR(info.st_mode):
            if real in materialising or any(_inside(real, d) for d in materialising):
                raise CopyBudgetError(f"symlink {name} leads back into itself (a loop); refused")
            self.copy_dir(real, out, materialising | {real})
        elif stat.S_ISREG(info.st_mode):
            self.copy_file(real, out, info.st_size)


#: What `sendfile` answers where it cannot copy between these two files.
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV})


def _copy_regular_file(source: str, target: str, shown: str) -> None:
    """Copy the content of the regular file `source` to `target` (mode 0600).

    Descriptors and `sendfile` rather than `shutil.copyfile`: a chart is copied for every
    render, and the buffered file objects and extra system calls of the general function
    cost more than the copy of a small file. Neither end follows a link (the source was
    listed as a regular file, and the copy is new), a FIFO swapped in since never blocks the
    copy (`O_NONBLOCK`, then refused as not regular).
    """
    reader = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(reader).st_mode):
            raise RenderError(f"{shown} changed while it was copied; refused")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        writer = os.open(target, flags, 0o600)
        try:
            os.fchmod(writer, 0o600)  # also when the name existed (a mode `O_CREAT` keeps)
            _send_all(reader, writer)
        finally:
            os.close(writer)
    finally:
        os.close(reader)


def _send_all(reader: int, writer: int) -> None:
    try:
        while os.sendfile(writer, reader, None, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in _NO_SENDFILE or os.lseek(writer, 0, os.SEEK_CUR):
            raise
    while chunk := os.read(reader, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(writer, view) :]


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def copy_tree(
    source: Path, target: Path, repo_root: Path, limits: CopyLimits | None = None
) -> None:
    """Copy `source` to `target` (which must not exist), never following links blindly.

    RenderError for a link leading outside the repository or to nothing; CopyBudgetError
    (naming the budget) for a loop, too many files, too many bytes, or the deadline.
    """
    limits = limits or CopyLimits()
    copier = _Copier(
        source=os.path.realpath(source),
        target=os.path.abspath(target),
        root=os.path.realpath(repo_root),
        limits=limits,
    )
    os.makedirs(os.path.dirname(copier.target), mode=0o700, exist_ok=True)
    copier.copy_dir(copier.source, copier.target, frozenset({copier.source}))
    if copier.links:
        # Without a link, following links changes nothing: the copy is the tree whose files
        # and bytes `count` already held within the budgets, and nothing can loop.
        check_expansion(Path(copier.target), limits)


def check_expansion(tree: Path, limits: CopyLimits) -> None:
    """Prove that following every link of `tree` terminates and stays within the budgets.

    Helm's chart loader and Kustomize follow directory links; a link to an ancestor makes
    them loop, and links to links expand exponentially. Each directory's expanded file count
    and size are computed once (memoised by real path), so the check is linear in the tree.
    """
    root = os.path.realpath(tree)
    memo: dict[str, tuple[int, int]] = {}
    visiting: set[str] = set()
    seen = 0

    def expand(directory: str, via: str) -> tuple[int, int]:
        nonlocal seen
        known = memo.get(directory)
        if known is not None:
            return known
        if directory in visiting:
            raise CopyBudgetError(
                f"symlink {via} leads back into a directory that contains it (a loop); refused"
            )
        visiting.add(directory)
        files = size = 0
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            seen += 1
            deadline = limits.deadline
            if deadline is not None and seen % _CHECK_EVERY == 0 and deadline.remaining() <= 0:
                raise CopyBudgetError(
                    f"checking the links of the copy ran out of time: the render must finish "
                    f"within {deadline.seconds:g} s ({deadline.setting})"
                )
            shown = os.path.relpath(entry.path, root)
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if os.path.isdir(real):
                    more_files, more_size = expand(real, shown)
                else:
                    more_files, more_size = 1, os.stat(real).st_size
            elif entry.is_dir(follow_symlinks=False):
                more_files, more_size = expand(os.path.realpath(entry.path), shown)
            else:
                more_files, more_size = 1, entry.stat(follow_symlinks=False).st_size
            files += more_files
            size += more_size
            if files > limits.max_files:
                raise CopyBudgetError(
                    f"{shown}: following the symlinks of the tree gives more than "
                    f"{limits.max_files} files ({MAX_COPY_FILES_SETTING}); refused"
                )
            if size > limits.max_bytes:
                raise CopyBudgetError(
                    f"{shown}: following the symlinks of the tree gives more than "
                    f"{format_size(limits.max_bytes)} ({MAX_COPY_SIZE_SETTING}); refused"
                )
        visiting.discard(directory)
        memo[directory] = (files, size)
        return files, size

    expand(root, ".")
