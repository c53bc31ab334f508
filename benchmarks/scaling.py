"""Scaling: pool and ray over W simulated GPUs and N requests — efficiency and driver memory.

Every request is one token of the seed profile (0.1 model s); W servers with one slot each run
in a process of their own (``SimFarm``); the driver runs ``pool`` (one process) or ``ray`` (one
actor per server, reused for every N of a W). Efficiency = predicted ÷ measured makespan, the
makespan being last finish − first submission (model s); predicted = ⌈N/W⌉ × 0.1 s.

Time scale: every request lasts 40 clock ms (time scale 0.4). Each request on a one-slot
server pays a hand-over the model does not count — the answer travels back, the next request
travels out: ~2 ms of loopback HTTP between two Python processes here (pool; more through Ray)
— so efficiency ≈ 40 ÷ (40 + hand-over); shorter requests would measure that hand-over rather
than the scheduling. To keep the sweep within minutes, a cell whose ⌈N/W⌉ × 40 ms exceeds 25 s
is skipped (recorded with the reason): N = 10,000 needs W = 16, N = 1,000 needs W ≥ 2.

Memory: the driver's peak (``tracemalloc``) during a pool run of N = 1,000 and N = 10,000 on
16 zero-latency servers; growth per request record = Δpeak ÷ 9,000. Target ≤ 2 KB.

Writes ``results/scaling.json`` and ``results/scaling.png`` (efficiency heat maps).

Usage: ``.venv/bin/python benchmarks/scaling.py [--quick] [--modes pool,ray]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ZERO_PROFILE, SimFarm, clean, relative, results_dir, write_result

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext
from parallel_kit.records import RequestResult, RequestSpec

SERVICE_MODEL_S = 0.1  # one token at the seed profile's 10 tokens/s
REQUEST_CLOCK_S = 0.04  # every request's clock length: time scale 0.4
MAX_CELL_S = 25.0  # predicted clock span above which a cell is skipped
TIME_SCALE = REQUEST_CLOCK_S / SERVICE_MODEL_S


def fits(workers: int, n: int) -> bool:
    """True when the cell's predicted clock span is within ``MAX_CELL_S``."""
    return math.ceil(n / workers) * REQUEST_CLOCK_S <= MAX_CELL_S


def _specs(n: int) -> list[RequestSpec]:
    return [RequestSpec(f"request {i}", num_predict=1) for i in range(n)]


def _cell(rows: list[RequestResult], n: int, workers: int, scale: float,
          wall_s: float) -> dict[str, Any]:
    ok = [r for r in rows if r.ok]
    # from the first arrival (queued_s; rows of older records have only submitted_s)
    makespan = max(r.finished_s for r in rows) - min(
        r.submitted_s if math.isnan(r.queued_s) else min(r.queued_s, r.submitted_s)
        for r in rows)
    predicted = math.ceil(n / workers) * SERVICE_MODEL_S
    return {"n": n, "workers": workers, "time_scale": scale,
            "request_clock_ms": SERVICE_MODEL_S * scale * 1000, "ok": len(ok),
            "predicted_s": predicted, "measured_s": makespan, "wall_s": wall_s,
            "efficiency": predicted / makespan if makespan > 0 else None}


async def _pool_cells(urls: list[str], ns: list[int], scale: float, prefetch: int = 0
                      ) -> list[dict[str, Any]]:
    from parallel_kit.modes.options import QueueOptions
    from parallel_kit.modes.pool import run_pool

    out = []
    for n in ns:
        ctx = ModeContext(endpoints=[Endpoint(u) for u in urls], time_scale=scale,
                          gpus=len(urls), queue=QueueOptions(prefetch=prefetch))
        t0 = time.perf_counter()
        run = await run_pool(_specs(n), ctx)
        cell = _cell(run.requests, n, len(urls), scale, time.perf_counter() - t0)
        cell["prefetch"] = prefetch
        out.append(cell)
    return out


async def _ray_cells(urls: list[str], ns: list[int], scale: float) -> list[dict[str, Any]]:
    from parallel_kit.modes.pool import dispatch_all
    from parallel_kit.modes.ray_gpu import open_ray_dispatcher

    ctx = ModeContext(endpoints=[Endpoint(u) for u in urls], time_scale=scale, gpus=len(urls))
    out = []
    async with open_ray_dispatcher(ctx) as dispatcher:
        setup = dispatcher.setup_s
        for n in ns:
            t0 = time.perf_counter()
            rows, _ = await dispatch_all(dispatcher, _specs(n))
            cell = _cell(rows, n, len(urls), scale, time.perf_counter() - t0)
            cell["actors_setup_s"] = setup
            out.append(cell)
    return out


def sweep(modes: list[str], ws: list[int], ns: list[int], prefetch: int = 0
          ) -> list[dict[str, Any]]:
    """Every (mode, W, N) cell; skipped ones carry ``skipped`` (the reason) and no efficiency."""
    cells: list[dict[str, Any]] = []
    for w in ws:
        todo = [n for n in ns if fits(w, n)]
        for n in ns:
            if n not in todo:
                cells.extend({"mode": m, "workers": w, "n": n, "efficiency": None,
                              "skipped": f"⌈N/W⌉ × {REQUEST_CLOCK_S * 1000:.0f} ms > "
                                         f"{MAX_CELL_S:g} s (time budget)"} for m in modes)
        if not todo:
            continue
        with SimFarm(w, profile="seed", time_scale=TIME_SCALE, slots=1) as farm:
            for mode in modes:
                with contextlib.redirect_stderr(io.StringIO()):
                    got = asyncio.run(
                        _pool_cells(farm.urls, todo, TIME_SCALE, prefetch) if mode == "pool"
                        else _ray_cells(farm.urls, todo, TIME_SCALE))
                for c in got:
                    c["mode"] = mode
                    print(f"{mode:<5} W={w:<3} N={c['n']:<6} efficiency {c['efficiency']:.3f} "
                          f"({c['ok']}/{c['n']} ok, wall {c['wall_s']:.1f} s)", flush=True)
                cells.extend(got)
    return cells


def memory_per_record(n_small: int, n_large: int, workers: int = 16) -> dict[str, Any]:
    """Driver's traced peak for a pool run of ``n_small`` and ``n_large`` requests."""
    from parallel_kit.modes.pool import run_pool

    peaks = {}
    with SimFarm(workers, profile=ZERO_PROFILE, slots=1) as farm:
        ctx = ModeContext(endpoints=[Endpoint(u) for u in farm.urls], gpus=workers)
        asyncio.run(run_pool(_specs(50), ctx))  # warm-up: imports and caches are not records
        for n in (n_small, n_large):
            specs = _specs(n)  # the inputs exist before the run: not counted
            tracemalloc.start()
            run = asyncio.run(run_pool(specs, ctx))
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert run.summary.ok == n, f"{run.summary.failed} requests failed"
            peaks[n] = peak
            del run
    growth = (peaks[n_large] - peaks[n_small]) / (n_large - n_small)
    return {"workers": workers, "peak_bytes": {str(k): v for k, v in peaks.items()},
            "bytes_per_record": growth, "peak_bytes_per_request_large": peaks[n_large] / n_large,
            "target": "≤ 2 KB (2048 bytes) of growth per request record",
            "met": growth <= 2048}


def plot(cells: list[dict[str, Any]], path: Path) -> Path | None:
    """Efficiency heat maps (one per mode), W across, N down."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({c["mode"] for c in cells}, key=["pool", "ray"].index)
    if not modes:
        return None
    ws = sorted({c["workers"] for c in cells})
    ns = sorted({c["n"] for c in cells})
    fig, axes = plt.subplots(1, len(modes), figsize=(4.6 * len(modes) + 1.0, 3.6),
                             squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes, strict=True):
        grid = [[math.nan] * len(ws) for _ in ns]
        for c in cells:
            if c["mode"] == mode and c["efficiency"] is not None:
                grid[ns.index(c["n"])][ws.index(c["workers"])] = c["efficiency"]
            elif c["mode"] == mode:
                ax.text(ws.index(c["workers"]), ns.index(c["n"]), "skipped", ha="center",
                        va="center", fontsize=7, color="grey")
        im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="RdYlGn", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(ws)), [str(w) for w in ws])
        ax.set_yticks(range(len(ns)), [f"{n:,}" for n in ns])
        ax.set_xlabel("simulated GPUs (W)")
        if ax is axes[0][0]:
            ax.set_ylabel("requests (N)")
        ax.set_title(f"{mode}: predicted ÷ measured")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle("Scaling efficiency (seed profile, 1 token = 40 clock ms per request)",
                 fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="W ∈ {1, 4}, N ∈ {10, 100}, pool")
    parser.add_argument("--modes", default=None, help="pool,ray (default: both; quick: pool)")
    parser.add_argument("--headline", action="store_true",
                        help="only the target cell (pool, W = 16, N = 10,000; without and with "
                             "prefetch 1) and the memory figure → results/scaling_headline.json")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw scaling.png from the recorded scaling.json")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    if args.replot:
        recorded = json.loads(((args.out or RESULTS) / "scaling.json").read_text())
        png = plot(recorded["cells"], (args.out or RESULTS) / "scaling.png")
        print(f"→ {png}")
        return dict(recorded)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # Ray refuses logical GPUs when it is set
    if args.headline:
        ws, ns = [16], [10_000]
        modes = (args.modes or "pool").split(",")
    elif args.quick:
        ws, ns = [1, 4], [10, 100]
        modes = (args.modes or "pool").split(",")
    else:
        ws, ns = [1, 2, 4, 8, 16], [10, 100, 1000, 10_000]
        modes = (args.modes or "pool,ray").split(",")
    notes = []
    if "ray" in modes:
        try:
            import ray  # noqa: F401
        except ImportError:
            modes.remove("ray")
            notes.append("ray not installed: ray mode left out")
    cells = sweep(modes, ws, ns)
    if args.headline:  # the same cell with one request queued ahead at each server
        cells += sweep(["pool"], ws, ns, prefetch=1)
    if "ray" in modes:
        from parallel_kit.servers import raycluster

        raycluster.shutdown()
    memory = memory_per_record(100, 1000) if args.quick else memory_per_record(1000, 10_000)
    suffix = "_headline" if args.headline else "_quick" if args.quick else ""
    png = None if args.headline else plot(
        cells, results_dir(args.quick, args.out) / f"scaling{suffix}.png")
    headline = next((c for c in cells if c["mode"] == "pool" and c["workers"] == 16
                     and c["n"] == 10_000 and not c.get("prefetch")), None)
    pipelined = next((c for c in cells if c["mode"] == "pool" and c["workers"] == 16
                      and c["n"] == 10_000 and c.get("prefetch") == 1), None)
    result = clean({
        "profile": "seed, num_predict 1 (0.1 model s per request), 1 slot per server",
        "time_scale": TIME_SCALE, "request_clock_ms": REQUEST_CLOCK_S * 1000,
        "max_cell_s": MAX_CELL_S, "cells": cells, "memory": memory,
        "headline_pool_w16_n10000": headline,
        "headline_pool_w16_n10000_prefetch1": pipelined,
        "target": "pool efficiency ≥ 0.95 at N = 10,000, W = 16",
        "met": None if headline is None else headline["efficiency"] >= 0.95,
        "plot": relative(png) if png else None, "notes": notes})
    path = write_result("scaling" + suffix, result, args.out)
    print(f"memory: {memory['bytes_per_record']:.0f} bytes per request record; → {path}, {png}")
    return result


if __name__ == "__main__":
    main()
