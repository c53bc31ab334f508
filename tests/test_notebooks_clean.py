"""The committed notebooks as a learner reads them: clean outputs, the same frame in each, and a
learners' copy without outputs.

No kernel runs here (nbval runs the notebooks: ``make test``); these tests read the ``.ipynb``
files that are committed, so a warning, a traceback or a stray log line saved into an output
is caught before a learner sees it.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))

#: What must never be in a saved output: Python warnings and tracebacks, Ray's token notice,
#: llama.cpp / ggml log lines (they start with the C function's prefix).
NOISE = [
    (re.compile(r"Traceback \(most recent call last\)"), "a traceback"),
    (re.compile(r"\b\w*Warning\b[:(]|^\s*warnings\.warn", re.M), "a Python warning"),
    (re.compile(r"Token authentication"), "Ray's token-authentication notice"),
    (re.compile(r"^(llama|ggml|gguf|llm_load|load_tensors|print_info)\w*:", re.M),
     "a llama.cpp log line"),
    (re.compile(r"^\[[A-Z]\w* \d{4}-\d\d-\d\d|^\(\w+ pid=\d+\)", re.M), "a server/Ray log line"),
]


def outputs_text(cell: Any) -> list[tuple[str, str]]:
    """(kind, text) of every output of a code cell."""
    found = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            found.append((f"stream:{out['name']}", out["text"]))
        elif out["output_type"] == "error":
            found.append(("error", f"{out['ename']}: {out['evalue']}"))
        else:
            data = out.get("data", {})
            found.append((out["output_type"], str(data.get("text/plain", ""))
                          + str(data.get("text/html", ""))))
    return found


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request: pytest.FixtureRequest) -> nbformat.NotebookNode:
    nb = nbformat.read(request.param, as_version=4)
    nb.metadata["_name"] = request.param.name
    return nb


def test_notebooks_are_there() -> None:
    assert [p.name[:2] for p in NOTEBOOKS][:9] == [f"0{i}" for i in range(9)]


def test_no_saved_output_holds_an_error_a_warning_or_a_log_line(notebook: Any) -> None:
    problems = []
    for i, cell in enumerate(notebook.cells):
        for kind, text in outputs_text(cell):
            if kind in ("error", "stream:stderr"):
                problems.append(f"cell {i}: {kind} output: {text[:120]!r}")
                continue
            for pattern, what in NOISE:
                m = pattern.search(text)
                if m:
                    problems.append(f"cell {i}: {what}: {text[max(0, m.start() - 40):m.end() + 80]!r}")
    assert not problems, "\n".join(problems)


def test_every_notebook_has_the_learners_frame(notebook: Any) -> None:
    name = notebook.metadata["_name"]
    first = notebook.cells[0].source
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "**Time:** about" in first and "**Before:**" in first, name
    assert "[Contents](README.md)" in first, f"{name}: navigation at the top"
    last_md = [c for c in notebook.cells if c.cell_type == "markdown"][-1].source
    assert "[Contents](README.md)" in last_md, f"{name}: navigation at the bottom"
    assert "## What to try next" in markdown, name
    assert "<details>" in markdown and "</details>" in markdown, f"{name}: answers"
    summary = next(c.source for c in notebook.cells if "summary" in c.metadata.get("tags", []))
    assert len(re.findall(r"^\d\. ", summary, re.M)) == 3, f"{name}: a three-line summary"


def test_ci_checks_are_tagged_and_folded(notebook: Any) -> None:
    for cell in notebook.cells:
        if cell.cell_type == "code" and re.search(r"^\s*assert ", cell.source, re.M) \
                and "NBVAL_CHECK_OUTPUT" not in cell.source:
            tags = cell.metadata.get("tags", [])
            # ci-check: the learners' copy folds it; nbval-ignore-output: nbval's own tag (the
            # cell's printed measurements differ run to run; its assertions still run)
            assert {"ci-check", "nbval-ignore-output"} <= set(tags), cell.source[:80]
            assert cell.metadata.get("jupyter", {}).get("source_hidden") is True


def widget_states(nb: Any) -> list[dict[str, Any]]:
    states = nb.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [s.get("state", {}) | {"_model": s.get("model_name")} for s in states.values()]


def test_the_saved_widget_lab_is_not_stuck() -> None:
    nb = nbformat.read(ROOT / "notebooks" / "06_widget_lab.ipynb", as_version=4)
    states = widget_states(nb)
    assert states, "06 is saved with its widget state (so a reader sees the lab)"
    run = [s for s in states if s["_model"] == "ButtonModel" and s.get("description") == "Run"]
    assert run and not any(s.get("disabled") for s in run), "the Run button is saved disabled"
    texts = json.dumps([s.get("value") for s in states if s["_model"] == "HTMLModel"])
    assert "starting" not in texts and "running" not in texts, texts


def test_the_learners_copy_has_no_outputs_and_folds_the_checks(tmp_path: Path) -> None:
    import make_workshop

    assert make_workshop.main(["--out", str(tmp_path)]) == 0
    copies = sorted((tmp_path / "notebooks").glob("*.ipynb"))
    assert [p.name for p in copies] == [p.name for p in sorted(
        (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    for path in copies:
        nb = nbformat.read(path, as_version=4)
        assert "widgets" not in nb.metadata
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
                if "ci-check" in cell.metadata.get("tags", []):
                    assert cell.metadata["jupyter"]["source_hidden"] is True
    assert (tmp_path / "notebooks" / "README.md").exists()


def test_the_learners_copy_refuses_to_overwrite_the_notebooks() -> None:
    import make_workshop

    assert make_workshop.main(["--out", str(ROOT / "notebooks")]) == 2


# --- What a learner's copy may hide, what it must show, and the exercises ---------------------

#: Calls that draw or display: they belong in visible cells.
DRAWING = re.compile(r"\b(plots|plots_load)\.\w+\(|\bdisplay\(|\bFigure\(|\.show\(")
#: Calls that make a figure: a cell that makes one must show it.
FIGURE = re.compile(r"\b(plots|plots_load)\.\w+\(|\bFigure\(")


def code_ast(source: str) -> Any:
    """The cell's code as an AST (IPython magics dropped, top-level ``await`` allowed)."""
    import ast

    lines = ["" if line.lstrip().startswith(("%", "!")) else line
             for line in source.splitlines()]
    return compile("\n".join(lines), "<cell>", "exec",
                   flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def bound_and_used(tree: Any) -> tuple[set[str], set[str]]:
    """Names a cell binds at any depth, and names it reads."""
    import ast

    bound, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound, used


def is_ci_check(cell: Any) -> bool:
    return cell.cell_type == "code" and "ci-check" in cell.metadata.get("tags", [])


def test_ci_check_cells_hold_checks_only_and_teach_nothing(notebook: Any) -> None:
    """The learners' copy folds ci-check cells, so they may only check: no drawing or
    displaying, no experiment of their own (nothing awaited), no value shown as the cell's
    result, and nothing a later visible cell needs."""
    import ast

    name = notebook.metadata["_name"]
    problems = []
    visible_bound: set[str] = set()
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        tree = code_ast(cell.source)
        bound, _ = bound_and_used(tree)
        if not is_ci_check(cell):
            visible_bound |= bound
            continue
        if DRAWING.search(cell.source):
            problems.append(f"cell {i} draws or displays: {DRAWING.search(cell.source)[0]!r}")
        if any(isinstance(n, (ast.Await, ast.AsyncWith, ast.AsyncFor)) for n in ast.walk(tree)):
            problems.append(f"cell {i} runs an experiment (await): move it to a visible cell")
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr) and not (
                isinstance(last.value, ast.Call) and getattr(last.value.func, "id", "") == "print"):
            problems.append(f"cell {i} shows a value as its result: move it to a visible cell")
        for j, later in enumerate(notebook.cells[i + 1:], start=i + 1):
            if later.cell_type != "code" or is_ci_check(later):
                continue
            later_bound, later_used = bound_and_used(code_ast(later.source))
            needed = (bound & later_used) - visible_bound - later_bound
            if needed:
                problems.append(f"cell {i} defines {sorted(needed)}, which visible cell {j} uses")
    assert not problems, f"{name}:\n" + "\n".join(problems)


def shows_a_figure(cell: Any) -> bool:
    return any(o["output_type"] in ("display_data", "execute_result")
               and "image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def test_every_figure_a_cell_draws_is_shown(notebook: Any) -> None:
    """A cell that draws must display what it drew (a figure assigned to a name and never
    shown is a figure the prose describes and nobody sees), unless it printed why it skipped."""
    name = notebook.metadata["_name"]
    missing = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not FIGURE.search(cell.source) or is_ci_check(cell):
            continue
        skipped = any("skipped" in str(o.get("text", "")).lower() for o in cell.outputs)
        if not (shows_a_figure(cell) or skipped):
            missing.append(f"cell {i}: {cell.source.splitlines()[0][:80]!r}")
    assert not missing, f"{name}: figures drawn and not shown:\n" + "\n".join(missing)


def test_every_notebook_has_two_predict_then_measure_exercises(notebook: Any) -> None:
    """At least two ``check(name, prediction, measured, …)`` calls in visible cells; each
    prediction is a variable an earlier cell sets to None (or a dict of Nones), so the notebook
    runs unattended; each saved check printed its ✓/✗/· line; the solutions live apart."""
    import ast

    name = notebook.metadata["_name"]
    placeholders: dict[str, Any] = {}
    checks = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or is_ci_check(cell):
            continue
        tree = code_ast(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                placeholders.setdefault(node.targets[0].id, node.value)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check":
                checks.append((i, node))
    assert len(checks) >= 2, f"{name}: {len(checks)} exercise check(s), at least 2 wanted"
    for i, call in checks:
        assert len(call.args) >= 3 and any(k.arg == "rel" for k in call.keywords), \
            f"{name} cell {i}: check(name, predicted, measured, rel=…) states its tolerance"
        pred = call.args[1]
        var = pred.value if isinstance(pred, ast.Subscript) else pred
        assert isinstance(var, ast.Name) and var.id in placeholders, \
            f"{name} cell {i}: the prediction is a learner's variable set in an earlier cell"
        init = placeholders[var.id]
        nones = ([init] if isinstance(pred, ast.Name)
                 else list(getattr(init, "values", [])))
        assert nones and all(isinstance(v, ast.Constant) and v.value is None for v in nones), \
            f"{name}: {var.id} ships as None (no prediction yet), so nbval runs unattended"
        printed = "".join(str(o.get("text", "")) for o in notebook.cells[i].outputs)
        assert re.search(r"^[✓✗·] ", printed, re.M), \
            f"{name} cell {i}: the saved output shows the check's line"
    nn = name[:2]
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert f"solutions/{nn}_solutions.md" in markdown, f"{name}: links its solutions"
    solutions = ROOT / "notebooks" / "solutions" / f"{nn}_solutions.md"
    assert solutions.exists() and solutions.read_text().count("## Exercise") >= 2, solutions


def test_the_contents_and_the_links_between_notebooks_reach_every_notebook() -> None:
    names = [p.name for p in NOTEBOOKS]
    start = nbformat.read(NOTEBOOKS[0], as_version=4)
    index = "\n".join(c.source for c in start.cells if c.cell_type == "markdown")
    readme = (ROOT / "notebooks" / "README.md").read_text()
    for n in names:
        assert f"({n})" in index, f"00's list of notebooks lacks {n}"
        assert f"({n})" in readme, f"notebooks/README.md lacks {n}"
    for before, after in itertools.pairwise(NOTEBOOKS):
        nb = nbformat.read(before, as_version=4)
        for cell in (nb.cells[0], nb.cells[-1]):
            assert f"({after.name})" in cell.source, f"{before.name} links on to {after.name}"
        nb = nbformat.read(after, as_version=4)
        for cell in (nb.cells[0], nb.cells[-1]):
            assert f"({before.name})" in cell.source, f"{after.name} links back to {before.name}"
