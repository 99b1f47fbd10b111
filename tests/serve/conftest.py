"""Fixtures shared by the tests of `plugin serve`: a real zygote on the test's private socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serve.support import Zygote


@pytest.fixture
def zygote(env: dict[str, str]) -> Iterator[Zygote]:
    """`plugin serve` (`python -m plugin`) with the module's `env`, stopped after the test."""
    started = Zygote(env)
    yield started
    started.stop()
