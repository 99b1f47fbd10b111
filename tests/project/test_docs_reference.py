"""The documentation says what the code does.

- docs/configuration.md has ONE reference table; every environment variable the code reads and
  every parameter it accepts is in it, and everything in it is read by the code.
- Every command-line flag appears in docs/configuration.md.
- docs/placeholders.md names every modifier and every `avp.kubernetes.io/*` annotation.
- Relative links between the documents point at files that exist.

What "the code reads" is found by scanning `plugin/**/*.py` with `ast`: string literals (or
module-level string constants) that look like environment variable names, passed to
`Settings.lookup/get/require/get_int/get_float/get_bool`, `get_duration`, `os.getenv`, the auth
helpers `required/missing/mount_path`, or used as `environ[...]`, `environ.get(...)` or
`... in environ`. Parameters come from `plugin.argocd.request.PARAMETERS`,
`cmp-config/plugin.yaml` and the dynamic announcement of `plugin parameters`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plugin.argocd.request import PARAMETERS
from plugin.cli import build_parser, main
from plugin.placeholders import annotations, modifiers

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
REFERENCE_HEADING = "## Reference table"

ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
SETTINGS_CALL = re.compile(
    r"settings\.(?:lookup|get|require|get_int|get_float|get_bool)\(\s*\"([A-Z0-9_]+)\""
)
DURATION_CALL = re.compile(r"get_duration\(\s*settings,\s*\"([A-Z0-9_]+)\"")
READER_CALLS = frozenset(
    {
        "lookup",
        "get",
        "require",
        "get_int",
        "get_float",
        "get_bool",
        "get_go_bool",
        "get_duration",
        "getenv",
        "required",
        "missing",
        "mount_path",
    }
)

#: Read by the code but intentionally not in the reference table, with the reason.
UNDOCUMENTED = {
    # Test-only overrides of the in-cluster service-account files used to read a settings
    # Secret; process environment only, so an Application cannot move them.
    "KUBERNETES_SA_TOKEN_PATH": "test-only override",
    "KUBERNETES_SA_CA_PATH": "test-only override",
    # Test hook: forces the Landlock ABI lower (0 simulates a kernel without Landlock);
    # process environment only; it can only lower the ABI (`auto` then runs unconfined,
    # `required` fails closed).
    "PLUGIN_SANDBOX_TEST_ABI": "test hook",
}


# ------------------------------------------------------------------------------ the code


def _module_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for node in tree.body:
        value: ast.expr | None = None
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            value, targets = node.value, list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            value, targets = node.value, [node.target]
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = value.value
    return constants


def _strings(node: ast.AST, constants: dict[str, str]) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Name) and node.id in constants:
        yield constants[node.id]
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        for element in node.elts:
            yield from _strings(element, constants)


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def variables_read_by_code() -> dict[str, set[str]]:
    """Environment-variable-like names the plugin reads -> files that read them."""
    found: dict[str, set[str]] = {}
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / "plugin").rglob("*.py"))
    }
    # Constants imported from another module
    # (`from plugin.manifests.inputs import MAX_INPUT_SETTING`)
    # resolve through every module's constants; a module's own constants win.
    shared: dict[str, str] = {}
    for tree in trees.values():
        shared.update(_module_constants(tree))
    for path, tree in trees.items():
        constants = {**shared, **_module_constants(tree)}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Call) and _name_of(node.func) in READER_CALLS:
                for argument in node.args:
                    names.extend(_strings(argument, constants))
            elif isinstance(node, ast.Subscript) and "environ" in _name_of(node.value):
                names.extend(_strings(node.slice, constants))
            elif (
                isinstance(node, ast.Compare)
                and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                and "environ" in _name_of(node.comparators[0])
            ):
                names.extend(_strings(node.left, constants))
            for name in names:
                if ENV_NAME.match(name) and len(name) > 2:
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def parameters_of_code() -> set[str]:
    names = {spec.name for spec in PARAMETERS}
    plugin_yaml = yaml.safe_load((ROOT / "cmp-config" / "plugin.yaml").read_text())
    static = (plugin_yaml.get("spec", {}).get("parameters") or {}).get("static") or []
    names.update(item["name"] for item in static)
    names.update(item["name"] for item in dynamic_announcement())
    return names


def dynamic_announcement() -> list[dict[str, object]]:
    """What `plugin parameters` announces for a Helm chart (the dynamic parameters)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
        (chart / "values.yaml").write_text("image:\n  tag: '1'\n")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["parameters", str(chart)]) == 0
    items = json.loads(out.getvalue())
    assert isinstance(items, list)
    return items


# ------------------------------------------------------------------------------ the docs


def reference_rows() -> dict[str, list[str]]:
    """Name -> cells of each row of the reference table in docs/configuration.md."""
    lines = CONFIGURATION.read_text(encoding="utf-8").splitlines()
    assert lines.count(REFERENCE_HEADING) == 1, f"exactly one {REFERENCE_HEADING!r} section"
    start = lines.index(REFERENCE_HEADING) + 1
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in lines[start:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        if match is None:
            continue  # header and separator rows
        name = match.group(1)
        assert name not in rows, f"{name} appears twice in the reference table"
        rows[name] = cells
    assert rows, "the reference table is empty"
    return rows


def test_reference_table_has_four_columns_filled() -> None:
    for name, cells in reference_rows().items():
        assert len(cells) == 4, f"{name}: expected Name | Default | Where | What, got {cells}"
        assert cells[2], f"{name}: 'Where' is empty"
        assert cells[3], f"{name}: 'What it does' is empty"


def test_every_variable_read_is_documented() -> None:
    documented = {name for name in reference_rows() if ENV_NAME.match(name)}
    read = variables_read_by_code()
    missing = {
        name: sorted(files)
        for name, files in read.items()
        if name not in documented and name not in UNDOCUMENTED
    }
    assert not missing, f"read by the code but not in docs/configuration.md: {missing}"


def test_every_documented_variable_is_read() -> None:
    documented = {name for name in reference_rows() if ENV_NAME.match(name)}
    read = set(variables_read_by_code())
    stale = sorted(documented - read)
    assert not stale, f"in docs/configuration.md but not read by the code: {stale}"


def test_allow_list_is_still_needed() -> None:
    read = set(variables_read_by_code())
    assert set(UNDOCUMENTED) <= read, "remove names the code no longer reads from UNDOCUMENTED"
    assert not set(UNDOCUMENTED) & set(reference_rows()), "documented names need no allow-list"


def test_every_parameter_is_documented_and_exists() -> None:
    documented = {name for name in reference_rows() if PARAMETER_NAME.match(name)}
    code = parameters_of_code()
    assert code - documented == set(), f"parameters missing from the docs: {code - documented}"
    assert documented - code == set(), f"documented parameters unknown: {documented - code}"


def test_parameter_kinds_match_the_code() -> None:
    rows = reference_rows()
    for spec in PARAMETERS:
        where = rows[spec.name][2]
        assert f"({spec.collection})" in where, f"{spec.name}: docs say {where!r}"


def test_where_column_matches_how_the_code_reads() -> None:
    """Variables read through `Settings` can come from the Application (A); the others not."""
    rows = reference_rows()
    settings_names: set[str] = set()
    for path in sorted((ROOT / "plugin").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        settings_names.update(SETTINGS_CALL.findall(text))
        settings_names.update(DURATION_CALL.findall(text))
    for name in sorted(settings_names):
        if name in rows:
            assert "A" in rows[name][2].split(", "), f"{name} is read through Settings: add A"
    for name, cells in rows.items():
        if cells[2] == "S":
            assert name not in settings_names, f"{name} is read through Settings, not only S"


# ------------------------------------------------------------------------------ flags, grammar


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    options: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _long_options(sub)
        options.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
    return options


def test_every_flag_is_documented() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(flag for flag in _long_options(build_parser()) if f"`{flag}" not in text)
    assert not missing, f"flags missing from docs/configuration.md: {missing}"


def test_placeholders_doc_names_every_modifier_and_annotation() -> None:
    text = (DOCS / "placeholders.md").read_text(encoding="utf-8")
    for name in modifiers.REGISTRY:
        assert f"`{name}" in text, f"modifier {name} is not documented"
    constants = [
        value
        for key, value in vars(annotations).items()
        if key.isupper()
        and isinstance(value, str)
        and value.startswith(annotations.PREFIX)
        and value != annotations.PREFIX
    ]
    assert len(constants) >= 6
    for annotation in constants:
        assert f"`{annotation}`" in text, f"annotation {annotation} is not documented"


# ------------------------------------------------------------------------------ links


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        if not (path.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files: {broken}"
