"""The package's layers, enforced: folders in a stated order, top to bottom.

Rules (docs/ARCHITECTURE.md, "Layers"):

* a module imports only from its own layer or the layers below it (``LAYERS``);
* no import cycle between modules (within a folder or across), and none between folders (the
  package root holds the kernel and the front ends, so its modules count one by one);
* no module imports another module's ``_private`` name (private modules such as ``_sync`` or
  ``clients._http1`` are fine: the underscore there means "not for users", not "not for the
  rest of the kit");
* the library never imports ``cli`` (only ``__main__`` does).

Imports under ``if TYPE_CHECKING:`` are left out: they never run, so they are no dependency
(``plots.load`` names ``bench.sweep.Sweep`` in annotations only). Imports inside functions count.

Why a small ``ast`` test rather than import-linter: its layers contract covers the first rule,
but not the ``_private`` names, and the kit would need one more dependency for it; reading
each module's imports with ``ast`` is some sixty lines, with no import of the package at all
(so Ray, Celery or FastAPI being absent changes nothing).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "parallel_kit"

#: Top to bottom. A name is a folder (subpackage) or a module in the package root; ``.`` is the
#: root ``__init__`` (the curated API, which imports lazily from every layer below it).
LAYERS: list[tuple[str, ...]] = [
    ("cli", "__main__"),
    (".",),
    ("widgets", "doctor", "exercises", "testing"),
    ("report",),
    ("bench",),
    ("plots",),
    ("production",),
    ("api",),
    ("measure",),
    ("theory",),
    ("modes",),
    ("workload",),
    ("clients",),
    ("servers",),
    ("sim",),
    ("system",),
    ("config", "errors", "metrics", "records", "ranges", "timing", "topology", "outputs", "_sync"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PKG.parent / rel.with_suffix(".py")).is_file() or (PKG.parent / rel / "__init__.py").is_file()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, less the bodies of ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _imports() -> list[tuple[str, str, str | None]]:
    """(importing module, imported module, imported name or None) for every import of the kit."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        me = _module_name(path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(me, a.name, None) for a in node.names if a.name.split(".")[0] == PKG.name]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PKG.name:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.append((me, sub, None) if _exists(sub) else (me, target, a.name))
    return found


IMPORTS = _imports()


def _unit(module: str) -> str:
    """The folder a module belongs to, or the module's own name in the package root."""
    parts = module.split(".")
    return "." if len(parts) == 1 else parts[1]


def _rank(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit!r} is in no layer of LAYERS: place it")


def test_every_folder_and_root_module_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in PKG.rglob("*.py")}
    placed = {u for layer in LAYERS for u in layer}
    assert units == placed


def test_imports_go_down_the_layers() -> None:
    upward = sorted({f"{me} -> {target}" for me, target, _ in IMPORTS
                     if _rank(_unit(target)) < _rank(_unit(me))})
    assert upward == []


def test_the_library_never_imports_the_cli() -> None:
    bad = sorted({me for me, target, _ in IMPORTS
                  if _unit(target) == "cli" and _unit(me) not in ("cli", "__main__")})
    assert bad == []


def test_no_private_name_of_another_module_is_imported() -> None:
    bad = sorted({f"{me} imports {target}.{name}" for me, target, name in IMPORTS
                  if name and name.startswith("_") and not name.startswith("__") and target != me})
    assert bad == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_folder_cycle() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for me, target, _ in IMPORTS:
        if _unit(me) != _unit(target):
            edges[_unit(me)].add(_unit(target))
    assert _cycles(edges) == []


def test_no_module_cycle() -> None:
    """None at all, within a folder as well as across: a package's ``__init__`` that imports a
    submodule (even inside a function) is imported by it in no way, and the other way round."""
    edges: dict[str, set[str]] = defaultdict(set)
    for me, target, _ in IMPORTS:
        if me != target:
            edges[me].add(target)
    assert _cycles(edges) == []


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: "+".join(layer))
def test_each_folder_says_what_it_is(layer: tuple[str, ...]) -> None:
    for unit in layer:
        init = PKG / unit / "__init__.py"
        if init.is_file():
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and doc.splitlines()[0].strip(), f"{unit}/__init__.py has no docstring"


def test_no_public_class_name_twice() -> None:
    # One word per concept: a public class name means one thing in the whole package (two
    # ``ServeOptions`` or two ``Schedule`` left a reader to guess which one a signature took).
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(_module_name(path))
    twice = {name: mods for name, mods in where.items() if len(mods) > 1}
    assert not twice, f"public class names defined more than once: {twice}"
