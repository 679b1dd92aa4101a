"""Dependencies run one way (DESIGN.md): read from the source, every import counted, lazy ones included."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "bratsseg"

# package -> packages it must never import (at module level or inside a function)
FORBIDDEN = {
    "models": {"data", "io", "engine", "inference", "compress", "metrics", "viz", "cli", "demo"},
    "io": {"data", "engine", "inference", "compress", "models", "viz", "cli", "demo"},
    "metrics": {"models", "engine", "inference", "compress", "data", "viz", "cli", "demo"},
    "inference": {"compress", "engine", "cli", "demo"},
    "labels": {"*"},
    "errors": {"*"},
    "atomic": {"*"},
    "padding": {"*"},
    "components": {"*"},
    "dataclass_io": {"*"},
}
LEAF_MAY_IMPORT = {"errors"}
ALLOWED = {"metrics": {"bratsseg.data.geometry"}}  # array geometry (bounding boxes), no files


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``bratsseg.*`` module ``path`` imports, resolved to module names."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bratsseg")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = me.split(".")[: -node.level] if path.name != "__init__.py" else me.split(".")[: 1 - node.level]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.startswith("bratsseg"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_packages_depend_one_way():
    bad = []
    for mod, deps in graph().items():
        rule = FORBIDDEN.get(subpackage(mod), set())
        for dep in deps:
            target = subpackage(dep)
            if target == subpackage(mod) or target in ("", *(LEAF_MAY_IMPORT if "*" in rule else ())):
                continue
            if dep in ALLOWED.get(subpackage(mod), set()):
                continue
            if "*" in rule or target in rule:
                bad.append(f"{mod} imports {dep}")
    assert not bad, bad


def test_no_import_cycles_between_modules():
    g = graph()
    # a package's __init__ re-exports its modules; an edge into an __init__ is an edge into what it re-exports
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    # cycles through a package's own __init__ (``bratsseg.x`` <-> ``bratsseg.x.y``) are Python's normal re-exports
    nested = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")  # noqa: E731
    real = [c for c in cycles if not any(nested(a, b) for a, b in itertools.pairwise(c))]
    assert not real, real


def test_no_import_cycles_between_packages():
    """Sub-packages form a DAG too (``compress -> engine -> compress`` was one): every import counted."""
    g = graph()
    edges: dict[str, set[str]] = {}
    for mod, deps in g.items():
        for dep in deps:
            a, b = subpackage(mod), subpackage(dep)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
    cycles = []
    for a, targets in edges.items():
        for b in targets:
            # a path back from b to a closes a cycle
            seen, todo = set(), [b]
            while todo:
                node = todo.pop()
                if node == a:
                    cycles.append((a, b))
                    break
                if node not in seen:
                    seen.add(node)
                    todo.extend(edges.get(node, ()))
    assert not cycles, sorted(cycles)


def test_model_card_and_weights_need_no_nifti_stack():
    """Reading a card imports neither PyTorch nor nibabel; loading weights imports no nibabel."""
    code = (
        "import sys; from bratsseg.models.card import read_card; "
        "assert 'torch' not in sys.modules and 'nibabel' not in sys.modules, 'card'; "
        "from bratsseg.models.files import load_model; "
        "assert 'nibabel' not in sys.modules, 'weights'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
