"""The import graph of src/alignkit: no circle between modules (lazy imports inside functions count
too), and imports flow one way: models/ does not reach into training/, eval/ and training/ know
nothing of the demo world."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """module -> the alignkit modules it imports anywhere in its file (a package's __init__ counts as
    the package; `from alignkit.x import name` counts as alignkit.x.name when that is a module)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    """So the test above can fail: a -> b -> c -> a is one component, d alone is none."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_flow_one_way():
    graph = import_graph()
    rules = {"alignkit.models": ("alignkit.training", "alignkit.stages", "alignkit.world"),
             "alignkit.eval": ("alignkit.world", "alignkit.stages", "alignkit.training"),
             "alignkit.training": ("alignkit.world", "alignkit.stages"),
             "alignkit.losses": ("alignkit.training", "alignkit.stages", "alignkit.world", "alignkit.models"),
             "alignkit.rl": ("alignkit.training", "alignkit.stages", "alignkit.world")}
    bad = [(m, d) for m, deps in graph.items() for d in deps for low, banned in rules.items()
           if (m == low or m.startswith(low + ".")) and any(d == b or d.startswith(b + ".") for b in banned)]
    assert bad == []


def test_module_sizes():
    """No module over 600 lines; a stage reads in under 400."""
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 600} == {}
    assert {p: n for p, n in sizes.items() if p.startswith("alignkit/stages/") and n >= 400} == {}
