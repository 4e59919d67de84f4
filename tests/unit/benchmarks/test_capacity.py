"""The capacity model's arithmetic, checked against known truths: a Zipf fit recovers the
exponent it was drawn with, and the TTL-cache hit-rate formula matches a simulated cache."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.capacity import (
    GRAPH_REPLICA_CORES,
    TARGET_QPS,
    TRITON_REPLICA_CORES,
    Zipf,
    cpu_spent,
    fit_zipf,
    plan,
    ttl_hit_rate,
)


def test_fit_zipf_recovers_the_exponent_of_ideal_counts() -> None:
    counts = np.round(1e5 * np.arange(1, 2001, dtype=np.float64) ** -0.8)
    fitted = fit_zipf(np.random.default_rng(0).permutation(counts))
    assert fitted.exponent == pytest.approx(0.8, abs=0.01)
    assert fitted.users == 2000


def test_ttl_hit_rate_matches_a_simulated_ttl_cache() -> None:
    rng = np.random.default_rng(1)
    zipf = Zipf(exponent=1.0, users=500)
    p = zipf.probabilities()
    qps, ttl, seconds = 50.0, 2.0, 2000.0
    n = rng.poisson(qps * seconds)
    times = np.sort(rng.uniform(0, seconds, n))
    users = rng.choice(zipf.users, size=n, p=p)
    expires = np.full(zipf.users, -np.inf)
    hits = 0
    for when, user in zip(times, users, strict=True):
        if when < expires[user]:
            hits += 1
        else:  # a miss fills the entry for ttl seconds
            expires[user] = when + ttl
    simulated = hits / n
    assert ttl_hit_rate(p, qps, ttl) == pytest.approx(simulated, abs=0.01)
    assert ttl_hit_rate(p, qps, 0.0) == 0.0


def test_the_plan_mixes_hit_and_miss_cost_and_leaves_headroom() -> None:
    miss = {"triton": 2.0, "graph": 6.0}
    hit = {"triton": 0.0, "graph": 1.0}
    cold = plan(miss, hit, 0.0, utilisation=0.5)
    assert cold["cpu_ms_per_request"] == 8.0
    # 100K/s x 8 ms = 800 cores busy; at half utilisation 1,600.
    assert cold["cores_per_100k_qps"] == TARGET_QPS * 8 / 1000 / 0.5
    assert cold["triton_replicas"] == -(-cold["cores"]["triton"] // TRITON_REPLICA_CORES)
    assert cold["graph_replicas"] == -(-cold["cores"]["graph"] // GRAPH_REPLICA_CORES)
    warm = plan(miss, hit, 0.75, utilisation=0.5)
    assert warm["cpu_ms_per_request"] == pytest.approx(0.75 * 1.0 + 0.25 * 8.0)
    assert warm["cores_per_100k_qps"] < cold["cores_per_100k_qps"]


def test_cpu_spent_counts_new_processes_from_zero_and_splits_by_role() -> None:
    before = {(1, 10): ("triton", 5.0), (2, 20): ("graph", 1.0)}
    after = {(1, 10): ("triton", 7.5), (2, 20): ("graph", 1.5), (3, 30): ("graph", 0.25)}
    assert cpu_spent(before, after) == {"triton": 2.5, "graph": 0.75}
