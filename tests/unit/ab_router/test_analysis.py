"""Analysis decisions on event logs with known truths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ab_router.analysis import analyze, analyze_events
from ab_router.design import Experiment, Metric, Variant
from ab_router.events import Exposure, Outcome
from ab_router.stores.sqlite import SqliteEventStore

EXPERIMENT = Experiment(
    name="ranker-v2",
    variants=[Variant(name="control", weight=50), Variant(name="treatment", weight=50)],
    metrics=[
        Metric(name="click", role="primary", mde_relative=0.1),
        Metric(name="latency_ms", role="guardrail", margin_relative=0.05),
    ],
)


def events(
    n: tuple[int, int],
    ctr: tuple[float, float],
    latency: tuple[float, float] = (50.0, 50.0),
    seed: int = 0,
) -> tuple[list[Exposure], list[Outcome]]:
    rng = np.random.default_rng(seed)
    exposures, outcomes = [], []
    for arm, (count, rate, mean_latency) in enumerate(zip(n, ctr, latency, strict=True)):
        variant = ("control", "treatment")[arm]
        for i in range(count):
            unit = f"{variant}-{i}"
            t = float(i)
            exposures.append(
                Exposure(
                    event_id=f"e-{unit}",
                    experiment="ranker-v2",
                    variant=variant,
                    unit_id=unit,
                    timestamp=t,
                )
            )
            if rng.random() < rate:
                outcomes.append(
                    Outcome(
                        event_id=f"c-{unit}",
                        experiment="ranker-v2",
                        unit_id=unit,
                        metric="click",
                        value=1.0,
                        timestamp=t,
                    )
                )
            value = float(rng.lognormal(np.log(mean_latency), 0.3))
            outcomes.append(
                Outcome(
                    event_id=f"l-{unit}",
                    experiment="ranker-v2",
                    unit_id=unit,
                    metric="latency_ms",
                    value=value,
                    timestamp=t,
                )
            )
    return exposures, outcomes


def test_a_clear_winner_ships() -> None:
    report = analyze_events(EXPERIMENT, *events((6000, 6000), (0.10, 0.14)))
    assert report.decisions == {"treatment": "ship"}
    (comparison,) = report.comparisons
    assert comparison.significant
    assert comparison.cs_low < 0.04 < comparison.cs_high  # the sequence covers the truth
    assert comparison.always_valid_p >= comparison.fixed_horizon_p  # the price of peeking


def test_a_null_effect_keeps_running() -> None:
    report = analyze_events(EXPERIMENT, *events((3000, 3000), (0.10, 0.10), seed=1))
    assert report.decisions["treatment"] == "continue"
    assert not report.comparisons[0].significant


def test_a_harmful_treatment_is_called_harmful() -> None:
    report = analyze_events(EXPERIMENT, *events((6000, 6000), (0.14, 0.10), seed=2))
    assert report.decisions["treatment"] == "harmful"


def test_a_guardrail_violation_stops_a_winner_from_shipping() -> None:
    report = analyze_events(EXPERIMENT, *events((6000, 6000), (0.10, 0.14), (50.0, 60.0), seed=3))
    (check,) = report.guardrails
    assert check.violated
    assert check.relative_change > 0.15
    assert report.decisions["treatment"] == "continue"
    assert "latency_ms" in report.reasons["treatment"]


def test_sample_ratio_mismatch_blocks_every_conclusion() -> None:
    report = analyze_events(EXPERIMENT, *events((6500, 5500), (0.10, 0.14), seed=4))
    assert report.srm_mismatch
    assert report.decisions["treatment"] == "blocked"
    assert "sample-ratio mismatch" in report.reasons["treatment"]


def test_no_data_and_json(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    empty = analyze(store, EXPERIMENT)
    assert empty.decisions == {"treatment": "no-data"}
    exposures, outcomes = events((300, 300), (0.1, 0.2), seed=5)
    for e in exposures:
        store.record_exposure(e)
    for o in outcomes:
        store.record_outcome(o)
    report = analyze(store, EXPERIMENT)
    assert report.counts == {"control": 300, "treatment": 300}
    text = json.dumps(report.to_dict())  # strict JSON: NaN would have been refused below
    assert json.loads(text)["experiment"] == "ranker-v2"
    early = analyze(store, EXPERIMENT, until=99.0)
    assert early.counts == {"control": 100, "treatment": 100}
    store.close()


def test_cuped_uses_the_pre_period_metric_and_narrows_the_sequence() -> None:
    rng = np.random.default_rng(11)
    exposures, outcomes = [], []
    for variant, lift in (("control", 0.0), ("treatment", 0.3)):
        for i in range(2000):
            unit = f"{variant}-{i}"
            pre = float(rng.normal(5.0, 2.0))
            value = pre + lift + float(rng.normal(0.0, 1.0))  # strongly tied to the pre-period
            exposures.append(
                Exposure(
                    event_id=f"e-{unit}",
                    experiment="ranker-v2",
                    variant=variant,
                    unit_id=unit,
                    timestamp=float(i),
                    pre_metric=pre,
                )
            )
            outcomes.append(
                Outcome(
                    event_id=f"v-{unit}",
                    experiment="ranker-v2",
                    unit_id=unit,
                    metric="watch",
                    value=value,
                    timestamp=float(i),
                )
            )
    design = EXPERIMENT.model_copy(update={"metrics": [Metric(name="watch", mde_relative=0.05)]})
    with_pre = analyze_events(design, exposures, outcomes).comparisons[0]
    without = analyze_events(
        design, [e.model_copy(update={"pre_metric": None}) for e in exposures], outcomes
    ).comparisons[0]
    assert with_pre.cuped_variance_reduction > 0.6
    assert np.isnan(without.cuped_variance_reduction)
    assert abs(with_pre.diff - 0.3) < 0.1  # still unbiased
    assert (with_pre.cs_high - with_pre.cs_low) < 0.6 * (without.cs_high - without.cs_low)


def test_a_guardrail_without_data_says_so() -> None:
    exposures, outcomes = events((6000, 6000), (0.10, 0.14), seed=12)
    clicks = [o for o in outcomes if o.metric == "click"]
    report = analyze_events(EXPERIMENT, exposures, clicks)
    (check,) = report.guardrails
    assert not check.has_data
    assert check.violated  # non-inferiority is not shown
    assert report.decisions["treatment"] == "continue"
    assert "has no data" in report.reasons["treatment"]
