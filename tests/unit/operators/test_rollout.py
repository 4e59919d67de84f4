"""A graph is Available when its Deployments have available pods, not when they are applied."""

from __future__ import annotations

from typing import Any

from operators.reconcile.rollout import judge

DESIRED = {"graph": 2, "triton": 1}


def deployment(
    replicas: int,
    available: int,
    updated: int | None = None,
    *,
    generation: int = 1,
    observed: int = 1,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def test_just_applied_deployments_are_not_available() -> None:
    state = judge({"graph": None, "triton": None}, DESIRED)
    assert not state.serving
    assert state.available.reason == "MinimumReplicasUnavailable"
    assert "graph 0/2 available, triton 0/1 available" in state.available.message
    assert (state.progressing.status, state.progressing.reason) == ("True", "RollingOut")


def test_created_without_ready_pods_is_not_available() -> None:
    state = judge({"graph": deployment(2, 0), "triton": deployment(1, 1)}, DESIRED)
    assert not state.serving
    assert "no available replica of graph" in state.available.message


def test_one_pod_per_deployment_serves_while_the_rest_roll_out() -> None:
    state = judge({"graph": deployment(2, 1), "triton": deployment(1, 1)}, DESIRED)
    assert state.serving
    assert state.progressing.reason == "RollingOut"
    assert "graph" in state.progressing.message
    assert "triton" not in state.progressing.message.split("(")[0]


def test_all_pods_available_completes_the_rollout() -> None:
    state = judge({"graph": deployment(2, 2), "triton": deployment(1, 1)}, DESIRED)
    assert state.serving
    assert (state.progressing.status, state.progressing.reason) == ("True", "RolloutComplete")


def test_a_spec_the_controller_has_not_seen_is_still_rolling_out() -> None:
    live = {"graph": deployment(2, 2, generation=3, observed=2), "triton": deployment(1, 1)}
    assert judge(live, DESIRED).progressing.reason == "RollingOut"


def test_old_pods_available_but_new_ones_not_updated_is_rolling_out() -> None:
    live = {"graph": deployment(2, 2, updated=1), "triton": deployment(1, 1)}
    state = judge(live, DESIRED)
    assert state.serving
    assert state.progressing.reason == "RollingOut"


def test_a_stuck_rollout_says_so() -> None:
    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "recs-graph-5d" has timed out progressing.',
    }
    live = {"graph": deployment(2, 1, updated=1, conditions=[stuck]), "triton": deployment(1, 1)}
    state = judge(live, DESIRED)
    assert (state.progressing.status, state.progressing.reason) == (
        "False",
        "ProgressDeadlineExceeded",
    )
    assert "timed out progressing" in state.progressing.message


def test_a_deployment_scaled_to_zero_owes_nothing() -> None:
    state = judge(
        {"graph": deployment(0, 0), "triton": deployment(1, 1)}, {"graph": 0, "triton": 1}
    )
    assert state.serving
    assert state.progressing.reason == "RolloutComplete"
