"""The client in front of every command: what it costs to start (modules), with a real zygote.

Argo CD starts one `plugin` process per render, so every module the client imports is paid on
every render. The console script pip writes imports `re` and `sys`, then `plugin.__main__`;
from there on only the client's own modules and two C modules may be loaded when the zygote
renders. The image's launcher (`plugin.serve.launcher`, `python -IS`) loads neither `site` nor
`re`: only what the interpreter needs to start, `os`, and the client's modules. A test of
modules, not of time: it fails the day an import slips in.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from plugin.serve import launcher
from tests.serve.support import PYTHON, Zygote, file_env

#: What the client may import beyond the interpreter's start and the console script's `re`.
ALLOWED = {
    "plugin",
    "plugin.__main__",
    "plugin.serve",
    "plugin.serve.client",
    "_socket",  # the C module behind `socket` (the wrapper builds enums at import)
    "_signal",  # the C module behind `signal` (same)
}

#: The console script as pip (distlib) writes it for `plugin = "plugin.__main__:main"`, with
#: the modules loaded at the end written to the file named by the first argument.
CONSOLE_SCRIPT = """
import sys
out, sys.argv = sys.argv[1], ["plugin", *sys.argv[2:]]
import re
shim = set(sys.modules)
from plugin.__main__ import main
code = main()
loaded = sorted(set(sys.modules) - shim)
with open(out, "w") as handle:
    handle.write(__import__("json").dumps(loaded))
sys.exit(code)
"""


def client_modules(tmp_path: Path, env: dict[str, str], *argv: str) -> tuple[list[str], bytes]:
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [PYTHON, "-c", CONSOLE_SCRIPT, str(out), *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "m.yaml").write_text("kind: ConfigMap\ndata:\n  user: <path:app#user>\n")
    return file_env(tmp_path, "app:\n  user: someone\n")


def test_a_render_through_the_zygote_imports_only_the_client(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    before = zygote.served()
    modules, stdout = client_modules(tmp_path, env, "generate", "m.yaml")
    assert zygote.served() == before + 2  # the render and this --status
    assert b"user: someone" in stdout
    assert set(modules) - ALLOWED == set(), "the client imported more than it needs"


def test_without_a_zygote_the_client_imports_the_whole_plugin(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The check above can fail: the in-process fallback imports everything."""
    modules, stdout = client_modules(tmp_path, env, "generate", "m.yaml")
    assert b"user: someone" in stdout
    assert "plugin.cli" in modules and "socket" in modules


def imported(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], bytes]:
    """Every module a `python -X importtime ...` run imported, from start-up on."""
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.decode().splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    return modules - {"imported package"}, proc.stdout


def test_the_image_launcher_loads_neither_site_nor_re(
    tmp_path: Path, env: dict[str, str], zygote: Zygote
) -> None:
    """The launcher (`python -IS`): the client's modules and `os`, no `site`, `re` or `enum`."""
    script = tmp_path / "plugin"
    assert launcher.main([str(script)]) == 0
    flags = f"#!{PYTHON} {launcher.SHEBANG_FLAGS}\n"
    assert script.read_text().startswith(flags)  # so `python -IS script` is what the kernel runs
    interpreter, _ = imported([launcher.SHEBANG_FLAGS, "-c", "import os"], env, tmp_path)
    before = zygote.served()
    run = [launcher.SHEBANG_FLAGS, str(script), "generate", "m.yaml"]
    modules, stdout = imported(run, env, tmp_path)
    # The control, also served by the zygote: pip's console script loads all three.
    pip_script = ["-c", CONSOLE_SCRIPT, str(tmp_path / "modules.json"), "generate", "m.yaml"]
    pip_modules, pip_stdout = imported(pip_script, env, tmp_path)
    assert zygote.served() == before + 3  # the two renders and this --status
    assert b"user: someone" in stdout and stdout == pip_stdout
    assert {"site", "re", "enum"} <= pip_modules
    assert {"site", "re", "enum"} & modules == set()
    assert modules - interpreter - ALLOWED == set(), "the launcher imported more than it needs"
