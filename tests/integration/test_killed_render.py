"""Argo CD SIGKILLs the plugin mid-render (its own deadline fired first): nothing survives.

`plugin generate` with `RESOLVE_VALUES=true` (file backend holding a canary) renders a chart
whose template loops for a long time; once `helm template` runs, the plugin is SIGKILLed, as
the cmp-server does at the request deadline. Then: no helm process is left, no byte of the
canary (in any encoding) is in any file under TMPDIR, and the next run sweeps the scratch
directory the killed render left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.render import scratch
from tests.integration.security_support import encodings

pytestmark = pytest.mark.integration

CANARY = "killed-canary-Hq83Zp"
ROOT = Path(__file__).resolve().parents[2]


def slow_chart(app: Path) -> None:
    (app / "templates").mkdir(parents=True)
    (app / "Chart.yaml").write_text("apiVersion: v2\nname: slow\nversion: 0.1.0\n")
    (app / "values.yaml").write_text("password: <path:kv/data/app#password>\nloops: 4000\n")
    (app / "templates" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: slow\n"
        "stringData:\n  password: {{ .Values.password | quote }}\n"
        "  spin: {{ range until (int .Values.loops) }}{{ range until (int $.Values.loops) }}"
        "{{ end }}{{ end }}done\n"
    )


def children_named(parent: int, name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            state, ppid = fields[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == parent and comm == name and state != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(needle in data for needle in needles):
                hits.append(str(path.relative_to(root)))
    return hits


def test_sigkill_mid_render_leaves_no_process_and_no_secret(tmp_path: Path, helm_bin: str) -> None:
    app = tmp_path / "repo" / "app"
    slow_chart(app)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"kv/data/app:\n  password: {CANARY}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "HELM_BIN": helm_bin,
        "PLUGIN_CACHE_DIR": str(home / "cache"),
        "AVP_TYPE": "file",
        "AVP_FILE_PATH": str(secrets),
        "ARGOCD_APP_NAME": "slow",
        "ARGOCD_APP_NAMESPACE": "slow",
        "ARGOCD_ENV_RESOLVE_VALUES": "true",
        "PLUGIN_TIMEOUT": "120",
    }
    plugin = subprocess.Popen(
        [sys.executable, "-m", "plugin", "generate", str(app)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    helm_pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not helm_pids:
            assert plugin.poll() is None, plugin.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "helm template never started"
            helm_pids = children_named(plugin.pid, os.path.basename(helm_bin)[:15])
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the template's loops
        assert all(alive(pid) for pid in helm_pids), "the render ended too early"
        leftovers = [p.name for p in tmpdir.iterdir() if p.name.startswith(scratch.PREFIX)]
        assert leftovers, "no scratch directory while rendering"
        plugin.send_signal(signal.SIGKILL)
        plugin.communicate(timeout=30)
    finally:
        if plugin.poll() is None:
            plugin.kill()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helm_pids):
        assert time.monotonic() < deadline, "helm outlived the SIGKILLed plugin"
        time.sleep(0.05)
    needles = [form.encode() for form in encodings(CANARY)]
    assert files_holding(tmpdir, needles) == []
    # The killed render's scratch directory is still there; the next run sweeps it.
    assert [p for p in tmpdir.iterdir() if p.name.startswith(scratch.PREFIX)]
    (app / "values.yaml").write_text("password: <path:kv/data/app#password>\nloops: 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "plugin", "generate", str(app)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert CANARY.encode() in done.stdout
    assert list(tmpdir.iterdir()) == []
