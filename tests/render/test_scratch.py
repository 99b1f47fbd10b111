"""Scratch directories: locked for a render's life, swept when a killed render left them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from plugin.render import scratch


def test_a_live_render_is_never_swept_and_a_dead_one_is(tmp_path: Path) -> None:
    base = str(tmp_path)
    with scratch.scratch_directory(base) as live:
        assert live.name.startswith(scratch.PREFIX)
        assert oct(live.stat().st_mode & 0o777) == "0o700"
        (live / "file").write_text("x")
        assert scratch.sweep(base) == []
        assert live.is_dir()
    assert not live.exists()  # removed at the end
    # A render SIGKILLed in the middle: its directory stays, unlocked.
    code = (
        "import os, signal, sys\n"
        "from plugin.render import scratch\n"
        f"with scratch.scratch_directory({base!r}) as path:\n"
        "    (path / 'values.yaml').write_text('x')\n"
        "    print(path, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    left = Path(done.stdout.strip())
    assert left.is_dir()
    # Not ours (another user's directory with the same prefix): left alone.
    foreign = tmp_path / f"{scratch.PREFIX}foreign"
    if os.geteuid() == 0:  # only root can make a directory of another user
        foreign.mkdir()
        os.chown(foreign, 54321, 54321)
    # A fresh, not yet renamed directory of a live render: left alone while young.
    young = tmp_path / f"{scratch.NEW_PREFIX}young"
    young.mkdir()
    old = tmp_path / f"{scratch.NEW_PREFIX}old"
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    removed = scratch.sweep(base)
    assert sorted(removed) == sorted([left.name, old.name])
    assert not left.exists() and not old.exists()
    assert young.exists()
    assert foreign.exists() == (os.geteuid() == 0)  # never swept


def test_a_background_removal_keeps_the_lock_until_the_directory_is_gone(tmp_path: Path) -> None:
    """The engine does not wait for the copy's deletion, and no sweep races it."""
    base = str(tmp_path)
    held = threading.Event()
    release = threading.Event()
    plain_rmtree = shutil.rmtree

    def slow_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name == "scratch-removal":
            held.set()
            release.wait(10)
        plain_rmtree(path, *args, **kwargs)

    with mock.patch.object(scratch.shutil, "rmtree", slow_rmtree):
        with scratch.scratch_directory(base, background=True) as path:
            (path / "chart.yaml").write_text("x")
        # The block is left before the directory is removed...
        assert held.wait(10) and path.is_dir()
        assert scratch.sweep(base) == []  # ...and it stays locked while it is removed
        release.set()
        scratch.wait_for_removals()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_process_waits_for_its_background_removals_at_exit(tmp_path: Path) -> None:
    """Also when it ends as the zygote's worker does: exit functions, then `os._exit`."""
    code = (
        "import atexit, os\n"
        "from plugin.render import scratch\n"
        f"with scratch.scratch_directory({str(tmp_path)!r}, background=True) as path:\n"
        "    for n in range(500):\n"
        "        (path / f'f{n}').write_text('x')\n"
        "atexit._run_exitfuncs()\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("noreplace", [True, False], ids=["renameat2", "reserve-and-rename"])
def test_a_taken_name_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noreplace: bool
) -> None:
    """The locked directory moves onto its name only when nobody has it: an empty directory
    of another render (one that reserved the name) is neither replaced nor swept away, with
    `renameat2(RENAME_NOREPLACE)` and without it (an old kernel or C library)."""
    if noreplace and scratch._renameat2 is None:
        pytest.skip("the C library has no renameat2")
    if not noreplace:
        monkeypatch.setattr(scratch, "_renameat2", None)
    monkeypatch.setattr(scratch.secrets, "token_hex", lambda size: "taken")
    taken = tmp_path / f"{scratch.PREFIX}taken"
    taken.mkdir()
    marker = os.stat(taken).st_ino
    with pytest.raises(FileExistsError), scratch.scratch_directory(str(tmp_path)):
        raise AssertionError("a render got a directory under a taken name")
    assert os.stat(taken).st_ino == marker
    assert [p.name for p in tmp_path.iterdir()] == [taken.name]  # nothing else left behind


@pytest.mark.parametrize("noreplace", [True, False], ids=["renameat2", "reserve-and-rename"])
def test_the_directory_gets_its_name_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noreplace: bool
) -> None:
    if not noreplace:
        monkeypatch.setattr(scratch, "_renameat2", None)
    with scratch.scratch_directory(str(tmp_path)) as path:
        assert path.name.startswith(scratch.PREFIX) and path.is_dir()
        assert [p.name for p in tmp_path.iterdir()] == [path.name]
        assert scratch.sweep(str(tmp_path)) == []  # locked under its final name
    assert list(tmp_path.iterdir()) == []
