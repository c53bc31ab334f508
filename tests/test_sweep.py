"""parallel-kit sweep: one mode over rates, measured beside theory."""

from __future__ import annotations

import json

import pytest

from parallel_kit.bench.sweep import AUTO_FRACTIONS, parse_rates, read_sweep, sweep
from parallel_kit.errors import ConfigError
from parallel_kit.plots import load as plots_load

SCALE = 0.02


def test_parse_rates_takes_auto_or_a_list_and_names_a_bad_rate():
    assert parse_rates("auto") == "auto"
    assert parse_rates("0.1, 0.2") == [0.1, 0.2]
    with pytest.raises(ConfigError, match="--rates"):
        parse_rates("0.1,zero")
    with pytest.raises(ConfigError, match="--rates"):
        parse_rates("0.1,-2")
    with pytest.raises(ConfigError, match="--rates needs"):
        parse_rates("")


def test_auto_runs_ten_rates_from_ten_to_a_hundred_and_ten_percent():
    assert len(AUTO_FRACTIONS) == 10
    assert AUTO_FRACTIONS[0] == pytest.approx(0.1) and AUTO_FRACTIONS[-1] == pytest.approx(1.1)


async def test_auto_sweep_measures_capacity_first_and_latency_rises_with_load(tmp_path):
    # 0.5 s requests (5 tokens at 10 tokens/s) on one single-slot server: capacity 2 req/s.
    result = await sweep("async", "auto", n=6, time_scale=SCALE, profile="seed",
                         num_predict=5, slo="latency=2", command="test")
    assert result.capacity_rps == pytest.approx(2.0, rel=0.15)
    rates = [r.summary.offered_rps for r in result.runs]
    assert rates == pytest.approx([result.capacity_rps * f for f in AUTO_FRACTIONS])
    # The same seed at every rate: the same gaps, shrunk — so waits can only grow with load.
    lat = [r.summary.open_loop["latency_from_arrival_mean_s"] for r in result.runs]
    assert lat[-1] > lat[0]
    replay = [r.summary.open_loop["replay_latency_mean_s"] for r in result.runs]
    assert replay == sorted(replay)
    assert result.predicted and result.predicted[-1]["latency_mean_s"] > result.predicted[0][
        "latency_mean_s"]
    path = result.write_json(tmp_path / "sweep.json")
    doc = json.loads(path.read_text())
    assert len(doc["runs"]) == 10 and doc["sweep"]["command"] == "test"
    assert doc["sweep"]["machine"]["cpus"] >= 1
    again = read_sweep(path)
    assert again.capacity_rps == result.capacity_rps and len(again.runs) == 10
    assert "capacity" in again.table()
    for fig in (plots_load.latency_vs_load(again), plots_load.throughput_vs_load(again)):
        assert fig.axes


async def test_repeats_run_each_rate_with_consecutive_seeds():
    result = await sweep("sequential", [1.0], n=3, repeats=2, time_scale=SCALE,
                         profile="seed", num_predict=2, seed=7)
    assert [r.summary.open_loop["seed"] for r in result.runs] == [7, 8]


async def test_sweep_refuses_bad_repeats_and_n():
    with pytest.raises(ConfigError, match="--repeats"):
        await sweep("async", [1.0], repeats=0)
    with pytest.raises(ConfigError, match="--n"):
        await sweep("async", [1.0], n=1)


def test_read_sweep_names_a_file_that_is_not_a_sweep(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"runs": []}')
    with pytest.raises(ConfigError, match="not a sweep"):
        read_sweep(p)


def test_predicted_curve_rises_towards_the_capacity():
    from parallel_kit import theory
    from parallel_kit.bench.sweep import predicted_curve
    from parallel_kit.sim.profiles import load_profile
    from parallel_kit.workload.prompts import original_prompts

    service = theory.service_model_from_profile(load_profile("seed"), original_prompts())
    capacity, curve = predicted_curve("pool", service, fractions=(0.2, 0.5, 0.9), workers=3)
    assert capacity == pytest.approx(0.3)
    means = [p["latency_mean_s"] for p in curve]
    assert means == sorted(means) and means[0] == pytest.approx(10.0, rel=0.05)
