"""The repository stands on its own: no reference outside it, and layers that stay apart.

* Tracked text files cite nothing outside the repository: no steering documents (the design and
  Ollama notes live in ``docs/CONTRACTS.md`` and ``docs/OLLAMA_BEHAVIOUR.md``), no project
  issue numbers (the word and a number, or a hash and a number in parentheses; upstream ones
  are written ``owner/repo#N``), no absolute paths of the
  machine that wrote them. ``CHANGELOG.md`` is history and keeps its words.
* Layering, from the imports in the source (AST, not regexes): nothing under
  ``parallel_kit/sim/`` imports ``parallel_kit.modes``; nothing in the library imports
  ``parallel_kit.cli``; the library's modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "parallel_kit"

#: pattern → what it means, for the failure message.
FORBIDDEN = {
    r"DESIGN\.md|STYLE\.md|\.\./shared": "a design document outside the repository "
                                         "(cite docs/CONTRACTS.md)",
    r"OLLAMA\.md": "the Ollama notes outside the repository (cite docs/OLLAMA_BEHAVIOUR.md "
                   "or the upstream URL)",
    r"(?i)\bissues? #?\d+\b": "a project issue number (say in words what it asked for; "
                              "upstream issues as owner/repo#N)",
    r"\(#\d+\)|(?i:\b(?:see|fixes|closes)\s+#\d+\b)": "a project issue number",
    "/" + r"work/|/root/|/home/\w": "an absolute path of one machine (write it relative)",
}
EXCLUDED = {"CHANGELOG.md", "tests/test_repo_hygiene.py"}


def _tracked_text_files() -> Iterator[tuple[str, str]]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in out.stdout.decode().split("\0"):
        if not name or name in EXCLUDED:
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            yield name, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images and other binary files
            continue


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for name, text in _tracked_text_files():
        for lineno, line in enumerate(text.splitlines(), 1):
            for pattern, what in FORBIDDEN.items():
                if name.startswith("docs/") and "OLLAMA" in pattern:
                    continue  # the documents in docs/ link to each other by file name
                m = re.search(pattern, line)
                if m:
                    found.append(f"{name}:{lineno}: {m.group(0)!r} — {what}")
    assert not found, "\n".join(found)


def test_the_contracts_and_the_ollama_notes_are_in_the_repository() -> None:
    for doc in ("docs/CONTRACTS.md", "docs/OLLAMA_BEHAVIOUR.md", "docs/ARCHITECTURE.md"):
        assert (ROOT / doc).is_file(), doc
    assert "github.com/ollama/ollama" in (ROOT / "docs/OLLAMA_BEHAVIOUR.md").read_text(encoding="utf-8")


# -- layering -------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules of the package imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
            if top_level_only:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(node, (ast.If, ast.Try)) and isinstance(inner, list):
                        visit([n for n in inner if isinstance(n, ast.stmt)] if field != "handlers"
                              else [s for h in inner for s in h.body])
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])
                    else:
                        for sub in ast.walk(child):
                            if isinstance(sub, ast.stmt):
                                visit([sub])
    visit(tree.body)
    return {m for m in found if m == "parallel_kit" or m.startswith("parallel_kit.")}


def _library_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py")
            if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"]


def test_nothing_under_sim_imports_the_modes() -> None:
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p, top_level_only=False)
                                            if m.startswith("parallel_kit.modes"))
           for p in (PACKAGE / "sim").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_no_library_module_imports_the_command_line() -> None:
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p, top_level_only=False)
                                            if m == "parallel_kit.cli"
                                            or m.startswith("parallel_kit.cli."))
           for p in _library_files()}
    assert not {k: v for k, v in bad.items() if v}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    """Module → library modules it imports. Package ``__init__`` files are facades that
    re-export (and every submodule's import runs them), so they are left out of the graph."""
    files = {_module_name(p): p for p in _library_files() if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for m in _imports(path, top_level_only=top_level_only):
            # ``from .x import y`` names both ``pkg.x`` and ``pkg.x.y``: keep the module.
            while m and m not in files:
                m = m.rpartition(".")[0]
            if m and m != name:
                targets.add(m)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("top_level_only", [True, False], ids=["module-level", "all imports"])
def test_library_modules_import_each_other_without_a_cycle(top_level_only: bool) -> None:
    cycle = _cycle(_graph(top_level_only))
    assert cycle is None, " → ".join(cycle or [])


def test_the_layering_check_finds_a_cycle_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
