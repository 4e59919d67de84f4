"""Which versions a graph serves, read from its Model resources."""

from __future__ import annotations

from typing import Any

from operators.crds.specs import InferenceGraphSpec
from operators.reconcile.versions import serving_plan

SPEC = InferenceGraphSpec.model_validate({"modelRepository": {"build": {}}})


def model(version: int, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"spec": {"storageUri": "file:///m", "version": version, **spec}, "status": status}


def canary(version: int, weight: int, phase: str = "Progressing") -> dict[str, Any]:
    return {
        "servingVersion": 1,
        "canary": {
            "version": version, "fromVersion": 1, "phase": phase, "step": 0, "weight": weight,
            "startedAt": "2026-11-28T12:00:00Z", "stepStartedAt": "2026-11-28T12:00:00Z",
        },
    }  # fmt: skip


def models(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {n: model(1) for n in SPEC.model_names}
    out.update(overrides)
    return out


def test_stable_versions_by_triton_name() -> None:
    plan = serving_plan(SPEC, models(combiner=model(3, {"servingVersion": 2})))
    assert plan.problem is None
    assert plan.versions == {"user_tower": 1, "ranker_dcn": 1, "ranker_mlp": 1, "combiner": 2}
    assert plan.canary is None


def test_a_repository_name_overrides_the_derived_one() -> None:
    plan = serving_plan(SPEC, models(combiner=model(1, repositoryName="blend")))
    assert "blend" in plan.versions


def test_the_first_rollout_in_flight_gets_the_split() -> None:
    plan = serving_plan(
        SPEC,
        models(**{"ranker-dcn": model(2, canary(2, 25)), "combiner": model(2, canary(2, 5))}),
    )
    assert plan.versions["ranker_dcn"] == 1  # the last good version stays the stable side
    assert plan.canary is not None
    assert (plan.canary.model, plan.canary.version, plan.canary.weight) == ("ranker-dcn", 2, 25)


def test_a_finished_rollout_does_not_split() -> None:
    plan = serving_plan(SPEC, models(**{"ranker-dcn": model(2, canary(2, 0, "RolledBack"))}))
    assert plan.canary is None


def test_missing_or_invalid_models_are_named() -> None:
    partial = models()
    del partial["ranker-mlp"]
    assert serving_plan(SPEC, partial).problem == "Model resources not found: ranker-mlp"
    broken = models(combiner={"spec": {"version": 0}})
    assert "Model combiner has an invalid spec" in str(serving_plan(SPEC, broken).problem)


def test_an_unreadable_status_starts_afresh() -> None:
    plan = serving_plan(SPEC, models(combiner=model(4, {"servingVersion": "many"})))
    assert plan.versions["combiner"] == 4
