"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Rules (issue 10): no import cycle among qasr modules; ``qasr.clients`` imports no ``qasr.daemon`` module;
``qasr.engine`` imports nothing from ``qasr.daemon``, ``qasr.clients`` or ``qasr.config``; ``qasr.protocol``
nothing from ``qasr.daemon`` or ``qasr.clients``; no ``importlib.import_module``/``__import__`` of a qasr
module (a deferred import is a plain ``import`` inside a function); no module over 500 lines.

Every import statement counts: top-level, inside functions, and under ``if TYPE_CHECKING:`` too (a
type-only back-reference is still the loop between two modules that issue 10 asks to remove). ``from a.b import c`` is an edge to module ``a.b.c`` when that is a module, else to ``a.b``.
"""

from __future__ import annotations

import ast
import pkgutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The top-level packages and their folders (pyproject.toml [tool.setuptools.package-dir]); sub-packages are
# found by walking the folders.
PACKAGE_ROOTS = {
    "qasr": ROOT / "qasr",
    "qasr.engine": ROOT / "engine",
    "qasr.daemon": ROOT / "daemon",
    "qasr.clients": ROOT / "clients",
    "qasr.config": ROOT / "config",
}
MAX_LINES = 500
FORBIDDEN = [
    ("qasr.clients", ("qasr.daemon",)),
    ("qasr.engine", ("qasr.daemon", "qasr.clients", "qasr.config")),
    ("qasr.protocol", ("qasr.daemon", "qasr.clients")),
]


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)  # imported qasr module -> first line
    dynamic: list[str] = field(default_factory=list)  # "line N: importlib.import_module(...)"
    lines: int = 0


# ---- reading the package ------------------------------------------------------------------------


def walk_modules(roots: dict[str, Path] = PACKAGE_ROOTS) -> dict[str, Module]:
    """Every module of the package, by dotted name, found with pkgutil (no import)."""
    found: dict[str, Module] = {}

    def visit(package: str, folder: Path) -> None:
        init = folder / "__init__.py"
        if init.exists():
            found[package] = Module(package, init, True)
        for info in pkgutil.iter_modules([str(folder)]):
            name = f"{package}.{info.name}"
            if name in roots:  # a top-level package of its own (qasr.engine is not in qasr/)
                continue
            if info.ispkg:
                visit(name, folder / info.name)
            else:
                found[name] = Module(name, folder / f"{info.name}.py", False)

    for package, folder in roots.items():
        visit(package, folder)
    return found


def _base_package(module: Module, level: int) -> str:
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def _resolve(target: str, known: set[str]) -> str | None:
    """The longest known module that ``target`` names (``a.b.C`` -> ``a.b``), or None outside qasr."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in known:
            return name
        parts.pop()
    return None


def _string_prefix(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _string_prefix(node.left)
    return None


def _is_dynamic_import(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__")


def read_imports(module: Module, known: set[str]) -> None:
    source = module.path.read_text(encoding="utf-8")
    module.lines = len(source.splitlines())
    tree = ast.parse(source, filename=str(module.path))
    names_qasr_modules = any(
        isinstance(node, ast.Constant) and isinstance(node.value, str) and _resolve(node.value, known)
        and node.value.startswith("qasr")
        for node in ast.walk(tree)
    )

    def add(target: str | None, line: int) -> None:
        resolved = _resolve(target, known) if target else None
        if resolved is not None and resolved != module.name:
            module.imports.setdefault(resolved, line)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _base_package(module, node.level)
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base, node.lineno)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node) and node.args:
            prefix = _string_prefix(node.args[0])
            # A literal naming a qasr module, or a computed name in a module that spells qasr module names.
            if (prefix is not None and prefix.startswith("qasr")) or (prefix is None and names_qasr_modules):
                module.dynamic.append(f"line {node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)


def load_graph(roots: dict[str, Path] = PACKAGE_ROOTS) -> dict[str, Module]:
    modules = walk_modules(roots)
    known = set(modules)
    for module in modules.values():
        read_imports(module, known)
    return modules


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted; self-loops too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        # iterative to stay clear of the recursion limit on long chains
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(cycles)


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """The shortest loop from the component's first module back to it, for the message: a -> b -> a."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for w in sorted(graph.get(node, ())):
            if w == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return " -> ".join([*reversed(path), start])
            if w in members and w not in previous:
                previous[w] = node
                queue.append(w)
    return start


# ---- the rules ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_graph()


def test_the_walk_finds_the_whole_package(modules):
    for name in (
        "qasr", "qasr.errors", "qasr.protocol", "qasr.protocol.events", "qasr.engine", "qasr.daemon",
        "qasr.daemon.server.ws_server", "qasr.daemon.server.connection", "qasr.clients.client", "qasr.config.runtime",
    ):
        assert name in modules, name
    ws = modules["qasr.daemon.server.ws_server"].imports
    assert "qasr.daemon.server.connection" in ws and "qasr.protocol" in ws and "qasr.config.runtime" in ws


def test_no_import_cycle(modules):
    graph = {name: set(m.imports) for name, m in modules.items()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        f"  {', '.join(c)}\n    e.g. {_cycle_path(graph, c)}" for c in cycles
    )


@pytest.mark.parametrize("source,targets", FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_layering(modules, source, targets):
    offenders = [
        f"{name} imports {target} ({modules[name].path.relative_to(ROOT)}:{line})"
        for name, module in sorted(modules.items())
        if _in(name, source)
        for target, line in sorted(module.imports.items())
        if any(_in(target, t) for t in targets)
    ]
    assert not offenders, f"{source} must not import {' / '.join(targets)}:\n  " + "\n  ".join(offenders)


def test_clients_take_from_config_only_the_daemon_discovery(modules):
    """Clients speak the protocol; of ``qasr.config`` they use only ``runtime`` (the running daemon's info and
    token files) and what it needs (docs/architecture.md)."""
    allowed = {"qasr.config", "qasr.config.runtime", "qasr.config.paths"}
    offenders = [f"{name} imports {target}" for name, module in sorted(modules.items()) if _in(name, "qasr.clients")
                 for target in module.imports if _in(target, "qasr.config") and target not in allowed]
    assert not offenders, "\n  ".join(offenders)


def test_no_importlib_loading_of_qasr_modules(modules):
    offenders = [
        f"{module.path.relative_to(ROOT)} {call}" for module in modules.values() for call in module.dynamic
    ]
    assert not offenders, "load qasr modules with a plain import (inside a function to defer it):\n  " + "\n  ".join(
        sorted(offenders)
    )


def test_no_module_over_500_lines(modules):
    offenders = sorted(
        (m.lines, str(m.path.relative_to(ROOT))) for m in modules.values() if m.lines > MAX_LINES
    )
    assert not offenders, f"modules over {MAX_LINES} lines:\n  " + "\n  ".join(
        f"{path}: {lines}" for lines, path in reversed(offenders)
    )


# ---- the checker itself, on a made-up package ------------------------------------------------------------


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_resolves_relative_function_level_and_from_imports(tmp_path):
    _write(
        tmp_path / "q",
        {
            "__init__.py": "",
            "a.py": "from . import b\nfrom .sub.c import thing\n",
            "b.py": "def f():\n    from q.sub import c\n    import q.a.nothing\n",
            "sub/__init__.py": "from .c import thing\n",
            "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from q import a\nimport os\nimport importlib\n"
            "def g(n):\n    importlib.import_module('q.b')\n    return __import__(n)\nNAMES = ['q.a']\n",
        },
    )
    mods = load_graph({"q": tmp_path / "q"})
    assert set(mods) == {"q", "q.a", "q.b", "q.sub", "q.sub.c"}
    assert set(mods["q.a"].imports) == {"q.b", "q.sub.c"}
    assert set(mods["q.b"].imports) == {"q.sub.c", "q.a"}
    assert set(mods["q.sub"].imports) == {"q.sub.c"}
    assert set(mods["q.sub.c"].imports) == {"q.a"}  # the TYPE_CHECKING import counts, os is not ours
    # 'q' prefixes are not 'qasr' ones: nothing dynamic is reported for this package
    assert mods["q.sub.c"].dynamic == []


def test_checker_reports_dynamic_imports_of_qasr_names(tmp_path):
    _write(
        tmp_path / "qasr",
        {
            "__init__.py": "",
            "lazy.py": "import importlib\nMODS = ['qasr.other']\ndef load(n):\n    return importlib.import_module(n)\n",
            "literal.py": "from importlib import import_module\nimport_module('qasr.other')\nimport_module('numpy')\n",
            "other.py": "x = __import__('qasr' + '.lazy')\n",
        },
    )
    mods = load_graph({"qasr": tmp_path / "qasr"})
    assert [len(mods[n].dynamic) for n in ("qasr.lazy", "qasr.literal", "qasr.other")] == [1, 1, 1]


def test_cycle_finder():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"], ["e"]]
    assert _cycle_path(graph, ["a", "b", "c"]) == "a -> b -> c -> a"
    assert find_cycles({"a": {"b"}, "b": set()}) == []
