"""Python probe scripts run in a fresh interpreter that leads a session of its own.

That is how the zygote's workers run (session leaders without a controlling terminal), and it
is the condition for starting renderers through vfork (`plugin.render.process`): tests of that
path, of its fallback and of the sandbox on it run their scenario as such a probe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_probe(script: str, *args: str, cwd: Path = REPO, timeout: float = 60) -> str:
    """stdout of `python -c script args...`, started with setsid; fails the test on a non-zero
    exit, with the probe's stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
