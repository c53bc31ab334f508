"""Profiles: packaged figures with sources, S(k), answer lengths, user files."""

from __future__ import annotations

import dataclasses
import json

import pytest

from parallel_kit.errors import ConfigError
from parallel_kit.sim.profiles import PROFILES_ENV, list_profiles, load_profile, save_profile


def test_packaged_profiles_include_seed_and_four_calibrated_ones():
    names = list_profiles()
    assert "seed" in names
    assert {"rtx4090", "rtx-a4000", "m1-max", "m1-ultra"} <= set(names)


#: packaged profiles measured on the kit's engine (``benchmarks/sim_vs_engine.py``)
MEASURED = {"cpu-llama-server"}


@pytest.mark.parametrize("name", list_profiles())
def test_every_figure_of_every_profile_names_its_source(name):
    profile = load_profile(name)
    assert profile.scaling_source
    for speed in profile.models.values():
        assert speed.sources.get("decode_tps"), (name, speed.name)
        if speed.prefill_tps is not None:
            assert speed.sources.get("prefill_tps"), (name, speed.name)
        if speed.load_s:
            assert speed.sources.get("load_s"), (name, speed.name)
    if name in MEASURED:
        # Measured on one model: it serves that one, and any other name (the kit's default
        # included) at its speed; prompts as that server counts and batches them.
        assert list(profile.models) == [profile.default_model] and profile.prefill_in_batch
        assert profile.template_tokens > 0 and profile.bytes_per_token != 4.0
    else:
        # The kit's default model is served by every teaching profile.
        assert "llama3.2:3b" in profile.model_names()


def test_seed_request_takes_exactly_ten_seconds_alone():
    seed = load_profile("seed")
    out = seed.output_tokens("What is Python?", seed=None, num_predict=None)
    assert seed.service_time_s(seed.prompt_tokens("What is Python?"), out) == pytest.approx(10.0)
    assert seed.load_s() == 0.0


def test_seed_with_num_predict_runs_at_ten_tokens_per_second():
    seed = load_profile("seed")
    assert seed.output_tokens("x", num_predict=50) == 50
    assert seed.service_time_s(1, 50) == pytest.approx(5.0)


def test_published_rtx4090_speeds_are_used():
    p = load_profile("rtx4090")
    assert 216 <= p.speed("llama3.2:3b").decode_tps <= 237
    assert 137 <= p.speed("llama3.1:8b").decode_tps <= 148
    assert p.speed("llama3.1:latest") is p.speed("llama3.1:8b")


def test_s_of_k_is_one_alone_interpolated_between_points_and_flat_after():
    p = load_profile("m1-max")  # points (1, 1.0), (4, 1.5), (8, 1.5)
    assert p.S(1) == 1.0
    assert p.S(2) == pytest.approx(1.0 + 0.5 / 3)
    assert p.S(4) == pytest.approx(1.5)
    assert p.S(64) == pytest.approx(1.5)
    # Each of 4 together decodes at decode_tps × 1.5 / 4.
    assert p.per_request_tps(4) == pytest.approx(p.speed().decode_tps * 1.5 / 4)


def test_output_length_is_deterministic_per_prompt_and_seed():
    p = load_profile("rtx4090")
    a = p.output_tokens("What is Python?", seed=1)
    assert a == p.output_tokens("What is Python?", seed=1)
    lo, hi = p.speed().output_tokens
    lengths = {p.output_tokens("What is Python?", seed=s) for s in range(20)}
    assert all(lo <= n <= hi for n in lengths)
    assert len(lengths) > 1


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown simulator profile 'nope'.*seed"):
        load_profile("nope")


def test_user_file_from_env_adds_profiles_and_overrides(tmp_path, monkeypatch):
    seed = load_profile("seed")
    fast = type(seed)(name="my-laptop", models=seed.models, default_model=seed.default_model,
                      scaling=((1, 1.0), (2, 1.8)), description="measured")
    path = save_profile(fast, tmp_path / "profiles.json")
    monkeypatch.setenv(PROFILES_ENV, str(path))
    assert "my-laptop" in list_profiles()
    assert load_profile("my-laptop").S(2) == pytest.approx(1.8)
    assert "seed" in list_profiles()  # packaged ones are still there


def test_missing_user_file_named_by_the_environment_is_never_silent(
        tmp_path, monkeypatch, capsys):
    # probe --save-profile will create it; until then the packaged profiles load, with a note
    # (a misspelt PARALLEL_KIT_PROFILES used to fall back to them silently).
    monkeypatch.delenv(PROFILES_ENV, raising=False)
    mine = dataclasses.replace(load_profile("seed"), name="mine")
    missing = tmp_path / "missing.json"
    monkeypatch.setenv(PROFILES_ENV, str(missing))
    assert load_profile("seed").name == "seed"
    assert f"{PROFILES_ENV}={missing} does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_profile("mine")  # not packaged: the missing file is named as the cause
    assert str(missing) in str(info.value)
    save_profile(mine)  # creates it, and then it is read
    assert load_profile("mine").name == "mine"


def test_missing_user_file_given_as_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile("seed", path=tmp_path / "missing.json")


@pytest.mark.parametrize(("points", "why"), [
    ([[2, 1.0]], "start with"),
    ([[1, 1.0], [4, 1.2], [2, 1.3]], "rise"),
    ([[1, 1.0], [2, 3.0]], "impossible"),
])
def test_bad_scaling_points_are_rejected(tmp_path, points, why):
    entry = {"scaling": {"points": points},
             "models": {"m:1": {"decode_tps": 10}}}
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"profiles": {"bad": entry}}))
    with pytest.raises(ConfigError, match=why):
        load_profile("bad", path=path)
