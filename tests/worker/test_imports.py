"""The shape of the code, checked: no import cycles between simjail's modules, no module
importing another module's private names, and the light entry points stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(p): ast.parse(p.read_text(), str(p))
        for p in sorted(SRC.rglob("*.py"))
        if "egg-info" not in str(p)
    }


def _top_level_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Imports that run when the module is imported (not those inside functions, and not
    those only for type checkers)."""
    found: list[ast.ImportFrom | ast.Import] = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                break
            if isinstance(sub, ast.Import | ast.ImportFrom):
                found.append(sub)
    return found


def _targets(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    out = set()
    for n in names:
        while n and n not in known:
            n = n.rpartition(".")[0]
        if n:
            out.add(n)
    return out


def test_there_are_no_import_cycles() -> None:
    mods = _modules()
    known = set(mods)
    graph = {
        m: {t for node in _top_level_imports(tree) for t in _targets(node, known) if t != m}
        for m, tree in mods.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(known):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for m, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != m:
                offenders += [
                    f"{m}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert offenders == []


def test_the_cli_and_the_workflow_import_neither_mujoco_nor_build123d() -> None:
    """Nor does the pipeline import the S3 store or the nsjail launcher until they are used."""
    heavy = ("mujoco", "build123d", "OCP", "av", "worker.storage.s3", "worker.sandbox.nsjail")
    code = (
        "import sys, worker.cli.main, worker.simulation.temporal.workflows, worker.pipeline; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
