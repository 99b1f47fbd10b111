"""The whole AVP conformance pack through the real CLI with the built-in file backend."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import PACK, check_case, load_cases, require_pack


@pytest.mark.parametrize("case", load_cases() or [None], ids=lambda c: c["name"] if c else "pack")
def test_case(case: dict[str, Any] | None) -> None:
    if case is None:
        require_pack()
        pytest.fail("the conformance pack has no cases")
    check_case(case, {"AVP_TYPE": "file", "AVP_FILE_PATH": str(PACK / "secrets.yaml")})


def test_pack_has_all_cases() -> None:
    cases = load_cases()
    if not cases:
        require_pack()
    assert len(cases) == 78
