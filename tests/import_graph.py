"""The package's import graph, read from the source (nothing is imported): which subpackage imports which.

    python tests/import_graph.py [SRC]     # SRC: a videorope_trt folder (default: this checkout's)

prints one line per subpackage, `artifact -> (nothing)`, `runtime -> artifact, media, ...`, counting imports made at
module level and inside functions alike, then any modules that import each other in a loop. `tests/test_package.py`
holds the graph against its table of forbidden edges and asserts that there is no loop; this prints it for a reader,
or for another checkout (`git worktree add /tmp/old REV`, then `python tests/import_graph.py /tmp/old/videorope_trt`).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "videorope_trt"


def imports(path: Path) -> set:
    """The videorope_trt modules a file imports (at module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def package_of(module: str) -> str:
    """`videorope_trt.runtime.session` → `runtime`; the top-level package itself → ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def owner(root: Path, path: Path) -> str:
    """The subpackage a file belongs to (a top-level module such as trt.py is its own)."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def graph(root: Path) -> dict:
    """subpackage → the other subpackages (and top-level modules) it imports."""
    parts = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    edges = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        src = owner(root, path)
        edges[src] |= ({package_of(m) for m in imports(path)} & parts) - {src, "__init__"}
    return dict(edges)


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join((PACKAGE, *parts))


def module_graph(root: Path) -> dict:
    """module → the package's modules it imports (`from m import x` counts m.x where that is a module, else m)."""
    paths = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    edges = {}
    for name, path in paths.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                        for a in node.names}
        edges[name] = {m for m in out if m in paths and m != name}
    return edges


def cycles(edges: dict) -> list:
    """The groups of modules that import each other in a loop (strongly connected, two or more), each sorted."""
    reach = {}
    for start in edges:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    groups = {tuple(sorted({a} | {b for b in reach[a] if a in reach[b]})) for a in edges if a in reach[a]}
    return sorted(g for g in groups if len(g) > 1)


def main(argv) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / PACKAGE
    if not (root / "__init__.py").is_file():
        print(f"import_graph: {root} is not a package folder (no __init__.py); expected a videorope_trt folder",
              file=sys.stderr)
        return 2
    for src, dsts in sorted(graph(root).items()):
        if src != "__init__":
            print(f"{src} -> {', '.join(sorted(dsts)) or '(nothing)'}")
    for group in cycles(module_graph(root)):
        print(f"modules that import each other: {', '.join(group)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
