"""The simulator plants known effects; these tests check it plants them faithfully.

An in-memory SQLite store keeps the real store semantics (idempotency, the outcome-needs-an-
exposure check) without paying an fsync per event.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from ab_router.assignment import assign
from ab_router.simulator import CLICK, LATENCY, VALUE, SimulationConfig, simulate, simulate_counts
from ab_router.statistics import cuped, srm_check
from ab_router.stores import SqliteEventStore


def _store() -> SqliteEventStore:
    return SqliteEventStore(":memory:")


FULL = SimulationConfig(
    experiment="sim-full",
    relative_lifts=(0.0, 0.5),
    value_means=(1.0, 1.2),
    pre_correlation=0.8,
    latency_median_ms=50.0,
    latency_multipliers=(1.0, 1.2),
    users_per_batch=1000,
    batches=4,
    seed=7,
)


def test_simulate_is_deterministic() -> None:
    a_store, b_store = _store(), _store()
    a = simulate(FULL, a_store)
    b = simulate(FULL, b_store)
    assert np.array_equal(a.counts, b.counts)
    assert a_store.exposures(FULL.experiment) == b_store.exposures(FULL.experiment)
    assert a_store.outcomes(FULL.experiment) == b_store.outcomes(FULL.experiment)
    other = simulate(FULL.model_copy(update={"seed": 8}), _store())
    assert not np.array_equal(a.counts, other.counts)


def test_simulate_counts_is_deterministic_and_shaped() -> None:
    config = SimulationConfig(users_per_batch=500, batches=6, seed=3)
    assert np.array_equal(simulate_counts(config), simulate_counts(config))
    assert simulate_counts(config).shape == (6, 2, 2)
    reps = simulate_counts(config, replications=5)
    assert reps.shape == (5, 6, 2, 2)
    # Cumulative: non-decreasing, and every batch adds exactly users_per_batch units.
    assert np.all(np.diff(reps, axis=1) >= 0)
    assert np.all(reps[..., 0].sum(axis=-1) == 500 * np.arange(1, 7))
    assert np.all(reps[..., 1] <= reps[..., 0])


def test_true_effects_recovered_through_the_store() -> None:
    store = _store()
    result = simulate(FULL, store)
    clicks = store.summary(FULL.experiment, CLICK)
    values = store.summary(FULL.experiment, VALUE)
    latency = store.summary(FULL.experiment, LATENCY)
    for name in FULL.variants:
        s = clicks.variants[name]
        p = result.true_ctr[name]
        se = math.sqrt(p * (1 - p) / s.n_units)
        assert abs(s.sum / s.n_units - p) < 4.5 * se, name
        v = values.variants[name]
        assert result.true_value_mean is not None
        assert abs(v.sum / v.n_units - result.true_value_mean[name]) < 4.5 / math.sqrt(v.n_units)
    # Lognormal means scale with the median, so the mean ratio estimates the multiplier.
    lat = {n: latency.variants[n].sum / latency.variants[n].n_units for n in FULL.variants}
    assert lat["treatment"] / lat["control"] == pytest.approx(1.2, rel=0.06)
    assert result.true_relative_lift["treatment"] == pytest.approx(0.5)


def test_pre_metric_has_the_planted_correlation_and_cuped_recovers_the_lift() -> None:
    store = _store()
    simulate(FULL, store)
    exposures = {e.unit_id: e for e in store.exposures(FULL.experiment)}
    values = {o.unit_id: o.value for o in store.outcomes(FULL.experiment, VALUE)}
    units = sorted(exposures)
    x = np.array([exposures[u].pre_metric for u in units], dtype=np.float64)
    y = np.array([values[u] for u in units])
    g = np.array([exposures[u].variant == "treatment" for u in units], dtype=np.int64)
    control = g == 0
    assert np.corrcoef(x[control], y[control])[0, 1] == pytest.approx(0.8, abs=0.05)
    res = cuped(y, x, g)
    assert res.variance_reduction == pytest.approx(0.64, abs=0.06)
    assert abs(res.test.diff - 0.2) < 4.5 * res.test.se


def test_counts_match_store_and_assignment() -> None:
    store = _store()
    config = SimulationConfig(users_per_batch=300, batches=3, latency_median_ms=30.0, seed=1)
    result = simulate(config, store)
    exposures = store.exposures(config.experiment)
    units = [e.unit_id for e in exposures]
    # Exactly one exposure per simulated user, under the variant assign() gives.
    assert len(units) == len(set(units)) == 900
    catalog = config.catalog()
    assert all(
        assign(catalog, e.unit_id, config.experiment).variant == e.variant for e in exposures
    )
    # Outcomes only for exposed users; one latency per user, clicks only as 1.0.
    outcomes = store.outcomes(config.experiment)
    assert {o.unit_id for o in outcomes} <= set(units)
    assert len(store.outcomes(config.experiment, LATENCY)) == 900
    assert all(o.value == 1.0 for o in store.outcomes(config.experiment, CLICK))
    assert result.exposures_written == 900
    assert result.outcomes_written == len(outcomes)
    summary = store.summary(config.experiment, CLICK)
    assert summary.conflicts == 0
    assert result.final_counts() == {
        v: (s.n_units, int(s.sum)) for v, s in summary.variants.items()
    }
    # Per-batch counts are cumulative and total the users seen so far.
    assert list(result.counts[:, :, 0].sum(axis=1)) == [300, 600, 900]


def test_serve_ratio_skew_causes_an_srm_that_srm_check_flags() -> None:
    base = SimulationConfig(users_per_batch=5000, batches=2, seed=11)
    skewed = base.model_copy(update={"serve_ratio_skew": 0.1})
    for config, expect in ((base, False), (skewed, True)):
        counts = simulate(config, _store()).counts[-1, :, 0]
        result = srm_check([int(c) for c in counts], list(config.design_weights()))
        assert result.mismatch is expect
    assert skewed.served_weights() == pytest.approx([0.55, 0.45])


def test_simulate_counts_srm_and_effect_distribution() -> None:
    """The fast path draws different samples from the store path (no hashing), so it is
    checked on its own: over many replications it has the planted means."""
    config = SimulationConfig(
        relative_lifts=(0.0, 0.2), users_per_batch=50_000, batches=2, serve_ratio_skew=0.02
    )
    reps = simulate_counts(config, replications=400)[:, -1]
    share = reps[:, 0, 0].mean() / 100_000
    assert share == pytest.approx(0.51, abs=0.001)
    ctr = reps[..., 1].sum(axis=0) / reps[..., 0].sum(axis=0)
    assert ctr == pytest.approx([0.10, 0.12], abs=0.001)
    flagged = np.mean([srm_check([int(a), int(b)], [0.5, 0.5]).mismatch for a, b in reps[:, :, 0]])
    assert flagged > 0.95  # expected chi2 ~ 40 at n = 100k, against 10.8 at alpha 0.001


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": (50.0, 40.0)},
        {"ctr": (0.1,)},
        {"ctr": (0.1, 0.2), "relative_lifts": (0.0, 0.1)},
        {"ctr": (0.1, 1.5)},
        {"latency_multipliers": (1.0, 0.0)},
        {"serve_ratio_skew": 1.0},
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulationConfig.model_validate(kwargs)
