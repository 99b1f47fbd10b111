"""plugin.serve.prefault: a forked child that populated its memory no longer faults on writes."""

from __future__ import annotations

import os
import resource

import pytest

from plugin.serve import prefault

MAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1234   /usr/bin/python3.11
55d0c0c21000-55d0c0c30000 rw-p 00221000 08:01 1234   /usr/bin/python3.11
55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 rw-s 00000000 00:05 99     /dev/shm/x
7f0000200000-7f0000300000 r-xp 00000000 08:01 77     /usr/lib/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0      [vvar]
"""


def test_private_writable_ranges_keeps_private_writable_mappings_only() -> None:
    assert prefault.private_writable_ranges(MAPS) == [
        (0x55D0C0C21000, 0x55D0C0C30000),
        (0x55D0C1000000, 0x55D0C1400000),
        (0x7F0000000000, 0x7F0000100000),
    ]


def _faults_writing_shared_pages(populate: bool) -> tuple[int, int, int]:
    """(pages written, minor faults while writing them, bytes populated) in a forked child."""
    pages = 4096
    shared = bytearray(pages * 4096)
    for page in range(pages):  # resident in the parent before the fork: shared afterwards
        shared[page * 4096] = 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reported through the pipe
        try:
            populated = prefault.populate_private_memory() if populate else 0
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for page in range(pages):
                shared[page * 4096] = 2
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            os.write(write_end, f"{faults} {populated}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 100).decode().split()
    os.close(read_end)
    os.waitpid(pid, 0)
    return pages, int(answer[0]), int(answer[1])


def test_a_populated_child_writes_shared_pages_without_faulting() -> None:
    pages, plain, _ = _faults_writing_shared_pages(populate=False)
    assert plain >= pages * 0.9  # copy-on-write: one fault per page written
    pages, faults, populated = _faults_writing_shared_pages(populate=True)
    if populated == 0:
        pytest.fail("MADV_POPULATE_WRITE did nothing (the kernel here has had it since 5.14)")
    assert populated >= pages * 4096
    assert faults < pages * 0.1


def test_populate_stops_when_asked() -> None:
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    assert prefault.populate_private_memory(stop) <= 2 * (1 << 20)
    assert len(asked) == 3
