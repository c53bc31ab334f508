"""What the benchmark scripts share: simulators in their own process, repetitions, results.

The machine the figures come from is shared and noisy (2 cores, other people's test runs), so
every script follows the same rules:

* load and servers in **separate processes** from the thing measured (``SimFarm`` starts
  ``W`` simulated Ollama servers in one child process), so that a benchmark measures the client
  or the server, not both fighting for one event loop;
* **repetitions**, reported as medians, with alternatives measured **interleaved** in the same
  run (A B C A B C …) and compared as ratios, never single absolute times;
* each result is a JSON file in ``benchmarks/results/`` that says what produced it: the
  command, the machine (cores, load average), the time and the settings.

Run as a script, this module *is* the child process of ``SimFarm``::

    python benchmarks/_common.py serve --count 4 --profile seed --time-scale 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
#: Quick runs (``make bench-quick``) write here: a git-ignored folder, so that a quick run never
#: rewrites the recorded full results (tracked files).
QUICK_RESULTS = RESULTS / "quick"


def results_dir(quick: bool, out_dir: Path | None = None) -> Path:
    """Where a benchmark writes: ``out_dir`` when given, else ``results/`` (full runs) or the
    git-ignored ``results/quick/`` (quick runs)."""
    return out_dir or (QUICK_RESULTS if quick else RESULTS)


def relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (results record no
    machine's absolute paths), else as given."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
PYTHON = sys.executable

def _bench_profile(description: str, *, num_parallel: int, decode_tps: float,
                   prefill_tps: float | None, output_tokens: int) -> dict[str, Any]:
    """A benchmarks-only simulator profile: llama3.2:3b at the given speeds, S(k) = k to 64."""
    return {
        "description": f"benchmarks only: {description}",
        "num_parallel": num_parallel,
        "scaling": {"points": [[1, 1.0], [64, 64.0]], "source": "benchmarks: perfect scaling"},
        "default_model": "llama3.2:3b",
        "models": {"llama3.2:3b": {"decode_tps": decode_tps, "prefill_tps": prefill_tps,
                                   "load_s": 0.0, "output_tokens": [output_tokens] * 2,
                                   "aliases": ["llama3.2:latest"]}},
    }


#: A simulator profile with (almost) no model time: every wait is below a microsecond, so a
#: request costs only HTTP and Python. Written to a temporary file named by
#: ``PARALLEL_KIT_PROFILES`` (the packaged profiles stay as they are).
ZERO_PROFILE = "bench-zero-latency"
_ZERO_ENTRY = _bench_profile("every wait ~0 (decode 1e12 tokens/s, instant prompt)",
                             num_parallel=64, decode_tps=1e12, prefill_tps=None,
                             output_tokens=1)


#: 100 tokens/s per stream whatever the number of streams (S(k) = k up to 64): with k streams
#: one decode step takes k / (100 × k) = 10 ms, so every token has a planned time on a 10 ms grid.
STEADY_PROFILE = "bench-steady-100tps"
_STEADY_ENTRY = _bench_profile("100 tokens/s per stream, perfect batching to 64 streams",
                               num_parallel=64, decode_tps=100.0, prefill_tps=None,
                               output_tokens=200)


#: The rtx4090 profile's single-stream speeds (llama3.2:3b: decode 226 tokens/s, prefill 10,625
#: tokens/s) with perfect batching, S(k) = k: a request's speed does not depend on how many
#: others decode beside it, so a closed loop's rhythm (when each client sends its next request)
#: cannot change what the server does — only the phase of the 4.4 ms decode grid a request
#: joins (< one step). The fair ground for comparing clients' latency and TTFT at concurrency 4.
LINEAR_PROFILE = "bench-linear-rtx4090"
_LINEAR_ENTRY = _bench_profile("rtx4090 single-stream speeds, S(k) = k (perfect batching)",
                               num_parallel=4, decode_tps=226.0, prefill_tps=10625.0,
                               output_tokens=200)


def zero_profile_file() -> Path:
    """The benchmarks' own profiles (zero-latency, steady, linear) in a temporary profile
    file (rewritten on every call, so a file left by an earlier process is never stale)."""
    path = Path(tempfile.gettempdir()) / f"parallel_kit_bench_profiles_{os.getpid()}.json"
    doc = {"schema": 1, "profiles": {ZERO_PROFILE: _ZERO_ENTRY, STEADY_PROFILE: _STEADY_ENTRY,
                                     LINEAR_PROFILE: _LINEAR_ENTRY}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# -- statistics ----------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0–1) by linear interpolation (NaN when empty)."""
    data = sorted(v for v in values if v == v)
    if not data:
        return float("nan")
    pos = q * (len(data) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def interleaved(reps: int, variants: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each variant once per repetition, in rotating order (A B C, B C A, …), so a burst
    of load from elsewhere on the machine hits every variant alike. Returns the samples."""
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            out[name].append(variants[name]())
    return out


# -- machine and results ---------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the figures ran on (for the record: absolute numbers depend on it)."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in load],
            "python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine()}


def write_result(name: str, data: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``<name>.json`` with the command and the machine added; returns the path.

    A name ending ``_quick`` goes to the git-ignored ``results/quick/`` unless ``out_dir`` is
    given; paths in the command are written relative to the repository root.
    """
    folder = results_dir(name.endswith("_quick"), out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    argv = [relative(a) if Path(a).is_absolute() else a for a in sys.argv]
    doc = {"benchmark": name, "command": " ".join([Path(PYTHON).name, *argv]),
           "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **data}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float):
        return None
    return str(value)


def clean(obj: Any) -> Any:
    """Round floats and turn NaN into None, recursively (for readable JSON)."""
    if isinstance(obj, float):
        return None if obj != obj else round(obj, 6)
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


# -- simulators in a process of their own ------------------------------------------------------
class SimFarm:
    """``count`` simulated Ollama servers in one child process; ``urls`` once started.

    Args:
        count: servers to start (one per simulated GPU).
        profile: profile name (``ZERO_PROFILE`` is the zero-latency one).
        time_scale: the simulators' time scale.
        slots: slots per server (default: the profile's).
    """

    def __init__(self, count: int = 1, *, profile: str = "seed", time_scale: float = 1.0,
                 slots: int | None = None) -> None:
        self.count = count
        self.profile = profile
        self.time_scale = time_scale
        self.slots = slots
        self.urls: list[str] = []
        self.env = dict(os.environ, PARALLEL_KIT_PROFILES=str(zero_profile_file()))
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimFarm:
        cmd = [PYTHON, str(Path(__file__).resolve()), "serve", "--count", str(self.count),
               "--profile", self.profile, "--time-scale", repr(self.time_scale)]
        if self.slots:
            cmd += ["--slots", str(self.slots)]
        # The child's stderr goes to a file: asyncio logs "socket.send() raised exception" for
        # every connection a load generator drops at the end of a run, which is expected.
        self._log = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                      env=self.env, cwd=ROOT)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # the child prints its URLs once listening
        if not line.startswith("URLS "):
            self.__exit__()
            self._log.seek(0)
            raise RuntimeError(f"the simulator process did not start: {self._log.read()[-2000:]}")
        self.urls = line.split()[1:]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            from parallel_kit.servers.launcher import stop_process

            stop_process(self._proc, 10.0)
            self._proc = None
            self._log.close()

    @property
    def pid(self) -> int:
        """The servers' process id (to pin it to a core)."""
        assert self._proc is not None, "the farm is not started"
        return self._proc.pid

    def stats(self, index: int = 0) -> dict[str, Any]:
        """``GET /sim/stats`` of server ``index``."""
        return dict(httpx.get(f"{self.urls[index]}/sim/stats", timeout=10).json())


async def _serve(count: int, profile: str, time_scale: float, slots: int | None) -> None:
    from parallel_kit.sim import SimulatedOllama

    async with contextlib.AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(SimulatedOllama(
            profile, time_scale=time_scale, num_parallel=slots, keep_alive=-1))
            for _ in range(count)]
        print("URLS " + " ".join(s.url for s in sims), flush=True)
        await asyncio.Event().wait()  # until the parent terminates us


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="simulated Ollama servers for the benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--count", type=int, default=1)
    serve.add_argument("--profile", default="seed")
    serve.add_argument("--time-scale", type=float, default=1.0)
    serve.add_argument("--slots", type=int, default=None)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.count, args.profile, args.time_scale, args.slots))


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: …; elapsed()`` — clock seconds since the block began."""
    t0 = time.perf_counter()
    yield lambda: time.perf_counter() - t0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _main()
