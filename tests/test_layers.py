"""The folders are the pipeline: imports point down only, no cycles, the server never loads
training or offline code, and modules stay small. Checked on the real import graph (ast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower rank = lower layer. A module may import its own package and those ranked below it.
RANK = {"indexer": 0, "retriever": 1, "ranker": 2, "evaluation": 3, "bench": 3, "api": 4}
MAX_LINES = 400
# What the HTTP server must never load: training loops, offline evaluation, benchmarks.
NOT_IN_SERVER = ("ranker.train", "ranker.pairs", "ranker.card", "ranker.distill", "evaluation", "bench",
                 "retriever.encoder_train")


def modules() -> dict[str, Path]:
    out = {}
    for package in RANK:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_imports_point_down_only():
    upward = [f"{a} -> {b}" for a, deps in graph().items() for b in deps
              if RANK[b.split(".")[0]] > RANK[a.split(".")[0]]]
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if dep not in g or dep.startswith(node + "."):
                continue  # a package re-exporting its own modules is not a cycle
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_server_does_not_load_training_or_offline_code():
    code = ("import sys, api.app, api.deps, api.routes.users, api.routes.items, api.routes.search; "
            "print('\\n'.join(sorted(m for m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    bad = [m for m in loaded.stdout.split() if m.startswith(NOT_IN_SERVER)]
    assert not bad, f"the server imports training/offline modules: {bad}"


def test_modules_stay_small():
    big = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_every_name_a_module_imports_from_the_project_exists():
    """A name imported from a project module is defined there (a stale import after a move broke
    ``evaluation.query_reranker`` unnoticed: no test imported it). Checked on the ast, without
    importing anything: every ``from project.module import name`` names a top-level definition,
    import or submodule of that module."""
    mods = modules()
    defined: dict[str, set[str]] = {}
    for name, path in mods.items():
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, (ast.If, ast.Try)):  # guarded definitions count too
                names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                names |= {d.name for d in ast.walk(node) if isinstance(d, (ast.FunctionDef, ast.ClassDef))}
        defined[name] = names
    missing = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base not in mods:
                continue
            for alias in node.names:
                if alias.name not in defined[base] and f"{base}.{alias.name}" not in mods:
                    missing.append(f"{name}: from {base} import {alias.name}")
    assert not missing, missing
