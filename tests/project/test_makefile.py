"""The Makefile's newcomer path: `make demo` fetches only Helm and prints only YAML on stdout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def recipe(target: str) -> tuple[list[str], list[str]]:
    """A target's prerequisites and recipe lines."""
    text = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n|[^\n]*\\\n)*)", text, re.M)
    assert found is not None, target
    logical = found.group(2).replace("\\\n", " ")  # continuation lines belong to one command
    lines = [line for line in logical.split("\n") if line.startswith("\t")]
    return found.group(1).split(), lines


def test_demo_installs_only_helm() -> None:
    prerequisites, lines = recipe("demo")
    assert "tools" not in prerequisites
    installs = [line for line in lines if "install-tools" in line]
    assert installs
    assert all(re.search(r"install-tools helm3\b", line) for line in installs)


def test_demo_prints_only_yaml_on_stdout() -> None:
    """`make demo > out.yaml`: make echoes no command, progress goes to stderr."""
    for target in ("demo", "$(VENV_STAMP)"):
        _, lines = recipe(target)
        assert lines
        assert all(line.startswith("\t@") for line in lines), target
    _, demo = recipe("demo")
    assert all(line.rstrip().endswith(">&2") for line in demo if "install-tools" in line)
