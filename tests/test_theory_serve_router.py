"""Ray Serve's router in theory: power of two choices among replicas that accept, FIFO at the
router while none does (``max_ongoing``), as ``rayserve``/``production`` run it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit import theory
from parallel_kit.modes.registry import get_info
from parallel_kit.sim.profiles import load_profile
from parallel_kit.theory import queueing as q
from parallel_kit.workload.prompts import original_prompts


@pytest.fixture(scope="module")
def seed_service() -> theory.ServiceModel:
    return theory.service_model_from_profile(load_profile("seed"), original_prompts())


@given(arrivals=st.lists(st.floats(0, 500, allow_nan=False), min_size=1, max_size=50),
       tokens=st.integers(1, 200), workers=st.integers(1, 4), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_router_capped_at_one_slot_is_one_fifo_queue(arrivals, tokens, workers, seed):
    # max_ongoing = slots = 1: nothing waits in a replica; the router's FIFO queue hands its
    # head to the first replica that frees — the same times as one queue in front of all.
    arr = np.sort(np.asarray(arrivals))
    serve = q.simulate(arr, tokens, decode_tps=10.0, workers=workers, routing="power_of_two",
                       max_ongoing=1, seed=seed)
    fifo = q.simulate(arr, tokens, decode_tps=10.0, workers=workers)
    np.testing.assert_allclose(serve.start_s, fifo.start_s, atol=1e-9)
    np.testing.assert_allclose(serve.finish_s, fifo.finish_s, atol=1e-9)


@given(arrivals=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40),
       slots=st.integers(1, 3), workers=st.integers(1, 3), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_a_max_ongoing_no_replica_reaches_is_plain_power_of_two(arrivals, slots, workers, seed):
    arr = np.sort(np.asarray(arrivals))
    kw = {"decode_tps": 10.0, "workers": workers, "slots": slots, "routing": "power_of_two",
          "speedup": lambda k: min(k, 2.0), "seed": seed}
    unbounded = q.simulate(arr, 20, **kw)
    roomy = q.simulate(arr, 20, max_ongoing=len(arr), **kw)
    np.testing.assert_array_equal(roomy.server, unbounded.server)
    np.testing.assert_allclose(roomy.finish_s, unbounded.finish_s, atol=1e-9)


def test_rayserve_and_production_are_predicted_for_serves_router(seed_service):
    assert get_info("rayserve").routing == get_info("production").routing == "power_of_two"
    assert get_info("pool").routing is None and get_info("ray").routing is None
    assert theory.mode_topology("rayserve", workers=3, slots=1) == (3, 1, "power_of_two")
    # Default max_ongoing = slots: one queue (the router's) in front of three servers — the
    # same prediction as pool's one FIFO queue, and the M/D/c closed form applies.
    serve = theory.predict_load("rayserve", seed_service, rate=0.2, workers=3,
                                requests=4000)
    pool = theory.predict_load("pool", seed_service, rate=0.2, workers=3, requests=4000)
    assert serve.routing == "power_of_two" and "router queue" in serve.explanation
    assert serve.latency_mean_s == pytest.approx(pool.latency_mean_s)
    assert serve.closed_form.startswith("M/D/c")


def test_max_ongoing_above_the_slots_queues_inside_replicas_and_waits_longer(seed_service):
    one_queue = theory.predict_load("production", seed_service, rate=0.2, workers=3,
                                    requests=4000)
    per_replica = theory.predict_load("production", seed_service, rate=0.2, workers=3,
                                      requests=4000, max_ongoing=8)
    assert per_replica.latency_mean_s > 1.1 * one_queue.latency_mean_s
    assert per_replica.closed_form == ""  # no closed form for per-replica queues
    # Below the slots a replica never runs more than it accepts: the capacity drops.
    capped = theory.predict_load("rayserve", seed_service, rate=0.05, workers=3, slots=4,
                                 requests=2000, max_ongoing=2)
    full = theory.predict_load("rayserve", seed_service, rate=0.05, workers=3, slots=4,
                               requests=2000)
    assert capped.slots == 2 and full.slots == 4
    assert capped.capacity_rps < full.capacity_rps
