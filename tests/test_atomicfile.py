"""The atomic writer: the old file or the new one, never a part, and nothing left behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin import atomicfile


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "entry.json"
    target.write_bytes(b"old")
    assert atomicfile.write(target, b"new") is True
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["entry.json"]


def test_mode_is_exact_whatever_the_umask(tmp_path: Path, umask_077: None) -> None:
    target = tmp_path / "plugin"
    atomicfile.write(str(target), b"#!/bin/sh\n", mode=0o755)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_without_a_mode_the_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomicfile.write(tmp_path / "token.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "token.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("sync", [True, False])
def test_sync_decides_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    atomicfile.write(tmp_path / "record.json", b"{}", sync=sync)
    assert len(synced) == (1 if sync else 0)


def test_a_failed_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "entry"
    target.write_bytes(b"old")

    def no_space(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        atomicfile.write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["entry"]


def test_a_directory_in_the_way_is_an_error_and_nothing_is_left(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    with pytest.raises(OSError):
        atomicfile.write(tmp_path / "plugin", b"x")
    assert os.listdir(tmp_path) == ["plugin"] and not os.listdir(tmp_path / "plugin")


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / "cache").mkdir()
    link = tmp_path / "cache" / "entry"
    link.symlink_to(victim)
    atomicfile.write(link, b"new")
    assert victim.read_bytes() == b"untouched"
    assert not link.is_symlink() and link.read_bytes() == b"new"


def test_without_replace_the_first_writer_wins(tmp_path: Path) -> None:
    key = tmp_path / "fingerprint.key"
    assert atomicfile.write(key, b"first", mode=0o600, replace=False) is True
    assert atomicfile.write(key, b"second", mode=0o600, replace=False) is False
    assert key.read_bytes() == b"first"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["fingerprint.key"]
