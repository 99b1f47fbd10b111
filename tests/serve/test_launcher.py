"""The image's `plugin` launcher (`python -m plugin.serve.launcher PATH`), run for real.

The launcher is written for a copy of the package outside the repository (as a wheel install
puts it where only the launcher's own paths find it), then started by its shebang
(`python -IS`): through the zygote, in process with a real OpenBao (hvac) and a real Helm, as
`serve --exec`, and through the zygote's replacement of itself after `--max-requests`, which
must start its successor with the same flags and path (`python -m plugin` would import the
repository's package instead, a zygote of another installation that the client refuses).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from plugin.serve import launcher
from tests.serve.support import PYTHON, ROOT, Zygote, file_env, plugin, serve_exec

CANARY = "canary-launcher-Vb27q"
MANIFEST = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  user: <path:app#user>\n"
)
#: What a hostile environment or working directory would make an ordinary `python` import.
HIJACK = "raise SystemExit('hijacked: imported from the environment or the working directory')\n"


# ------------------------------------------------------------------------------ the script


def test_the_entry_point_is_the_console_script_s() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["plugin"] == launcher.ENTRY


def test_the_script_is_isolated_and_imports_nothing_but_the_entry() -> None:
    text = launcher.script("/usr/local/bin/python3.11", ["/opt/site-packages"])
    lines = text.splitlines()
    assert lines[0] == "#!/usr/local/bin/python3.11 -IS"
    code = [line for line in lines if not line.startswith("#")]
    assert code == [
        "import sys",
        "sys.path += ['/opt/site-packages']",
        "from plugin.__main__ import main",
        "sys.exit(main())",
    ]


@pytest.mark.parametrize(
    ("executable", "paths"),
    [
        ("python3", ["/opt/lib"]),  # not absolute: the kernel would not find it
        ("/opt/my python/bin/python", ["/opt/lib"]),  # a space splits the shebang
        ("/opt/" + "p" * 130 + "/python", ["/opt/lib"]),  # cut by older kernels, flags lost
        ("/usr/bin/python3", ["lib"]),  # relative to the working directory: a tenant's
    ],
)
def test_a_launcher_that_would_not_run_as_meant_is_refused(
    executable: str, paths: list[str]
) -> None:
    with pytest.raises(launcher.LauncherError):
        launcher.script(executable, paths)


def test_install_paths_are_the_package_parent_then_the_scheme_deduplicated() -> None:
    paths = launcher.install_paths()
    assert paths[0] == str(ROOT)  # this checkout (an editable install)
    assert len(paths) == len(set(paths)) and all(os.path.isabs(path) for path in paths)
    import yaml

    assert os.path.dirname(os.path.dirname(yaml.__file__)) in paths


def test_write_replaces_the_file_atomically_with_mode_0755(tmp_path: Path) -> None:
    target = tmp_path / "plugin"
    target.write_text("#!/bin/sh\nexec pip-console-script\n")
    old = os.umask(0o077)
    try:
        assert launcher.main([str(target)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert target.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert os.listdir(tmp_path) == ["plugin"]  # no temporary file left


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()  # os.replace cannot put a file over a directory
    assert launcher.main([str(tmp_path / "plugin")]) == 1
    assert os.listdir(tmp_path) == ["plugin"] and not os.listdir(tmp_path / "plugin")


def test_reexec_keeps_the_interpreter_flags_and_path(hostile: Path) -> None:
    """A `-IS` process re-executed by `reexec_argv` runs with -IS and its sys.path again."""
    probe = (
        "import os, sys\n"
        f"sys.path += [{str(ROOT)!r}]\n"
        "from plugin.serve import launcher\n"
        "sys.path += launcher.install_paths()\n"
        "argv = launcher.reexec_argv(['version'])\n"
        "print(argv[1:4], flush=True)\n"
        "os.execv(argv[0], argv)\n"
    )
    env = {"PLUGIN_SERVE": "off", "PYTHONPATH": str(hostile / "pythonpath")}
    proc = subprocess.run(
        [PYTHON, "-IS", "-c", probe],
        env=env,
        cwd=hostile / "checkout",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['-I', '-S', '-c']", "plugin 0.1.0"]


# ------------------------------------------------------------------------------ run for real


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The launcher of a copy of the package (found through the launcher's paths only)."""
    install = tmp_path / "install"
    shutil.copytree(
        ROOT / "plugin", install / "plugin", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "bin").mkdir()
    target = tmp_path / "bin" / "plugin"
    subprocess.run(
        [PYTHON, "-m", "plugin.serve.launcher", str(target)],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(install)},
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    assert f"{str(install)!r}" in target.read_text()
    return target


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A PYTHONPATH and a working directory that would replace the plugin and PyYAML."""
    for place in ("pythonpath", "checkout"):
        (tmp_path / place / "plugin").mkdir(parents=True)
        (tmp_path / place / "plugin" / "__init__.py").write_text(HIJACK)
        (tmp_path / place / "yaml.py").write_text(HIJACK)
    return tmp_path


@pytest.fixture
def env(tmp_path: Path, hostile: Path) -> dict[str, str]:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    return file_env(tmp_path, f"app:\n  user: {CANARY}\n", PYTHONPATH=str(hostile / "pythonpath"))


def test_a_render_through_the_zygote_and_in_process(
    tmp_path: Path, installed: Path, env: dict[str, str]
) -> None:
    command = [str(installed)]
    zygote = Zygote(env, command=command)
    try:
        before = zygote.served()
        run = plugin(["generate", "--verbose", str(tmp_path / "m.yaml")], env, command=command)
        assert zygote.served() == before + 2  # the render and this --status
    finally:
        zygote.stop()
    assert run.code == 0, run.stderr
    assert f"user: {CANARY}".encode() in run.stdout
    assert b"rendering in this process" not in run.stderr
    checkout = tmp_path / "checkout"
    off = {**env, "PLUGIN_SERVE": "off"}
    alone = plugin(["generate", str(tmp_path / "m.yaml")], off, cwd=checkout, command=command)
    assert (alone.code, alone.stdout) == (0, run.stdout), alone.stderr
    # The control: an ordinary `python -m plugin` there imports the tenant's files.
    hijacked = plugin(["version"], off, cwd=checkout)
    assert hijacked.code != 0 and b"hijacked" in hijacked.stderr


def test_the_zygote_replaced_after_each_request_still_serves(
    tmp_path: Path, installed: Path, env: dict[str, str]
) -> None:
    command = [str(installed)]
    zygote = Zygote(env, "--max-requests", "1", command=command)
    try:
        pid = zygote.pid  # a request: the zygote replaces itself
        for _ in range(3):
            deadline = time.monotonic() + 60
            while zygote.status() is None:  # the successor may still be importing
                assert time.monotonic() < deadline, "the zygote did not come back"
                time.sleep(0.1)
            run = plugin(["generate", "--verbose", str(tmp_path / "m.yaml")], env, command=command)
            assert run.code == 0 and f"user: {CANARY}".encode() in run.stdout, run.stderr
            assert b"rendering in this process" not in run.stderr  # the successor served it
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:3] == [os.fsencode(PYTHON), b"-I", b"-S"]
    finally:
        zygote.stop()
    assert "hijacked" not in zygote.stderr()


def test_serve_exec_then_the_program(tmp_path: Path, installed: Path, env: dict[str, str]) -> None:
    """What the sidecar runs: `plugin serve --exec PROGRAM` (PROGRAM: the launcher's status)."""
    argv = [str(installed), "serve", "--exec", str(installed), "serve", "--status"]
    with serve_exec(argv, env, tmp_path / "log") as (code, status):
        assert code == 0 and status["zygote"] == "running"
        assert status["package"] == str(tmp_path / "install" / "plugin")


CHART = {
    "Chart.yaml": "apiVersion: v2\nname: launcher\nversion: 0.1.0\n",
    "templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  token: <path:kv/data/launcher#token>\n"
    ),
}


@pytest.mark.parametrize("served", [False, True], ids=["in-process", "zygote"])
def test_helm_and_vault_through_the_launcher(
    tmp_path: Path,
    installed: Path,
    env: dict[str, str],
    openbao: Any,
    helm3_bin: str,
    served: bool,
) -> None:
    """hvac, requests and PyYAML import from the launcher's paths; Helm runs under it."""
    openbao.client().adapter.post("/v1/kv/data/launcher", json={"data": {"token": CANARY}})
    chart = tmp_path / "chart"
    for name, text in CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    env = {
        **env,
        "AVP_TYPE": "vault",
        "AVP_AUTH_TYPE": "token",
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "HELM_BIN": helm3_bin,
        "PLUGIN_SERVE": "on" if served else "off",
    }
    for part in ("cache", "config", "data"):
        env[f"HELM_{part.upper()}_HOME"] = str(tmp_path / "helm" / part)
    command = [str(installed)]
    zygote = Zygote(env, command=command) if served else None
    try:
        before = zygote.served() if zygote is not None else 0
        run = plugin(["generate", "--verbose", "."], env, cwd=chart, command=command)
        if zygote is not None:
            assert zygote.served() == before + 2  # the render and this --status
    finally:
        if zygote is not None:
            zygote.stop()
    assert run.code == 0, run.stderr
    assert f"token: {CANARY}".encode() in run.stdout and b"name: " in run.stdout
    assert openbao.root_token.encode() not in run.stderr
