"""No import cycles in tbctl/: a module that needs another at import time never needs itself back. Only
module-level imports count; one inside a function runs later, and one under `if TYPE_CHECKING:` never."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tbctl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module, module: str, *, is_package: bool) -> set[str]:
    """The modules `module` imports when it is imported (`from a import b` counts as a.b when b is a module)."""
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If) and not _is_type_checking(node.test):
            pending.extend([*node.body, *node.orelse])
        elif isinstance(node, ast.If):
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)])
        elif isinstance(node, ast.With):
            pending.extend(node.body)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        imported = _module_level_imports(ast.parse(path.read_text()), name, is_package=path.name == "__init__.py")
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle, as the chain of modules that closes it, or None."""
    done: set[str] = set()

    def visit(node: str, chain: list[str]) -> list[str] | None:
        if node in chain:
            return [*chain[chain.index(node):], node]
        if node in done:
            return None
        for following in sorted(graph[node]):
            found = visit(following, [*chain, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_walk_sees_module_level_imports_only() -> None:
    tree = ast.parse("import a\nfrom b import c\nif TYPE_CHECKING:\n    import d\ndef f():\n    import e\n")
    assert _module_level_imports(tree, "tbctl.x", is_package=False) == {"a", "b", "b.c"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_tbctl_has_no_import_cycles() -> None:
    graph = _graph()
    assert "tbctl.cli.app" in graph and graph["tbctl.cli.options"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
