"""The field's metric definitions, pinned on hand-made rows (parallel_kit.metrics)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit.errors import ConfigError
from parallel_kit.metrics import (
    ItlSketch,
    Slo,
    achieved_concurrency,
    distribution,
    goodput_rps,
    percentile,
    server_busy_s,
    tpot_s,
)


@dataclass
class R:
    """A hand-made row: only what the metrics read."""

    submitted_s: float
    finished_s: float
    ttft_s: float = math.nan
    output_tokens: int | None = None
    ok: bool = True

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.submitted_s


# -- percentiles ---------------------------------------------------------------------------------
def test_percentiles_interpolate_linearly_between_closest_ranks() -> None:
    values = [1, 2, 3, 4, 10]
    assert percentile(values, 50) == 3
    assert percentile(values, 90) == pytest.approx(7.6, abs=1e-12)
    assert percentile(values, 99) == pytest.approx(9.76, abs=1e-12)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10


def test_percentile_of_nothing_is_nan_and_nan_values_are_left_out() -> None:
    assert math.isnan(percentile([], 50))
    assert math.isnan(percentile([math.nan, None], 50))
    assert percentile([math.nan, 5.0, None, 1.0], 50) == 3.0


def test_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.floats(0, 100))
def test_percentile_agrees_with_numpy_default_method(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)),
                                                  rel=1e-12, abs=1e-9)


def test_distribution_reports_mean_and_every_percentile() -> None:
    d = distribution([1, 2, 3, 4, 10, math.nan])
    assert (d.n, d.mean, d.p50) == (5, 4.0, 3.0)
    assert d.p90 == pytest.approx(7.6) and d.p95 == pytest.approx(8.8)
    assert d.p99 == pytest.approx(9.76)
    empty = distribution([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.p99)


# -- TPOT ----------------------------------------------------------------------------------------
def test_tpot_excludes_the_first_token() -> None:
    # 11 tokens, first after 0.5 s, all by 2.5 s: 10 gaps of 0.2 s after the first token
    assert tpot_s(2.5, 0.5, 11) == pytest.approx(0.2)


def test_tpot_is_nan_for_one_or_no_output_token() -> None:
    assert math.isnan(tpot_s(2.0, 0.5, 1))
    assert math.isnan(tpot_s(2.0, 0.5, 0))
    assert math.isnan(tpot_s(2.0, 0.5, None))
    assert math.isnan(tpot_s(2.0, math.nan, 10))


# -- ITL sketch ----------------------------------------------------------------------------------
def test_itl_sketch_quantiles_are_within_its_relative_accuracy() -> None:
    rng = random.Random(7)
    gaps = [rng.lognormvariate(math.log(0.02), 0.6) for _ in range(20_000)]
    sketch = ItlSketch(alpha=0.01)
    sketch.add_many(gaps[:10_000])
    for g in gaps[10_000:]:
        sketch.add(g)
    assert sketch.count == 20_000
    assert sketch.mean == pytest.approx(float(np.mean(gaps)), rel=1e-9)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = float(np.quantile(gaps, q, method="lower"))
        assert sketch.quantile(q) == pytest.approx(exact, rel=0.0105)


def test_itl_sketch_memory_is_bounded_by_the_range_not_the_count() -> None:
    sketch = ItlSketch(alpha=0.01)
    rng = random.Random(1)
    for _ in range(50):
        sketch.add_many([rng.uniform(0.001, 0.1) for _ in range(2_000)])
    # two decades at alpha = 1 %: ≈ 230 counters for 100,000 gaps
    assert sketch.count == 100_000
    assert sketch.buckets <= 240


def test_itl_sketch_zero_gaps_and_empty_sketch() -> None:
    sketch = ItlSketch()
    assert math.isnan(sketch.quantile(0.5)) and math.isnan(sketch.mean)
    sketch.add_many([0.0, 0.0, 0.0, 0.01])
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == 0.01
    assert sketch.distribution().n == 4


@settings(max_examples=50)
@given(st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=200),
       st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=200))
def test_merging_sketches_equals_one_sketch_of_all_gaps(a: list[float], b: list[float]) -> None:
    one = ItlSketch()
    one.add_many(a + b)
    left, right = ItlSketch(), ItlSketch()
    left.add_many(a)
    right.add_many(b)
    merged = left.merge(right)
    assert merged.count == one.count
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        assert merged.quantile(q) == pytest.approx(one.quantile(q), rel=1e-12)
    round_trip = ItlSketch.from_dict(merged.to_dict())
    assert round_trip.quantile(0.9) == merged.quantile(0.9)


@settings(max_examples=50)
@given(st.lists(st.floats(1e-5, 100.0), min_size=1, max_size=300), st.floats(0.0, 1.0))
def test_sketch_quantile_is_within_alpha_of_a_true_order_statistic(gaps: list[float],
                                                                   q: float) -> None:
    sketch = ItlSketch(alpha=0.02)
    sketch.add_many(gaps)
    value = sketch.quantile(q)
    ordered = sorted(gaps)
    true = ordered[math.floor(q * (len(gaps) - 1))]
    assert abs(value - true) <= 0.02 * true * 1.0001 + 1e-12 or value in (ordered[0],
                                                                          ordered[-1])


# -- SLO and goodput -----------------------------------------------------------------------------
def test_slo_parses_seconds_per_key() -> None:
    slo = Slo.parse("ttft=2, tpot=0.1,latency=30")
    assert (slo.ttft_s, slo.tpot_s, slo.latency_s) == (2.0, 0.1, 30.0)
    assert Slo.parse("latency=5") == Slo(latency_s=5.0)
    assert str(slo) == "ttft=2,tpot=0.1,latency=30"


@pytest.mark.parametrize("text, match", [
    ("ttfb=2", r"unknown SLO key 'ttfb' — valid keys: ttft, tpot, latency"),
    ("ttft=fast", "not a number"),
    ("ttft=-1", "positive"),
    ("ttft", "no '='"),
    ("ttft=1,ttft=2", "twice"),
    ("", "empty SLO"),
])
def test_bad_slo_is_one_clear_config_error(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Slo.parse(text)


def test_goodput_counts_only_finished_requests_that_met_every_slo() -> None:
    slo = Slo(ttft_s=1.0, tpot_s=0.1, latency_s=5.0)
    rows = [
        R(0.0, 2.0, ttft_s=0.5, output_tokens=16),   # tpot 0.1: meets all
        R(0.0, 4.0, ttft_s=2.0, output_tokens=11),   # ttft 2 > 1
        R(0.0, 3.0, ttft_s=0.5, output_tokens=11),   # tpot 0.25 > 0.1
        R(0.0, 6.0, ttft_s=0.5, output_tokens=200),  # latency 6 > 5
        R(0.0, 1.0, ttft_s=0.2, output_tokens=10, ok=False),  # failed
        R(1.0, 2.0, ttft_s=0.3, output_tokens=21),   # meets all
    ]
    assert [slo.meets(r) for r in rows] == [True, False, False, False, False, True]
    assert goodput_rps(rows, slo, duration_s=10.0) == pytest.approx(0.2)
    assert math.isnan(goodput_rps(rows, slo, duration_s=0.0))


def test_an_unset_bound_is_not_checked_and_nan_fails_a_set_one() -> None:
    row = R(0.0, 2.0, ttft_s=math.nan, output_tokens=1)
    assert Slo(latency_s=3.0).meets(row)
    assert not Slo(ttft_s=3.0).meets(row)
    assert not Slo(tpot_s=3.0).meets(row)  # one token: TPOT undefined


# -- achieved concurrency ------------------------------------------------------------------------
def test_achieved_concurrency_is_the_time_average_in_flight() -> None:
    # 0–10: two requests for 0–4, one for 4–10 → (2·4 + 1·6) / 10 = 1.4
    rows = [R(0.0, 4.0), R(0.0, 10.0), R(math.nan, 3.0)]
    assert achieved_concurrency(rows) == pytest.approx(1.4)
    # a window clips the spans: 2..6 → (2·2 + 1·2) / 4 = 1.5
    assert achieved_concurrency(rows, 2.0, 6.0) == pytest.approx(1.5)
    assert math.isnan(achieved_concurrency([]))


def test_a_trickle_shows_as_low_concurrency() -> None:
    # 64 asked, but each request starts as the previous one ends: never more than one at once
    rows = [R(float(i), float(i + 1)) for i in range(64)]
    assert achieved_concurrency(rows) == pytest.approx(1.0)
    # all 64 at once
    assert achieved_concurrency([R(0.0, 1.0) for _ in range(64)]) == pytest.approx(64.0)


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=40))
def test_achieved_concurrency_never_exceeds_the_rows_nor_goes_negative(
        spans: list[tuple[float, float]]) -> None:
    rows = [R(min(a, b), max(a, b)) for a, b in spans]
    value = achieved_concurrency(rows)
    if not math.isnan(value):
        assert 0.0 <= value <= len(rows) + 1e-9


# -- each server's busy time, by its own stopwatch ---------------------------------------------
_durations = st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False))


@given(rows=st.lists(st.tuples(st.sampled_from(["", "gpu0", "gpu1", "gpu2"]), _durations,
                               _durations, _durations), max_size=30))
def test_busy_time_adds_each_servers_own_durations(rows) -> None:
    from parallel_kit.records import RequestResult

    results = [RequestResult(f"r{i}", "pool", "p", "m", worker=w, server_load_s=load,
                             server_prompt_eval_s=prompt, server_eval_s=ev)
               for i, (w, load, prompt, ev) in enumerate(rows)]
    busy = server_busy_s(results)
    counted = [(w, load, prompt, ev) for w, load, prompt, ev in rows if w and ev is not None]
    assert list(busy) == list(dict.fromkeys(w for w, *_ in counted))
    for worker, total in busy.items():
        parts = [x or 0.0 for w, *xs in counted if w == worker for x in xs]
        assert total == pytest.approx(math.fsum(parts))


async def test_the_busiest_server_works_the_makespan_theory_gives() -> None:
    # 5 × 10 s: one server works 50 s; three work 10, 20, 20 (⌈5/3⌉ rounds) whatever the clock.
    from parallel_kit.bench import compare

    c = await compare(["sequential", "pool"], n=5, gpus=3, time_scale=0.005, profile="seed",
                      backend="sim")
    assert list(server_busy_s(c["sequential"].requests).values()) == pytest.approx([50.0])
    assert sorted(server_busy_s(c["pool"].requests).values()) == pytest.approx([10, 20, 20])
