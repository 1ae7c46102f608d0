"""The package's import graph has no cycle: every `import` (module level or inside a function)
between autocompress modules is an edge. A cycle means two modules that cannot be read, tested
or changed apart (issue 12 removed nets -> techniques.quantize -> techniques.base -> nets)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "autocompress"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub where there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]], roots: set[str]) -> list[str] | None:
    """A cycle among modules other than `roots` (package __init__ files only re-export)."""
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m] - roots):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n, stack + [n])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(set(graph) - roots):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    roots = {m for m in graph if (PKG.parent / m.replace(".", "/") / "__init__.py").exists()}
    assert find_cycle(graph, roots) is None, " -> ".join(find_cycle(graph, roots))


def test_the_cycle_finder_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(g, set()) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}, set()) is None


def test_low_level_modules_import_no_technique():
    graph = import_graph()
    for low in ("autocompress.nets", "autocompress.artifact", "autocompress.quantgrid", "autocompress.codec",
                "autocompress.runtime"):
        assert not {m for m in graph[low] if m.startswith("autocompress.techniques")}, low
