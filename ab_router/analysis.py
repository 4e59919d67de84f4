"""Experiment analysis: from the event log to a decision that is valid at any time.

For each treatment against the control and each primary or secondary metric: the fixed-horizon
Welch test (for reference), the always-valid mSPRT p-value and confidence sequence (what the
decision uses, so looking at the report every hour keeps the false-positive rate at alpha), and
Holm (or Benjamini-Hochberg) across all those comparisons. Guardrails get a non-inferiority
test. A sample-ratio mismatch, or units exposed to two variants, block every conclusion: the
split itself is broken, so no effect estimate can be trusted.

The result is plain data (:meth:`ExperimentReport.to_dict`): the JSON the operator's canary
analysis reads, and what ``cascade experiment report`` prints and renders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from ab_router.design import Experiment, Metric
from ab_router.events import (
    EventStore,
    Exposure,
    Outcome,
    count_conflicts,
    first_exposures,
    unit_totals,
)
from ab_router.sequential import confidence_sequence_halfwidth, msprt_p_value
from ab_router.statistics import (
    benjamini_hochberg,
    cuped,
    guardrail,
    holm,
    srm_check,
    welch_t,
)

Decision = Literal["blocked", "ship", "harmful", "continue", "no-data"]


@dataclass(frozen=True)
class Comparison:
    """One treatment vs the control on one metric."""

    metric: str
    role: str
    treatment: str
    control_mean: float
    treatment_mean: float
    diff: float
    relative_diff: float
    fixed_horizon_p: float
    always_valid_p: float
    adjusted_p: float
    cs_low: float  # the always-valid confidence sequence for diff
    cs_high: float
    significant: bool
    #: Share of variance CUPED removed using the exposures' pre-period metric (NaN: not used).
    cuped_variance_reduction: float = math.nan


@dataclass(frozen=True)
class GuardrailCheck:
    metric: str
    treatment: str
    relative_change: float
    margin_relative: float
    p_value: float
    violated: bool  # also when there is no data: non-inferiority is then not shown
    has_data: bool = True


@dataclass
class ExperimentReport:
    experiment: str
    alpha: float
    counts: dict[str, int]
    srm_p_value: float
    srm_mismatch: bool
    conflicts: int
    comparisons: list[Comparison] = field(default_factory=list)
    guardrails: list[GuardrailCheck] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _finite(asdict(self))
        return data


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: report them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


Floats = np.ndarray[Any, np.dtype[np.float64]]


def _unit_values(
    first: Mapping[str, Exposure], outcomes: Sequence[Outcome], metric: str
) -> dict[str, tuple[Floats, Floats | None]]:
    """Per variant: each unit's summed value (0 without outcomes) and its pre-period metric
    (None unless every unit of the variant has one). The first exposure decides the variant."""
    totals = unit_totals(first, outcomes, metric)
    values: dict[str, list[float]] = {}
    pre: dict[str, list[float | None]] = {}
    for unit, exposure in first.items():
        values.setdefault(exposure.variant, []).append(totals.get(unit, 0.0))
        pre.setdefault(exposure.variant, []).append(exposure.pre_metric)
    out: dict[str, tuple[Floats, Floats | None]] = {}
    for variant, ys in values.items():
        xs = pre[variant]
        x = None if any(v is None for v in xs) else np.asarray(xs, dtype=np.float64)
        out[variant] = (np.asarray(ys, dtype=np.float64), x)
    return out


def analyze(
    store: EventStore,
    experiment: Experiment,
    *,
    alpha: float = 0.05,
    correction: Literal["holm", "bh"] = "holm",
    until: float | None = None,
) -> ExperimentReport:
    """The report as of now (or as of timestamp ``until``, for the effect-over-time plot)."""
    exposures = [
        e for e in store.exposures(experiment.name) if until is None or e.timestamp <= until
    ]
    outcomes = [o for o in store.outcomes(experiment.name) if until is None or o.timestamp <= until]
    return analyze_events(experiment, exposures, outcomes, alpha=alpha, correction=correction)


def analyze_events(
    experiment: Experiment,
    exposures: Sequence[Exposure],
    outcomes: Sequence[Outcome],
    *,
    alpha: float = 0.05,
    correction: Literal["holm", "bh"] = "holm",
) -> ExperimentReport:
    names = [v.name for v in experiment.variants]
    control, treatments = names[0], names[1:]
    first = first_exposures(exposures)
    counts = dict.fromkeys(names, 0)
    for exposure in first.values():
        counts[exposure.variant] = counts.get(exposure.variant, 0) + 1
    report = ExperimentReport(
        experiment=experiment.name,
        alpha=alpha,
        counts=counts,
        srm_p_value=math.nan,
        srm_mismatch=False,
        conflicts=count_conflicts(exposures),
    )
    if sum(counts.values()) == 0 or min(counts.values()) < 2:
        for t in treatments:
            report.decisions[t] = "no-data"
            report.reasons[t] = "too few exposed units in some variant"
        return report
    srm = srm_check([counts[v] for v in names], [v.weight / 100.0 for v in experiment.variants])
    report.srm_p_value, report.srm_mismatch = srm.p_value, srm.mismatch

    raw: list[tuple[Metric, str, float, float, float, float, float, float, float]] = []
    reductions: list[float] = []
    for metric in experiment.metrics:
        values = _unit_values(first, outcomes, metric.name)
        if metric.role == "guardrail":
            for t in treatments:
                if not (np.any(values[control][0]) or np.any(values[t][0])):
                    report.guardrails.append(
                        GuardrailCheck(
                            metric.name, t, math.nan, metric.margin_relative, math.nan, True, False
                        )
                    )
                    continue
                g = guardrail(
                    values[control][0],
                    values[t][0],
                    direction=metric.direction,
                    margin_relative=metric.margin_relative,
                    alpha=alpha,
                )
                report.guardrails.append(
                    GuardrailCheck(
                        metric.name,
                        t,
                        g.relative_change,
                        metric.margin_relative,
                        g.p_value,
                        g.violated,
                    )
                )
            continue
        y_c, x_c = values[control]
        mean_raw = float(y_c.mean())
        tau2 = (metric.mde_relative * mean_raw) ** 2 if mean_raw else metric.mde_relative**2
        for t in treatments:
            y_t, x_t = values[t]
            a, b, reduction = y_c, y_t, math.nan
            if x_c is not None and x_t is not None and min(len(y_c), len(y_t)) >= 2:
                # Regress out the pre-period metric: same effect, less variance.
                regressed = cuped(
                    np.concatenate([y_c, y_t]),
                    np.concatenate([x_c, x_t]),
                    np.r_[np.zeros(len(y_c)), np.ones(len(y_t))],
                    alpha,
                )
                a, b = regressed.adjusted[: len(y_c)], regressed.adjusted[len(y_c) :]
                reduction = regressed.variance_reduction
            mean_c, var_c, n_c = float(a.mean()), float(a.var(ddof=1)), len(a)
            mean_t, var_t, n_t = float(b.mean()), float(b.var(ddof=1)), len(b)
            fixed = welch_t(mean_c, var_c, n_c, mean_t, var_t, n_t, alpha)
            var_diff = var_c / n_c + var_t / n_t
            diff = mean_t - mean_c
            p_av = msprt_p_value(diff, var_diff, tau2)
            half = float(confidence_sequence_halfwidth(var_diff, tau2, alpha))
            raw.append(
                (metric, t, mean_c, mean_t, diff, fixed.p_value, p_av, diff - half, diff + half)
            )
            reductions.append(reduction)
    if raw:
        adjust = holm if correction == "holm" else benjamini_hochberg
        adjusted = adjust([r[6] for r in raw], alpha)
        for (metric, t, mean_c, mean_t, diff, p_fixed, p_av, lo, hi), red, p_adj, reject in zip(
            raw, reductions, adjusted.adjusted, adjusted.reject, strict=True
        ):
            report.comparisons.append(
                Comparison(
                    metric=metric.name,
                    role=metric.role,
                    treatment=t,
                    control_mean=mean_c,
                    treatment_mean=mean_t,
                    diff=diff,
                    relative_diff=diff / mean_c if mean_c else math.nan,
                    fixed_horizon_p=p_fixed,
                    always_valid_p=p_av,
                    adjusted_p=float(p_adj),
                    cs_low=lo,
                    cs_high=hi,
                    significant=bool(reject),
                    cuped_variance_reduction=red,
                )
            )
    for t in treatments:
        report.decisions[t], report.reasons[t] = _decide(report, t)
    return report


def _decide(report: ExperimentReport, treatment: str) -> tuple[Decision, str]:
    if report.srm_mismatch:
        return "blocked", (
            f"sample-ratio mismatch (p={report.srm_p_value:.2g}): the split is broken, "
            "no conclusion is valid"
        )
    if report.conflicts:
        return "blocked", f"{report.conflicts} units were exposed to more than one variant"
    primary = [c for c in report.comparisons if c.treatment == treatment and c.role == "primary"]
    violated = [g for g in report.guardrails if g.treatment == treatment and g.violated]
    harmful = [c for c in primary if c.significant and c.diff < 0]
    if harmful:
        return "harmful", f"{harmful[0].metric} is significantly worse"
    winners = [c for c in primary if c.significant and c.diff > 0]
    if winners and violated:
        why = (
            "has no data" if not violated[0].has_data else "is not shown to stay within its margin"
        )
        return "continue", f"{winners[0].metric} improved, but guardrail {violated[0].metric} {why}"
    if winners:
        return "ship", f"{winners[0].metric} is significantly better and every guardrail holds"
    return "continue", "no primary metric has reached significance yet"
