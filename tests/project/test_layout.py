"""The package layout is the pipeline: imports only point down the layer order, never in a cycle.

`LAYERS` is the order documented in docs/architecture.md. A module may import its own package
and any package of a lower layer, never one of a higher layer; lazy imports inside functions
count too (they are still a dependency). A new package must be given its place here, and in
docs/architecture.md, before it can be imported by anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugin"

#: Lowest first. Top-level modules count as packages of their own (`plugin.config` is `config`).
LAYERS: tuple[str, ...] = (
    "errors",
    "atomicfile",
    "libc",
    "manifests",
    "config",
    "security",
    "secrets",
    "placeholders",
    "argocd",
    "templating",
    "render",
    "rotation",
    "serve",
    "cli",
    "__main__",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """`plugin.secrets.vault.tls` -> `secrets`; `plugin` itself (the version) has no layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports_of(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every `plugin.*` module that `module` imports, at any depth of the file, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    known = modules()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "plugin":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "plugin":
                continue
            for alias in node.names:
                # `from plugin.x import y` names the module plugin.x.y when it is one.
                candidate = f"{target}.{alias.name}"
                yield (candidate if candidate in known else target), node.lineno


def test_every_package_has_a_layer() -> None:
    missing = sorted(
        {layer for name in modules() if (layer := layer_of(name)) and layer not in LAYERS}
    )
    assert not missing, (
        f"packages without a place in LAYERS: {missing}; add them to LAYERS here and to the "
        "layer list in docs/architecture.md"
    )


def test_every_package_says_what_it_owns() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        assert doc and len(doc) > 60, f"{init.relative_to(ROOT)} needs a docstring: what it owns"


def upward_imports() -> list[str]:
    found = []
    for name, path in modules().items():
        own = layer_of(name)
        if own is None:
            continue
        for target, line in imports_of(name, path):
            other = layer_of(target)
            if other is None or other == own or other not in LAYERS or own not in LAYERS:
                continue
            if LAYERS.index(other) > LAYERS.index(own):
                found.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {target} ({other})")
    return found


def test_no_upward_imports() -> None:
    assert upward_imports() == []


def import_cycles() -> list[list[str]]:
    """Cycles in the module graph (strongly connected components with more than one module)."""
    graph = {
        name: sorted({t for t, _ in imports_of(name, path) if t != name and t in modules()})
        for name, path in modules().items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def test_no_import_cycles() -> None:
    assert import_cycles() == []


# --- the checks themselves must be able to fail ------------------------------------------------


@pytest.fixture
def fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "plugin"
    for sub in ("secrets", "render"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text(f'"""{sub}."""\n')
    (package / "__init__.py").write_text('"""root."""\n')
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    return package


def test_an_upward_import_is_found(fake_tree: Path) -> None:
    (fake_tree / "render" / "helm.py").write_text("X = 1\n")
    (fake_tree / "secrets" / "file.py").write_text(
        "def f():\n    from plugin.render import helm\n    return helm\n"
    )
    assert upward_imports() == [
        "plugin/secrets/file.py:2: secrets imports plugin.render.helm (render)"
    ]


def test_a_cycle_is_found(fake_tree: Path) -> None:
    (fake_tree / "secrets" / "a.py").write_text("from plugin.secrets import b\n")
    (fake_tree / "secrets" / "b.py").write_text("from . import a\n")
    assert import_cycles() == [["plugin.secrets.a", "plugin.secrets.b"]]
