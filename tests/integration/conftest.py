"""Set-up shared by the integration tests that talk to the session's OpenBao (`openbao`).

Each module keeps what is its own (its mounts, its secrets, its policies); how to reach the
server as root and the loopback proxy in front of it are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import OpenBao
from tests.integration.test_vault_support import FaultProxy, RootAPI


@pytest.fixture(scope="session")
def root_api(openbao: OpenBao) -> RootAPI:
    """Plain HTTP calls to the session's OpenBao with its root token (set-up only)."""
    return RootAPI(openbao.addr, openbao.root_token)


@pytest.fixture
def proxy(openbao: OpenBao) -> Iterator[FaultProxy]:
    """A counting, fault-injecting loopback proxy in front of the session's OpenBao."""
    server = FaultProxy(openbao.addr)
    yield server
    server.stop()
