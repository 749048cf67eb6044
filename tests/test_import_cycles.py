"""No import cycles in tbctl/: a module that needs another never needs itself back. Every import counts,
those inside a function too (they only run later: a circle through one is still a circle a reader has to
follow, and a change that moves the import up turns it into an import error); one under
`if TYPE_CHECKING:` never runs, and does not count.

A package's `__init__` counts with its module-level imports only. Every module of the package runs it first,
so an import inside one of its functions would close a circle with everything; those functions are where
users come in from outside (`tbctl.up` loads tbctl.api on first use, `%load_ext tbctl` the notebook magic),
and nothing inside tbctl calls them."""

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


def _imports(tree: ast.Module, module: str, *, is_package: bool, later_too: bool = True) -> set[str]:
    """The modules `module` imports, at import time or (`later_too`) later from a function (`from a import b`
    counts as a.b when b is a module); not those under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
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
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
        elif later_too or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        imported = _imports(ast.parse(path.read_text()), name, is_package=is_package, later_too=not is_package)
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


def test_the_walk_sees_function_level_imports_but_not_type_checking_ones() -> None:
    tree = ast.parse("import a\nfrom b import c\nif TYPE_CHECKING:\n    import d\ndef f():\n    import e\n"
                     "class K:\n    def g(self):\n        if x:\n            from .h import i\n")
    assert _imports(tree, "tbctl.x", is_package=False) == {"a", "b", "b.c", "e", "tbctl.h", "tbctl.h.i"}
    assert _imports(tree, "tbctl", is_package=True, later_too=False) == {"a", "b", "b.c"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_tbctl_has_no_import_cycles() -> None:
    graph = _graph()
    assert "tbctl.cli.app" in graph and graph["tbctl.cli.options"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
