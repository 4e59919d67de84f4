"""Replica counts for a graph's deployments from SLO signals.

Each deployment's *pressure* is the worst of its signals against their targets: the p99 of the
stages it runs against their budgets, the share of requests its stages answered with a fallback
(under load the graph degrades instead of queueing, so p99 stays near the budget while quality
drops), in-flight requests per replica, queue depth per replica. A pressure of 1.5 asks for
1.5x the replicas, as the HPA's ratio rule does.

Two things keep it calm:

- **Stabilization windows** (the HPA's behaviour): a scale-up takes the *lowest* recommendation
  of the last ``scaleUpStabilizationSeconds``, a scale-down the *highest* of the last
  ``scaleDownStabilizationSeconds``, so a single noisy sample moves nothing. A tolerance band
  around 1.0 ignores small deviations.
- **Coordination**: the stages of one graph form a pipeline, so adding replicas anywhere but at
  the bottleneck only moves the queue. When several deployments ask for more, only the one
  under the most pressure scales up this round; nothing scales down while anything scales up.

Pure: signals, bounds, the recommendation history and the clock in; replicas, the new history
and a reason out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from operators.crds.specs import Autoscaling, ReplicaBounds
from operators.crds.status import Recommendation, parse_timestamp, timestamp

#: Pressure within 1 +/- this is left alone (the HPA's default tolerance).
TOLERANCE = 0.1

#: At most this factor per decision, so one wild sample cannot multiply a fleet.
MAX_STEP_FACTOR = 2.0


@dataclass(frozen=True)
class Signals:
    """What one deployment's pods report, with the targets they are judged against.

    Each ``(value, target)`` pair contributes ``value / target`` to the pressure; an unobserved
    signal (``None``) contributes nothing.
    """

    replicas: int
    latency: Sequence[tuple[float | None, float]] = ()  # (p99 ms, budget ms) per stage
    fallbacks: Sequence[tuple[float | None, float]] = ()  # (fallback rate, target) per stage
    in_flight: float | None = None  # summed over replicas
    in_flight_target: float = 8.0  # per replica
    queue: float | None = None  # summed over replicas
    queue_target: float = 4.0  # per replica

    def pressure(self) -> float | None:
        pairs = [*self.latency, *self.fallbacks]
        ratios = [v / t for v, t in pairs if v is not None and not math.isnan(v)]
        per = max(self.replicas, 1)
        if self.in_flight is not None:
            ratios.append(self.in_flight / (self.in_flight_target * per))
        if self.queue is not None:
            ratios.append(self.queue / (self.queue_target * per))
        return max(ratios) if ratios else None


@dataclass(frozen=True)
class ScaleDecision:
    replicas: dict[str, int]
    history: list[Recommendation]
    reasons: dict[str, str] = field(default_factory=dict)

    def changed(self, current: Mapping[str, int]) -> dict[str, int]:
        return {d: n for d, n in self.replicas.items() if current.get(d) != n}


def bounds_of(spec: Autoscaling, deployment: str) -> ReplicaBounds:
    return spec.graph if deployment == "graph" else spec.triton


def decide(
    spec: Autoscaling,
    signals: Mapping[str, Signals],
    history: Sequence[Recommendation],
    now: datetime,
) -> ScaleDecision:
    """Replicas per deployment (``graph``, ``triton``) for this round."""
    if not spec.enabled:
        fixed = {d: bounds_of(spec, d).min_replicas for d in signals}
        return ScaleDecision(fixed, [], {d: "autoscaling disabled" for d in signals})

    window = max(spec.scale_up_stabilization_seconds, spec.scale_down_stabilization_seconds)
    horizon = now - timedelta(seconds=window)
    kept = [r for r in history if parse_timestamp(r.at) >= horizon]

    raw: dict[str, int] = {}
    pressures: dict[str, float] = {}
    for name, s in signals.items():
        b = bounds_of(spec, name)
        p = s.pressure()
        current = _clamp(s.replicas, b)
        if p is None or abs(p - 1.0) <= TOLERANCE:
            raw[name] = current
        else:
            wanted = math.ceil(current * min(p, MAX_STEP_FACTOR) - 1e-9)
            halved = math.ceil(current / MAX_STEP_FACTOR)
            raw[name] = _clamp(max(wanted, halved, 1 if current > 0 else 0), b)
        if p is not None:
            pressures[name] = p

    stamp = timestamp(now)
    new_history = kept + [
        Recommendation(deployment=d, replicas=n, at=stamp) for d, n in raw.items()
    ]

    stable: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for name, s in signals.items():
        current = _clamp(s.replicas, bounds_of(spec, name))
        mine = [r.replicas for r in new_history if r.deployment == name]
        up_since = now - timedelta(seconds=spec.scale_up_stabilization_seconds)
        down_since = now - timedelta(seconds=spec.scale_down_stabilization_seconds)
        ups = [
            r.replicas
            for r in new_history
            if r.deployment == name and parse_timestamp(r.at) >= up_since
        ] or mine
        downs = [
            r.replicas
            for r in new_history
            if r.deployment == name and parse_timestamp(r.at) >= down_since
        ] or mine
        if raw[name] > current:
            stable[name] = max(current, min(ups))
        elif raw[name] < current:
            stable[name] = min(current, max(downs))
        else:
            stable[name] = current
        p = pressures.get(name)
        reasons[name] = "no signal" if p is None else f"pressure {p:.2f}"

    growing = [n for n in stable if stable[n] > _current(signals, spec, n)]
    if growing:
        bottleneck = max(growing, key=lambda n: pressures.get(n, 0.0))
        for name in stable:
            current = _current(signals, spec, name)
            if name != bottleneck and stable[name] != current:
                stable[name] = current
                reasons[name] += f"; held while {bottleneck} (the bottleneck) scales up"
        reasons[bottleneck] += f"; bottleneck, scaling up to {stable[bottleneck]}"
    for name in stable:
        current = _current(signals, spec, name)
        if stable[name] < current:
            reasons[name] += f"; scaling down to {stable[name]}"
        elif stable[name] == current and raw[name] != current and not growing:
            reasons[name] += f"; wants {raw[name]}, held by the stabilization window"
    return ScaleDecision(stable, new_history, reasons)


def _current(signals: Mapping[str, Signals], spec: Autoscaling, name: str) -> int:
    return _clamp(signals[name].replicas, bounds_of(spec, name))


def _clamp(n: int, b: ReplicaBounds) -> int:
    return max(b.min_replicas, min(b.max_replicas, n))
