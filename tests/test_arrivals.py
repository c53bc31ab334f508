"""Arrival schedules: the processes' moments, reproducibility, traces, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit.errors import ConfigError
from parallel_kit.workload.arrivals import (
    Arrivals,
    gaps,
    load_trace,
    make_schedule,
    specs_for,
    synthetic_prompt,
)


def _cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean())


@pytest.mark.parametrize("process,cv", [("poisson", 1.0), ("constant", 0.0)])
def test_inter_arrival_mean_is_one_over_rate_and_cv_matches_the_process(process, cv):
    s = make_schedule(0.05, n=20_000, process=process, seed=3)
    g = np.diff(np.concatenate([[0.0], s.times_s]))
    assert abs(g.mean() - 20.0) / 20.0 < 0.10
    assert abs(_cv(g) - cv) < 0.05


@pytest.mark.parametrize("b", [0.25, 1.0, 4.0])
def test_gamma_gaps_have_mean_one_over_rate_and_cv_one_over_sqrt_b(b):
    g = gaps("gamma", 2.0, 50_000, burstiness=b, rng=np.random.default_rng(1))
    assert abs(g.mean() - 0.5) / 0.5 < 0.03
    assert abs(_cv(g) - 1 / math.sqrt(b)) / (1 / math.sqrt(b)) < 0.05


@given(rate=st.floats(0.01, 100), seed=st.integers(0, 2**32 - 1),
       process=st.sampled_from(["poisson", "constant", "gamma"]))
@settings(max_examples=40, deadline=None)
def test_the_same_seed_gives_the_same_schedule_and_times_never_go_back(rate, seed, process):
    a = make_schedule(rate, n=50, process=process, burstiness=0.5 if process == "gamma" else 1,
                      seed=seed)
    b = make_schedule(rate, n=50, process=process, burstiness=0.5 if process == "gamma" else 1,
                      seed=seed)
    assert np.array_equal(a.times_s, b.times_s)
    assert np.all(np.diff(a.times_s) >= 0) and a.times_s[0] > 0


def test_a_duration_keeps_the_arrivals_before_it():
    s = make_schedule(1.0, duration_s=100, process="constant")
    assert len(s) == 99 and s.times_s[-1] < 100  # arrivals at 1, 2, …, 99
    p = make_schedule(1.0, duration_s=1000, seed=2)
    assert abs(len(p) - 1000) < 150 and p.times_s[-1] < 1000


@pytest.mark.parametrize("rate", [0, -1, "abc", float("nan"), float("inf"), None, True])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate):
    with pytest.raises(ConfigError, match="--rate"):
        make_schedule(rate, n=5)


@pytest.mark.parametrize("b", [0, -0.5, "x"])
def test_burstiness_must_be_above_zero(b):
    with pytest.raises(ConfigError, match="--burstiness"):
        make_schedule(1.0, n=5, process="gamma", burstiness=b)


def test_a_duration_too_short_for_one_request_is_refused():
    with pytest.raises(ConfigError, match="too short for one"):
        make_schedule(0.05, duration_s=10)


def test_n_and_duration_are_exclusive_and_one_is_needed():
    with pytest.raises(ConfigError, match="either --n"):
        make_schedule(1.0, n=5, duration_s=5)
    with pytest.raises(ConfigError, match="either --n"):
        make_schedule(1.0)


def test_unknown_process_is_named():
    with pytest.raises(ConfigError, match="choose from poisson, constant, gamma"):
        Arrivals(rate=1.0, process="uniform")


def test_option_record_checks_its_fields():
    with pytest.raises(ConfigError, match="--max-concurrency"):
        Arrivals(rate=1.0, max_concurrency=0)
    with pytest.raises(ConfigError, match="--warmup"):
        Arrivals(rate=1.0, warmup=-1)
    with pytest.raises(ConfigError, match="only applies to --arrivals gamma"):
        Arrivals(rate=1.0, burstiness=2.0)
    with pytest.raises(ConfigError, match="--rate R"):
        Arrivals()
    with pytest.raises(ConfigError, match="leaves none"):
        Arrivals(rate=1.0, n=3, warmup=3).schedule()


def _write(tmp_path: Path, lines: list[object]) -> Path:
    p = tmp_path / "trace.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return p


def test_a_trace_replays_its_own_offsets_at_the_given_speed(tmp_path):
    p = _write(tmp_path, [{"timestamp_s": 100.0, "prompt": "hi", "num_predict": 5},
                          {"timestamp_s": 102.0, "prompt_tokens": 40},
                          {"timestamp_s": 106.0, "prompt": "there"}])
    trace = load_trace(p)
    assert list(trace.times_s) == [0.0, 2.0, 6.0]
    sched = trace.schedule(2.0)
    assert list(sched.times_s) == [0.0, 1.0, 3.0]
    specs = specs_for(sched, None)
    assert specs[0].num_predict == 5 and specs[2].prompt == "there"
    assert 150 <= len(specs[1].prompt.encode()) <= 160  # ≈ 40 tokens at 4 bytes a token


def test_a_trace_out_of_order_names_the_line(tmp_path):
    p = _write(tmp_path, [{"timestamp_s": 1, "prompt": "a"}, {"timestamp_s": 0.5, "prompt": "b"}])
    with pytest.raises(ConfigError, match=r"line 2: timestamp_s 0.5 comes before"):
        load_trace(p)


@pytest.mark.parametrize("line,what", [({"prompt": "a"}, "timestamp_s"),
                                       ({"timestamp_s": 0}, '"prompt" or "prompt_tokens"'),
                                       ({"timestamp_s": 0, "prompt_tokens": 0}, "prompt_tokens"),
                                       ({"timestamp_s": 0, "prompt": "a", "num_predict": -2},
                                        "num_predict")])
def test_a_trace_line_with_a_missing_or_bad_field_is_named(tmp_path, line, what):
    p = _write(tmp_path, [{"timestamp_s": 0, "prompt": "ok"}, line])
    with pytest.raises(ConfigError, match="line 2") as err:
        load_trace(p)
    assert what in str(err.value)


def test_trace_speed_must_be_positive(tmp_path):
    p = _write(tmp_path, [{"timestamp_s": 0, "prompt": "a"}])
    with pytest.raises(ConfigError, match="--trace-speed"):
        load_trace(p).schedule(0)


def test_synthetic_prompt_has_about_the_asked_tokens():
    for t in (1, 7, 100):
        assert abs(len(synthetic_prompt(t).encode()) - 4 * t) <= 4
