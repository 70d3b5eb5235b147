"""The house rules of DESIGN §2 and §12, checked on the source: imports point inwards (the core is
pure and does no I/O), there is no import cycle, no private name is imported across modules, every
lazily exported name resolves, and the command line starts without torch."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lmzoo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported lmzoo module, names taken from it) for every import statement, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmzoo"):
            names = [a.name for a in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            found.append((node.module, [n for n in names if f"{node.module}.{n}" not in MODULES]))
            found.extend((m, []) for m in submodules)
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("lmzoo"))
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {m for m, _ in _imports(path) if m in MODULES and m != name} - {"lmzoo"}
        for name, path in MODULES.items()
    }


def test_no_import_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_no_private_name_is_imported_across_modules():
    crossing = [
        f"{name} imports {module}: {', '.join(n for n in names if _private(n))}"
        for name, path in MODULES.items()
        for module, names in _imports(path)
        if any(_private(n) for n in names) or any(_private(p) for p in module.split(".")[1:])
    ]
    assert crossing == []


def test_the_core_is_pure():
    """lmzoo/core imports only itself and the error types, opens no files and prints nothing."""
    for name, path in MODULES.items():
        if not name.startswith("lmzoo.core"):
            continue
        text = path.read_text()
        outward = [m for m, _ in _imports(path) if not m.startswith("lmzoo.core") and m != "lmzoo.errors"]
        assert outward == [], name
        tree = ast.parse(text)
        imported = {
            a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        imported |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not imported & {"os", "pathlib", "tempfile", "shutil", "timm", "diffusers", "io"}, name
        calls = {
            n.func.id if isinstance(n.func, ast.Name) else n.func.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))
        }
        assert not calls & {"open", "print", "read_text", "write_text", "exit", "eval", "exec"}, name


def test_adapters_depend_on_the_core_only():
    allowed = ("lmzoo.core", "lmzoo.adapters", "lmzoo.errors", "lmzoo.registry")
    for name, path in MODULES.items():
        if name.startswith("lmzoo.adapters"):
            assert [m for m, _ in _imports(path) if not m.startswith(allowed)] == [], name


LAZY_PACKAGES = ["lmzoo", "lmzoo.latency", "lmzoo.importance", "lmzoo.pipeline"]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_export_resolves_and_is_declared_for_type_checkers(package):
    module = importlib.import_module(package)
    exports = {name: where for where, names in module._EXPORTS.items() for name in names}
    tree = ast.parse(MODULES[package].read_text())
    typed = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    }
    assert typed == set(exports)
    for name, where in exports.items():
        assert getattr(module, name) is getattr(importlib.import_module(where), name), name
    assert set(exports) <= set(dir(module)) and set(exports) <= set(module.__all__)


def test_the_command_line_and_listing_start_without_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from lmzoo.cli import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        "result = CliRunner().invoke(main, ['list'])\n"
        "assert 'mobilenetv2-fmnist-layermerge-1.6x' in result.output, result.output\n"
        "import lmzoo\n"
        "lmzoo.list_models(); lmzoo.registered_sources()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
