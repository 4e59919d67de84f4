"""The canary state machine: a model's new version earns its traffic step by step.

:func:`plan` decides whether a spec change starts a rollout; :func:`decide` judges one step
from the observed metrics. Both are pure functions of (policy, status, metrics, clock), so a
restarted operator that reads status back resumes exactly where the last one stopped, and every
path (advance, promote, each rollback reason, pause, abort) is a unit test with a fake clock.

A rollback keeps serving the last good version (``from_version``) and records why; the failed
version is not retried until the spec names a different one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from operators.crds.specs import CanaryPolicy
from operators.crds.status import CanaryStatus, ModelStatus, parse_timestamp, timestamp

Action = Literal["hold", "advance", "promote", "rollback", "pause"]

#: Outcomes of the experiment analysis that roll a canary back: the new version is significantly
#: worse, or the split itself is broken so nothing it shows can be trusted.
BAD_BUSINESS = {
    "harmful": "the business metric is significantly worse",
    "blocked": "the split is broken",
}

#: How many rollout outcomes ``status.history`` keeps.
HISTORY = 10


@dataclass(frozen=True)
class CanaryMetrics:
    """What the analysis observed for the new version during the current step.

    ``None`` means not observed (no series, Prometheus down): never a reason to promote.
    """

    requests: float | None = None
    error_rate: float | None = None
    p99_ms: float | None = None
    business: str | None = None  # an ab_router decision: ship, continue, harmful, blocked, ...
    business_reason: str = ""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    status: CanaryStatus


def plan(
    version: int, policy: CanaryPolicy | None, status: ModelStatus, now: datetime
) -> ModelStatus:
    """The status after the spec asks for ``version``: start, restart or skip a rollout.

    The first version ever seen serves at once (there is nothing to protect). A new version
    without a policy replaces the old one at once. With a policy it starts at the first step.
    A version that was just rolled back is not retried until the spec changes again.
    """
    serving, canary = status.serving_version, status.canary
    if serving is None:
        return status.model_copy(update={"serving_version": version, "canary": None})
    if version == serving:
        if canary is not None and canary.phase in ("Progressing", "Paused"):
            # The spec went back to the good version mid-rollout: that is an abort.
            done = _finish(canary, "Aborted", "the spec returned to the serving version", now)
            return _record(status.model_copy(update={"canary": done}), done)
        return status
    if canary is not None and canary.version == version:
        return status  # in flight, promoted already handled above, or rolled back: keep
    if policy is None:
        return _record(
            status.model_copy(update={"serving_version": version, "canary": None}),
            None,
            f"v{version} replaced v{serving} at once (no canary policy)",
        )
    stamp = timestamp(now)
    started = CanaryStatus(
        version=version,
        from_version=serving,
        phase="Paused" if policy.paused else "Progressing",
        step=0,
        weight=policy.steps[0],
        started_at=stamp,
        step_started_at=stamp,
        last_decision="start",
        reason=f"v{version} gets {policy.steps[0]}% of traffic, v{serving} the rest",
    )
    return status.model_copy(update={"canary": started})


def decide(
    policy: CanaryPolicy, canary: CanaryStatus, metrics: CanaryMetrics, now: datetime
) -> Decision:
    """Judge the current step of an in-flight canary (phase Progressing or Paused)."""
    if policy.abort:
        return _rollback(canary, "Aborted", "aborted by spec.canary.abort", now)
    if policy.paused:
        paused = canary.model_copy(
            update={"phase": "Paused", "last_decision": "pause", "reason": "paused by spec"}
        )
        return Decision("pause", "paused by spec", paused)
    if canary.phase == "Paused":  # resumed: the step's clock restarts, paused time is not evidence
        canary = canary.model_copy(
            update={"phase": "Progressing", "step_started_at": timestamp(now)}
        )

    bad = _failure(policy, metrics)
    if bad is not None:
        return _rollback(canary, "RolledBack", bad, now)

    elapsed = (now - parse_timestamp(canary.step_started_at)).total_seconds()
    enough = metrics.requests is not None and metrics.requests >= policy.min_requests
    observed = metrics.error_rate is not None and metrics.p99_ms is not None
    if not (enough and observed):
        if elapsed >= policy.progress_deadline_seconds:
            seen = "no" if metrics.requests is None else f"{metrics.requests:.0f}"
            return _rollback(
                canary,
                "RolledBack",
                f"too little evidence: {seen} requests and "
                f"{'no' if not observed else 'some'} latency/error series after "
                f"{elapsed:.0f}s at {canary.weight}% (deadline "
                f"{policy.progress_deadline_seconds}s, need {policy.min_requests} requests)",
                now,
            )
        return _hold(canary, f"waiting for evidence at {canary.weight}%")
    if elapsed < policy.interval_seconds:
        return _hold(
            canary,
            f"healthy at {canary.weight}% for {elapsed:.0f}s of {policy.interval_seconds}s",
        )
    if canary.step + 1 < len(policy.steps):
        step = canary.step + 1
        weight = policy.steps[step]
        why = f"step {canary.step + 1} healthy ({_summary(metrics)}); now {weight}%"
        advanced = canary.model_copy(
            update={
                "step": step,
                "weight": weight,
                "step_started_at": timestamp(now),
                "last_decision": "advance",
                "reason": why,
            }
        )
        return Decision("advance", why, advanced)
    why = (
        f"v{canary.version} promoted after {len(policy.steps)} healthy steps ({_summary(metrics)})"
    )
    return Decision("promote", why, _finish(canary, "Promoted", why, now, action="promote"))


def apply(status: ModelStatus, decision: Decision) -> ModelStatus:
    """The model status after ``decision``: a promotion moves the serving version."""
    canary = decision.status
    update: dict[str, object] = {"canary": canary}
    if decision.action == "promote":
        update["serving_version"] = canary.version
    new = status.model_copy(update=update)
    if decision.action in ("promote", "rollback"):
        return _record(new, canary)
    return new


def readiness(status: ModelStatus) -> tuple[bool, str, str]:
    """(ready, reason, message) for the Model's ``Ready`` condition.

    A rollout in flight is ready (the last good version serves); a rolled-back version that the
    spec still asks for is not, so ``kubectl get models`` shows the rollback until someone acts.
    """
    c = status.canary
    if c is not None and c.phase in ("Progressing", "Paused"):
        return True, f"Canary{c.phase}", c.reason
    if (
        c is not None
        and c.phase in ("RolledBack", "Aborted")
        and c.version != status.serving_version
    ):
        return False, c.phase, c.reason
    return True, "Serving", f"v{status.serving_version} serves"


def in_flight(status: ModelStatus) -> CanaryStatus | None:
    """The rollout that splits traffic now, if any."""
    c = status.canary
    return c if c is not None and c.phase in ("Progressing", "Paused") else None


def _failure(policy: CanaryPolicy, m: CanaryMetrics) -> str | None:
    if m.error_rate is not None and m.error_rate > policy.max_error_rate:
        return f"error rate {m.error_rate:.2%} is above {policy.max_error_rate:.2%}"
    if m.p99_ms is not None and not math.isnan(m.p99_ms) and m.p99_ms > policy.max_p99_ms:
        return f"p99 {m.p99_ms:.1f} ms is above {policy.max_p99_ms:g} ms"
    if policy.business_metric and m.business in BAD_BUSINESS:
        detail = f": {m.business_reason}" if m.business_reason else ""
        return f"experiment analysis says {m.business} ({BAD_BUSINESS[m.business]}){detail}"
    return None


def _summary(m: CanaryMetrics) -> str:
    return f"p99 {m.p99_ms:.1f} ms, errors {m.error_rate:.2%}, {m.requests:.0f} requests"


def _hold(canary: CanaryStatus, why: str) -> Decision:
    held = canary.model_copy(update={"last_decision": "hold", "reason": why})
    return Decision("hold", why, held)


def _rollback(
    canary: CanaryStatus, phase: Literal["RolledBack", "Aborted"], why: str, now: datetime
) -> Decision:
    text = f"v{canary.version} rolled back to v{canary.from_version} at {canary.weight}%: {why}"
    return Decision("rollback", text, _finish(canary, phase, text, now, action="rollback"))


def _finish(
    canary: CanaryStatus,
    phase: Literal["Promoted", "RolledBack", "Aborted"],
    why: str,
    now: datetime,
    action: str = "abort",
) -> CanaryStatus:
    return canary.model_copy(
        update={
            "phase": phase,
            "weight": 100 if phase == "Promoted" else 0,
            "step_started_at": timestamp(now),
            "last_decision": action,
            "reason": why,
        }
    )


def _record(status: ModelStatus, canary: CanaryStatus | None, text: str = "") -> ModelStatus:
    line = text or (f"{canary.phase}: {canary.reason}" if canary is not None else "")
    return status.model_copy(update={"history": [*status.history, line][-HISTORY:]})
