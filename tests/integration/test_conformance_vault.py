"""The AVP conformance pack with AVP_TYPE=vault against a real OpenBao seeded from vault-seed.yaml.

Same cases and expected outputs as the file backend. AVP_KV_VERSION is left
unset, so paths written without `/data/` (the transcribed cases on the KV v1
mounts `conformance/` and `secret/`) rely on the backend's mount detection.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import PACK, check_case, load_cases, require_pack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vault_env(openbao: Any) -> dict[str, str]:
    require_pack()
    openbao.seed(PACK / "vault-seed.yaml")
    return {
        "AVP_TYPE": "vault",
        "AVP_AUTH_TYPE": "token",
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
    }


@pytest.mark.parametrize("case", load_cases() or [None], ids=lambda c: c["name"] if c else "pack")
def test_case_against_openbao(case: dict[str, Any] | None, vault_env: dict[str, str]) -> None:
    if case is None:
        pytest.fail("the conformance pack has no cases")
    check_case(case, vault_env, never_printed=(vault_env["VAULT_TOKEN"],))
