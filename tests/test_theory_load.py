"""theory.predict_load: queueing theory for the kit's modes under arrivals."""

from __future__ import annotations

import pytest

from parallel_kit import theory
from parallel_kit.errors import ConfigError
from parallel_kit.sim.profiles import load_profile
from parallel_kit.theory import queueing
from parallel_kit.workload.prompts import original_prompts


@pytest.fixture(scope="module")
def seed_service() -> theory.ServiceModel:
    return theory.service_model_from_profile(load_profile("seed"), original_prompts())


def test_seed_service_model_is_ten_seconds_a_request(seed_service):
    assert seed_service.solo_s == pytest.approx([10.0] * 5)


def test_predicted_mean_at_half_load_is_pollaczek_khinchine_within_five_percent(seed_service):
    p = theory.predict_load("sequential", seed_service, rate=0.05)
    assert p.utilisation == pytest.approx(0.5)
    assert p.closed_form == "M/D/1 Pollaczek–Khinchine"
    assert p.latency_mean_s == pytest.approx(15.0)
    # The discrete-event run of the simulator's model agrees with the formula.
    assert p.simulated_latency_mean_s == pytest.approx(15.0, rel=0.05)
    assert p.latency_p95_s > p.latency_p50_s > 10.0


def test_one_every_eleven_seconds_waits_about_fifty(seed_service):
    p = theory.predict_load("async", seed_service, rate=1 / 11, concurrency=5)
    assert p.closed_form_wait_s == pytest.approx(50.0)
    assert p.simulated_latency_mean_s == pytest.approx(60.0, rel=0.15)  # heavy load: noisier


def test_clockwork_arrivals_never_wait(seed_service):
    p = theory.predict_load("sequential", seed_service, rate=0.05, process="constant")
    assert p.wait_mean_s == pytest.approx(0.0, abs=1e-9)
    assert p.latency_p95_s == pytest.approx(10.0)


def test_three_servers_move_the_knee_threefold(seed_service):
    one = theory.predict_load("sequential", seed_service, rate=0.07)
    three = theory.predict_load("pool", seed_service, rate=0.21, workers=3)
    assert three.capacity_rps == pytest.approx(3 * one.capacity_rps)
    assert three.utilisation == pytest.approx(one.utilisation)
    assert three.latency_mean_s < one.latency_mean_s  # pooling: one queue, three servers
    assert three.closed_form.startswith("M/D/c Allen–Cunneen")


def test_slots_move_capacity_by_s_of_k(seed_service):
    p = theory.predict_load("async", seed_service, rate=0.1, slots=4, concurrency=5)
    assert p.capacity_rps == pytest.approx(0.1 * load_profile("seed").S(4))


def test_each_mode_is_predicted_for_the_policy_it_runs():
    assert theory.mode_topology("sequential", workers=3, slots=4) == (1, 1, "fifo")
    assert theory.mode_topology("async", workers=3, slots=4, concurrency=2) == (1, 2, "fifo")
    assert theory.mode_topology("ray", workers=3, slots=2) == (3, 2, "fifo")
    with pytest.raises(ConfigError, match="unknown mode"):
        theory.mode_topology("nosuchmode", workers=1, slots=1)


def test_power_of_two_routing_is_predicted_to_wait_longer_than_one_queue(seed_service):
    fifo = theory.predict_load("pool", seed_service, rate=0.2, workers=3)
    p2c = theory.predict_load("pool", seed_service, rate=0.2, workers=3, routing="power_of_two")
    assert p2c.routing == "power_of_two" and p2c.latency_mean_s > fifo.latency_mean_s


def test_a_run_replay_uses_its_own_arrivals(seed_service):
    from parallel_kit.workload.arrivals import make_schedule

    sched = make_schedule(0.05, n=30, seed=5)
    p = theory.predict_load("sequential", seed_service, schedule=sched)
    finish = queueing.fifo_recursion(sched.times_s, 10.0, 1)
    assert p.latency_mean_s == pytest.approx((finish - sched.times_s).mean())


def test_predict_load_needs_a_rate_or_a_schedule(seed_service):
    with pytest.raises(ConfigError, match="either a rate"):
        theory.predict_load("pool", seed_service)
    with pytest.raises(ConfigError, match="--rate"):
        theory.predict_load("pool", seed_service, rate=-1)


def test_a_topology_is_predicted_like_the_mode_that_has_it(seed_service):
    by_mode = theory.predict_load("pool", seed_service, rate=0.2, workers=3)
    by_topology = theory.predict_load(theory.Topology(servers=3, label="three"), seed_service,
                                      rate=0.2)
    assert by_topology.latency_p95_s == by_mode.latency_p95_s
    assert by_topology.mode == "three" and by_topology.utilisation == pytest.approx(2 / 3)


# -- a real server's jitter: service_cv ------------------------------------------------------
def _jittery(service: theory.ServiceModel, cv: float) -> theory.ServiceModel:
    from dataclasses import replace

    return replace(service, service_cv=cv)


def test_jitter_enters_pollaczek_khinchine_as_the_service_times_variation(seed_service):
    p = theory.predict_load("sequential", _jittery(seed_service, 0.5), rate=0.05)
    # M/G/1: W = ρ·S·(1 + c²) / (2(1 − ρ)) = 0.5 · 10 · 1.25 / 1 = 6.25 s.
    assert p.closed_form == "M/G/1 Pollaczek–Khinchine"
    assert p.closed_form_wait_s == pytest.approx(6.25)
    assert p.latency_mean_s == pytest.approx(16.25)
    # The discrete-event run with the jitter drawn agrees with the formula.
    assert p.simulated_latency_mean_s == pytest.approx(16.25, rel=0.05)


def test_jitter_moves_the_median_off_the_jump_between_waiting_and_not(seed_service):
    from parallel_kit.workload.arrivals import make_schedule

    sched = make_schedule(0.05, n=200, seed=1)
    exact = theory.predict_load("sequential", seed_service, schedule=sched)
    jittery = theory.predict_load("sequential", _jittery(seed_service, 0.05), schedule=sched)
    again = theory.predict_load("sequential", _jittery(seed_service, 0.05), schedule=sched)
    # ρ = 0.5 and 10 s each: in this run more than half never wait on the deterministic model,
    # so its median sits on the jump at 10 s; a 5 % jitter makes some of them wait.
    assert exact.latency_p50_s == pytest.approx(10.0)
    assert jittery.latency_p50_s > exact.latency_p50_s
    assert "service-time CV 0.05" in jittery.explanation
    assert jittery == again  # drawn from the prediction's seed: the same every time
    # Each draw is a FIFO queue over jittered service times, and the figure is their mean.
    import numpy as np

    rng = np.random.default_rng(0)
    pre, tok = seed_service.cycled(len(sched.times_s))
    means = []
    for _ in range(theory.JITTER_RUNS):
        p_i, t_i = theory.jittered_service(pre, tok, seed_service.decode_tps, 0.05, rng)
        service = p_i + t_i / seed_service.decode_tps
        means.append((queueing.fifo_recursion(sched.times_s, service) - sched.times_s).mean())
    assert jittery.latency_mean_s == pytest.approx(float(np.mean(means)))


def test_jitter_scales_each_request_alone_and_keeps_its_mean() -> None:
    import numpy as np

    n, tps = 100_000, 10.0
    pre, tok = theory.jittered_service(np.full(n, 2.0), np.full(n, 80), tps, 0.1,
                                       np.random.default_rng(1))
    service = pre + tok / tps  # 2 s + 8 s alone, jittered
    assert service.mean() == pytest.approx(10.0, rel=0.005)
    assert service.std() / service.mean() == pytest.approx(0.1, rel=0.03)
    assert pre.min() >= 0.0 and tok.min() >= 1 and tok.dtype.kind == "i"
    # Alone, a request takes f × its model time: prefill and decode scaled alike.
    f = np.random.default_rng(1).gamma(100.0, 0.01, size=n)
    assert service == pytest.approx(f * 10.0)


def test_negative_jitter_is_refused(seed_service):
    with pytest.raises(ConfigError, match="service_cv"):
        theory.predict_load("sequential", _jittery(seed_service, -0.1), rate=0.05)
