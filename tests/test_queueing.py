"""Queueing theory: the closed forms, and the discrete-event run checked against them."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit.errors import ConfigError
from parallel_kit.theory import queueing as q


def test_pollaczek_khinchine_for_the_seed_scenario():
    # One Ollama, 10 s requests: one every 20 s waits 5 s; one every 11 s waits 50 s.
    assert q.md1_wait(1 / 20, 10) == pytest.approx(5.0)
    assert q.md1_wait(1 / 11, 10) == pytest.approx(50.0)
    assert q.md1_wait(1 / 10, 10) == math.inf
    # Exponential service doubles the M/D/1 wait (c_s² = 1 → M/M/1: ρ s/(1 − ρ)).
    assert q.mg1_wait(1 / 20, 10, 1.0) == pytest.approx(10.0)


def test_erlang_c_matches_known_values_and_mm1():
    assert q.erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = ρ
    assert q.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert q.erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert q.mmc_wait(0.05, 10, 1) == pytest.approx(q.mg1_wait(0.05, 10, 1.0))


def test_allen_cunneen_is_exact_for_mm_c_and_mg1():
    assert q.allen_cunneen_wait(0.2, 10, 3, scv_arrival=1, scv_service=1) == pytest.approx(
        q.mmc_wait(0.2, 10, 3))
    assert q.allen_cunneen_wait(0.05, 10, 1) == pytest.approx(q.md1_wait(0.05, 10))


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_closed_forms_refuse_bad_rates(bad):
    with pytest.raises(ConfigError):
        q.md1_wait(bad, 10)


@given(arrivals=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=60),
       tokens=st.integers(1, 200), workers=st.integers(1, 4))
@settings(max_examples=80, deadline=None)
def test_des_with_one_slot_and_equal_requests_is_the_fifo_recursion(arrivals, tokens, workers):
    arr = np.sort(np.asarray(arrivals))
    sim = q.simulate(arr, tokens, decode_tps=10.0, workers=workers)
    expected = q.fifo_recursion(arr, tokens / 10.0, workers)
    np.testing.assert_allclose(sim.finish_s, expected, rtol=1e-9, atol=1e-9)
    # The first token comes one decode step after the request gets its slot.
    np.testing.assert_allclose(sim.first_token_s - sim.start_s, 0.1, atol=1e-9)


@given(arrivals=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40),
       slots=st.integers(1, 4), workers=st.integers(1, 3),
       routing=st.sampled_from(["fifo", "power_of_two", "round_robin"]))
@settings(max_examples=60, deadline=None)
def test_des_never_runs_more_than_the_slots_and_keeps_causality(arrivals, slots, workers,
                                                                routing):
    sim = q.simulate(np.sort(arrivals), 20, decode_tps=10.0, workers=workers, slots=slots,
                     speedup=lambda k: min(k, 2.0), routing=routing)
    assert np.all(sim.start_s >= sim.arrival_s - 1e-12)
    assert np.all(sim.first_token_s > sim.start_s) and np.all(sim.finish_s >= sim.first_token_s)
    events = sorted([(t, 1) for t in sim.start_s] + [(t, -1) for t in sim.finish_s],
                    key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak <= workers * slots


def test_des_converges_to_pollaczek_khinchine_for_poisson_arrivals():
    rng = np.random.default_rng(7)
    arr = np.cumsum(rng.exponential(20.0, 40_000))
    t0 = time.perf_counter()
    sim = q.simulate(arr, 100, decode_tps=10.0)
    took = time.perf_counter() - t0
    assert sim.wait_s[1000:].mean() == pytest.approx(q.md1_wait(0.05, 10), rel=0.05)
    assert sim.latency_s[1000:].mean() == pytest.approx(15.0, rel=0.05)
    assert took < 5.0  # nothing sleeps (a loose bound: this machine may be busy)


def test_des_agrees_with_allen_cunneen_for_m_d_3_at_two_thirds():
    rng = np.random.default_rng(11)
    arr = np.cumsum(rng.exponential(5.0, 40_000))  # λ = 0.2, 3 servers × 10 s: ρ ≈ 0.67
    sim = q.simulate(arr, 100, decode_tps=10.0, workers=3)
    # Allen–Cunneen is an approximation: within 10 % of the exact M/D/c wait here.
    assert sim.wait_s[1000:].mean() == pytest.approx(q.allen_cunneen_wait(0.2, 10, 3), rel=0.10)


def test_slots_share_decode_speed_by_s_of_k():
    # Two requests together on 2 slots with S(2) = 1.5: each gets 0.75 of its solo speed.
    sim = q.simulate([0.0, 0.0], 30, decode_tps=10.0, slots=2, speedup=lambda k: 1.5 ** (k > 1))
    np.testing.assert_allclose(sim.finish_s, [4.0, 4.0])
    # A prompt is processed alone, then the request joins at the next step boundary.
    sim = q.simulate([0.0, 0.05], 10, decode_tps=10.0, slots=2, prefill_s=[0.0, 0.2])
    # ready at 0.25; the first request's steps end at 0.1, 0.2, 0.3: it joins at 0.3, and a
    # step of two (S = 1) takes 0.2 s.
    assert sim.first_token_s[1] == pytest.approx(0.3 + 2 / 10)


def test_power_of_two_routing_waits_longer_than_one_shared_queue():
    rng = np.random.default_rng(3)
    arr = np.cumsum(rng.exponential(5.0, 20_000))
    fifo = q.simulate(arr, 100, decode_tps=10.0, workers=3)
    p2c = q.simulate(arr, 100, decode_tps=10.0, workers=3, routing="power_of_two")
    assert p2c.wait_s.mean() > fifo.wait_s.mean()


def test_max_in_flight_holds_requests_at_the_client():
    sim = q.simulate([0, 0, 0], 10, decode_tps=10.0, slots=4, max_in_flight=1)
    np.testing.assert_allclose(sim.start_s, [0, 1, 2])


def test_des_refuses_bad_input():
    with pytest.raises(ConfigError, match="routing"):
        q.simulate([0.0], 1, decode_tps=1, routing="random")
    with pytest.raises(ConfigError, match="output token"):
        q.simulate([0.0], 0, decode_tps=1)
