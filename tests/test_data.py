"""The top-level data/ folder: the kit's prompt sets, a trace to replay, recorded runs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from parallel_kit.bench.sweep import read_sweep
from parallel_kit.workload.arrivals import load_trace
from parallel_kit.workload.prompts import builtin_prompt_sets, load_prompts

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.parametrize("name", builtin_prompt_sets())
def test_data_prompts_are_the_package_built_ins(name):
    packaged = (resources.files("parallel_kit") / "data" / "prompts" / f"{name}.jsonl")
    assert (DATA / "prompts" / f"{name}.jsonl").read_text(encoding="utf-8") == \
        packaged.read_text(encoding="utf-8"), f"copy parallel_kit/data/prompts/{name}.jsonl"
    assert load_prompts(DATA / "prompts" / f"{name}.jsonl")


def test_every_trace_in_data_replays():
    traces = sorted((DATA / "traces").glob("*.jsonl"))
    assert traces
    for path in traces:
        trace = load_trace(path)
        assert len(trace.specs) > 10 and trace.times_s[0] == 0


def test_every_recorded_sweep_says_what_produced_it():
    sweeps = sorted((DATA / "runs").glob("sweep_*.json"))
    assert sweeps
    for path in sweeps:
        s = read_sweep(path)
        assert s.meta["command"] and s.meta["machine"]["cpus"] and s.runs
        assert all(r.summary.offered_rps for r in s.runs)

