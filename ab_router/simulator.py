"""A seeded simulator of users with *known* true effects, driving the real router pieces.

Why: an analysis can only be trusted if it recovers effects we planted. The simulator plants
them (per-variant click-through rate, a continuous per-user metric, a latency guardrail) and
pushes synthetic users through the production code path -- :func:`ab_router.assignment.assign`
on a :class:`~ab_router.design.Catalog`, then :class:`~ab_router.events.Exposure` and
:class:`~ab_router.events.Outcome` events into any :class:`~ab_router.events.EventStore` -- so
that the statistics read back from the store can be compared with the truth.

Two entry points:

* :func:`simulate` -- the faithful path: real hashing, real events, a real store. Its cost is
  dominated by the store (one durable write per event), so it suits end-to-end checks of tens
  of thousands of users.
* :func:`simulate_counts` -- a pure, vectorised path that draws only the per-arm sufficient
  statistics (arm sizes ~ multinomial, clicks ~ binomial). It skips hashing, so its counts are
  *not* those of :func:`simulate` for the same seed (hashing fixes arm sizes per unit id while
  here they are random draws); both have the same distribution. It makes power and error-rate
  studies over thousands of experiments take seconds.

Outcome model, per exposed user (one request each):

* ``click``: Bernoulli(true CTR of the served variant); logged as value 1.0 only when clicked,
  as a click logger would (non-clicks are implicit, the summary counts them as 0).
* ``value`` (optional): ``Normal(mean_v, value_sd)``, one per user, logged for every user. The
  user's pre-period value ``Normal(mean_control, value_sd)`` has correlation
  ``pre_correlation`` with it and is stored as ``Exposure.pre_metric`` for CUPED.
* ``latency_ms`` (optional guardrail): lognormal with median ``latency_median_ms * mult_v`` and
  log-sd ``latency_sigma``, logged for every user.

Sample-ratio mismatch: with ``serve_ratio_skew = s`` a unit that the hash puts in a treatment is
served -- and logged as -- the control with probability ``s``, as a treatment fallback path
(timeout, crash) silently would. The control's share becomes ``w_c + s * (1 - w_c)``, so
``s = 0.02`` turns a 50/50 design into a 51/49 serve. Such units get the control's true
outcomes, since the control is what they were served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ab_router.assignment import NUM_BUCKETS, assign, variant_ranges
from ab_router.design import SLUG_PATTERN, Catalog, Experiment, Layer, Variant
from ab_router.events import EventStore, Exposure, Outcome

__all__ = [
    "CLICK",
    "LATENCY",
    "VALUE",
    "SimulationConfig",
    "SimulationResult",
    "simulate",
    "simulate_counts",
]

#: Metric names written by :func:`simulate`.
CLICK = "click"
VALUE = "value"
LATENCY = "latency_ms"


class SimulationConfig(BaseModel):
    """Everything a simulation depends on; frozen so a result can cite the exact config.

    True CTRs come either from ``ctr`` (one per variant) or from ``baseline_ctr`` and
    ``relative_lifts`` (one per variant, control's usually 0): ``ctr_v = baseline * (1 + lift_v)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = Field(default="sim-exp", max_length=63, pattern=SLUG_PATTERN)
    layer: str = Field(default="sim", max_length=63, pattern=SLUG_PATTERN)
    variants: tuple[str, ...] = Field(default=("control", "treatment"), min_length=2)
    weights: tuple[float, ...] = Field(
        default=(50.0, 50.0), description="Design weights in percent, summing to 100."
    )
    ctr: tuple[float, ...] | None = Field(default=None, description="True CTR per variant.")
    baseline_ctr: float = Field(default=0.10, gt=0.0, lt=1.0)
    relative_lifts: tuple[float, ...] | None = Field(
        default=None, description="True relative CTR lift per variant vs baseline_ctr."
    )
    value_means: tuple[float, ...] | None = Field(
        default=None, description="True mean of the continuous 'value' metric per variant."
    )
    value_sd: float = Field(default=1.0, gt=0.0)
    pre_correlation: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="corr(pre-period value, value) for CUPED."
    )
    latency_median_ms: float | None = Field(default=None, gt=0.0)
    latency_sigma: float = Field(default=0.5, gt=0.0)
    latency_multipliers: tuple[float, ...] | None = Field(
        default=None, description="True multiplier of the latency median per variant."
    )
    users_per_batch: int = Field(default=1000, ge=1)
    batches: int = Field(default=10, ge=1)
    serve_ratio_skew: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="P(a treatment-hashed unit is served and logged as control): an SRM.",
    )
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Per-variant tuples must line up with ``variants``; CTRs must be probabilities."""
        k = len(self.variants)
        for name in ("weights", "ctr", "relative_lifts", "value_means", "latency_multipliers"):
            value = getattr(self, name)
            if value is not None and len(value) != k:
                raise ValueError(f"{name} has {len(value)} entries but there are {k} variants")
        if self.ctr is not None and self.relative_lifts is not None:
            raise ValueError("give either ctr or relative_lifts, not both")
        if any(not 0.0 <= p <= 1.0 for p in self.true_ctrs):
            raise ValueError(f"true CTRs {self.true_ctrs} must lie in [0, 1]")
        if self.latency_multipliers is not None and any(m <= 0 for m in self.latency_multipliers):
            raise ValueError("latency_multipliers must be > 0")
        # Builds (and so validates) the design: names, weights summing to 100.
        self.experiment_design()
        return self

    @property
    def true_ctrs(self) -> tuple[float, ...]:
        """The planted CTR of each variant, in variant order."""
        if self.ctr is not None:
            return self.ctr
        lifts = self.relative_lifts or (0.0,) * len(self.variants)
        return tuple(self.baseline_ctr * (1.0 + lift) for lift in lifts)

    @property
    def true_latency_multipliers(self) -> tuple[float, ...]:
        """The planted latency multiplier of each variant (all 1 when not given)."""
        return self.latency_multipliers or (1.0,) * len(self.variants)

    def experiment_design(self) -> Experiment:
        """The router's view of this experiment: running, full traffic, control first."""
        return Experiment(
            name=self.experiment,
            salt=self.experiment,
            layer=self.layer,
            variants=[
                Variant(name=n, weight=w) for n, w in zip(self.variants, self.weights, strict=True)
            ],
        )

    def catalog(self) -> Catalog:
        """A catalog whose only layer holds only this experiment (no holdout)."""
        return Catalog(layers=[Layer(name=self.layer, experiments=[self.experiment_design()])])

    def served_weights(self) -> NDArray[np.float64]:
        """Expected share of units *served* (and logged) per variant.

        The design's shares are its bucket ranges (so they include the 0.01 % rounding of the
        hash layout); ``serve_ratio_skew`` then moves that fraction of treatment traffic to
        the control.
        """
        design = np.array(
            [
                (end - start) / NUM_BUCKETS
                for _, start, end in variant_ranges(self.experiment_design())
            ]
        )
        served = design * (1.0 - self.serve_ratio_skew)
        served[0] = design[0] + self.serve_ratio_skew * (1.0 - design[0])
        return served

    def design_weights(self) -> NDArray[np.float64]:
        """The design weights as fractions summing to 1 (what ``srm_check`` expects)."""
        w = np.asarray(self.weights, dtype=np.float64)
        result: NDArray[np.float64] = w / w.sum()
        return result


@dataclass(frozen=True)
class SimulationResult:
    """The truth that was planted, and what was written, for comparison with an analysis.

    ``counts[b, v]`` is the cumulative ``(exposed units, clicking units)`` of variant ``v``
    after batch ``b`` -- the same layout as :func:`simulate_counts` (without replications).
    """

    config: SimulationConfig
    variants: tuple[str, ...]
    true_ctr: dict[str, float]
    true_relative_lift: dict[str, float]
    true_value_mean: dict[str, float] | None
    true_latency_multiplier: dict[str, float]
    served_weights: dict[str, float]
    counts: NDArray[np.int64]
    exposures_written: int
    outcomes_written: int

    @property
    def events_written(self) -> int:
        """Exposures plus outcomes newly stored by the run."""
        return self.exposures_written + self.outcomes_written

    def final_counts(self) -> dict[str, tuple[int, int]]:
        """``variant -> (units, clicks)`` after the last batch."""
        last = self.counts[-1]
        return {v: (int(last[i, 0]), int(last[i, 1])) for i, v in enumerate(self.variants)}


def _result(
    config: SimulationConfig, counts: NDArray[np.int64], exposures: int, outcomes: int
) -> SimulationResult:
    """Bundle the planted truth with what a run produced."""
    names = config.variants
    ctrs = config.true_ctrs
    control = ctrs[0]
    return SimulationResult(
        config=config,
        variants=names,
        true_ctr=dict(zip(names, ctrs, strict=True)),
        true_relative_lift={
            n: (c / control - 1.0 if control > 0 else float("nan"))
            for n, c in zip(names, ctrs, strict=True)
        },
        true_value_mean=(
            dict(zip(names, config.value_means, strict=True))
            if config.value_means is not None
            else None
        ),
        true_latency_multiplier=dict(zip(names, config.true_latency_multipliers, strict=True)),
        served_weights={n: float(w) for n, w in zip(names, config.served_weights(), strict=True)},
        counts=counts,
        exposures_written=exposures,
        outcomes_written=outcomes,
    )


def simulate(config: SimulationConfig, store: EventStore) -> SimulationResult:
    """Push ``users_per_batch * batches`` synthetic users through assignment into ``store``.

    Deterministic for a given config: unit ids are ``"s<seed>-u<i>"`` (so different seeds hash
    to different arms), and every random draw comes from ``numpy.random.default_rng(seed)`` in
    a fixed order per batch, independent of which arm a unit lands in. Timestamps are synthetic
    (``batch + i / users_per_batch``) so the event log is reproducible too.
    """
    catalog = config.catalog()
    names = config.variants
    index = {n: i for i, n in enumerate(names)}
    ctrs = np.asarray(config.true_ctrs, dtype=np.float64)
    means = np.asarray(config.value_means, dtype=np.float64) if config.value_means else None
    mults = np.asarray(config.true_latency_multipliers, dtype=np.float64)
    rho = config.pre_correlation
    rng = np.random.default_rng(config.seed)
    n = config.users_per_batch
    k = len(names)
    counts = np.zeros((config.batches, k, 2), dtype=np.int64)
    running = np.zeros((k, 2), dtype=np.int64)
    exposures_written = 0
    outcomes_written = 0

    for b in range(config.batches):
        # Fixed draw order per batch, whatever the arms turn out to be: determinism.
        skew_u = rng.random(n)
        click_u = rng.random(n)
        z_pre = rng.standard_normal(n)
        z_own = rng.standard_normal(n)
        z_lat = rng.standard_normal(n)
        for i in range(n):
            unit = f"s{config.seed}-u{b * n + i}"
            variant = assign(catalog, unit, config.experiment).variant
            if variant is None:  # pragma: no cover - the catalog gives full traffic
                continue
            v = index[variant]
            if v != 0 and skew_u[i] < config.serve_ratio_skew:
                v = 0  # treatment fallback: served, and logged, as the control
            served = names[v]
            ts = b + i / n
            pre: float | None = None
            value = 0.0
            if means is not None:
                pre = float(means[0] + config.value_sd * z_pre[i])
                mix = rho * z_pre[i] + np.sqrt(1.0 - rho * rho) * z_own[i]
                value = float(means[v] + config.value_sd * mix)
            exposures_written += store.record_exposure(
                Exposure(
                    event_id=f"{unit}:exposure",
                    experiment=config.experiment,
                    unit_id=unit,
                    timestamp=ts,
                    variant=served,
                    pre_metric=pre,
                )
            )
            running[v, 0] += 1
            outcomes: list[tuple[str, float]] = []
            if click_u[i] < ctrs[v]:
                running[v, 1] += 1
                outcomes.append((CLICK, 1.0))
            if means is not None:
                outcomes.append((VALUE, value))
            if config.latency_median_ms is not None:
                latency = config.latency_median_ms * mults[v]
                latency *= float(np.exp(config.latency_sigma * z_lat[i]))
                outcomes.append((LATENCY, latency))
            for metric, val in outcomes:
                outcomes_written += store.record_outcome(
                    Outcome(
                        event_id=f"{unit}:{metric}",
                        experiment=config.experiment,
                        unit_id=unit,
                        timestamp=ts,
                        metric=metric,
                        value=val,
                    )
                )
        counts[b] = running

    return _result(config, counts, exposures_written, outcomes_written)


def simulate_counts(config: SimulationConfig, replications: int | None = None) -> NDArray[np.int64]:
    """Cumulative ``(units, clicks)`` per variant per batch, drawn without hashing or a store.

    Returns shape ``(batches, variants, 2)``, or ``(replications, batches, variants, 2)`` when
    ``replications`` is given (independent experiments, for error-rate and power studies).
    Per batch, arm sizes are ``Multinomial(users_per_batch, served_weights)`` and clicks are
    ``Binomial(arm size, true CTR)``: the exact distribution of :func:`simulate`'s counts when
    hashing is modelled as random, but not the same draws (see the module docstring).
    """
    if replications is not None and replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    rng = np.random.default_rng(config.seed)
    reps = 1 if replications is None else replications
    pvals = config.served_weights()
    arm = rng.multinomial(config.users_per_batch, pvals, size=(reps, config.batches))
    clicks = rng.binomial(arm, np.asarray(config.true_ctrs, dtype=np.float64))
    out = np.stack([np.cumsum(arm, axis=1), np.cumsum(clicks, axis=1)], axis=-1)
    result: NDArray[np.int64] = out.astype(np.int64)
    return result[0] if replications is None else result
