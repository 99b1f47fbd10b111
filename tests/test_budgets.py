"""One tenant must not take down the shared sidecar (issue 11, §5).

Each hostile render, run through the real CLI, must: exit non-zero with nothing on stdout and
an error naming the budget it hit; end within PLUGIN_TIMEOUT + 2 s; keep the peak RSS of the
plugin and all its children below 1 GiB; and leave nothing under TMPDIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conformance import REPO_ROOT, clean_environment

TIMEOUT = 4
GiB = 1024 * 1024 * 1024

#: Runs the plugin as its only child, so RUSAGE_CHILDREN is the peak RSS of the plugin's tree
#: (the largest process among the plugin and every child it waited for).
MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
try:
    done = subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=float(sys.argv[1]))
    code, out, err = done.returncode, done.stdout, done.stderr
except subprocess.TimeoutExpired as exc:
    code, out, err = "killed", exc.stdout or b"", exc.stderr or b""
print(json.dumps({
    "code": code,
    "seconds": time.monotonic() - started,
    "max_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "stdout": out.decode("utf-8", "replace"),
    "stderr": err.decode("utf-8", "replace"),
}))
"""


@dataclass(frozen=True)
class Measured:
    code: int | str
    seconds: float
    max_rss: int
    stdout: str
    stderr: str


def hostile_render(app: Path, tmp_path: Path, extra: dict[str, str] | None = None) -> Measured:
    """`plugin generate APP` with PLUGIN_TIMEOUT=4 and a private TMPDIR, measured."""
    scratch = tmp_path / "tmpdir"
    scratch.mkdir(exist_ok=True)
    env = clean_environment(
        {
            "PLUGIN_TIMEOUT": str(TIMEOUT),
            "TMPDIR": str(scratch),
            "AVP_TYPE": "file",
            **(extra or {}),
        }
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE,
            str(TIMEOUT + 30),
            sys.executable,
            "-m",
            "plugin",
            "generate",
            str(app),
        ],
        capture_output=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=TIMEOUT + 60,
        check=True,
    )
    return Measured(**json.loads(completed.stdout))


def assert_within_budgets(run: Measured, tmp_path: Path, *expected: str) -> None:
    assert run.code == 1, (run.code, run.stderr[-2000:])
    assert run.stdout == ""
    assert run.stderr.startswith("Error: "), run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    for text in expected:
        assert text in run.stderr, run.stderr[-2000:]
    assert run.seconds < TIMEOUT + 2, run.seconds
    assert run.max_rss < GiB, run.max_rss
    assert os.listdir(tmp_path / "tmpdir") == []


def chart(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    app = repo / "chart"
    (app / "templates").mkdir(parents=True)
    (repo / ".git").mkdir()
    (app / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (app / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"
    )
    return app


# ------------------------------------------------------------------------------ copying


def test_two_dotdot_links_in_a_chart(tmp_path: Path) -> None:
    app = chart(tmp_path)
    os.symlink("..", app / "templates" / "a")
    os.symlink("..", app / "templates" / "b")
    run = hostile_render(app, tmp_path)
    assert_within_budgets(run, tmp_path, "templates/a leads back", "(a loop); refused")


def test_links_expanding_to_a_million_files_in_a_chart(tmp_path: Path) -> None:
    """No loop: 20 levels of two links each, a million files for a renderer following them."""
    app = chart(tmp_path)
    for level in range(20):
        here = app / "files" / f"d{level}"
        here.mkdir(parents=True)
        os.symlink(f"../d{level + 1}", here / "l1")
        os.symlink(f"../d{level + 1}", here / "l2")
    (app / "files" / "d20").mkdir()
    (app / "files" / "d20" / "f.yaml").write_text("x\n")
    run = hostile_render(app, tmp_path, {"PLUGIN_MAX_COPY_FILES": "5000"})
    assert_within_budgets(run, tmp_path, "more than 5000 files (PLUGIN_MAX_COPY_FILES)")


def test_a_chart_larger_than_the_copy_budget(tmp_path: Path) -> None:
    app = chart(tmp_path)
    with (app / "templates" / "big.bin").open("wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: no disk used in the repository
    run = hostile_render(app, tmp_path)
    assert_within_budgets(run, tmp_path, "larger than 256 MiB (PLUGIN_MAX_COPY_SIZE)")


@pytest.mark.parametrize("value", ["0", "lots"])
def test_copy_budgets_must_be_valid(tmp_path: Path, value: str) -> None:
    app = chart(tmp_path)
    run = hostile_render(app, tmp_path, {"PLUGIN_MAX_COPY_FILES": value})
    assert run.code == 1
    assert "PLUGIN_MAX_COPY_FILES must be" in run.stderr
