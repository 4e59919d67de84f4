"""The canary state machine, every path, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from operators.crds.specs import CanaryPolicy
from operators.crds.status import CanaryStatus, ModelStatus, timestamp
from operators.reconcile.canary import CanaryMetrics, apply, decide, in_flight, plan

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = CanaryPolicy(steps=[5, 25, 50, 100], interval_seconds=60, min_requests=10)
HEALTHY = CanaryMetrics(requests=500, error_rate=0.001, p99_ms=20.0, business="continue")


def started(policy: CanaryPolicy = POLICY) -> ModelStatus:
    return plan(4, policy, ModelStatus(serving_version=3), T0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_first_version_serves_at_once() -> None:
    status = plan(1, POLICY, ModelStatus(), T0)
    assert status.serving_version == 1
    assert status.canary is None


def test_new_version_without_policy_replaces_at_once() -> None:
    status = plan(4, None, ModelStatus(serving_version=3), T0)
    assert status.serving_version == 4
    assert status.canary is None
    assert "at once" in status.history[-1]


def test_new_version_starts_at_the_first_step() -> None:
    status = started()
    assert status.serving_version == 3
    c = in_flight(status)
    assert c is not None
    assert (c.version, c.from_version, c.step, c.weight, c.phase) == (4, 3, 0, 5, "Progressing")


def test_plan_is_idempotent_mid_rollout() -> None:
    status = started()
    assert plan(4, POLICY, status, at(30)) == status


def test_healthy_steps_advance_then_promote() -> None:
    status = started()
    weights = []
    now = 0.0
    for _ in range(3):
        now += 61
        d = decide(POLICY, status.canary, HEALTHY, at(now))  # type: ignore[arg-type]
        assert d.action == "advance"
        status = apply(status, d)
        weights.append(status.canary.weight)  # type: ignore[union-attr]
    assert weights == [25, 50, 100]
    now += 61
    d = decide(POLICY, status.canary, HEALTHY, at(now))  # type: ignore[arg-type]
    assert d.action == "promote"
    status = apply(status, d)
    assert status.serving_version == 4
    assert status.canary is not None
    assert status.canary.phase == "Promoted"
    assert in_flight(status) is None
    assert "promoted" in status.history[-1]
    # The spec still says 4: nothing more to do.
    assert plan(4, POLICY, status, at(now + 1)) == status


def test_a_step_is_held_until_its_interval_has_passed() -> None:
    status = started()
    d = decide(POLICY, status.canary, HEALTHY, at(59))  # type: ignore[arg-type]
    assert d.action == "hold"
    assert d.status.step == 0
    assert "59s of 60s" in d.reason


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        (CanaryMetrics(requests=500, error_rate=0.2, p99_ms=20.0), "error rate 20.00%"),
        (CanaryMetrics(requests=500, error_rate=0.0, p99_ms=80.0), "p99 80.0 ms"),
        (
            CanaryMetrics(
                requests=500,
                error_rate=0.0,
                p99_ms=20.0,
                business="harmful",
                business_reason="ctr is significantly worse",
            ),
            "harmful",
        ),
        (CanaryMetrics(requests=500, error_rate=0.0, p99_ms=20.0, business="blocked"), "blocked"),
    ],
)
def test_bad_evidence_rolls_back_at_once(metrics: CanaryMetrics, why: str) -> None:
    status = started()
    d = decide(POLICY, status.canary, metrics, at(5))  # type: ignore[arg-type]
    assert d.action == "rollback"
    assert why in d.reason
    after = apply(status, d)
    assert after.serving_version == 3  # the last good version keeps serving
    assert after.canary is not None
    assert (after.canary.phase, after.canary.weight) == ("RolledBack", 0)
    assert why in after.canary.reason
    assert why in after.history[-1]
    # The failed version is not retried while the spec still names it ...
    assert plan(4, POLICY, after, at(10)) == after
    # ... but a new one starts a fresh rollout from the last good version.
    fresh = plan(5, POLICY, after, at(20)).canary
    assert fresh is not None
    assert (fresh.version, fresh.from_version, fresh.step) == (5, 3, 0)


def test_business_metric_can_be_ignored_by_policy() -> None:
    policy = POLICY.model_copy(update={"business_metric": False})
    status = started(policy)
    m = CanaryMetrics(requests=500, error_rate=0.0, p99_ms=20.0, business="harmful")
    assert decide(policy, status.canary, m, at(61)).action == "advance"  # type: ignore[arg-type]


def test_missing_evidence_holds_then_rolls_back_at_the_deadline() -> None:
    policy = POLICY.model_copy(update={"progress_deadline_seconds": 600})
    status = started(policy)
    thin = CanaryMetrics(requests=3, error_rate=0.0, p99_ms=10.0)
    assert decide(policy, status.canary, thin, at(300)).action == "hold"  # type: ignore[arg-type]
    assert decide(policy, status.canary, CanaryMetrics(), at(300)).action == "hold"  # type: ignore[arg-type]
    d = decide(policy, status.canary, CanaryMetrics(), at(600))  # type: ignore[arg-type]
    assert d.action == "rollback"
    assert "too little evidence" in d.reason


def test_no_latency_series_is_not_evidence_of_health() -> None:
    status = started()
    m = CanaryMetrics(requests=500, error_rate=0.0, p99_ms=None)
    assert decide(POLICY, status.canary, m, at(61)).action == "hold"  # type: ignore[arg-type]


def test_pause_holds_and_resume_restarts_the_step_clock() -> None:
    paused_policy = POLICY.model_copy(update={"paused": True})
    status = apply(started(), decide(POLICY, started().canary, HEALTHY, at(61)))  # type: ignore[arg-type]
    assert status.canary is not None
    assert status.canary.weight == 25
    d = decide(paused_policy, status.canary, HEALTHY, at(500))
    assert (d.action, d.status.phase, d.status.weight) == ("pause", "Paused", 25)
    status = apply(status, d)
    assert in_flight(status) is not None  # paused is still in flight: traffic stays split
    # Resumed much later: the step starts over instead of advancing on paused time.
    d = decide(POLICY, status.canary, HEALTHY, at(1000))  # type: ignore[arg-type]
    assert (d.action, d.status.phase, d.status.step_started_at) == (
        "hold",
        "Progressing",
        timestamp(at(1000)),
    )
    assert decide(POLICY, d.status, HEALTHY, at(1061)).action == "advance"


def test_abort_rolls_back_even_when_healthy() -> None:
    aborted = POLICY.model_copy(update={"abort": True})
    status = started()
    d = decide(aborted, status.canary, HEALTHY, at(61))  # type: ignore[arg-type]
    assert d.action == "rollback"
    after = apply(status, d)
    assert after.canary is not None
    assert after.canary.phase == "Aborted"
    assert after.serving_version == 3
    assert "aborted by spec.canary.abort" in after.canary.reason


def test_returning_the_spec_to_the_serving_version_aborts() -> None:
    status = plan(3, POLICY, started(), at(30))
    assert status.canary is not None
    assert status.canary.phase == "Aborted"
    assert status.serving_version == 3
    assert in_flight(status) is None


def test_paused_policy_starts_paused() -> None:
    status = started(POLICY.model_copy(update={"paused": True}))
    assert status.canary is not None
    assert status.canary.phase == "Paused"


def test_a_restarted_operator_resumes_from_status_alone() -> None:
    """Status survives a JSON round trip through the API: decisions continue from it."""
    status = apply(started(), decide(POLICY, started().canary, HEALTHY, at(61)))  # type: ignore[arg-type]
    wire = status.model_dump(mode="json", by_alias=True)
    restored = ModelStatus.model_validate(wire)
    assert restored == status
    d = decide(POLICY, restored.canary, HEALTHY, at(122))  # type: ignore[arg-type]
    assert (d.action, d.status.weight) == ("advance", 50)


def test_history_is_bounded() -> None:
    status = ModelStatus(serving_version=1)
    for v in range(2, 30):
        status = plan(v, None, status, T0)
    assert len(status.history) == 10
    assert "v29" in status.history[-1]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([5, 5, 100], "strictly increasing"),
        ([50, 25, 100], "strictly increasing"),
        ([5, 50], "last step must be 100"),
        ([0, 100], "greater than or equal to 1"),
    ],
)
def test_policy_rejects_bad_steps(steps: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CanaryPolicy(steps=steps)


def test_canary_status_rejects_out_of_range_weight() -> None:
    with pytest.raises(ValueError, match="less than or equal to 100"):
        CanaryStatus(
            version=2,
            from_version=1,
            phase="Progressing",
            step=0,
            weight=101,
            started_at="x",
            step_started_at="x",
        )


def test_readiness_shows_a_rollback_until_the_spec_moves_on() -> None:
    from operators.reconcile.canary import readiness

    status = started()
    assert readiness(status)[:2] == (True, "CanaryProgressing")
    bad = CanaryMetrics(requests=500, error_rate=0.5, p99_ms=20.0)
    rolled = apply(status, decide(POLICY, status.canary, bad, at(5)))  # type: ignore[arg-type]
    assert readiness(rolled)[:2] == (False, "RolledBack")
    promoted_later = plan(5, None, rolled, at(10))
    assert readiness(promoted_later) == (True, "Serving", "v5 serves")
