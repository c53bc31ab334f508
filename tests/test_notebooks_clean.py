"""The committed notebooks as a learner reads them: clean outputs, the same frame in each, and a
learners' copy without outputs.

No kernel runs here (nbval runs the notebooks: ``make test``); these tests read the ``.ipynb``
files that are committed, so a warning, a traceback or a stray log line saved into an output
is caught before a learner sees it.
"""

from __future__ import annotations

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
