"""The package's shape: no import circle between our modules, no arrow from the models up to the callbacks."""

from __future__ import annotations

import ast
from pathlib import Path

import anomalib_firm

PACKAGE_ROOT = Path(anomalib_firm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, module_level_only: bool) -> set[str]:
    """Our modules that ``path`` imports (relative imports resolved); function bodies skipped if asked."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    nodes = ast.walk(tree) if not module_level_only else _outside_functions(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in candidates if name.startswith("anomalib_firm") and _exists(name))
    return found


def _outside_functions(tree: ast.AST) -> list[ast.AST]:
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _exists(module: str) -> bool:
    path = PACKAGE_ROOT.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {
        _module_name(path): _imported_modules(path, module_level_only) - {_module_name(path)}
        for path in PACKAGE_ROOT.rglob("*.py")
    }


def test_no_import_circle_between_our_modules():
    graph = _graph(module_level_only=True)  # imports at module level, ``if TYPE_CHECKING`` ones included
    # A package's ``__init__`` importing its own sub-modules is how packages re-export, not a circle.
    edges = {
        module: {target for target in targets if not module.startswith(f"{target}.")}
        for module, targets in graph.items()
    }
    visiting: list[str] = []
    done: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circles.append([*visiting[visiting.index(module) :], module])
            return
        visiting.append(module)
        for target in sorted(edges.get(module, ())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    assert circles == []


def test_models_never_import_the_callbacks_package():
    graph = _graph(module_level_only=False)  # lazy imports inside functions too
    upward = {
        module: sorted(target for target in targets if target.startswith("anomalib_firm.callbacks"))
        for module, targets in graph.items()
        if module.startswith("anomalib_firm.models")
    }
    assert {module: targets for module, targets in upward.items() if targets} == {}
