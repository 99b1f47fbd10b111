"""Shared helpers for running the AVP conformance pack (../shared/conformance/avp).

The pack is read where it lies, never copied. Outside the workplace it does
not exist: tests then skip, except under CI=true where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK = Path(os.environ.get("AVP_CONFORMANCE_DIR", REPO_ROOT.parent / "shared/conformance/avp"))


def require_pack() -> Path:
    if (PACK / "cases.yaml").is_file():
        return PACK
    reason = f"AVP conformance pack not found at {PACK}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (required under CI=true)")
    pytest.skip(reason)


def load_cases() -> list[dict[str, Any]]:
    if not (PACK / "cases.yaml").is_file():
        return []
    cases: list[dict[str, Any]] = yaml.safe_load((PACK / "cases.yaml").read_text())
    return cases


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """The process environment without AVP_*, ARGOCD_ENV_* and VAULT_* variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AVP_", "ARGOCD_ENV_", "VAULT_"))
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run_plugin(
    args: Sequence[str],
    env: dict[str, str],
    stdin: bytes | None = None,
    entry: Sequence[str] = ("-m", "plugin"),
) -> Run:
    """`plugin *args` in a fresh interpreter; `entry` is what that interpreter runs."""
    completed = subprocess.run(
        [sys.executable, *entry, *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    return Run(
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


def documents(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def strict_equal(left: Any, right: Any) -> bool:
    """Equality where strings, numbers and booleans never equal one another."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(strict_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(strict_equal, left, right))
    return type(left) is type(right) and left == right


def check_case(
    case: dict[str, Any], backend_env: dict[str, str], never_printed: tuple[str, ...] = ()
) -> None:
    """Run one case through the real CLI and assert everything the pack expects.

    `never_printed`: credentials that must appear in neither stream.
    """
    pack = require_pack()
    source = pack / case["input"]
    env = clean_environment({**backend_env, **{k: str(v) for k, v in case["env"].items()}})
    if case["stdin"]:
        run = run_plugin(["generate", "-"], env, stdin=source.read_bytes())
    else:
        run = run_plugin(["generate", str(source)], env)
    expect = case["expect"]
    assert "Traceback" not in run.stderr, run.stderr
    for credential in never_printed:
        assert credential not in run.stdout + run.stderr
    if expect["exit"] == 0:
        assert run.code == 0, f"exit {run.code}: {run.stderr}"
    elif expect["exit"] == "nonzero":
        assert run.code != 0, "expected a failure"
    if run.code != 0:
        assert run.stdout == "", "a failed run must print nothing on stdout"
        assert run.stderr.startswith("Error: "), run.stderr
    elif "output" not in expect:
        # `exit: any` cases: the sensible repair must still produce valid documents.
        assert documents(run.stdout), run.stdout
    else:
        expected = documents((pack / expect["output"]).read_text())
        actual = documents(run.stdout)
        assert len(actual) == len(expected), run.stdout
        for got, want in zip(actual, expected, strict=True):
            assert strict_equal(got, want), f"got {got!r}\nwant {want!r}"
    for text in expect["stdout_contains"]:
        assert text in run.stdout
    for text in expect["stderr_contains"]:
        assert text in run.stderr, run.stderr
