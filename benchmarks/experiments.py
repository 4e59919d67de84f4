"""Simulation studies of the A/B router's statistics, with effects planted by the simulator.

Why: the guarantees the router relies on (always-valid p-values survive peeking, the
sequential test has power at the documented traffic, SRM is caught) are claims about error
rates, which only repeated simulation with known truth can measure. The studies use the
vectorised :func:`ab_router.simulator.simulate_counts`; one end-to-end run goes through the
real assignment and a durable :class:`~ab_router.stores.SqliteEventStore` to show the whole
path works and what it costs. Writes ``benchmarks/results/experiments.json``.

    python benchmarks/experiments.py [--out benchmarks/results/experiments.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ab_router.sequential import (  # noqa: E402
    SequentialTest,
    always_valid_p_path,
    proportion_diff_and_var,
    tau2_for_relative_lift,
)
from ab_router.simulator import CLICK, LATENCY, SimulationConfig, simulate, simulate_counts  # noqa: E402
from ab_router.statistics import srm_check, two_proportion_z  # noqa: E402
from ab_router.stores import SqliteEventStore  # noqa: E402

ALPHA = 0.05
BASELINE = 0.10
LIFT = 0.05
USERS_PER_ARM_PER_LOOK = 10_000
LOOKS = 20
TAU2 = tau2_for_relative_lift(BASELINE, LIFT)


def _sequential_config(lift: float, seed: int) -> SimulationConfig:
    """The documented operating point: 10 % CTR, 10,000 users per arm per look, 20 looks."""
    return SimulationConfig(
        baseline_ctr=BASELINE,
        relative_lifts=(0.0, lift),
        users_per_batch=2 * USERS_PER_ARM_PER_LOOK,
        batches=LOOKS,
        seed=seed,
    )


def _msprt_paths(counts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Running-minimum always-valid p-values, shape (replications, looks)."""
    diff, var = proportion_diff_and_var(
        counts[..., 0, 1], counts[..., 0, 0], counts[..., 1, 1], counts[..., 1, 0]
    )
    return always_valid_p_path(diff, var, TAU2, axis=1)


def aa_study(replications: int) -> dict[str, Any]:
    """A/A: how often each procedure declares a difference at some look when there is none."""
    counts = simulate_counts(_sequential_config(0.0, seed=1), replications)
    msprt_fp = np.any(_msprt_paths(counts) <= ALPHA, axis=1)
    naive_fp = np.zeros(replications, dtype=bool)
    for r in range(replications):
        for look in range(LOOKS):
            c = counts[r, look]
            test = two_proportion_z(int(c[0, 1]), int(c[0, 0]), int(c[1, 1]), int(c[1, 0]))
            if test.p_value < ALPHA:
                naive_fp[r] = True
                break
    return {
        "replications": replications,
        "looks": LOOKS,
        "msprt_false_positive_rate": float(msprt_fp.mean()),
        "naive_peeking_false_positive_rate": float(naive_fp.mean()),
    }


def power_study(replications: int) -> dict[str, Any]:
    """Power of the mSPRT for a true +5 % relative lift, and where it stops."""
    counts = simulate_counts(_sequential_config(LIFT, seed=2), replications)
    rejected = _msprt_paths(counts) <= ALPHA
    detected = rejected.any(axis=1)
    stop_look = np.argmax(rejected, axis=1)  # first rejecting look (0-based) where detected
    rows = np.arange(replications)[detected]
    per_arm = counts[rows, stop_look[detected], :, 0].mean(axis=1)
    return {
        "replications": replications,
        "true_relative_lift": LIFT,
        "power": float(detected.mean()),
        "median_stop_look": float(np.median(stop_look[detected] + 1)) if rows.size else None,
        "median_stop_users_per_arm": float(np.median(per_arm)) if rows.size else None,
        "cap_users_per_arm": USERS_PER_ARM_PER_LOOK * LOOKS,
    }


def srm_study(replications: int, n: int = 100_000) -> dict[str, Any]:
    """Detection rate of ``srm_check`` (alpha 0.001) on a 51/49 serve of a 50/50 design."""
    out: dict[str, Any] = {"replications": replications, "n": n}
    for label, skew in (("skewed_51_49", 0.02), ("fair_50_50", 0.0)):
        config = SimulationConfig(users_per_batch=n, batches=1, serve_ratio_skew=skew, seed=3)
        counts = simulate_counts(config, replications)
        weights = list(config.design_weights())
        flags = [
            srm_check([int(x) for x in counts[r, -1, :, 0]], weights).mismatch
            for r in range(replications)
        ]
        out[f"{label}_flag_rate"] = float(np.mean(flags))
    return out


def end_to_end(users: int = 50_000, batches: int = 10) -> dict[str, Any]:
    """One experiment through assignment and a durable SQLite store, then read back."""
    config = SimulationConfig(
        experiment="e2e-ctr",
        baseline_ctr=BASELINE,
        relative_lifts=(0.0, 0.10),
        latency_median_ms=40.0,
        latency_multipliers=(1.0, 1.05),
        users_per_batch=users // batches,
        batches=batches,
        seed=4,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteEventStore(Path(tmp) / "events.db")
        try:
            t0 = time.perf_counter()
            result = simulate(config, store)
            write_s = time.perf_counter() - t0
            summary = store.summary(config.experiment, CLICK)
            latency = store.summary(config.experiment, LATENCY)
        finally:
            store.close()
    test = SequentialTest(TAU2, ALPHA)
    for c in result.counts:
        seq = test.update_proportions(int(c[0, 1]), int(c[0, 0]), int(c[1, 1]), int(c[1, 0]))
    ctl, trt = (summary.variants[v] for v in config.variants)
    srm = srm_check([ctl.n_units, trt.n_units], list(config.design_weights()))
    lat_c, lat_t = (latency.variants[v] for v in config.variants)
    return {
        "users": users,
        "events_written": result.events_written,
        "write_seconds": write_s,
        "events_per_second": result.events_written / write_s,
        "true_ctr": result.true_ctr,
        "observed_ctr": {
            v: s.sum / s.n_units for v, s in zip(config.variants, (ctl, trt), strict=True)
        },
        "store_matches_simulator": result.final_counts()
        == {v: (s.n_units, int(s.sum)) for v, s in zip(config.variants, (ctl, trt), strict=True)},
        "msprt_p_value": seq.p_value,
        "msprt_reject": seq.reject,
        "srm_p_value": srm.p_value,
        "latency_mean_ratio": (lat_t.sum / lat_t.n_units) / (lat_c.sum / lat_c.n_units),
        "conflicts": summary.conflicts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/experiments.json")
    parser.add_argument("--aa", type=int, default=2000)
    parser.add_argument("--power", type=int, default=1000)
    parser.add_argument("--srm", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    aa = aa_study(args.aa)
    power = power_study(args.power)
    srm = srm_study(args.srm)
    studies_s = time.perf_counter() - t0
    e2e = end_to_end(args.users)
    results = {
        "alpha": ALPHA,
        "tau2": TAU2,
        "aa": aa,
        "power": power,
        "srm": srm,
        "studies_wall_seconds": studies_s,
        "end_to_end": e2e,
        "total_wall_seconds": time.perf_counter() - t0,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'study':<40}{'result':>24}")
    print(f"{'A/A FPR, mSPRT every look':<40}{aa['msprt_false_positive_rate']:>24.2%}")
    print(f"{'A/A FPR, naive z-test peeking':<40}{aa['naive_peeking_false_positive_rate']:>24.2%}")
    print(f"{'power, +5% rel. lift (mSPRT)':<40}{power['power']:>24.2%}")
    print(f"{'median stop (users per arm)':<40}{power['median_stop_users_per_arm']:>24,.0f}")
    print(f"{'SRM flag rate, 51/49 at n=100k':<40}{srm['skewed_51_49_flag_rate']:>24.2%}")
    print(f"{'SRM flag rate, fair 50/50':<40}{srm['fair_50_50_flag_rate']:>24.2%}")
    print(f"{'studies wall time (s)':<40}{studies_s:>24.2f}")
    print(f"{'e2e SQLite events/s':<40}{e2e['events_per_second']:>24,.0f}")
    print(f"{'e2e store matches simulator':<40}{e2e['store_matches_simulator']!s:>24}")
    print(f"{'total wall time (s)':<40}{results['total_wall_seconds']:>24.2f}")


if __name__ == "__main__":
    main()
