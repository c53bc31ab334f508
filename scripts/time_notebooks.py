"""Time each notebook at the workshop's time scale and record it for ``parallel-kit doctor``.

Usage: ``python scripts/time_notebooks.py [NAME …] [--out FILE] [--time-scale S]``. Executes
each numbered notebook (a copy in memory: the committed files are not changed) with nbclient in
``notebooks/`` (so ``../data`` resolves as in the bundle), against the simulator, at its own
workshop time scale (its ``PARALLEL_KIT_TIME_SCALE`` default: 0.05, or 0.02 for a notebook
whose runs last hundreds of model seconds), or at ``--time-scale`` for all, and writes
``parallel_kit/data/notebook_times.json``:

``{"time_scale" (null: each its own), "backend", "calibration_s", "machine": {…}, "load_average_end", "recorded_at",
"notebooks": {"00_start_here": {"seconds", "time_scale", "ok", "error"}, …}}``

``calibration_s`` is :func:`parallel_kit.doctor.calibration_run` timed on this machine just
before the notebooks; doctor times the same run on a learner's machine and scales each recorded
time by the ratio. Naming notebooks re-times only those and keeps the others' rows (with
``--merge``; the calibration is then re-timed, so record all on one machine in one go when you
can). A notebook that fails or runs past ``--timeout`` is recorded with ``ok: false`` and its
error, never dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "parallel_kit" / "data" / "notebook_times.json"


def machine() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "platform": platform.platform(terse=True),
            "processor": platform.machine(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in load] if load else None}


def time_one(path: Path, timeout_s: float) -> dict[str, object]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except Exception as exc:
        first = str(exc).strip().splitlines()
        return {"seconds": None, "ok": False,
                "error": f"{type(exc).__name__}: {first[-1][:200] if first else ''}"}
    return {"seconds": round(time.perf_counter() - t0, 1), "ok": True, "error": None}


def own_time_scale(path: Path) -> float | None:
    """The notebook's default time scale: ``PARALLEL_KIT_TIME_SCALE``'s fallback in its code."""
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                     if c.cell_type == "code")
    found = re.search(r'"PARALLEL_KIT_TIME_SCALE",\s*"([0-9.]+)"', text)
    return float(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to time (a part of the file name)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--time-scale", type=float, default=None,
                        help="one time scale for all (default: each notebook's own)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds one cell may take (default 900)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of notebooks not named from the existing file")
    args = parser.parse_args(argv)
    os.environ["PARALLEL_KIT_BACKEND"] = "sim"
    if args.time_scale is not None:
        os.environ["PARALLEL_KIT_TIME_SCALE"] = str(args.time_scale)
    else:
        os.environ.pop("PARALLEL_KIT_TIME_SCALE", None)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    sys.path.insert(0, str(ROOT))
    from parallel_kit.doctor import CALIBRATION, calibration_run

    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(n in p.name for n in args.names)]
        if not paths:
            print(f"no notebook matches {args.names}", file=sys.stderr)
            return 2
    rows: dict[str, object] = {}
    if args.merge and args.out.exists():
        rows = dict(json.loads(args.out.read_text(encoding="utf-8")).get("notebooks", {}))
    calibration = calibration_run()
    print(f"calibration run: {calibration:.2f} s", flush=True)
    record = {"time_scale": args.time_scale, "backend": "sim",
              "calibration": CALIBRATION, "calibration_s": round(calibration, 3),
              "machine": machine(),
              "recorded_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
              "command": "python scripts/time_notebooks.py" + "".join(
                  f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
              "notebooks": rows}
    for path in paths:
        row = {**time_one(path, args.timeout),
               "time_scale": args.time_scale or own_time_scale(path)}
        rows[path.stem] = row
        print(f"{path.stem}: {row['seconds']} s" if row["ok"] else
              f"{path.stem}: failed — {row['error']}", flush=True)
        record["load_average_end"] = machine()["load_average"]
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
