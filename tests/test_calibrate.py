"""Calibration: a probe's measurements become a simulator profile that loads and predicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallel_kit.errors import ConfigError
from parallel_kit.measure.calibrate import (
    default_profiles_path,
    measure_speedup,
    measure_speedup_samples,
    profile_from_probe,
    save_profile,
    speedup_points,
)
from parallel_kit.sim.profiles import list_profiles, load_profile, profile_from_dict
from parallel_kit.sim.server import SimulatedOllama

# What `parallel-kit probe --json` writes for a 2-core machine (keys of speedup are strings).
PROBE = {"host": "http://127.0.0.1:11434", "model": "gemma3:270m", "effective_slots": 2,
         "decode_tokens_per_s": 80.0, "prefill_tokens_per_s": 400.0, "load_s": 0.9,
         "ttft_s": 0.05, "speedup": {"1": 1.0, "2": 1.8, "3": 1.65}, "num_predict": 64}


def test_probe_becomes_a_profile_with_the_measured_speeds() -> None:
    profile = profile_from_probe("my-cpu", PROBE)
    speed = profile.speed("gemma3:270m")
    assert speed.decode_tps == 80.0 and speed.prefill_tps == 400.0 and speed.load_s == 0.9
    assert profile.num_parallel == 2 and profile.default_model == "gemma3:270m"
    assert profile.S(2) == pytest.approx(1.8)
    # 64 tokens at 80 tok/s after 40 prompt tokens at 400 tok/s.
    assert profile.service_time_s(40, 64) == pytest.approx(0.1 + 0.8)
    assert "measured by parallel-kit probe" in speed.sources["decode_tps"]


def test_the_probes_jitter_becomes_the_profiles_and_loads_back(tmp_path: Path) -> None:
    profile = profile_from_probe("jittery", {**PROBE, "service_cv": 0.07})
    assert profile.service_cv == 0.07 and profile.to_dict()["service_cv"] == 0.07
    path = save_profile("jittery", {**PROBE, "service_cv": 0.07}, tmp_path / "p.json")
    assert load_profile("jittery", path=path).service_cv == 0.07
    # Theory's prediction under load takes it from the profile.
    from parallel_kit import theory

    assert theory.service_model_from_profile(profile, ["hi"]).service_cv == 0.07
    assert profile_from_probe("steady", PROBE).service_cv == 0.0  # one try: no jitter known
    assert "service_cv" not in profile_from_probe("steady", PROBE).to_dict()


@pytest.mark.parametrize("bad", [-0.1, "x", True, float("nan")])
def test_a_bad_jitter_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ConfigError, match="service_cv"):
        profile_from_probe("bad", {**PROBE, "service_cv": bad})
    with pytest.raises(ConfigError, match="service_cv"):
        profile_from_dict("bad", {**load_profile("seed").to_dict(), "service_cv": bad})


def test_a_falling_speedup_is_kept_flat_and_the_measurement_is_noted() -> None:
    points, note = speedup_points({"1": 1.0, "2": 1.8, "3": 1.65})
    assert points == [[1, 1.0], [2, 1.8], [3, 1.8]]
    assert "S(3) = 1.65 measured" in note
    profile = profile_from_probe("my-cpu", PROBE)
    assert "S(3) = 1.65" in profile.scaling_source


def test_speedup_without_one_request_alone_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs S\\(1\\)"):
        speedup_points({2: 1.5})


@pytest.mark.parametrize("field", ["decode_tokens_per_s"])
def test_a_missing_measurement_names_the_field(field: str) -> None:
    bad = dict(PROBE, **{field: None})
    with pytest.raises(ConfigError, match=field):
        profile_from_probe("x", bad)


def test_saved_profile_loads_back_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    save_profile("first", PROBE, path)
    save_profile("second", dict(PROBE, decode_tokens_per_s=40.0), path)
    assert {"first", "second"} <= set(list_profiles(path))
    assert load_profile("first", path).speed().decode_tps == 80.0
    assert load_profile("second", path).speed().decode_tps == 40.0
    assert json.loads(path.read_text())["profiles"]["first"]["num_parallel"] == 2


def test_profile_file_follows_the_environment(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_KIT_PROFILES", str(tmp_path / "mine.json"))
    assert default_profiles_path() == tmp_path / "mine.json"
    written = save_profile("env-one", PROBE)
    assert written == tmp_path / "mine.json" and "env-one" in list_profiles()
    monkeypatch.delenv("PARALLEL_KIT_PROFILES")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_profiles_path() == tmp_path / "cfg" / "parallel_kit" / "profiles.json"


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a name"):
        profile_from_probe(" ", PROBE)


async def test_measure_speedup_sees_the_simulators_slots() -> None:
    # seed profile: S(2) = 1 + 0.5 × (2 - 1) / 3 ≈ 1.167; two slots, so 3 at once ≈ S(2).
    async with SimulatedOllama("seed", num_parallel=2, time_scale=0.02,
                               models=["llama3.2:3b"]) as sim:
        s = await measure_speedup(sim.url, "llama3.2:3b", (1, 2, 3), num_predict=20, repeats=2,
                                  time_scale=0.02)
    assert s[1] == 1.0
    assert s[2] == pytest.approx(7 / 6, rel=0.15)
    assert s[3] == pytest.approx(7 / 6, rel=0.2)


async def test_speedup_samples_give_the_median_and_spread_of_interleaved_tries() -> None:
    async with SimulatedOllama("seed", num_parallel=2, time_scale=0.02,
                               models=["llama3.2:3b"]) as sim:
        found = await measure_speedup_samples(sim.url, "llama3.2:3b", (1, 2), num_predict=20,
                                              repeats=3, time_scale=0.02)
        stats = sim.stats()
    assert sorted(found.samples) == [1, 2] and all(len(v) == 3 for v in found.samples.values())
    lo, hi = found.spread[2]
    assert lo <= found.median[2] <= hi and found.median[1] == 1.0
    assert found.median[2] == pytest.approx(7 / 6, rel=0.15)
    assert found.to_dict()["samples"]["2"] == [round(x, 4) for x in found.samples[2]]
    # 3 tries × (1 + 2 requests), every one completed on the server.
    assert stats["completed"] == 9 and stats["max_active"] == 2


async def test_calibrated_simulator_reproduces_the_measured_speed() -> None:
    # Calibrate from the seed simulator, then a simulator on the new profile runs as fast.
    async with SimulatedOllama("seed", num_parallel=2, time_scale=0.02,
                               models=["llama3.2:3b"]) as sim:
        s = await measure_speedup(sim.url, "llama3.2:3b", (1, 2), num_predict=20, repeats=2,
                                  time_scale=0.02)
    probe = dict(PROBE, model="llama3.2:3b", decode_tokens_per_s=10.0,
                 prefill_tokens_per_s=None, load_s=0.0, speedup=s)
    profile = profile_from_probe("copy", probe)
    assert profile.S(2) == pytest.approx(load_profile("seed").S(2), rel=0.15)
    assert profile.service_time_s(10, 100) == pytest.approx(10.0)


def test_prefill_speed_is_kept_in_the_simulators_token_count() -> None:
    # The server counted 46 tokens in the probe's 204-byte prompt; the simulator counts 51
    # (4 bytes a token). The same text must take the measured 46 / 400 s in the profile.
    probe = dict(PROBE, prompt_tokens=46, prompt_bytes=204)
    profile = profile_from_probe("tokenizer", probe)
    sim_tokens = profile.prompt_tokens("x" * 204)
    assert sim_tokens == 51
    assert profile.speed().prefill_tps == pytest.approx(400.0 * 51 / 46)
    assert profile.prefill_s(sim_tokens) == pytest.approx(46 / 400.0)
    assert "simulator's tokens" in profile.speed().sources["prefill_tps"]
    # Without the counts the measured speed is kept as it is.
    assert profile_from_probe("plain", PROBE).speed().prefill_tps == 400.0
