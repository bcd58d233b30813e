"""The shape of the zoned package, read with ast (nothing is imported, no root needed):
no import cycles between its modules, counting the imports inside functions too (they are
where zoned hides most of its imports, for start-up time), and no module over MAX_LINES.

Both checks have an allow-list of what the tree had when they were written. An entry that
no longer applies fails the test too, so that the lists can only shrink.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unprivileged

PACKAGE = Path(__file__).resolve().parent.parent / "zoned"
MAX_LINES = 600  # "no module over ~600 lines" (lifecycle.py and oci/spec.py were split to fit)

# Modules over MAX_LINES: none since issue 11 split them; never add one (split the module).
TOO_LONG: set[str] = set()  # none left: keep it that way

# Imports that close a cycle (the importer, the imported), which the test would ignore:
# none since issue 11; never add one (move what is imported to where both can use it).
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()  # none left: keep it that way


def modules() -> dict[str, Path]:
    """zoned's modules by dotted name (a package by its __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:`: imports for annotations only, never run."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import statement in the tree, at any depth, but those under TYPE_CHECKING."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The zoned modules that module `name` imports, anywhere in its code."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from zoned import spec` imports the module zoned.spec; `from zoned.spec
            # import parse_size` the module zoned.spec
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for t in targets:
            while t and t not in known:  # `import zoned.cli.run as r`, a name in a module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def extensions() -> set[str]:
    """The compiled modules (zoned._native, zoned._seccomp): imported, importing nothing."""
    return {".".join([*p.parent.relative_to(PACKAGE.parent).parts, p.name.split(".")[0]])
            for p in PACKAGE.rglob("*.so")}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | extensions()
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path(graph: dict[str, set[str]], component: set[str]) -> str:
    """One cycle through the component, for the failure message: a -> b -> a."""
    start = min(component)
    seen = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return " -> ".join(seen[v] + [start])
            if w not in seen:
                seen[w] = seen[v] + [w]
                todo.append(w)
    return ", ".join(sorted(component))


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w == goal:
                return True
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


def test_no_import_cycles():
    graph = import_graph()
    pruned = {v: ws - {w for (u, w) in KNOWN_CYCLE_EDGES if u == v} for v, ws in graph.items()}
    found = cycles(pruned)
    assert not found, "import cycles:\n" + "\n".join(_path(pruned, c) for c in found)
    # An allowed edge that no longer closes a cycle (alone with the graph's other edges) has
    # been fixed: the list must shrink with it.
    gone = sorted((u, w) for (u, w) in KNOWN_CYCLE_EDGES
                  if w not in graph.get(u, ()) or not reaches(pruned, w, u))
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLE_EDGES: {gone}"


def test_no_module_too_long():
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    long = {name for name, n in lengths.items() if n > MAX_LINES}
    new = sorted(long - TOO_LONG)
    assert not new, (f"modules over {MAX_LINES} lines (split them): "
                     + ", ".join(f"{m} ({lengths[m]})" for m in new))
    gone = sorted(m for m in TOO_LONG - long)
    assert not gone, f"no longer over {MAX_LINES} lines, remove them from TOO_LONG: {gone}"


def test_the_checks_see_what_they_check():
    """The graph finds imports inside functions and relative ones, and a cycle made of them;
    without this a walker that saw nothing would pass every tree."""
    graph = import_graph()
    assert "zoned.cli.run" in graph["zoned.cli"] or "zoned.cli.parser" in graph["zoned.cli"]
    assert "zoned.runconfig" in graph["zoned.cli.run"]  # imported inside cmd_run
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _path({"a": {"b"}, "b": {"a"}}, {"a", "b"}) == "a -> b -> a"
