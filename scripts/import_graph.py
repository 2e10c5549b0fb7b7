"""The module import graph in numbers: modules, imports, imports across the top packages and
import cycles. Run from the repository root: `.venv/bin/python scripts/import_graph.py`
(`lint-imports` checks the contracts; this shows the shape)."""

from __future__ import annotations

import sys

import grimp

PACKAGES = ("bastion", "recorder", "player")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a circle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                found.append(sorted([module, *group]))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def main() -> None:
    sys.path.insert(0, ".")
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = {m for m in graph.modules if not m.endswith("._digits")}
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    imports = [(a, b) for a, targets in edges.items() for b in targets]
    print(f"{len(modules)} modules, {len(imports)} imports")
    for source, target in (("bastion", "player"), ("player", "bastion"), ("recorder", "bastion"),
                           ("recorder", "player")):
        across = sorted(f"{a} -> {b}" for a, b in imports
                        if a.split(".")[0] == source and b.split(".")[0] == target)
        print(f"{source} -> {target}: {len(across)}", *(f"\n  {line}" for line in across))
    groups = cycles(edges)
    print(f"import cycles: {len(groups)}", *(f"\n  {' <-> '.join(g)}" for g in groups))


if __name__ == "__main__":
    main()
