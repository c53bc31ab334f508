"""Predicted makespans: the headline numbers, scheduling bounds and processor sharing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit import theory as T
from parallel_kit.errors import ConfigError
from parallel_kit.records import RequestSpec

# Service times in whole tenths of a second keep sums exact enough for equality checks.
durations = st.integers(min_value=1, max_value=200).map(lambda d: d / 10)
time_lists = st.lists(durations, min_size=1, max_size=12)
worker_counts = st.integers(min_value=1, max_value=6)
slot_counts = st.integers(min_value=1, max_value=5)
# S(k) = k**a with 0 ≤ a ≤ 1: from no batching gain (a = 0) to perfect batching (a = 1).
exponents = st.floats(min_value=0.0, max_value=1.0)

FAST = settings(max_examples=60, deadline=None)


# --- the headline -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sequential", "async", "batch"])
def test_five_ten_second_requests_take_fifty_seconds_on_one_server(mode: str) -> None:
    p = T.predict(mode, [10.0] * 5, workers=3)
    assert p.makespan_s == pytest.approx(50.0)
    assert p.servers == 1
    assert p.rounds == 5
    assert "50 s" in p.explanation


@pytest.mark.parametrize("mode", ["pool", "ray"])
def test_five_ten_second_requests_take_two_rounds_on_three_gpus(mode: str) -> None:
    p = T.predict(mode, [10.0] * 5, workers=3)
    assert p.makespan_s == pytest.approx(20.0)
    assert p.rounds == 2
    assert T.sequential_makespan([10.0] * 5) / p.makespan_s == pytest.approx(2.5)
    assert "⌈5/3⌉ = 2 rounds" in p.explanation
    assert "2.50×" in p.explanation


def test_async_api_adds_only_the_submission_overhead() -> None:
    assert T.async_api_makespan([10.0] * 5) == pytest.approx(50.0)
    assert T.async_api_makespan([10.0] * 5, submit_overhead_s=0.004) == pytest.approx(50.004)
    p = T.predict("batch", [10.0] * 5, workers=1, submit_overhead_s=0.004)
    assert p.makespan_s == pytest.approx(50.004)


def test_sequential_ignores_extra_slots_but_async_uses_them_up_to_its_concurrency() -> None:
    def perfect(k: int) -> float:
        return float(k)

    seq = T.predict("sequential", [10.0] * 4, workers=1, slots=4, speedup=perfect)
    assert seq.makespan_s == pytest.approx(40.0)
    two = T.predict("async", [10.0] * 4, workers=1, slots=4, speedup=perfect, concurrency=2)
    assert two.slots == 2
    assert two.makespan_s == pytest.approx(20.0)
    one = T.predict("async", [10.0] * 4, workers=1, slots=4, speedup=perfect, concurrency=1)
    assert one.makespan_s == pytest.approx(40.0)
    assert "concurrency 1" in one.explanation


def test_no_requests_predict_zero() -> None:
    p = T.predict("ray", [], workers=3)
    assert (p.makespan_s, p.lower_bound_s, p.rounds) == (0.0, 0.0, 0)


# --- unequal lengths --------------------------------------------------------------------------

def test_round_robin_stacks_long_requests_that_least_loaded_spreads() -> None:
    # Requests 0 and 2 are long; round-robin on 2 servers puts both on server 0.
    times = [10.0, 1.0, 10.0, 1.0]
    assert T.round_robin_makespan(times, 2) == pytest.approx(20.0)
    assert T.greedy_makespan(times, 2) == pytest.approx(11.0)
    assert T.lower_bound(times, 2) == pytest.approx(11.0)
    rr = T.predict("pool", times, workers=2, dispatch="round_robin")
    assert rr.makespan_s == pytest.approx(20.0)


def test_greedy_schedule_sends_each_request_to_the_server_that_frees_first() -> None:
    sched = T.list_schedule([5.0, 2.0, 3.0, 1.0], 2)
    placed = [(e.server, e.start_s, e.finish_s) for e in sched.entries]
    # r2 waits for server 1 (free at 2 s), r3 for server 0 (free at 5 s), not the busier one.
    assert placed == [(0, 0.0, 5.0), (1, 0.0, 2.0), (1, 2.0, 5.0), (0, 5.0, 6.0)]
    assert [len(lane) for lane in sched.per_server()] == [2, 2]


def test_lpt_beats_arrival_order_when_the_long_request_comes_last() -> None:
    times = [2.0, 2.0, 2.0, 6.0]
    assert T.greedy_makespan(times, 2) == pytest.approx(8.0)
    assert T.lpt_makespan(times, 2) == pytest.approx(6.0)
    assert T.optimal_makespan(times, 2) == pytest.approx(6.0)


def test_optimal_refuses_sets_too_large_to_search() -> None:
    with pytest.raises(ConfigError, match="at most"):
        T.optimal_makespan([1.0] * (T.OPTIMAL_MAX_REQUESTS + 1), 2)


@FAST
@given(time_lists, worker_counts)
def test_greedy_lies_between_the_lower_bound_and_grahams_bound(times: list[float], w: int) -> None:
    span = T.greedy_makespan(times, w)
    assert span >= T.lower_bound(times, w) - 1e-9
    assert span <= T.graham_bound(times, w) + 1e-9


@FAST
@given(st.lists(durations, min_size=1, max_size=7), st.integers(min_value=1, max_value=3))
def test_greedy_and_lpt_keep_their_guarantees_against_the_true_optimum(
        times: list[float], w: int) -> None:
    opt = T.optimal_makespan(times, w)
    assert opt >= T.lower_bound(times, w) - 1e-9
    assert T.greedy_makespan(times, w) <= (2 - 1 / w) * opt + 1e-9
    assert T.lpt_makespan(times, w) <= (4 / 3 - 1 / (3 * w)) * opt + 1e-9


@FAST
@given(time_lists, worker_counts)
def test_round_robin_never_beats_the_lower_bound(times: list[float], w: int) -> None:
    assert T.round_robin_makespan(times, w) >= T.lower_bound(times, w) - 1e-9


@FAST
@given(time_lists, worker_counts)
def test_one_more_single_slot_server_never_lengthens_the_prediction(
        times: list[float], w: int) -> None:
    for mode in ("pool", "ray"):
        assert (T.predict(mode, times, workers=w + 1).makespan_s
                <= T.predict(mode, times, workers=w).makespan_s + 1e-9)


@FAST
@given(st.integers(min_value=1, max_value=40), durations, worker_counts, slot_counts, exponents)
def test_equal_requests_are_monotone_in_servers(n: int, t: float, w: int, k: int,
                                                a: float) -> None:
    def S(j: int) -> float:
        return float(j**a)

    assert (T.equal_requests_makespan(n, t, workers=w + 1, slots=k, speedup=S)
            <= T.equal_requests_makespan(n, t, workers=w, slots=k, speedup=S) + 1e-9)


@FAST
@given(st.integers(min_value=0, max_value=40), durations, worker_counts)
def test_equal_requests_take_ceil_n_over_w_rounds(n: int, t: float, w: int) -> None:
    expected = math.ceil(n / w) * t
    assert T.greedy_makespan([t] * n, w) == pytest.approx(expected)
    assert T.equal_requests_makespan(n, t, workers=w) == pytest.approx(expected)
    if n:
        assert T.predict("ray", [t] * n, workers=w).makespan_s == pytest.approx(expected)


# --- several slots: processor sharing ---------------------------------------------------------

def test_fourth_request_waits_for_a_free_slot() -> None:
    sched = T.simulate_processor_sharing([10.0] * 4, workers=1, slots=3,
                                         speedup=lambda k: float(k))
    starts = [e.start_s for e in sched.entries]
    assert starts[:3] == [0.0, 0.0, 0.0]
    assert starts[3] == pytest.approx(10.0)
    assert sched.makespan_s == pytest.approx(20.0)


def test_requests_sharing_a_server_each_slow_down_by_k_over_s_of_k() -> None:
    # Two requests of 10 s with S(2) = 1.5: each runs at 0.75 of solo speed → 13.33 s.
    sched = T.simulate_processor_sharing([10.0, 10.0], slots=2, speedup=lambda k: 1 + 0.5 * (k - 1))
    assert [e.finish_s for e in sched.entries] == pytest.approx([40 / 3, 40 / 3])


def test_a_short_request_leaves_and_the_long_one_speeds_up() -> None:
    # S(2) = 1 (no gain): both run at half speed until the 2 s request ends at 4 s;
    # the 10 s request then has 8 s left at full speed → 12 s, the same total work.
    sched = T.simulate_processor_sharing([10.0, 2.0], slots=2, speedup=None)
    assert [e.finish_s for e in sched.entries] == pytest.approx([12.0, 4.0])


def test_arrivals_delay_the_start() -> None:
    sched = T.simulate_processor_sharing([5.0, 5.0], workers=1, arrivals_s=[0.0, 20.0])
    assert [(e.start_s, e.finish_s) for e in sched.entries] == [(0.0, 5.0), (20.0, 25.0)]


def test_profile_speedup_is_read_from_its_S_method() -> None:
    class Halving:
        def S(self, k: int) -> float:
            return 1.0 + 0.5 * (k - 1)

    p = T.predict("ray", [10.0] * 2, workers=1, slots=2, speedup=Halving())
    assert p.makespan_s == pytest.approx(40 / 3)
    assert "S(2) = 1.50" in p.explanation


@FAST
@given(time_lists, worker_counts)
def test_one_slot_processor_sharing_is_greedy_list_scheduling(times: list[float], w: int) -> None:
    ps = T.simulate_processor_sharing(times, workers=w, slots=1)
    greedy = T.list_schedule(times, w)
    assert ps.makespan_s == pytest.approx(greedy.makespan_s)
    # Each request starts when greedy list scheduling starts it. Which server takes it is only
    # fixed up to ties: two servers that free up at the same instant (10.3 vs 8.2 + 2.1 in
    # floating point) may be picked either way, so the start times are the invariant.
    for p_entry, g_entry in zip(ps.entries, greedy.entries, strict=True):
        assert p_entry.start_s == pytest.approx(g_entry.start_s)
        assert p_entry.finish_s == pytest.approx(g_entry.finish_s)


def test_one_slot_processor_sharing_on_a_floating_point_tie() -> None:
    # The case that once picked another server on a tie: the schedule's times still agree.
    times = [10.3, 8.2, 10.3, 10.3, 2.1, 0.1]
    ps = T.simulate_processor_sharing(times, workers=4, slots=1)
    greedy = T.list_schedule(times, 4)
    assert ps.makespan_s == pytest.approx(greedy.makespan_s)
    assert [e.start_s for e in ps.entries] == pytest.approx([e.start_s for e in greedy.entries])


@FAST
@given(time_lists, worker_counts, slot_counts)
def test_perfect_batching_equals_k_separate_slots(times: list[float], w: int, k: int) -> None:
    # S(k) = k: every request runs at solo speed, as if each slot were its own server.
    ps = T.simulate_processor_sharing(times, workers=w, slots=k, speedup=lambda j: float(j))
    assert ps.makespan_s == pytest.approx(T.greedy_makespan(times, w * k))


@FAST
@given(st.integers(min_value=1, max_value=30), durations, worker_counts, slot_counts)
def test_perfect_batching_of_equal_requests_is_ceil_n_over_wk_rounds(
        n: int, t: float, w: int, k: int) -> None:
    expected = math.ceil(n / (w * k)) * t
    assert T.equal_requests_makespan(n, t, workers=w, slots=k,
                                     speedup=lambda j: float(j)) == pytest.approx(expected)


@FAST
@given(time_lists, slot_counts)
def test_slots_without_batching_gain_never_beat_the_total_work(times: list[float], k: int) -> None:
    # S(k) = 1: one server does one second of work per second, however many slots share it.
    ps = T.simulate_processor_sharing(times, workers=1, slots=k, speedup=None)
    assert ps.makespan_s == pytest.approx(sum(times))


@FAST
@given(time_lists, worker_counts, slot_counts, exponents,
       st.sampled_from(["least_loaded", "round_robin"]))
def test_processor_sharing_respects_its_lower_bound(times: list[float], w: int, k: int,
                                                    a: float, dispatch: T.Dispatch) -> None:
    def S(j: int) -> float:
        return float(j**a)

    p = T.predict("ray", times, workers=w, slots=k, speedup=S, dispatch=dispatch)
    assert p.makespan_s >= p.lower_bound_s - 1e-9
    sched = T.simulate_processor_sharing(times, workers=w, slots=k, speedup=S, dispatch=dispatch)
    for e in sched.entries:  # nobody finishes faster than solo at the best per-request speed
        assert e.finish_s - e.start_s >= times[e.index] * min(1.0, 1 / max(
            S(j) / j for j in range(1, k + 1))) - 1e-9


@FAST
@given(st.integers(min_value=1, max_value=30), durations, worker_counts, slot_counts, exponents)
def test_closed_form_matches_the_simulation_for_equal_requests(
        n: int, t: float, w: int, k: int, a: float) -> None:
    def S(j: int) -> float:
        return float(j**a)

    sim = T.simulate_processor_sharing([t] * n, workers=w, slots=k, speedup=S).makespan_s
    assert T.equal_requests_makespan(n, t, workers=w, slots=k, speedup=S) == pytest.approx(sim)


# --- curves -----------------------------------------------------------------------------------

def test_speedup_vs_workers_is_a_staircase() -> None:
    points = T.speedup_vs_workers(5, 10.0, range(1, 7))
    assert [p.makespan_s for p in points] == [50.0, 30.0, 20.0, 20.0, 10.0, 10.0]
    assert [round(p.speedup, 2) for p in points] == [1.0, 1.67, 2.5, 2.5, 5.0, 5.0]


def test_speedup_vs_slots_follows_S_and_finite_batches() -> None:
    def S(k: int) -> float:
        return {1: 1.0, 2: 1.4, 4: 1.6}[k]

    steady = T.speedup_vs_slots(S, [1, 2, 4])
    assert [p.speedup for p in steady] == [1.0, 1.4, 1.6]
    assert steady[2].makespan_s == pytest.approx(4 / 1.6)
    # Three requests on 2 slots: a pair (2/1.4 s) then one alone (1 s).
    finite = T.speedup_vs_slots(S, [2], n=3, t=1.0)
    assert finite[0].makespan_s == pytest.approx(2 / 1.4 + 1)
    assert finite[0].speedup == pytest.approx(3 / (2 / 1.4 + 1))


def test_amdahl_and_karp_flatt_are_inverse() -> None:
    assert T.amdahl_speedup(0.9, 10) == pytest.approx(1 / (0.1 + 0.09))
    assert T.amdahl_speedup(1.0, 3) == pytest.approx(3.0)
    assert T.karp_flatt_serial_fraction(2.5, 3) == pytest.approx(0.1)
    assert T.amdahl_speedup(1 - T.karp_flatt_serial_fraction(2.5, 3), 3) == pytest.approx(2.5)


# --- service times from a profile -------------------------------------------------------------

class StandInProfile:
    """Duck-typed like sim.profiles.Profile: 1 s prefill per word, 0.1 s per output token."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, int | None]] = []

    def S(self, k: int) -> float:
        return 1.0

    def prompt_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    def output_tokens(self, prompt: str, *, seed: int | None = None,
                      num_predict: int | None = None) -> int:
        self.calls.append((prompt, seed, num_predict))
        return num_predict if num_predict is not None else 50

    def service_time_s(self, prompt_tokens: int, output_tokens: int, concurrent: int = 1) -> float:
        assert concurrent == 1
        return prompt_tokens * 1.0 + output_tokens * 0.1


def test_service_times_come_from_the_profiles_latency_model() -> None:
    profile = StandInProfile()
    specs = [RequestSpec("one two", num_predict=100),
             RequestSpec("three", options={"seed": 7}),
             "plain prompt string"]
    times = T.service_times_from_profile(profile, specs, seed=1)
    assert times == pytest.approx([2 + 10.0, 1 + 5.0, 3 + 5.0])
    assert profile.calls == [("one two", 1, 100), ("three", 7, None),
                             ("plain prompt string", 1, None)]


def test_a_non_profile_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"lacks prompt_tokens.*list of seconds"):
        T.service_times_from_profile(object(), ["hi"])


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: T.predict("gpu", [1.0], workers=1), "unknown mode 'gpu'"),
        (lambda: T.predict("ray", [1.0], workers=0), "workers must be a whole number"),
        (lambda: T.predict("ray", [1.0], workers=1, slots=0), "slots must be"),
        (lambda: T.greedy_makespan([1.0, -2.0], 2), "service time #1"),
        (lambda: T.greedy_makespan([math.nan], 2), "service time #0"),
        (lambda: T.greedy_makespan(["ten"], 2), "must be numbers"),
        (lambda: T.simulate_processor_sharing([1.0], dispatch="random"),  # type: ignore[arg-type]
         "dispatch must be one of"),
        (lambda: T.simulate_processor_sharing([1.0], slots=2, speedup=lambda k: 0.0),
         r"S\(1\) = 0.0"),
        (lambda: T.simulate_processor_sharing([1.0], arrivals_s=[0.0, 1.0]), "one per request"),
        (lambda: T.predict("ray", [1.0], workers=1, speedup="fast"), "speedup must be"),
        (lambda: T.amdahl_speedup(1.5, 2), "between 0 and 1"),
    ],
)
def test_bad_input_names_the_cause(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        call()
