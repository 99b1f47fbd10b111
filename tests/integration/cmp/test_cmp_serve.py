"""The zygote under Argo CD's ways of ending a render: the client is SIGKILLed or SIGTERMed
while real helm runs (a chart whose template loops for a long time).

- SIGKILL of the client (Argo CD's last resort): the worker, helm and the request's scratch
  directory are gone soon after, and nothing is left under the zygote;
- SIGTERM of the client alone: relayed to the worker, which stops helm and ends with the same
  status and message as an in-process render does.

These run `plugin` directly beside a zygote (tests/serve/support.py), not through
argocd-cmp-server: they signal the client process alone and watch the processes under the
zygote while the render runs, which the real server does not let a test do (it sends SIGKILL
and its group's SIGTERM together, at a deadline). The real server's deadline with a zygote is
covered by tests/integration/cmp/test_real_cmp_server.py under PLUGIN_TEST_SERVE=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.support import PYTHON, Zygote, alive, base_env, descendants

pytestmark = pytest.mark.integration

SLOW_TEMPLATE = (
    "{{- range $i := until 40000 }}{{- range $j := until 40000 }}{{- end }}{{- end }}\n"
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n"
)


@pytest.fixture
def slow_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "repo" / "slow"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: slow\nversion: 0.1.0\n")
    (chart / "templates" / "slow.yaml").write_text(SLOW_TEMPLATE)
    return chart


@pytest.fixture
def env(tmp_path: Path, helm3_bin: str) -> dict[str, str]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return base_env(
        tmp_path,
        HELM_BIN=helm3_bin,
        TMPDIR=str(scratch),
        PLUGIN_TIMEOUT="600",
        ARGOCD_APP_NAME="slow",
        ARGOCD_APP_NAMESPACE="default",
        ARGOCD_APP_SOURCE_PATH="slow",
    )


@pytest.fixture
def zygote(env: dict[str, str]) -> Iterator[Zygote]:
    started = Zygote(env)
    yield started
    started.stop()


def _helm_under(root: int, helm: str, timeout: float = 120) -> list[int]:
    """The helm processes running under `root` (waits until there is one)."""
    binary = os.path.realpath(helm)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for pid in descendants(root):
            try:
                if os.readlink(f"/proc/{pid}/exe") == binary:
                    found.append(pid)
            except OSError:
                continue
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("helm never started")


def _start(env: dict[str, str], chart: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "plugin", "generate", "."],
        cwd=chart,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_killing_the_client_kills_the_worker_and_helm_and_removes_the_scratch(
    env: dict[str, str], slow_chart: Path, zygote: Zygote, helm3_bin: str
) -> None:
    client = _start(env, slow_chart)
    helm = _helm_under(zygote.proc.pid, helm3_bin)
    under = descendants(zygote.proc.pid)
    assert len(list(Path(env["TMPDIR"]).glob("plugin-request-*"))) == 1
    client.kill()
    client.communicate()
    deadline = time.monotonic() + 20
    while descendants(zygote.proc.pid) or any(alive(pid) for pid in under):
        assert time.monotonic() < deadline, "processes of the killed render are still running"
        time.sleep(0.1)
    assert not any(alive(pid) for pid in helm)
    assert list(Path(env["TMPDIR"]).glob("plugin-request-*")) == []
    assert zygote.status() is not None  # the zygote itself carries on


def _terminated(env: dict[str, str], chart: Path, helm: str, root: int) -> tuple[int, bytes]:
    client = _start(env, chart)
    _helm_under(root, helm)
    client.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=60)
    assert out == b""
    return client.returncode, err


def test_sigterm_of_the_client_ends_the_render_as_in_process(
    env: dict[str, str], slow_chart: Path, zygote: Zygote, helm3_bin: str
) -> None:
    served = _terminated(env, slow_chart, helm3_bin, zygote.proc.pid)
    helm_gone_deadline = time.monotonic() + 20
    while descendants(zygote.proc.pid):
        assert time.monotonic() < helm_gone_deadline
        time.sleep(0.1)
    inproc_env = {**env, "PLUGIN_SERVE": "off"}
    own = _terminated(inproc_env, slow_chart, helm3_bin, os.getpid())
    assert served == own
    assert served[0] == 143 and b"terminated by SIGTERM" in served[1]
