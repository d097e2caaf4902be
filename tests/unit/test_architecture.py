"""The package layout holds: no import cycles between netlab's modules (lazy imports inside functions count too),
and the pure layers never reach into the kernel edge."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "netlab"
# Pure layers (no root, no kernel): what they may not import.
PURE = ("netlab.model", "netlab.plan", "netlab.istio_init", "netlab.mesh")
EDGE = ("netlab.kernel", "netlab.engine", "netlab.proxy", "netlab.probe", "netlab.cli", "netlab.trace")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netlab"):
                deps.add(node.module)
                deps.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names if alias.name.startswith("netlab"))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for dep in graph[node]:
            if dep in path:
                cycle = path[path.index(dep):]
                start = cycle.index(min(cycle))
                found.add(tuple(cycle[start:] + cycle[:start]))
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    return found


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in sorted(found))


def test_pure_layers_do_not_import_the_kernel_edge() -> None:
    bad = [f"{module} imports {dep}" for module, deps in import_graph().items() if module.startswith(PURE)
           for dep in deps if dep.startswith(EDGE)]
    assert not bad, "\n".join(bad)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
