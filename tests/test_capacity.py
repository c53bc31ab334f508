"""``parallel-kit capacity``: the SLO grammar, the plan's logic, bad input at the CLI, and the
plan checked against measured runs on the simulator.

Measured checks judge figures the runs themselves recorded (latency and TTFT from arrival, per
request), never the wall clock. The SLO of each generated case is put between the predicted
figures of two neighbouring configurations with a margin on both sides, so that the check
tests the planner's choice, not the noise of a 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit.bench import capacity as cap
from parallel_kit.cli import main
from parallel_kit.errors import ConfigError
from parallel_kit.sim.profiles import load_profile

PROFILES = ("seed", "rtx4090", "m1-max")
PROCESSES = (("poisson", 1.0), ("constant", 1.0), ("gamma", 0.5))

# -- the SLO grammar ---------------------------------------------------------------------------
keys = st.sampled_from(cap.SLO_KEYS)
seconds = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(st.dictionaries(keys, seconds, min_size=1, max_size=5), st.booleans())
def test_every_valid_slo_parses_and_round_trips(bounds, suffix):
    text = ",".join(f"{k}{'_s' if suffix else ''}={v!r}" for k, v in bounds.items())
    slo = cap.PercentileSlo.parse(text)
    assert dict(slo.bounds) == bounds
    assert cap.PercentileSlo.parse(str(slo)).keys == slo.keys


@given(st.text(max_size=40))
def test_any_text_parses_or_fails_with_one_clear_line(text):
    try:
        slo = cap.PercentileSlo.parse(text)
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and " — " in msg  # the cause, then the fix
    else:
        assert all(k in cap.SLO_KEYS and v > 0 and math.isfinite(v) for k, v in slo.bounds)


@given(keys, st.one_of(st.floats(max_value=0.0), st.just(float("nan")),
                       st.just(float("inf"))))
def test_a_zero_negative_or_infinite_target_is_refused(key, value):
    with pytest.raises(ConfigError, match="positive number of seconds"):
        cap.PercentileSlo.parse(f"{key}={value}")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=15)
       .filter(lambda k: k.removesuffix("_s") not in cap.SLO_KEYS))
def test_an_unknown_key_names_the_valid_ones(key):
    with pytest.raises(ConfigError, match="unknown SLO key") as err:
        cap.PercentileSlo.parse(f"{key}=3")
    assert "latency_p95" in str(err.value)


def test_bench_style_key_gets_a_hint():
    with pytest.raises(ConfigError, match="latency_p95"):
        cap.PercentileSlo.parse("latency=30")


# -- the plan's logic (theory only) ------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROFILES), st.sampled_from(PROCESSES), st.floats(0.2, 0.9),
       st.sampled_from(cap.SLO_KEYS[:8]), st.floats(1.05, 4.0), st.integers(0, 5))
def test_the_plan_names_the_smallest_meeting_configuration(profile, process, load, key,
                                                           slack, seed):
    prof = load_profile(profile)
    service = cap.service_model(prof, cap.Traffic(1.0), None, None)
    one = cap.predict_config("pool", 1, 1, service, cap.Traffic(1.0, n=10),
                             cap.PercentileSlo.parse("latency_p95=1e9")).capacity_rps
    traffic = cap.Traffic(one * load * 2, process[0], process[1], seed, n=60)
    solo = min(service.solo_s)
    slo = cap.PercentileSlo.parse(f"{key}={solo * slack:.6g}")
    try:
        plan = cap.plan_capacity(traffic, slo, profile=prof, max_gpus=4)
    except ConfigError:
        return  # the rate above every configuration's capacity is its own test
    if not plan.recommended:
        with pytest.raises(ConfigError, match="closest"):
            plan.check()
        assert plan.closest is not None and not plan.closest.meets
        return
    best = plan.best
    assert all(c.meets for c in plan.recommended)
    assert all(not c.meets for c in plan.candidates if c.size < best.size)
    if plan.next_smaller is not None:
        smaller = [c.size for c in plan.candidates if c.size < best.size]
        assert plan.next_smaller.size == max(smaller)
        assert plan.next_smaller.misses
    else:
        assert best.size == min(c.size for c in plan.candidates)


def test_the_seed_service_needs_two_gpus_for_a_30_s_p95():
    plan = cap.plan_capacity(cap.Traffic(1 / 8), cap.PercentileSlo.parse("latency_p95=30"),
                             max_gpus=4, slots=[1])
    assert plan.best.size == (2, 1)
    assert plan.next_smaller.size == (1, 1)
    assert math.isinf(plan.next_smaller.figures["latency_p95"])  # ρ = 1.25: no steady state
    assert "capacity parallel-kit" not in plan.measure_command()
    assert "--measure" in plan.measure_command()


# -- bad input at the command line: one line, exit 2 -------------------------------------------
def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize("slo, expect", [
    ("ttft=5", "unknown SLO key"), ("latency_p42=5", "unknown SLO key"),
    ("latency_p95=0", "positive number"), ("latency_p95=-3", "positive number"),
    ("latency_p95", "no '='"), (",", "empty SLO"), ("latency_p95=1,latency_p95=2", "twice")])
def test_a_bad_slo_is_one_line_and_exit_2(capsys, slo, expect):
    assert expect in _one_line_error(capsys, ["capacity", "--rate", "0.1", "--slo", slo])


def test_an_slo_nothing_meets_names_the_closest(capsys, tmp_path):
    out = tmp_path / "plan.json"
    line = _one_line_error(capsys, ["capacity", "--rate", "0.125", "--slo", "latency_p95=5",
                                    "--max-gpus", "3", "--json", str(out)])
    assert "closest" in line and "latency_p95" in line and "over" in line
    doc = json.loads(out.read_text())  # written before the error: nothing lost
    assert doc["recommended"] == [] and doc["closest"]["misses"]


def test_a_rate_above_every_configuration_is_refused(capsys):
    line = _one_line_error(capsys, ["capacity", "--rate", "5", "--slo", "latency_p95=60",
                                    "--max-gpus", "2"])
    assert "--rate 5" in line and "--max-gpus" in line


def test_a_calibrated_file_from_another_model_is_refused(capsys, tmp_path):
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"model": "gemma3:270m", "decode_tokens_per_s": 50.0,
                                 "speedup": {"1": 1.0, "2": 1.6}, "effective_slots": 2}))
    line = _one_line_error(capsys, ["capacity", "--rate", "0.1", "--slo", "latency_p95=60",
                                    "--calibrated", str(probe), "--model", "llama3.2:3b"])
    assert "gemma3:270m" in line and "llama3.2:3b" in line


def test_a_calibrated_file_plans_with_its_speeds(capsys, tmp_path):
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"model": "gemma3:270m", "decode_tokens_per_s": 20.0,
                                 "num_predict": 100, "speedup": {"1": 1.0, "2": 1.6},
                                 "effective_slots": 2}))
    assert main(["capacity", "--rate", "0.1", "--slo", "latency_p95=20", "--calibrated",
                 str(probe), "--max-gpus", "2"]) == 0
    assert "1 server(s) × 1 slot(s)" in capsys.readouterr().out  # 5 s a request, ρ = 0.5


# -- against measured runs ---------------------------------------------------------------------
def _case(profile: str, process: tuple[str, float], seed: int, key: str, margin: float = 1.5):
    """A traffic and an SLO with a clear gap between the configuration that should be chosen
    and every smaller one (``margin``: their predicted figures differ at least this much)."""
    prof = load_profile(profile)
    service = cap.service_model(prof, cap.Traffic(1.0), None, None)
    loose = cap.PercentileSlo.parse(f"{key}=1e9")
    cap1 = cap.predict_config("pool", 1, 1, service, cap.Traffic(1.0, n=10), loose).capacity_rps
    traffic = cap.Traffic(cap1 * 1.3, process[0], process[1], seed, n=40)
    plan = cap.plan_capacity(traffic, loose, profile=prof, max_gpus=3, slots=[1, 2])
    values = [c.figures[key] for c in plan.candidates]
    for i in range(1, len(values)):
        below = min(values[:i])
        if values[i] > 0 and below / values[i] >= margin:
            bound = math.sqrt(below * values[i]) if math.isfinite(below) else values[i] * 1.5
            return prof, traffic, cap.PercentileSlo.parse(f"{key}={bound:.6g}"), plan.candidates[i]
    return None


def _check_against_measurement(profile, process, seed, key):
    case = _case(profile, process, seed, key)
    if case is None:
        pytest.skip("no clear gap between neighbouring configurations in this case")
    prof, traffic, slo, expected = case
    plan = cap.plan_capacity(traffic, slo, profile=prof, max_gpus=3, slots=[1, 2])
    assert plan.best.size == expected.size
    ms = asyncio.run(cap.measure_plan(plan, profile=prof))
    assert ms[0].run.summary.failed == 0
    assert ms[0].meets, (ms[0].figures[key], ms[0].predicted[key], str(slo))
    if plan.next_smaller is not None:
        assert len(ms) == 2
        assert not ms[1].meets, (ms[1].figures[key], ms[1].predicted[key], str(slo))
        assert ms[1].run.summary.n == 40  # every request is a row, met or not


@pytest.mark.parametrize("profile, process, seed, key", [
    ("seed", ("poisson", 1.0), 1, "latency_p95"),
    ("rtx4090", ("gamma", 0.5), 2, "ttft_p95"),
])
def test_the_named_configuration_meets_when_measured_and_the_smaller_misses(
        profile, process, seed, key):
    _check_against_measurement(profile, process, seed, key)


#: A Latin square over profile × arrival process × SLO key: every profile meets every
#: process once and every key once, in 9 measured cases instead of the full 27 (each is
#: seconds of simulated traffic; ``benchmarks/capacity_check.py`` runs the wider grid).
_KEYS = ("latency_p95", "ttft_p95", "latency_mean")
DENSE_GRID = [(profile, process, _KEYS[(i + j) % 3])
              for i, profile in enumerate(PROFILES) for j, process in enumerate(PROCESSES)]


@pytest.mark.slow
@pytest.mark.parametrize("profile, process, key", DENSE_GRID)
def test_dense_grid_against_measurement(profile, process, key):
    _check_against_measurement(profile, process, 7, key)


# -- the max-rate search -----------------------------------------------------------------------
def _search(seed_profile="seed", servers=2, key="latency_p95", bound=25.0, n=40):
    prof = load_profile(seed_profile)
    traffic = cap.Traffic(0.1, "poisson", seed=3, n=n)
    slo = cap.PercentileSlo.parse(f"{key}={bound}")
    result = asyncio.run(cap.max_rate("pool", servers, 1, traffic, slo, profile=prof))
    return prof, traffic, slo, result


def _meets(prof, traffic, slo, rate, servers=2):
    return asyncio.run(cap.measure_config("pool", servers, 1, traffic, slo, profile=prof,
                                          rate=rate, seed=traffic.seed)).meets


def test_max_rate_lands_within_5_percent_in_at_most_6_runs():
    prof, traffic, slo, result = _search()
    (search,) = result.searches
    assert len(search["runs"]) <= cap.MAX_RATE_RUNS
    assert not search["at_edge"]
    answer = result.rate_rps
    assert result.bracket[0] <= answer <= result.bracket[1]
    # The grid's answer (the highest rate within the SLO) lies within ±5 %: a run 5 % below
    # meets the SLO and one 5 % above misses it.
    assert _meets(prof, traffic, slo, answer * 0.95)
    assert not _meets(prof, traffic, slo, answer * 1.05)


@pytest.mark.slow
def test_max_rate_matches_a_measured_grid():
    prof, traffic, slo, result = _search()
    lo, hi = result.bracket
    grid = [lo + (hi - lo) * i / 16 for i in range(17)]
    met = [r for r in grid if _meets(prof, traffic, slo, r)]
    assert met, "no grid rate meets the SLO"
    assert abs(result.rate_rps - max(met)) <= 0.05 * max(met)


def test_max_rate_repeats_give_a_confidence_interval():
    prof = load_profile("seed")
    slo = cap.PercentileSlo.parse("latency_p95=25")
    calls = []

    async def fake(rate, seed):  # theory stands in for the server: the search logic alone
        calls.append((rate, seed))
        c = cap.predict_config("pool", 2, 1, cap.service_model(prof, cap.Traffic(1.0), None, None),
                               cap.Traffic(0.1, seed=seed, n=40), slo, rate=rate, seed=seed)
        return cap.Measurement("pool", 2, 1, rate, seed, c.figures, c.figures, c.misses, 0)

    r = asyncio.run(cap.max_rate("pool", 2, 1, cap.Traffic(0.1, n=40), slo, profile=prof,
                                 repeats=3, measure=fake))
    assert len(calls) == 3 * cap.MAX_RATE_RUNS
    assert {s for _, s in calls} == {0, 1, 2}
    assert r.ci95 is not None and r.ci95[0] <= r.rate_rps <= r.ci95[1]
    for s in r.searches:  # theory measured against itself lands on theory's answer
        assert abs(s["answer"] - s["predicted_rps"]) <= 0.3 / 2**cap.MAX_RATE_RUNS * s[
            "predicted_rps"] + 1e-12


def test_a_trace_plans_and_names_itself_in_the_commands(capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"timestamp_s": {t}, "prompt_tokens": 20, "num_predict": 50}}\n'
                             for t in (0, 2, 3, 9, 10, 11, 20)))
    out = tmp_path / "plan.json"
    assert main(["capacity", "--trace", str(trace), "--slo", "latency_p95=12", "--max-gpus",
                 "3", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["traffic"]["process"] == "trace"
    assert str(trace) in doc["measure_command"]
    best = doc["recommended"][0]
    assert best["meets"] and all(v is None or v <= 12 for v in [best["figures"]["latency_p95"]])


def test_the_calibrated_file_is_named_in_the_measure_command(capsys, tmp_path):
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"model": "llama3.2:3b", "decode_tokens_per_s": 20.0,
                                 "num_predict": 100, "speedup": {"1": 1.0},
                                 "effective_slots": 1}))
    assert main(["capacity", "--rate", "0.1", "--slo", "latency_p95=20", "--calibrated",
                 str(probe), "--max-gpus", "2", "--slots", "1"]) == 0
    assert f"--calibrated {probe}" in capsys.readouterr().out


@pytest.mark.parametrize("modes, fix", [("pool", "--max-gpus to at least 4"),
                                        ("async", "--modes pool")])
def test_a_rate_above_capacity_says_what_would_serve_it(capsys, modes, fix):
    line = _one_line_error(capsys, ["capacity", "--rate", "0.35", "--slo", "latency_p95=60",
                                    "--max-gpus", "3", "--slots", "1", "--modes", modes])
    assert fix in line
