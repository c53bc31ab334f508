"""The seed scenario through ``rayserve`` and ``production``: 20 s within 3 %, on the servers.

Five 10 s requests (profile ``seed``) on three independent simulated Ollama servers of one slot
each, given with ``--host`` (a process of their own, time scale 0.1): ⌈5/3⌉ = 2 rounds, 20 s.
Each repeat runs, for each mode M, one command exactly as a user types it::

    parallel-kit bench --mode M --time-scale 0.1 --gpus 3 --n 5 --profile seed \\
        --host A --host B --host C --json FILE

so every repeat pays its own start-up (a Ray cluster, the Serve application, Redis, a Celery
worker) outside the makespan, and the first burst lands on a stack that has just started —
the case a user meets. What is recorded per repeat and mode:

* the makespan (model seconds) and its excess over 20 s (the target: within 3 %);
* what the **servers** saw (their own ``/sim/stats``, not the kit's report): how many of the
  five each one completed (2, 2 and 1) and the most it ran at once (1);
* the medians of the per-layer gaps of the rows (clock milliseconds; ``production``: accepted →
  picked up by a Celery worker → entered the replica → sent to Ollama; ``rayserve``: accepted →
  entered the replica → sent), and the set-up time.

Usage: ``.venv/bin/python benchmarks/stack_seed.py [--repeats 3] [--quick]`` — about a minute
per mode and repeat. Writes ``benchmarks/results/stack_seed.json`` (``--quick``: one repeat into the
git-ignored ``benchmarks/results/quick/``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, ROOT, SimFarm, clean, machine, median, results_dir, write_result

SCALE = 0.1
MODES = ("rayserve", "production")
TARGET = 0.03
IDEAL_S = 20.0
#: Per-layer moments of a row, in the order a request passes them (``started_s`` is the send
#: to Ollama).
MOMENTS = ("accepted", "picked_up", "replica_entered", "started_s")


def _hop_gaps(rows: list[dict[str, Any]], pick: Any = None) -> dict[str, float]:
    """Clock milliseconds between consecutive moments present in the rows: their median
    (``pick``: another function of the list, e.g. ``max``)."""
    gaps: dict[str, list[float]] = {}
    for row in rows:
        moments = {**row.get("hops", {}), "started_s": row.get("started_s")}
        if "accepted" not in moments:
            moments["accepted"] = row.get("queued_s")
        seen = [(m, moments[m]) for m in MOMENTS if moments.get(m) is not None]
        for (a, ta), (b, tb) in itertools.pairwise(seen):
            gaps.setdefault(f"{a}→{b}", []).append((tb - ta) * SCALE * 1000)
    return {k: round((pick or median)(v), 2) for k, v in gaps.items()}


def one_run(farm: SimFarm, mode: str, out: Path) -> dict[str, Any]:
    """Run the command once for ``mode``; read the servers before and after."""
    cmd = [PYTHON, "-m", "parallel_kit", "bench", "--mode", mode, "--time-scale", repr(SCALE),
           "--gpus", "3", "--n", "5", "--profile", "seed", "--json", str(out)]
    for url in farm.urls:
        cmd += ["--host", url]
    before = [farm.stats(i)["completed"] for i in range(len(farm.urls))]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise RuntimeError(f"bench exited {proc.returncode}: {proc.stderr[-2000:]}")
    after = [farm.stats(i) for i in range(len(farm.urls))]
    run = json.loads(out.read_text())["runs"][0]
    s = run["summary"]
    return {"makespan_s": s["makespan_s"], "ok": s["ok"], "n": s["n"],
            "over_ideal": s["makespan_s"] / IDEAL_S - 1, "setup_s": s.get("setup_s"),
            "servers_completed": [a["completed"] - b for a, b in zip(after, before, strict=True)],
            "servers_max_active": [a["max_active"] for a in after],
            "hops_ms_median": _hop_gaps(run["requests"]),
            "hops_ms_max": _hop_gaps(run["requests"], max),
            "command_wall_s": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--out", type=Path, default=None, help="folder for the result JSON")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    load_before = os.getloadavg()
    rows = []
    with SimFarm(3, profile="seed", time_scale=SCALE, slots=1) as farm, \
            tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            row = {m: one_run(farm, m, Path(tmp) / f"{m}{i}.json") for m in MODES}
            rows.append(row)
            print("; ".join(f"{m} {row[m]['makespan_s']:.2f} s ({row[m]['over_ideal']:+.1%}), "
                            f"servers {row[m]['servers_completed']}" for m in MODES), flush=True)
    per_mode = {m: [r[m]["makespan_s"] for r in rows] for m in MODES}
    result = {
        "what": "seed scenario (profile seed, 5 requests of 10 s, 3 given servers of 1 slot, "
                "time scale 0.1) through rayserve and production, one CLI command per repeat",
        "command": "parallel-kit bench --mode M --time-scale 0.1 --gpus 3 --n 5 --profile seed "
                   "--host A --host B --host C (M: each mode in turn)",
        "repeats": rows,
        "makespan_s": per_mode,
        "targets": {
            f"{m}_within_3pct_every_repeat": all(abs(v / IDEAL_S - 1) <= TARGET for v in vs)
            for m, vs in per_mode.items()},
        "servers_2_2_1_one_at_a_time": all(
            sorted(r[m]["servers_completed"]) == [1, 2, 2] and r[m]["ok"] == 5
            and set(r[m]["servers_max_active"]) == {1} for r in rows for m in MODES),
        "load_avg_before": [round(x, 2) for x in load_before],
        "machine_at_end": machine(),
    }
    path = write_result("stack_seed_quick" if args.quick else "stack_seed", clean(result),
                        results_dir(args.quick, args.out))
    print(json.dumps(result["targets"]), "servers:", result["servers_2_2_1_one_at_a_time"])
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
