"""The workshop bundle (``scripts/make_workshop.py``) and the slide outline.

The bundle is built once per session (``pip wheel`` of this checkout). The end-to-end test
(marked ``workshop``: it needs the package index) follows INSTALL.md in a fresh ``python -m
venv`` — the install line read from the bundle's own INSTALL.md, so the documented line is the
one tested — then imports the kit there, runs ``parallel-kit doctor --quick`` and executes the
learners' copy of every notebook with nbclient at time scale 0.02; the browser test opens the
executed copies of 09, 10 and 11 in that venv's JupyterLab and sees their figures.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import slide_outline  # noqa: E402


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "workshop"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_workshop.py"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _install_line(bundle: Path) -> str:
    text = (bundle / "INSTALL.md").read_text(encoding="utf-8")
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()
             if ln.startswith("pip install ")]
    assert len(lines) == 1, lines  # one install line
    return lines[0]


def test_bundle_holds_wheel_notebooks_data_and_install(bundle: Path) -> None:
    wheels = list(bundle.glob("parallel_kit-*-py3-none-any.whl"))
    assert len(wheels) == 1
    line = _install_line(bundle)
    assert f"./{wheels[0].name}[notebooks,ray,production,real]" in line
    names = sorted(p.name for p in (bundle / "notebooks").glob("*.ipynb"))
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    # notebook 10 reads ../data/runs relative to the notebooks: the sweeps it names are there
    nb10 = "\n".join(c.source for c in nbformat.read(
        ROOT / "notebooks" / "10_requests_over_time.ipynb", as_version=4).cells)
    assert 'Path("..") / "data"' in nb10
    needed = set(re.findall(r'recorded\["(sweep_[a-z0-9_]+)"\]', nb10))
    assert needed, "notebook 10 no longer names its sweeps this way: update this test"
    runs = bundle / "notebooks" / ".." / "data" / "runs"
    assert needed <= {p.stem for p in runs.glob("sweep_*.json")}
    # every link from a notebook into its worked solutions resolves in the bundle
    for path in (bundle / "notebooks").glob("*.ipynb"):
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        for target in set(re.findall(r"\((solutions/[^)#\s]+)", text)):
            assert (bundle / "notebooks" / target).is_file(), (path.name, target)
    # the learners' copy has no outputs
    nb = nbformat.read(bundle / "notebooks" / "00_start_here.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    # the zip holds the same files under one folder
    with zipfile.ZipFile(bundle.with_suffix(".zip")) as zf:
        zipped = {n for n in zf.namelist() if not n.endswith("/")}
    here = {f"workshop/{p.relative_to(bundle).as_posix()}" for p in bundle.rglob("*")
            if p.is_file()}
    assert zipped == here
    # the wheel carries the recorded notebook times doctor scales
    with zipfile.ZipFile(wheels[0]) as zf:
        assert "parallel_kit/data/notebook_times.json" in zf.namelist()


def test_slide_outline_from_a_tiny_notebook(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    figure = nbformat.v4.new_code_cell("plot()")
    figure.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 42 · A title\n\n**Time:** about 5 min · **Before:** 41"),
        nbformat.v4.new_markdown_cell("## The [timeline](x.md)\n\nBars."),
        figure,
        nbformat.v4.new_markdown_cell("**What it means.** The bars touch. More text."),
        nbformat.v4.new_markdown_cell("## In three lines\n\n1. One.\n2. Two.\n3. Three."),
    ]
    path = tmp_path / "42_tiny.ipynb"
    nbformat.write(nb, path)
    assert slide_outline.outline(path) == [
        "## 42 · A title", "*about 5 min* · `42_tiny.ipynb`", "",
        "### The timeline", "- Figure (The timeline): The bars touch.", "",
        "### In three lines", "1. One.", "2. Two.", "3. Three.", ""]
    out = tmp_path / "outline.md"
    assert slide_outline.main([str(path), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("# Slide outline")
    assert slide_outline.main([str(tmp_path / "missing.ipynb")]) == 2


def test_slide_outline_has_every_notebook() -> None:
    lines = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        got = slide_outline.outline(path)
        assert got[0].startswith(f"## {path.name[:2]} · "), (path.name, got[:1])
        lines += got
    assert any(ln.startswith("- Figure") for ln in lines)


#: Runs every notebook of a folder with nbclient in the learner's venv, one JSON line each:
#: ``{"name", "seconds", "error", "images"}``; the executed copy is written to the out folder.
RUN_ALL = r"""
import json, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

src, out = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(src.glob("[0-9][0-9]_*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    t0, error = time.perf_counter(), None
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(src)}}).execute()
    except CellExecutionError as exc:
        # the failing line and the assertion's own message, ANSI colours dropped
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        error = f"{exc.ename}: {exc.evalue} | {text[-900:]}"
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                 if "image/png" in o.get("data", {}))
    nbformat.write(nb, out / path.name)
    print(json.dumps({"name": path.stem, "seconds": round(time.perf_counter() - t0, 1),
                      "error": error, "images": images}), flush=True)
"""


@dataclass
class LearnersRun:
    """The bundle installed in a fresh venv and every learners' notebook executed there."""

    python: Path
    env: dict[str, str]
    executed: Path  # the executed copies
    rows: list[dict[str, Any]]  # RUN_ALL's lines, in notebook order


@pytest.fixture(scope="module")
def learners_run(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> LearnersRun:
    """INSTALL.md's line in a fresh ``python -m venv`` (this checkout and the kit's variables
    kept out), ``doctor --quick`` there, then every notebook of the learners' copy executed at
    time scale 0.02 against the simulator (08 on the real engine when it is built)."""
    tmp = tmp_path_factory.mktemp("learner")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PARALLEL_KIT_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PARALLEL_KIT_BACKEND="sim",
               PARALLEL_KIT_TIME_SCALE="0.02", PATH=f"{py.parent}{os.pathsep}{env['PATH']}")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    args = shlex.split(_install_line(bundle))
    assert args[:2] == ["pip", "install"]
    t0 = time.perf_counter()
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *args[2:]], cwd=bundle,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(f"install from the index: {time.perf_counter() - t0:.0f} s")

    where = subprocess.run([str(py), "-c", "import parallel_kit; print(parallel_kit.__file__)"],
                           cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    doctor = subprocess.run([str(venv / "bin" / "parallel-kit"), "doctor", "--quick", "--json",
                             "--skip", "estimate"], cwd=tmp, env=env, capture_output=True,
                            text=True, timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    assert {c["name"]: c["status"] for c in report["checks"]}["extra:production"] == "ok"

    executed = tmp / "executed"
    executed.mkdir()
    run = subprocess.run([str(py), "-c", RUN_ALL, str(bundle / "notebooks"), str(executed)],
                         cwd=tmp, env=env, capture_output=True, text=True, timeout=2400)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return LearnersRun(py, env, executed, rows)


@pytest.mark.workshop
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fresh_venv_installs_the_bundle_and_runs_every_learners_notebook(
        bundle: Path, learners_run: LearnersRun) -> None:
    names = [p.stem for p in sorted((bundle / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    assert [r["name"] for r in learners_run.rows] == names  # every one ran, in order
    for r in learners_run.rows:
        print(f"{r['name']}: {r['seconds']} s, {r['images']} figure(s)")
    failed = {r["name"]: r["error"] for r in learners_run.rows if r["error"]}
    assert not failed, failed


#: The notebooks whose figures the browser test looks at (the newest; 06's lab has its own).
FIGURES_IN = ("09_production_stack", "10_requests_over_time", "11_capacity_planning")


@pytest.mark.workshop
@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(3600)  # the shared set-up may run here first
def test_the_learners_09_10_and_11_show_their_figures_in_chromium(
        learners_run: LearnersRun, tmp_path: Path) -> None:
    """The executed learners' copies opened in JupyterLab (the learner's venv's) in headless
    Chromium: every figure the run drew is on the page and decoded (an ``img`` with pixels)."""
    from _browser import HOW_TO_GET, chromium, have_browser, jupyter_lab

    if not have_browser():
        pytest.skip(HOW_TO_GET)
    from selenium.webdriver.support.ui import WebDriverWait

    expected = {r["name"]: r["images"] for r in learners_run.rows if r["name"] in FIGURES_IN}
    assert set(expected) == set(FIGURES_IN) and all(expected.values()), expected
    shown_js = ("return [...document.querySelectorAll("
                "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length;")
    with jupyter_lab(learners_run.executed, learners_run.env, str(learners_run.python)
                     ) as (url, token), chromium(tmp_path / "profile") as driver:
        for name, images in expected.items():
            driver.get(f"{url}/lab/tree/{name}.ipynb?token={token}&reset")
            try:
                WebDriverWait(driver, 120, poll_frequency=0.2).until(
                    lambda d, n=images: d.execute_script(shown_js) >= n)
            except Exception:
                raise AssertionError(f"{name}: {driver.execute_script(shown_js)} of {images} "
                                     f"figures shown") from None
            assert driver.execute_script(shown_js) == images, name
