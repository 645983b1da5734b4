"""The code's shape, for reviews of the layout: files and lines per package, the median and
largest file, the import arrows and cycles between the modules of actors/, and how often
``dict[str, Any]`` is written. ``python3 scripts/shape.py [ROOT]``."""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
PACKAGES = ("bus", "store", "actors", "stages")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports (``from a import b`` is ``a.b`` when
    that is a module, else ``a``), at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
    return found & modules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = []
            while True:
                top = stack.pop()
                on.discard(top)
                comp.append(top)
                if top == node:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def main() -> None:
    for package in PACKAGES:
        files = sorted((ROOT / package).rglob("*.py"))
        lengths = sorted(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
        largest = max(files, key=lambda f: len(f.read_text(encoding="utf-8").splitlines()))
        print(
            f"{package}: {len(files)} files, {sum(lengths)} lines, median {statistics.median(lengths):g}, "
            f"largest {lengths[-1]} ({largest.relative_to(ROOT)})"
        )
    files = sorted((ROOT / "actors").rglob("*.py"))
    modules = {module_name(f): f for f in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = imports(path, set(modules)) - {name}
    arrows = sum(len(v) for v in graph.values())
    found = cycles(graph)
    print(
        f"actors: {arrows} import arrows, {len(found)} cycles"
        + "".join(f"\n  cycle: {' -> '.join(c)}" for c in found)
    )
    anys = 0
    for package in PACKAGES:
        for f in (ROOT / package).rglob("*.py"):
            anys += f.read_text(encoding="utf-8").count("dict[str, Any]")
    print(f"dict[str, Any]: {anys} occurrences in {', '.join(PACKAGES)}")


if __name__ == "__main__":
    main()
