"""The shape of the package: a pure core that never imports Flask, a Flask layer without import cycles, and the
extension at the top of it (only the package's ``__init__`` imports it).

Read from the source, as imports at module level (a ``TYPE_CHECKING`` block imports nothing at run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_jwtgate"

#: The modules that decide: plain functions and classes over plain data, unit-tested without an app.
PURE_CORE = [
    "addresses", "ascii_numbers", "credentials", "errors", "identity", "keys", "lint", "paths", "policy", "ratelimit",
    "redaction", "settings", "verification",
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports at run time: package modules by full name, others by their top-level name."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                found.add((node.module or "").split(".")[0])
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if (PACKAGE.parent / submodule.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / submodule.replace(".", "/")).is_dir() else target)
    return found


GRAPH = {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_core_never_imports_flask(module: str) -> None:
    imported = GRAPH[f"flask_jwtgate.{module}"]
    assert not imported & {"flask", "werkzeug", "flask_limiter", "flask_sqlalchemy"}, imported


def test_the_package_has_no_import_cycle() -> None:
    def visit(module: str, stack: list[str], done: set[str]) -> None:
        for imported in GRAPH.get(module, ()):
            if imported not in GRAPH or imported == "flask_jwtgate":
                continue  # outside the package; the package's __init__ re-exports, it is imported by no module
            assert imported not in stack, " -> ".join([*stack[stack.index(imported) :], imported])
            if imported not in done:
                visit(imported, [*stack, imported], done)
        done.add(module)

    done: set[str] = set()
    for module in GRAPH:
        visit(module, [module], done)


def test_only_the_package_imports_the_extension() -> None:
    importers = sorted(name for name, imported in GRAPH.items() if "flask_jwtgate.extension" in imported)
    assert importers == ["flask_jwtgate"]
